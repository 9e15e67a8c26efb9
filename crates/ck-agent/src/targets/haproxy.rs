//! HAProxy: one PEM with full chain and key; optionally pushed live through the runtime API.
//!
//! The runtime API (`set ssl cert` + `commit ssl cert`) changes only the running process's memory:
//! the file is always written too, so that a later reload or restart keeps the new certificate.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::{Target, full_chain, key_file, key_text};
use crate::{Bundle, Command, Common, DeployError, HaproxyTarget, PlannedFile};

impl HaproxyTarget {
    fn combined_pem(bundle: &Bundle) -> Result<String, DeployError> {
        Ok(format!("{}{}", full_chain(bundle)?, key_text(bundle)))
    }

    fn runtime_call(&self, socket: &Path, request: &str) -> Result<String, DeployError> {
        let fail = |reason: String| DeployError::RuntimeApi {
            socket: socket.to_path_buf(),
            reason,
        };
        let mut stream = UnixStream::connect(socket).map_err(|e| fail(format!("connect: {e}")))?;
        let timeout = Some(HaproxyTarget::common(self).timeout);
        stream.set_read_timeout(timeout).map_err(|e| fail(e.to_string()))?;
        stream.set_write_timeout(timeout).map_err(|e| fail(e.to_string()))?;
        stream
            .write_all(request.as_bytes())
            .map_err(|e| fail(format!("send: {e}")))?;
        // In non-interactive mode HAProxy answers one command and closes the connection.
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .map_err(|e| fail(format!("read: {e}")))?;
        Ok(answer)
    }
}

impl Target for HaproxyTarget {
    fn common(&self) -> Common<'_> {
        HaproxyTarget::common(self)
    }

    fn plan(&self, bundle: &Bundle) -> Result<Vec<PlannedFile>, DeployError> {
        let common = HaproxyTarget::common(self);
        Ok(vec![key_file(
            &self.pem_path,
            Self::combined_pem(bundle)?.into_bytes(),
            &common,
        )])
    }

    fn validate_command(&self) -> Option<Command> {
        self.validate.clone().or_else(|| {
            let config = self.config.as_ref()?;
            let binary = self.binary.clone().unwrap_or_else(|| PathBuf::from("haproxy"));
            Some(Command::new([
                binary.to_string_lossy().into_owned(),
                "-c".into(),
                "-q".into(),
                "-f".into(),
                config.to_string_lossy().into_owned(),
            ]))
        })
    }

    fn live_update(&self, bundle: &Bundle) -> Result<(), DeployError> {
        let Some(socket) = &self.runtime_api_socket else {
            return Ok(());
        };
        let name = self
            .runtime_cert_name
            .clone()
            .unwrap_or_else(|| self.pem_path.to_string_lossy().into_owned());
        let pem = Self::combined_pem(bundle)?;
        // The payload ends at the first empty line, so the PEM must contain none.
        let payload: String = pem
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        let set = self.runtime_call(socket, &format!("set ssl cert {name} <<\n{payload}\n"))?;
        if !set.contains("Transaction created") && !set.contains("Transaction updated") {
            let _ = self.runtime_call(socket, &format!("abort ssl cert {name}\n"));
            return Err(DeployError::RuntimeApi {
                socket: socket.clone(),
                reason: format!("set ssl cert {name}: {}", set.trim()),
            });
        }
        let commit = self.runtime_call(socket, &format!("commit ssl cert {name}\n"))?;
        if !commit.contains("Success") {
            let _ = self.runtime_call(socket, &format!("abort ssl cert {name}\n"));
            return Err(DeployError::RuntimeApi {
                socket: socket.clone(),
                reason: format!("commit ssl cert {name}: {}", commit.trim()),
            });
        }
        Ok(())
    }
}
