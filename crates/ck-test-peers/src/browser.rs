//! A real headless Chromium for UI tests, driven over WebDriver: chromedriver (Debian
//! `chromium-driver`) on a free 127.0.0.1 port, Chromium (Debian `chromium`) started by it per
//! session. Tests connect with `fantoccini::ClientBuilder` to [`ChromeDriver::url`] with
//! [`ChromeDriver::capabilities`].
//!
//! chromedriver runs with `--port=<free port> --log-path=<its temp dir>/chromedriver.log` and,
//! on purpose, without `--allowed-ips`: chromedriver 156 then listens on 127.0.0.1 and ::1 only,
//! whereas any `--allowed-ips` (even `127.0.0.1`, even empty) makes it listen on every
//! interface and merely refuse other addresses after accepting them. It gets its own `HOME`
//! (and XDG config and cache dirs) in its temporary directory, which Chromium inherits: crash
//! reports, the NSS database and caches go there instead of the real home, and every Chromium
//! process that outlives its session names that directory, so Drop can find and kill it.
//!
//! The Chromium flags of [`ChromeDriver::capabilities`], and why:
//! - `--headless=new`: the real browser without a display (the old headless mode is a separate,
//!   different implementation);
//! - `--no-sandbox`: the sandbox cannot start as root or in most containers;
//! - `--disable-gpu`: there is no GPU; software rendering is what the screenshots show;
//! - `--disable-dev-shm-usage`: container `/dev/shm` is often tiny and Chromium crashes when it
//!   fills (Debian's launcher tries to decide this itself, and its check breaks when `findmnt`
//!   prints two lines);
//! - `--disable-quic --no-first-run --disable-background-networking --disable-component-update
//!   --disable-sync`: no connection of its own to Google (component updates, field trials,
//!   sync) and no QUIC, so that a test sees only the page's own HTTP traffic;
//! - `--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost`: whatever
//!   still tries a host name gets "not found" without a DNS query (this machine's resolver is
//!   not on loopback, so a lookup would leave it); pages under test use 127.0.0.1 or localhost;
//! - `--user-data-dir=<fresh dir>`: a new profile per session, inside the driver's temporary
//!   directory, so no state leaks between tests and stray processes can be found by it;
//! - `--window-size=<w>,<h>`: the window the test asked for. It is not the viewport (headless
//!   Chromium keeps windows at least 500 px wide and takes ~143 px of their height for browser
//!   UI it pretends to draw), so the capabilities also set `mobileEmulation.deviceMetrics` to
//!   exactly `<w>`×`<h>` at pixel ratio 1: that is the viewport pages and screenshots get.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::{ChildGuard, free_port, peer_or_skip};

/// How long chromedriver gets to answer `/status` with `"ready": true`; it takes well under a
/// second on a quiet machine, a parallel `cargo test` on two cores can take many times that.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A free port can be taken by someone else between [`free_port`] and chromedriver's bind.
const START_ATTEMPTS: usize = 3;

/// The Debian packages that provide `chromium` and `chromedriver`, for "install this" messages.
const PACKAGES: &str = "chromium chromium-driver";

/// chromedriver on 127.0.0.1 with its own temporary directory (log, browser profiles); killed
/// when dropped, together with any Chromium it left running.
#[derive(Debug)]
pub struct ChromeDriver {
    // Field order matters: chromedriver is reaped before its directory is removed (Drop has
    // killed it and its browsers by then, see below).
    driver: ChildGuard,
    port: u16,
    chromium: PathBuf,
    /// Numbers the profile directories handed out by [`Self::capabilities`].
    profiles: AtomicUsize,
    dir: tempfile::TempDir,
}

