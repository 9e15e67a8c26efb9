//! nginx and HAProxy started as plain foreground processes on 127.0.0.1, serving one TLS
//! certificate from files the test controls, for deployment tests.
//!
//! Both keep every runtime file (pid, logs, temp paths, admin socket) in their own temp dir and
//! never touch /var/log or /run.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{ChildGuard, free_port, peer_or_skip, wait_until};

fn can_connect(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn running_as_root() -> bool {
    // Without libc: the owner of /proc/self is the effective user.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A running nginx serving `cert`/`key` (static `ssl_certificate`) on `127.0.0.1:port`.
pub struct Nginx {
    guard: Option<ChildGuard>,
    /// The nginx program.
    pub binary: PathBuf,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its error log (pass it with `-e` to `nginx -t` / `-s reload`).
    pub error_log: PathBuf,
    /// The TLS port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with `ssl_certificate cert; ssl_certificate_key key;`, or returns `None` (after
    /// a loud skip message) when nginx is not installed and peers are not required.
    pub fn start(cert: &Path, key: &Path) -> Option<Self> {
        let binary = peer_or_skip("nginx", "nginx", "nginx fixture")?;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let port = free_port();
        let config = d.join("nginx.conf");
        let error_log = d.join("error.log");
        // Workers must read 0600 keys written by root.
        let user = if running_as_root() { "user root root;" } else { "" };
        let text = format!(
            "{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name _;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ return 200 \"ok\\n\"; }}
    }}
}}
",
            d = d.display(),
            cert = cert.display(),
            key = key.display(),
        );
        std::fs::write(&config, text).unwrap();
        let mut command = std::process::Command::new(&binary);
        command
            .arg("-c")
            .arg(&config)
            .arg("-e")
            .arg(&error_log)
            .args(["-g", "daemon off;"]);
        let mut guard = ChildGuard::spawn(command, d.join("stdout.log"));
        wait_until("nginx", Duration::from_secs(10), || {
            assert!(
                guard.is_running(),
                "nginx exited: {}\n{}",
                guard.log_text(),
                std::fs::read_to_string(&error_log).unwrap_or_default()
            );
            can_connect(port) && d.join("nginx.pid").exists()
        });
        Some(Self {
            guard: Some(guard),
            binary,
            config,
            error_log,
            port,
            dir,
        })
    }

    /// The master process id (stays the same across reloads).
    pub fn master_pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.path().join("nginx.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// The error log, for assertion messages.
    pub fn error_log_text(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // A SIGKILLed master would leave its workers behind; `-s stop` ends them all.
        let _ = std::process::Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .arg("-e")
            .arg(&self.error_log)
            .args(["-s", "stop"])
            .stderr(std::process::Stdio::null())
            .status();
        if let Some(mut guard) = self.guard.take() {
            for _ in 0..100 {
                if !guard.is_running() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A running HAProxy terminating TLS on `127.0.0.1:port` with `crt <pem>` and an admin socket.
pub struct Haproxy {
    _guard: ChildGuard,
    /// The haproxy program.
    pub binary: PathBuf,
    /// Its configuration file.
    pub config: PathBuf,
    /// The admin socket (`level admin`), for the runtime API.
    pub admin_socket: PathBuf,
    /// The TLS port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts HAProxy with `bind 127.0.0.1:PORT ssl crt <pem>` (pem = full chain + key), or
    /// returns `None` (after a loud skip message) when haproxy is missing and peers are optional.
    pub fn start(pem: &Path) -> Option<Self> {
        let binary = peer_or_skip("haproxy", "haproxy", "haproxy fixture")?;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let port = free_port();
        let config = d.join("haproxy.cfg");
        let admin_socket = d.join("admin.sock");
        let text = format!(
            "global
    stats socket {sock} mode 600 level admin
    maxconn 64
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe_tls
    bind 127.0.0.1:{port} ssl crt {pem}
    http-request return status 200 content-type text/plain string ok
",
            sock = admin_socket.display(),
            pem = pem.display(),
        );
        std::fs::write(&config, text).unwrap();
        let mut command = std::process::Command::new(&binary);
        command.arg("-f").arg(&config).arg("-db");
        let mut guard = ChildGuard::spawn(command, d.join("haproxy.log"));
        wait_until("haproxy", Duration::from_secs(10), || {
            assert!(guard.is_running(), "haproxy exited: {}", guard.log_text());
            can_connect(port) && admin_socket.exists()
        });
        Some(Self {
            _guard: guard,
            binary,
            config,
            admin_socket,
            port,
            _dir: dir,
        })
    }

    /// Sends one runtime API command and returns the answer.
    pub fn admin(&self, command: &str) -> String {
        let mut stream = UnixStream::connect(&self.admin_socket).unwrap();
        stream.write_all(format!("{command}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    /// The process id, from `show info` (it must not change with runtime API updates).
    pub fn pid(&self) -> u32 {
        self.admin("show info")
            .lines()
            .find_map(|l| l.strip_prefix("Pid: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}
