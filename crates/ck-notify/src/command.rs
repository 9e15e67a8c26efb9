//! The command notifier: runs a local program (no shell) with the webhook's JSON envelope on stdin.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::config::{CommandConfig, ConfigError, check_timeout};
use crate::{DeliveryError, EXCERPT_CHARS, Message, one_line};

/// Variables passed through from the server's environment. The rest is withheld because the
/// server's environment may carry its key-encryption key and database password.
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME"];

/// A checked command notifier.
#[derive(Debug)]
pub(crate) struct Command {
    program: PathBuf,
    args: Vec<String>,
    timeout: Duration,
}

impl Command {
    pub(crate) fn new(config: &CommandConfig) -> Result<Self, ConfigError> {
        if !config.program.is_absolute() {
            return Err(ConfigError(format!(
                "command: `program` must be an absolute path, not {}",
                config.program.display()
            )));
        }
        if config.args.iter().any(|arg| arg.contains('\0')) {
            return Err(ConfigError("command: `args` may not contain NUL characters".to_owned()));
        }
        Ok(Self {
            program: config.program.clone(),
            args: config.args.clone(),
            timeout: check_timeout("command", config.timeout_seconds)?,
        })
    }

    pub(crate) async fn deliver(&self, message: &Message) -> Result<(), DeliveryError> {
        let input = serde_json::to_vec(&message.envelope())
            .map_err(|e| DeliveryError::Permanent(format!("command: cannot encode the message: {e}")))?;
        let program = self.program.display();
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .envs(
                INHERITED_ENV
                    .iter()
                    .filter_map(|key| Some((*key, std::env::var_os(key)?))),
            )
            .env("CERTKEEPER_EVENT", message.event.as_str())
            .env("CERTKEEPER_DELIVERY_ID", &message.id)
            .env("CERTKEEPER_SUBJECT", one_line(&message.subject, 1000))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Dropping the future (timeout, shutdown) must not leave the program running.
            .kill_on_drop(true);
        let mut child = spawn(&mut command).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DeliveryError::Permanent(format!("command: {program} not found")),
            std::io::ErrorKind::PermissionDenied => {
                DeliveryError::Permanent(format!("command: {program} is not executable (permission denied)"))
            }
            _ => DeliveryError::Transient(format!("command: cannot start {program}: {e}")),
        })?;
        let stdin = child.stdin.take();
        let stderr = child.stderr.take();
        let feed = async move {
            if let Some(mut stdin) = stdin {
                // A program that does not read its input closes the pipe early; that is its choice.
                let _ = stdin.write_all(&input).await;
                let _ = stdin.shutdown().await;
            }
        };
        let finished = tokio::time::timeout(self.timeout, async {
            let ((), status, stderr_tail) = tokio::join!(feed, child.wait(), read_tail(stderr));
            (status, stderr_tail)
        })
        .await;
        let Ok((status, stderr_tail)) = finished else {
            // kill_on_drop only signals; kill and reap here so no zombie outlives the call.
            let _ = child.kill().await;
            return Err(DeliveryError::Transient(format!(
                "command: {program} did not finish within {} s and was killed",
                self.timeout.as_secs()
            )));
        };
        let status = status.map_err(|e| DeliveryError::Transient(format!("command: waiting for {program}: {e}")))?;
        if status.success() {
            return Ok(());
        }
        let stderr_tail = one_line(&stderr_tail, EXCERPT_CHARS);
        Err(DeliveryError::Transient(if stderr_tail.is_empty() {
            format!("command: {program} failed ({status})")
        } else {
            format!("command: {program} failed ({status}): {stderr_tail}")
        }))
    }
}

/// Spawns `command`, retrying briefly while its file is busy: a script just written (or rewritten)
/// makes exec fail with ETXTBSY for a moment while a concurrent fork still holds it open.
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

/// Reads `stream` to its end and keeps its last few hundred bytes: the end of stderr says why a
/// program failed, and a chatty one must not grow memory.
async fn read_tail(stream: Option<impl AsyncRead + Unpin>) -> String {
    const KEEP: usize = 4 * EXCERPT_CHARS;
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut tail = Vec::with_capacity(2 * KEEP);
    let mut buffer = [0_u8; 4096];
    while let Ok(read @ 1..) = stream.read(&mut buffer).await {
        tail.extend_from_slice(&buffer[..read]);
        if tail.len() > KEEP {
            tail.drain(..tail.len() - KEEP);
        }
    }
    let text = String::from_utf8_lossy(&tail);
    // Keep the last characters: one_line keeps the first ones.
    let chars: Vec<char> = text.trim_end().chars().collect();
    chars[chars.len().saturating_sub(EXCERPT_CHARS)..].iter().collect()
}
