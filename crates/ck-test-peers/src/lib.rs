//! Real test peers on 127.0.0.1: Pebble, pebble-challtestsrv, BIND, nginx and HAProxy, an SMTP
//! sink (aiosmtpd), a webhook receiver and a headless Chromium behind chromedriver (for UI
//! tests with fantoccini), started per test.
//!
//! Every peer is a real Debian program started as a child process on free loopback ports and
//! killed when its handle drops. When a program is missing, [`peer_or_skip`] fails the test with
//! the package to install if `CERTKEEPER_REQUIRE_PEERS` or `CI` is set (as `scripts/test.sh`
//! does), and otherwise tells the caller to skip with a loud message: never silently. The
//! webhook receiver is the exception: it is a few std threads in the test process, never missing.
//!
//! The browser ([`browser::ChromeDriver`]) runs chromedriver on loopback only (no
//! `--allowed-ips`, which would make it listen on every interface) and Chromium headless, without
//! sandbox or GPU, with its own background traffic to Google switched off and every host name
//! but 127.0.0.1 and localhost resolved to "not found" without asking DNS; see [`browser`] for
//! each flag and why.

// Test support panics on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod bind;
pub mod browser;
pub mod pebble;
pub mod smtp;
pub mod webhook;
pub mod webservers;

use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Whether missing peers must fail the test instead of skipping it.
pub fn peers_required() -> bool {
    std::env::var_os("CERTKEEPER_REQUIRE_PEERS").is_some() || std::env::var_os("CI").is_some()
}

/// The path of `program`, or `None` (after a loud "SKIPPED" line) when it is missing locally.
/// Panics with the Debian package to install when peers are required.
pub fn peer_or_skip(program: &str, debian_package: &str, test: &str) -> Option<PathBuf> {
    if let Some(path) = find_program(program) {
        return Some(path);
    }
    assert!(
        !peers_required(),
        "{test}: `{program}` is not installed: run `apt-get install -y {debian_package}` (scripts/install-deps.sh does)"
    );
    eprintln!("SKIPPED: {test} needs `{program}` (apt-get install -y {debian_package}, or run scripts/test.sh)");
    None
}

fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A TCP port that is free on 127.0.0.1 now, and whose UDP twin is free too (DNS servers need both).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP+UDP port pair on 127.0.0.1 after 100 tries");
}

/// Polls `ready` every 50 ms until it returns true; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "{what} was not ready after {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (and reaped) when dropped, with its log file for error messages.
#[derive(Debug)]
pub struct ChildGuard {
    child: std::process::Child,
    /// Where the child's stdout and stderr go.
    pub log: PathBuf,
}

impl ChildGuard {
    /// Spawns `command` with stdout and stderr appended to `log`.
    pub fn spawn(mut command: std::process::Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        command.stdout(out).stderr(err).stdin(std::process::Stdio::null());
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        Self { child, log }
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The log's contents, for assertion messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
