//! The `exec` provider: an operator's own program writes the record, called the way lego's exec
//! provider calls it (`program present|cleanup <fqdn.> <value>`), so existing hooks keep working.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::name::{check_txt_value, parse_fqdn, with_trailing_dot};
use crate::{DnsError, Secret};

/// How much of the end of the hook's stderr an error message carries.
const STDERR_TAIL_BYTES: usize = 2048;

/// The hook's whole `PATH`. The hook starts from an empty environment (nothing of the server's
/// own environment leaks into it), and a fixed search path keeps a configured variable from
/// choosing which programs its `curl` or `nsupdate` really are.
pub const HOOK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Variables no `env` may set, even in the operator's config file: each makes a shell, the
/// dynamic loader or an interpreter run code of its choosing (`BASH_ENV=$(cmd)` runs `cmd` in
/// every bash script), or changes which program a name resolves to.
const REFUSED_NAMES: &[&str] = &[
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "CDPATH",
    "GLOBIGNORE",
    "IFS",
    "PATH",
    "HOME",
    "SHELL",
    "RUBYOPT",
    "RUBYLIB",
    "NODE_OPTIONS",
    "NODE_PATH",
    "CLASSPATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "GCONV_PATH",
    "LOCPATH",
    "NLSPATH",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "RESOLV_HOST_CONF",
    "LOCALDOMAIN",
    "TMPDIR",
    "CURL_HOME",
    "WGETRC",
    "GIT_CONFIG_GLOBAL",
    "OPENSSL_CONF",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "TZDIR",
];

/// Prefixes refused for the same reason (`LD_PRELOAD`, `PYTHONSTARTUP`, `PERL5OPT`,
/// `BASH_FUNC_x%%` exported functions, …).
const REFUSED_PREFIXES: &[&str] = &[
    "LD_",
    "DYLD_",
    "BASH_FUNC_",
    "PYTHON",
    "PERL",
    "RUBY",
    "NODE_",
    "MALLOC_",
    "GIT_",
    "LUA_",
];

/// Why `name` may not be set in a hook's environment, if it may not.
pub fn refused_env_name(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let well_formed = chars.next().is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if !well_formed {
        return Some(format!(
            "{name:?} is not a variable name of capitals, digits and `_` (starting with a capital or `_`)"
        ));
    }
    if REFUSED_NAMES.contains(&name) {
        return Some(format!(
            "{name} may not be set: it changes what the shell, loader or interpreter runs (the hook always \
             gets PATH={HOOK_PATH} and nothing else beyond `env`)"
        ));
    }
    if let Some(prefix) = REFUSED_PREFIXES.iter().find(|prefix| name.starts_with(**prefix)) {
        return Some(format!(
            "{name} may not be set: variables starting with {prefix} make the loader or an interpreter run code"
        ));
    }
    None
}

fn default_timeout_seconds() -> u64 {
    30
}

/// Configuration of the `exec` provider. Only the operator's config file may hold one: it runs
/// a program.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// Absolute path of the program.
    pub command: PathBuf,
    /// Hex SHA-256 the program's file must have; it is not run otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Seconds the program may run before it is killed.
    #[serde(default = "default_timeout_seconds")]
    pub timeout: u64,
    /// The hook's environment, beside the fixed `PATH`: these names and no others (the allowlist),
    /// each checked by [`refused_env_name`]. Values may be credentials, so they are passed here
    /// and never on the command line, and they are redacted from `Debug` and serialization.
    #[serde(default)]
    pub env: BTreeMap<String, Secret>,
}

/// A checked exec configuration.
#[derive(Debug, Clone)]
pub(crate) struct ExecProvider {
    command: PathBuf,
    sha256: Option<String>,
    timeout: Duration,
    env: BTreeMap<String, Secret>,
}

impl ExecConfig {
    pub(crate) fn build(&self) -> Result<ExecProvider, DnsError> {
        if !self.command.is_absolute() {
            return Err(DnsError::Config(format!(
                "exec: `command` must be an absolute path, not {}",
                self.command.display()
            )));
        }
        let sha256 = match &self.sha256 {
            Some(pin) => {
                let pin = pin.trim().to_ascii_lowercase();
                if pin.len() != 64 || hex::decode(&pin).is_err() {
                    return Err(DnsError::Config(format!(
                        "exec: `sha256` must be 64 hex digits, not {pin:?}"
                    )));
                }
                Some(pin)
            }
            None => None,
        };
        if self.timeout == 0 {
            return Err(DnsError::Config("exec: `timeout` must be at least 1 second".to_owned()));
        }
        if let Some(reason) = self.env.keys().find_map(|name| refused_env_name(name)) {
            return Err(DnsError::Config(format!("exec: env: {reason}")));
        }
        Ok(ExecProvider {
            command: self.command.clone(),
            sha256,
            timeout: Duration::from_secs(self.timeout),
            env: self.env.clone(),
        })
    }
}

impl ExecProvider {
    pub(crate) async fn present(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        self.run("present", fqdn, value).await
    }

    pub(crate) async fn cleanup(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        self.run("cleanup", fqdn, value).await
    }

