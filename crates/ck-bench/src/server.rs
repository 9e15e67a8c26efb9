//! The server a benchmark measures: in this process (`certkeeper::serve::start` on settings made
//! here), or as a child process (`certkeeper-bench serve`, the same code as `certkeeper serve`)
//! whose CPU time in `/proc` is then its own.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use certkeeper::config::{ListenerLimits, LogFormat, Settings};
use certkeeper::secrets::KekSource;
use ck_server::ServerConfig;
use ck_store::DatabaseUrl;

/// The database named by a `--database` flag: `sqlite` (a file in `dir`) or a postgres:// URL.
pub(crate) fn database_url(dir: &Path, database: &str) -> anyhow::Result<DatabaseUrl> {
    match database {
        "sqlite" => Ok(DatabaseUrl::sqlite_file(&dir.join("certkeeper.db"))),
        url => url.parse().map_err(|e| anyhow::anyhow!("--database: {e}")),
    }
}

/// Settings of a server run in this process for a benchmark: a temporary data directory, a
/// free loopback port, `database` (`sqlite`: a file in `data_dir`, else a postgres:// URL) and
/// no per-token rate limit (a benchmark drives the API with one token as fast as it can).
/// Returns them with the engine's name.
pub(crate) fn in_process_settings(
    data_dir: &Path,
    database: &str,
    node_id: &str,
) -> anyhow::Result<(Settings, String)> {
    let database = database_url(data_dir, database)?;
    let backend = database.backend().as_str().to_owned();
    let settings = Settings {
        data_dir: data_dir.to_owned(),
        listen: "127.0.0.1:0".parse()?,
        database,
        log_format: LogFormat::Text,
        server: ServerConfig {
            token_rate_limit: None,
            ..ServerConfig::new(node_id.to_owned())
        },
        tls: None,
        tls_client_ca: None,
        kek: KekSource::File(data_dir.join("kek")),
        listener: ListenerLimits::default(),
    };
    Ok((settings, backend))
}

/// The server under test as a child process: this program's hidden `serve` command, which is
/// `certkeeper serve`. Stopped on drop (SIGTERM, then SIGKILL after 10 s).
pub(crate) struct ServerProcess {
    child: Child,
    pub(crate) pid: u32,
}

impl ServerProcess {
    /// Starts a server on `data_dir` (on a free loopback port, without a per-token rate limit)
    /// with `database` (default: SQLite in `data_dir`) and more `serve` flags.
    pub(crate) fn start(data_dir: &Path, database: Option<&str>, extra: &[String]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this program's path")?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            // The setup registers thousands of agents with the one admin token.
            .args(["--token-rate-limit", "0"]);
        if let Some(url) = database {
            command.args(["--database", url]);
        }
        command.args(extra);
        // Only the flags above configure it, whatever this shell exports.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("CERTKEEPER_") {
                command.env_remove(name);
            }
        }
        let child = command
            .env("CERTKEEPER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the server (certkeeper-bench serve)")?;
        let pid = child.id();
        Ok(Self { child, pid })
    }

    /// Waits (60 s at most) until `<data-dir>/server.url` names a server that answers `/health`;
    /// returns its URL.
    pub(crate) async fn wait_healthy(&mut self, data_dir: &Path) -> anyhow::Result<String> {
        let url_file = data_dir.join("server.url");
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("cannot build the HTTP client")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&url_file)
                && !text.trim().is_empty()
                && http
                    .get(format!("{}/health", text.trim()))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            {
                return Ok(text.trim().to_owned());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the server did not answer /health at the URL of {} within 60 s",
                    url_file.display()
                );
            }
            self.check_alive()?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the server as [`ServerProcess::wait_healthy`] does; returns its URL and the
    /// admin token it wrote.
    pub(crate) async fn wait_ready(&mut self, data_dir: &Path) -> anyhow::Result<(String, String)> {
        let url = self.wait_healthy(data_dir).await?;
        let token = std::fs::read_to_string(data_dir.join("admin.token")).context("cannot read the admin token")?;
        Ok((url, token.trim().to_owned()))
    }

    /// SIGKILL, and the exit collected.
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Fails if the server has exited.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("the server exited during start-up ({status}; its log is above)"),
            Err(error) => bail!("cannot check on the server process: {error}"),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
