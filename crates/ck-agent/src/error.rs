//! The one error type of deployments.

use std::path::PathBuf;

/// Why a deployment (or recovery) failed. Messages never contain key material or passwords.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// A configured path resolves outside every allowed root; nothing was written.
    #[error("{path} is outside the allowed roots")]
    OutsideAllowedRoots { path: PathBuf },
    /// A configured path is a symlink; replacing it would silently break the link.
    #[error("{path} is a symlink; point the target at the real file")]
    SymlinkRefused { path: PathBuf },
    /// A configured command's program does not exist; nothing was written.
    #[error("program `{program}` not found (not an existing absolute path, not in PATH)")]
    HookNotFound { program: String },
    /// The configuration is unusable.
    #[error("invalid target configuration: {reason}")]
    InvalidConfig { reason: String },
    /// The certificate or key cannot be used.
    #[error("invalid bundle: {reason}")]
    InvalidBundle { reason: String },
    /// The pre-hook failed; nothing was written.
    #[error("pre-hook `{command}` failed ({status}): {stderr}")]
    PreHookFailed {
        command: String,
        status: String,
        stderr: String,
    },
    /// Validation rejected the new files; the previous files were restored.
    #[error("validation `{command}` failed ({status}), previous files restored: {stderr}")]
    ValidationFailed {
        command: String,
        status: String,
        stderr: String,
    },
    /// The new files are in place but the reload failed.
    #[error("reload `{command}` failed ({status}): {stderr}")]
    ReloadFailed {
        command: String,
        status: String,
        stderr: String,
    },
    /// The post-hook failed after a successful deployment.
    #[error("post-hook `{command}` failed ({status}): {stderr}")]
    PostHookFailed {
        command: String,
        status: String,
        stderr: String,
    },
    /// The live update through HAProxy's runtime API failed; files are in place.
    #[error("HAProxy runtime API on {socket}: {reason}")]
    RuntimeApi { socket: PathBuf, reason: String },
    /// The endpoint kept serving another certificate (or none) until the timeout.
    #[error("endpoint serves {served}, expected {expected}")]
    VerifyFailed { expected: String, served: String },
    /// A keystore could not be encoded.
    #[error("keystore encoding: {reason}")]
    Keystore { reason: String },
    /// A file system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DeployError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { action, path, source }
    }
}