    async fn run(&self, action: &'static str, fqdn: &str, value: &str) -> Result<(), DnsError> {
        check_txt_value(value)?;
        let fqdn = with_trailing_dot(&parse_fqdn(fqdn)?);
        self.verify_checksum().await?;

        let mut command = tokio::process::Command::new(&self.command);
        command
            .arg(action)
            .arg(&fqdn)
            .arg(value)
            .env_clear()
            .env("PATH", HOOK_PATH)
            .envs(self.env.iter().map(|(key, value)| (key, value.expose())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Dropping the future on timeout must not leave the hook running.
            .kill_on_drop(true);
        let mut child = spawn(&mut command).await.map_err(|source| DnsError::ExecSpawn {
            command: self.command.clone(),
            source,
        })?;
        let stderr = child.stderr.take();

        let finished = tokio::time::timeout(self.timeout, async {
            let (status, stderr_tail) = tokio::join!(child.wait(), read_tail(stderr, STDERR_TAIL_BYTES));
            (status, stderr_tail)
        })
        .await;
        let Ok((status, stderr_tail)) = finished else {
            // kill_on_drop only signals; kill and reap here so no zombie outlives the call.
            let _ = child.kill().await;
            return Err(DnsError::ExecTimeout {
                command: self.command.clone(),
                action,
                timeout: self.timeout,
            });
        };
        let status = status.map_err(|source| DnsError::ExecSpawn {
            command: self.command.clone(),
            source,
        })?;
        if status.success() {
            tracing::info!(command = %self.command.display(), action, %fqdn, "exec: hook succeeded");
            return Ok(());
        }
        Err(DnsError::ExecFailed {
            command: self.command.clone(),
            action,
            status: status.to_string(),
            stderr_tail: stderr_tail.trim_end().to_owned(),
        })
    }

    async fn verify_checksum(&self) -> Result<(), DnsError> {
        let Some(expected) = &self.sha256 else {
            return Ok(());
        };
        let actual = file_sha256(&self.command).await?;
        if &actual != expected {
            return Err(DnsError::ExecChecksumMismatch {
                command: self.command.clone(),
                expected: expected.clone(),
                actual,
            });
        }
        Ok(())
    }
}

/// Spawns `command`, retrying briefly while its file is busy: a hook being rewritten (or, in a
/// multi-threaded process, a file just written whose descriptor a concurrent fork inherited)
/// makes exec fail with ETXTBSY for a moment.
async fn spawn(command: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    let mut tries_left = 5;
    loop {
        match command.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries_left > 0 => {
                tries_left -= 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            result => return result,
        }
    }
}

async fn file_sha256(path: &Path) -> Result<String, DnsError> {
    let bytes = tokio::fs::read(path).await.map_err(|source| DnsError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Reads `stream` to its end, keeping only its last `limit` bytes so a chatty hook cannot grow
/// memory without bound.
async fn read_tail(stream: Option<impl AsyncRead + Unpin>, limit: usize) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut tail: Vec<u8> = Vec::with_capacity(limit);
    let mut buffer = [0_u8; 4096];
    let mut dropped_any = false;
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                tail.extend_from_slice(&buffer[..read]);
                if tail.len() > limit {
                    tail.drain(..tail.len() - limit);
                    dropped_any = true;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&tail).into_owned();
    if dropped_any { format!("[...]{text}") } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tail_keeps_only_the_end() {
        let long = format!("{}THE END", "x".repeat(10_000));
        let tail = read_tail(Some(long.as_bytes()), 16).await;
        assert_eq!(tail, "[...]xxxxxxxxxTHE END");
        assert_eq!(read_tail(Some(&b"short"[..]), 16).await, "short");
    }

    #[test]
    fn relative_commands_and_bad_pins_are_refused() {
        let mut config = ExecConfig {
            command: PathBuf::from("hook.sh"),
            sha256: None,
            timeout: 30,
            env: BTreeMap::new(),
        };
        assert!(config.build().is_err());
        config.command = PathBuf::from("/usr/local/bin/hook.sh");
        config.sha256 = Some("abc".to_owned());
        assert!(config.build().is_err());
        config.sha256 = Some("A".repeat(64));
        assert!(config.build().is_ok());
    }

    #[test]
    fn dangerous_environment_names_are_refused() {
        for name in [
            "BASH_ENV",
            "ENV",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "PATH",
            "IFS",
            "PYTHONPATH",
            "PYTHONSTARTUP",
            "PERL5OPT",
            "PERL5LIB",
            "BASH_FUNC_x%%",
            "HOME",
            "NODE_OPTIONS",
            "GLIBC_TUNABLES",
            "lower",
            "A=B",
            "",
            "1ABC",
            "SSL_CERT_FILE",
        ] {
            assert!(refused_env_name(name).is_some(), "{name} was accepted");
            let config = ExecConfig {
                command: PathBuf::from("/usr/local/bin/hook.sh"),
                sha256: None,
                timeout: 30,
                env: BTreeMap::from([(name.to_owned(), Secret::new("$(id > /tmp/pwned)"))]),
            };
            let error = config.build().unwrap_err().to_string();
            assert!(!error.contains("pwned"), "{error}");
        }
        for name in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "HOOK_TOKEN",
            "_X",
            "PDNS_API_KEY",
        ] {
            assert_eq!(refused_env_name(name), None, "{name}");
        }
    }
}