impl ChromeDriver {
    /// Starts chromedriver and waits until it is ready for sessions. Returns `None` after a
    /// "SKIPPED" line when chromium or chromedriver is not installed and peers are not required;
    /// panics naming the Debian packages when they are.
    pub fn start(test: &str) -> Option<ChromeDriver> {
        let chromedriver = peer_or_skip("chromedriver", PACKAGES, test)?;
        let chromium = peer_or_skip("chromium", PACKAGES, test)?;
        let dir = tempfile::Builder::new().prefix("ck-chrome-").tempdir().unwrap();
        let log = dir.path().join("chromedriver.log");
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let mut command = Command::new(&chromedriver);
            command
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .current_dir(dir.path())
                // Chromium writes outside its profile too: crash reports under
                // ~/.config/chromium, dconf and other caches. A home of its own keeps that out of
                // the real one, and puts our directory on the command line of the crash
                // handlers, which detach from the browser: Drop finds and kills them by it.
                .env("HOME", dir.path())
                .env("XDG_CONFIG_HOME", dir.path().join(".config"))
                .env("XDG_CACHE_HOME", dir.path().join(".cache"));
            // chromedriver writes its banner to stdout and its log to --log-path: keep both.
            let mut driver = ChildGuard::spawn(command, dir.path().join("chromedriver.out"));
            if wait_until_ready(&mut driver, port) {
                return Some(ChromeDriver {
                    driver,
                    port,
                    chromium,
                    profiles: AtomicUsize::new(0),
                    dir,
                });
            }
            last_log = format!(
                "{}{}",
                driver.log_text(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            drop(driver);
            let lost_port = last_log.contains("Address already in use") || last_log.contains("port not available");
            assert!(
                lost_port,
                "{test}: chromedriver did not become ready on 127.0.0.1:{port}:\n{last_log}"
            );
        }
        panic!("{test}: chromedriver found its port taken {START_ATTEMPTS} times:\n{last_log}");
    }

    /// The WebDriver URL for `fantoccini::ClientBuilder::connect`, e.g. `http://127.0.0.1:9515`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// W3C capabilities for a headless Chromium whose viewport is exactly `width`×`height` CSS
    /// pixels at device pixel ratio 1 (so screenshots are that size too), as a desktop browser:
    /// no touch, `<meta name="viewport">` ignored. It makes no outside connection of its own and
    /// gets a fresh profile directory per call (one per session). The module documentation
    /// explains each flag. Callers may add capabilities (e.g. `acceptInsecureCerts`) to the map
    /// before connecting.
    pub fn capabilities(&self, width: u32, height: u32) -> serde_json::Map<String, serde_json::Value> {
        self.capabilities_for(width, height, false)
    }

    /// Like [`Self::capabilities`], but as a phone: touch events, `<meta name="viewport">`
    /// honoured, overlay scrollbars (still device pixel ratio 1, user agent unchanged).
    pub fn phone_capabilities(&self, width: u32, height: u32) -> serde_json::Map<String, serde_json::Value> {
        self.capabilities_for(width, height, true)
    }

    fn capabilities_for(&self, width: u32, height: u32, phone: bool) -> serde_json::Map<String, serde_json::Value> {
        let n = self.profiles.fetch_add(1, Ordering::Relaxed);
        let profile = self.dir.path().join(format!("profile-{n}"));
        std::fs::create_dir(&profile).unwrap();
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost".to_owned(),
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={width},{height}"),
        ];
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": args,
                // The window size alone does not give the viewport: headless Chromium keeps
                // windows at least 500 px wide and takes ~143 px of the height for the browser
                // UI it pretends to have. Device metrics set the viewport itself.
                "mobileEmulation": {
                    "deviceMetrics": {
                        "width": width,
                        "height": height,
                        "pixelRatio": 1,
                        "mobile": phone,
                        "touch": phone,
                    },
                },
            },
        });
        match capabilities {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("a JSON object literal"),
        }
    }

    /// chromedriver's log (Chromium's start-up failures end up here), for assertion messages.
    pub fn log_text(&self) -> String {
        let out = self.driver.log_text();
        let log = std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        format!("{out}{log}")
    }

    /// The driver's working directory (log, browser profiles).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // chromedriver quits the browser when a session is deleted, but a test that panics
        // before `close()` leaves the session open, and a killed chromedriver does not take its
        // browsers along. The browser, its crash handlers (which detach from it) and
        // chromedriver name our directory on their command lines (profile, crash database, log
        // path): kill them all at once. The renderers, which do not, exit with their browser.
        // The ChildGuard field then reaps chromedriver.
        kill_processes_mentioning(self.dir.path());
    }
}

