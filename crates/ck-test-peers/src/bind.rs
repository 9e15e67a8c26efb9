//! BIND9 (`named`) fixture: a real authoritative server on 127.0.0.1 that accepts RFC 2136
//! updates signed with a TSIG key, for dns-01 tests.
//!
//! Each zone has SOA, NS `ns1`, `ns1` A, apex A and wildcard A records (all 127.0.0.1, TTL 60),
//! and key `acme-key` may update TXT and CNAME records anywhere in it. Recursion, IPv6, NOTIFY
//! and rndc are off: the server only ever talks to its loopback clients.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{ChildGuard, free_port, peer_or_skip};

/// The TSIG key's name, as BIND's `tsig-keygen` writes it into the key file.
const KEY_NAME: &str = "acme-key";

/// Tries with a fresh port when `named` cannot bind: another process may take a port between
/// `free_port()` and named's bind.
const START_ATTEMPTS: usize = 3;

/// A running `named`, stopped when dropped.
#[derive(Debug)]
pub struct Bind {
    // Field order matters: the server must stop before its directory is removed.
    named: ChildGuard,
    addr: SocketAddr,
    secret: String,
    key_file: PathBuf,
    dig: PathBuf,
    nsupdate: PathBuf,
    dir: tempfile::TempDir,
}

impl Bind {
    /// Starts `named` serving `zones` (e.g. `["zone-a.test"]`), or returns `None` after a loud
    /// "SKIPPED" line when BIND is not installed locally. Panics with the Debian package to
    /// install when `CERTKEEPER_REQUIRE_PEERS` or `CI` is set.
    pub fn start(zones: &[&str]) -> Option<Bind> {
        let test = "a BIND-backed test";
        let named = peer_or_skip("named", "bind9", test)?;
        let tsig_keygen = peer_or_skip("tsig-keygen", "bind9-utils", test)?;
        let dig = peer_or_skip("dig", "bind9-dnsutils", test)?;
        let nsupdate = peer_or_skip("nsupdate", "bind9-dnsutils", test)?;
        assert!(!zones.is_empty(), "Bind::start needs at least one zone");

        let dir = tempfile::Builder::new().prefix("ck-bind-").tempdir().unwrap();
        let key_file = dir.path().join("tsig.key");
        let key_text = run(Command::new(&tsig_keygen).args(["-a", "hmac-sha256", KEY_NAME]));
        std::fs::write(&key_file, &key_text).unwrap();
        let secret = secret_of(&key_text);
        for zone in zones {
            std::fs::write(zone_file(dir.path(), zone), zone_text(zone)).unwrap();
        }
        let as_root = is_root();

        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let conf = dir.path().join("named.conf");
            std::fs::write(&conf, named_conf(dir.path(), port, &key_file, zones)).unwrap();
            if as_root {
                make_usable_by_bind_user(dir.path());
            }
            let mut command = Command::new(&named);
            command.arg("-c").arg(&conf).args(["-4", "-f"]);
            if as_root {
                // named drops root after binding; it then needs the directory for its journals.
                command.args(["-u", "bind"]);
            }
            let mut guard = ChildGuard::spawn(command, dir.path().join("named.stdout"));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let ready = wait_for_zones(&mut guard, &dig, addr, zones);
            if ready {
                return Some(Bind {
                    named: guard,
                    addr,
                    secret,
                    key_file,
                    dig,
                    nsupdate,
                    dir,
                });
            }
            last_log = format!(
                "{}\n{}",
                guard.log_text(),
                std::fs::read_to_string(dir.path().join("named.log")).unwrap_or_default()
            );
        }
        panic!("named did not start after {START_ATTEMPTS} attempts; last output:\n{last_log}");
    }

    /// Where `named` listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TSIG key's name.
    pub fn tsig_key_name(&self) -> &str {
        KEY_NAME
    }

    /// The TSIG key's base64 secret.
    pub fn tsig_secret(&self) -> &str {
        &self.secret
    }

    /// The BIND key file (`key "acme-key" { algorithm hmac-sha256; secret "..."; };`).
    pub fn key_file(&self) -> PathBuf {
        self.key_file.clone()
    }

    /// The TXT values at `name`, read independently with `dig` (quotes removed).
    pub fn txt(&self, name: &str) -> Vec<String> {
        let output = run(Command::new(&self.dig)
            .args(["+short", "+time=2", "+tries=1", "-p"])
            .arg(self.addr.port().to_string())
            .arg(format!("@{}", self.addr.ip()))
            .args(["TXT", name]));
        let mut values: Vec<String> = output
            .lines()
            .map(|line| line.trim().trim_matches('"').to_owned())
            .filter(|line| !line.is_empty())
            .collect();
        values.sort();
        values
    }

    /// Runs the real `nsupdate` with this server's key: `script` is the body of the update
    /// (e.g. `update add name 60 CNAME target.`); `server` and `send` are added.
    pub fn nsupdate(&self, script: &str) {
        // The key goes in a file, not on the command line, so `ps` never shows it.
        let input = format!(
            "server {} {}\n{}\nsend\n",
            self.addr.ip(),
            self.addr.port(),
            script.trim_end()
        );
        let mut child = Command::new(&self.nsupdate)
            .arg("-k")
            .arg(&self.key_file)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "nsupdate failed ({}):\n{}{}\nscript:\n{input}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// named's own log (queries, updates, update-security), for assertion messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default() + &self.named.log_text()
    }
}

