//! External commands (hooks, validation, reload): argv only, no shell, bounded time and output.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::DeployError;

/// How much of a command's stderr is kept: enough for nginx's diagnostics, bounded against floods.
const STDERR_TAIL: usize = 4096;

/// A command run without a shell: `argv[0]` is the program (absolute, or looked up in `PATH`).
/// Written in YAML as a list (`[nginx, -s, reload]`) or as `{ argv: [nginx, -s, reload] }`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "CommandSpec")]
pub struct Command {
    pub argv: Vec<String>,
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a command as a list of program and arguments, e.g. [nginx, -s, reload]"
)]
enum CommandSpec {
    List(Vec<String>),
    Table(ArgvTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArgvTable {
    argv: Vec<String>,
}

impl TryFrom<CommandSpec> for Command {
    type Error = String;
    fn try_from(spec: CommandSpec) -> Result<Self, String> {
        let argv = match spec {
            CommandSpec::List(argv) | CommandSpec::Table(ArgvTable { argv }) => argv,
        };
        if argv.first().is_none_or(|program| program.trim().is_empty()) {
            return Err("a command needs at least its program, e.g. [nginx, -s, reload]".to_owned());
        }
        Ok(Self { argv })
    }
}

impl Command {
    /// A command from program and arguments.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
        }
    }

    /// The command line for messages (arguments are paths and flags, never secrets).
    pub fn display(&self) -> String {
        self.argv.join(" ")
    }

    /// The program's resolved path, or [`DeployError::HookNotFound`].
    pub fn resolve_program(&self) -> Result<PathBuf, DeployError> {
        let program = self.argv.first().ok_or(DeployError::InvalidConfig {
            reason: "a command has an empty argv".into(),
        })?;
        let not_found = || DeployError::HookNotFound {
            program: program.clone(),
        };
        let as_path = Path::new(program);
        if as_path.is_absolute() {
            return if is_executable(as_path) {
                Ok(as_path.to_path_buf())
            } else {
                Err(not_found())
            };
        }
        if program.contains('/') {
            // A relative path would depend on the agent's working directory.
            return Err(DeployError::InvalidConfig {
                reason: format!("program `{program}` must be absolute or a bare name found in PATH"),
            });
        }
        let path = std::env::var_os("PATH").ok_or_else(not_found)?;
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| is_executable(candidate))
            .ok_or_else(not_found)
    }

    /// Runs the command with a time limit; stdout is discarded, the tail of stderr kept.
    pub fn run(&self, timeout: Duration) -> Result<CommandOutput, DeployError> {
        let program = self.resolve_program()?;
        let mut child = std::process::Command::new(&program)
            .args(self.argv.iter().skip(1))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(DeployError::io("spawn", &program))?;
        let pipe = child.stderr.take();
        let tail = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let reader_tail = Arc::clone(&tail);
        // A separate reader keeps a chatty command from blocking on a full pipe.
        std::thread::spawn(move || {
            if let Some(mut pipe) = pipe {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let Ok(mut tail) = reader_tail.lock() else { break };
                    tail.extend_from_slice(&buf[..n]);
                    let excess = tail.len().saturating_sub(STDERR_TAIL);
                    tail.drain(..excess);
                }
            }
            let _ = done_tx.send(());
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait().map_err(DeployError::io("wait for", &program))? {
                Some(status) => break Some(status),
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        // A daemon forked by the command (`haproxy -D`, a script's background job) may hold the
        // pipe open forever, so the reader gets a short grace period, not a join.
        let _ = done_rx.recv_timeout(Duration::from_millis(500));
        let stderr = tail
            .lock()
            .map(|t| String::from_utf8_lossy(&t).trim().to_string())
            .unwrap_or_default();
        Ok(CommandOutput {
            status,
            stderr,
            timeout,
        })
    }
}

/// The outcome of [`Command::run`].
#[derive(Debug)]
pub struct CommandOutput {
    /// `None` when the command was killed at the timeout.
    pub status: Option<ExitStatus>,
    /// The last 4 KiB of stderr.
    pub stderr: String,
    timeout: Duration,
}

impl CommandOutput {
    /// Whether the command exited with status 0 in time.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The exit status or the timeout, for messages.
    pub fn status_text(&self) -> String {
        match self.status {
            Some(status) => status.to_string(),
            None => format!("killed after {:?} timeout", self.timeout),
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
