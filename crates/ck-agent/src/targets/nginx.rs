//! nginx: `ssl_certificate` holds the full chain; `nginx -t` validates and `-s reload` reloads.
//!
//! `nginx -s reload` re-reads every certificate in the signalling process first and refuses to
//! signal when one is bad, so the default validation and reload agree on what is acceptable.

use std::path::{Path, PathBuf};

use super::{Target, cert_file, full_chain, key_file, key_text};
use crate::{Bundle, Command, Common, DeployError, NginxTarget, PlannedFile};

impl NginxTarget {
    fn nginx_command(&self, action: &[&str]) -> Option<Command> {
        let config = self.config.as_ref()?;
        let binary = self.binary.clone().unwrap_or_else(|| PathBuf::from("nginx"));
        let mut argv = vec![path_arg(&binary)];
        argv.extend(action.iter().map(|a| (*a).to_string()));
        argv.extend(["-c".to_string(), path_arg(config)]);
        if let Some(log) = &self.error_log {
            argv.extend(["-e".to_string(), path_arg(log)]);
        }
        Some(Command { argv })
    }
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

impl Target for NginxTarget {
    fn common(&self) -> Common<'_> {
        NginxTarget::common(self)
    }

    fn plan(&self, bundle: &Bundle) -> Result<Vec<PlannedFile>, DeployError> {
        let common = NginxTarget::common(self);
        Ok(vec![
            cert_file(&self.cert_path, full_chain(bundle)?, &common),
            key_file(&self.key_path, key_text(bundle).into_bytes(), &common),
        ])
    }

    fn validate_command(&self) -> Option<Command> {
        self.validate.clone().or_else(|| self.nginx_command(&["-t", "-q"]))
    }

    fn reload_command(&self) -> Option<Command> {
        self.reload.clone().or_else(|| self.nginx_command(&["-s", "reload"]))
    }
}