fn zone_file(dir: &Path, zone: &str) -> PathBuf {
    dir.join(format!("{zone}.zone"))
}

fn zone_text(zone: &str) -> String {
    format!(
        "$TTL 60\n\
         @   IN SOA ns1.{zone}. hostmaster.{zone}. ( 1 60 60 3600 60 )\n\
         \x20   IN NS  ns1.{zone}.\n\
         ns1 IN A   127.0.0.1\n\
         @   IN A   127.0.0.1\n\
         *   IN A   127.0.0.1\n"
    )
}

fn named_conf(dir_path: &Path, port: u16, key_file: &Path, zones: &[&str]) -> String {
    let dir = dir_path.display();
    let mut conf = format!(
        "options {{\n\
         \tdirectory \"{dir}\";\n\
         \tpid-file \"{dir}/named.pid\";\n\
         \tsession-keyfile \"{dir}/session.key\";\n\
         \tmanaged-keys-directory \"{dir}\";\n\
         \tlisten-on port {port} {{ 127.0.0.1; }};\n\
         \tlisten-on-v6 {{ none; }};\n\
         \trecursion no;\n\
         \tallow-query {{ 127.0.0.1; }};\n\
         \tallow-transfer {{ none; }};\n\
         \tdnssec-validation no;\n\
         \tnotify no;\n\
         }};\n\
         controls {{ }};\n\
         include \"{key}\";\n",
        key = key_file.display()
    );
    for zone in zones {
        conf.push_str(&format!(
            "zone \"{zone}\" {{\n\
             \ttype primary;\n\
             \tfile \"{file}\";\n\
             \tupdate-policy {{ grant {KEY_NAME} zonesub TXT; grant {KEY_NAME} zonesub CNAME; }};\n\
             }};\n",
            file = zone_file(dir_path, zone).display()
        ));
    }
    conf.push_str(&format!(
        "logging {{\n\
         \tchannel to_file {{ file \"{dir}/named.log\"; severity info; print-time yes; print-category yes; }};\n\
         \tcategory default {{ to_file; }};\n\
         \tcategory queries {{ to_file; }};\n\
         \tcategory update {{ to_file; }};\n\
         \tcategory update-security {{ to_file; }};\n\
         }};\n"
    ));
    conf
}

/// The `secret "...";` value of a `tsig-keygen` key file.
fn secret_of(key_text: &str) -> String {
    key_text
        .lines()
        .find_map(|line| {
            let line = line.trim();
            line.strip_prefix("secret")
                .map(|rest| rest.trim().trim_end_matches(';').trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("no secret in tsig-keygen output:\n{key_text}"))
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).trim() == "0"
}

/// tempdirs are 0700 and root-owned; named runs as `bind` after dropping root and must enter the
/// directory and write its journals there.
fn make_usable_by_bind_user(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    run(Command::new("chown").arg("-R").arg("bind:bind").arg(dir));
}

/// Waits until `named` answers the SOA of every zone; false if it exited or never answered.
fn wait_for_zones(named: &mut ChildGuard, dig: &Path, addr: SocketAddr, zones: &[&str]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if !named.is_running() {
            return false;
        }
        let all_served = zones.iter().all(|zone| {
            Command::new(dig)
                .args(["+short", "+time=1", "+tries=1", "-p"])
                .arg(addr.port().to_string())
                .arg(format!("@{}", addr.ip()))
                .args(["SOA", zone])
                .output()
                .is_ok_and(|out| out.status.success() && !out.stdout.is_empty())
        });
        if all_served {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Runs `command` to completion and returns its stdout; panics with its output on failure.
fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}