/// Where UI screenshots go: `<target dir>/ui-screenshots`, created. The target dir is
/// `CARGO_TARGET_DIR` when set (relative to the workspace root if relative), else the
/// workspace's `target`. The workspace root is two levels above this crate's manifest.
pub fn screenshot_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let workspace = workspace.canonicalize().unwrap_or(workspace);
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace.join(dir),
        _ => workspace.join("target"),
    };
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// Waits until chromedriver answers `/status` with `"ready": true` while still running (true),
/// or until it exits or the start timeout passes (false).
fn wait_until_ready(driver: &mut ChildGuard, port: u16) -> bool {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if !driver.is_running() {
            return false;
        }
        if status_ready(port) {
            // Still running: the answer is this chromedriver's, not one on a port it lost.
            return driver.is_running();
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /status` by hand (reqwest here has no blocking client, and this needs no runtime):
/// whether the answer's `value.ready` is true.
fn status_ready(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    // chromedriver states Content-Length and may keep the connection open: stop reading once
    // the body is complete.
    let json =
        |data: &[u8]| complete_body(data).and_then(|body| serde_json::from_slice::<serde_json::Value>(body).ok());
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    while json(&data).is_none() {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    json(&data).is_some_and(|json| json["value"]["ready"] == true)
}

/// The body of a `200` answer in `data` once all of it (by `Content-Length`, else up to now)
/// has arrived.
fn complete_body(data: &[u8]) -> Option<&[u8]> {
    let end = data.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&data[..end]).ok()?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let body = &data[end + 4..];
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    match length {
        Some(length) if body.len() >= length => Some(&body[..length]),
        Some(_) => None,
        None => Some(body),
    }
}

/// Best effort: SIGKILLs every process (but this one) with an argument containing `dir`, found
/// through /proc. Exact substring matching, unlike `pkill -f`, which takes a regex.
fn kill_processes_mentioning(dir: &Path) {
    let needle = dir.as_os_str().as_encoded_bytes();
    let own = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let pids: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()) && *pid != own)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|&b| b == 0).any(|arg| contains(arg, needle)))
        })
        .collect();
    if !pids.is_empty() {
        // std has no kill(2) for arbitrary pids; kill(1) is in every Debian (procps, util-linux).
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_body_waits_for_content_length() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length:11\r\nContent-Type:application/json\r\n\r\n";
        let mut data = head.to_vec();
        data.extend_from_slice(b"{\"value\":");
        assert_eq!(complete_body(&data), None);
        data.extend_from_slice(b"1}");
        assert_eq!(complete_body(&data), Some(&b"{\"value\":1}"[..]));
        assert_eq!(
            complete_body(b"HTTP/1.1 500 Internal\r\nContent-Length:2\r\n\r\n{}"),
            None
        );
    }

    #[test]
    fn capabilities_name_the_window_and_a_fresh_profile_each_time() {
        let Some(driver) = ChromeDriver::start("capabilities_name_the_window_and_a_fresh_profile_each_time") else {
            return;
        };
        let first = driver.capabilities(1280, 800);
        let second = driver.capabilities(390, 844);
        let args = |caps: &serde_json::Map<String, serde_json::Value>| -> Vec<String> {
            caps["goog:chromeOptions"]["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|arg| arg.as_str().unwrap().to_owned())
                .collect()
        };
        assert!(args(&first).contains(&"--window-size=1280,800".to_owned()));
        assert!(args(&second).contains(&"--window-size=390,844".to_owned()));
        let profile = |caps| {
            args(caps)
                .into_iter()
                .find_map(|arg| arg.strip_prefix("--user-data-dir=").map(PathBuf::from))
                .unwrap()
        };
        assert_ne!(profile(&first), profile(&second));
        assert!(profile(&first).starts_with(driver.dir()) && profile(&first).is_dir());
        assert!(driver.url().starts_with("http://127.0.0.1:"));
    }
}
