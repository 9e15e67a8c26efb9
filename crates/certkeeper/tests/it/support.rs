//! Starting and stopping the real server, running the CLI, finding peers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_certkeeper");

/// Fails with an install hint when a peer tool is missing under CI (or when peers are
/// required); otherwise says loudly that the test is skipped. Returns whether it is present.
pub(crate) fn require_peer(tool: &str, package: &str) -> bool {
    let present = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return true;
    }
    let required = std::env::var_os("CERTKEEPER_REQUIRE_PEERS").is_some() || std::env::var_os("CI").is_some();
    assert!(
        !required,
        "peer '{tool}' is missing: apt-get install -y {package} (or run scripts/test.sh)"
    );
    eprintln!("SKIPPED: '{tool}' not found (apt-get install -y {package})");
    false
}

/// A running `certkeeper serve`.
pub(crate) struct Server {
    pub(crate) data_dir: PathBuf,
    pub(crate) url: String,
    child: Option<Child>,
    extra_args: Vec<String>,
    log_level: String,
}

impl Server {
    pub(crate) fn start(data_dir: &Path, extra_args: &[&str]) -> Self {
        let mut server = Self {
            data_dir: data_dir.to_owned(),
            url: String::new(),
            child: None,
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            log_level: "warn".to_owned(),
        };
        server.spawn();
        server
    }

    /// Like [`Server::start`], logging at `level` into [`Server::log_path`].
    pub(crate) fn start_logged(data_dir: &Path, extra_args: &[&str], level: &str) -> Self {
        let mut server = Self {
            data_dir: data_dir.to_owned(),
            url: String::new(),
            child: None,
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            log_level: level.to_owned(),
        };
        server.spawn();
        server
    }

    /// This server's log file (kept beside its data directory).
    pub(crate) fn log_path(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }

    /// Everything this server logged so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let url_file = self.data_dir.join("server.url");
        let _ = std::fs::remove_file(&url_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut command = Command::new(BIN);
        command.args(["serve", "--data-dir"]).arg(&self.data_dir);
        if !self.extra_args.iter().any(|a| a == "--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        let child = command
            .args(&self.extra_args)
            .env("CERTKEEPER_LOG", &self.log_level)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start certkeeper serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&url_file) {
                self.url = text.trim().to_owned();
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server did not start within 30 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL: no graceful shutdown, no flush, nothing.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server process's id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// Starts the server again after [`Server::kill9`], with the same arguments.
    pub(crate) fn start_again(&mut self) {
        self.spawn();
    }

    pub(crate) fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub(crate) fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub(crate) fn client(&self) -> ck_client::Client {
        ck_client::Client::new(&self.url, &self.token()).unwrap()
    }

    /// Runs a CLI command against this server; returns its output.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .unwrap()
    }

    /// Runs a CLI command that must succeed; returns stdout.
    pub(crate) fn cli_ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "certkeeper {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Server {
    /// SIGTERM (graceful shutdown), then SIGKILL if it has not ended within 10 s.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM first, for a clean WAL checkpoint; SIGKILL if it hangs.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a shell script in `dir`: whether it succeeded, and its stdout then stderr.
pub(crate) fn sh(script: &str, dir: &Path) -> (bool, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
