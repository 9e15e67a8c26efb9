//! Deployment targets: what each kind of server wants on disk, and how it is told.
//!
//! # Adding a target
//!
//! 1. Add a config struct with `target_struct!` in `config.rs` (it splices in the common fields:
//!    name, owner, modes, commands, verify) and a variant to [`crate::TargetConfig`].
//! 2. Add a module here implementing [`Target`]: `plan` turns a [`Bundle`] into [`PlannedFile`]s
//!    (key material always with `common.key_mode`); override `validate_command`/`reload_command`
//!    for defaults derived from the config, and `live_update` when the server can take the new
//!    certificate without a reload.
//! 3. Map the variant in [`crate::TargetConfig::target`].
//!
//! Everything else (allowed roots, atomic writes, journal, rollback, hooks, verification) is
//! done by [`crate::deploy`] for every target alike, so a target never touches the file system.

mod apache;
mod files;
mod haproxy;
mod jks;
mod nginx;
mod pkcs12;

use std::path::PathBuf;

use crate::bundle::Bundle;
use crate::command::Command;
use crate::config::{Common, TargetConfig};
use crate::error::DeployError;

/// A file a deployment will write.
#[derive(Clone, PartialEq, Eq)]
pub struct PlannedFile {
    pub path: PathBuf,
    pub contents: Vec<u8>,
    pub mode: u32,
}

impl std::fmt::Debug for PlannedFile {
    // Contents may hold a private key, so only their size is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedFile")
            .field("path", &self.path)
            .field("bytes", &self.contents.len())
            .field("mode", &format_args!("{:04o}", self.mode))
            .finish()
    }
}

/// One kind of deployment target.
pub trait Target {
    /// The settings shared by all targets.
    fn common(&self) -> Common<'_>;

    /// The files to write for `bundle`. Must not touch the file system except to read inputs
    /// such as password files.
    fn plan(&self, bundle: &Bundle) -> Result<Vec<PlannedFile>, DeployError>;

    /// The command that checks the written files; by default the configured one.
    fn validate_command(&self) -> Option<Command> {
        self.common().validate.cloned()
    }

    /// The command that makes the server load the files; by default the configured one.
    fn reload_command(&self) -> Option<Command> {
        self.common().reload.cloned()
    }

    /// Hands the new certificate to the running server without a reload (after validation).
    fn live_update(&self, _bundle: &Bundle) -> Result<(), DeployError> {
        Ok(())
    }
}

impl TargetConfig {
    /// The target implementation for this configuration.
    pub fn target(&self) -> &dyn Target {
        match self {
            Self::Files(t) => t,
            Self::Nginx(t) => t,
            Self::Haproxy(t) => t,
            Self::Apache(t) => t,
            Self::Pkcs12(t) => t,
            Self::Jks(t) => t,
        }
    }
}

pub(crate) fn cert_file(path: &std::path::Path, contents: String, common: &Common<'_>) -> PlannedFile {
    PlannedFile {
        path: path.to_path_buf(),
        contents: contents.into_bytes(),
        mode: common.mode,
    }
}

pub(crate) fn key_file(path: &std::path::Path, contents: Vec<u8>, common: &Common<'_>) -> PlannedFile {
    PlannedFile {
        path: path.to_path_buf(),
        contents,
        mode: common.key_mode,
    }
}

/// Leaf followed by intermediates, each block LF-terminated.
pub(crate) fn full_chain(bundle: &Bundle) -> Result<String, DeployError> {
    Ok(format!("{}{}", bundle.leaf_pem()?, bundle.intermediates_pem()?))
}

/// The key PEM, newline-terminated so that concatenations stay valid PEM.
pub(crate) fn key_text(bundle: &Bundle) -> String {
    let key = bundle.key_pem.expose().trim_end();
    format!("{key}\n")
}

/// Reads a keystore password file; a trailing newline is not part of the password.
pub(crate) fn read_password(path: &std::path::Path) -> Result<String, DeployError> {
    let text = std::fs::read_to_string(path).map_err(DeployError::io("read password file", path))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}
