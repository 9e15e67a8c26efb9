//! `certkeeper serve`: prepare the data directory, connect the store, bootstrap, and serve.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use ck_server::{ControlPlane, bootstrap, spawn_background_loops};
use ck_store::Backend;
use tokio::task::JoinHandle;

use crate::config::{LogFormat, ServeArgs, Settings};
use crate::files::{ensure_private_dir, write_atomic};

/// A started server: its address and the handles to stop it.
pub struct Running {
    /// The address the listener is bound to.
    pub addr: SocketAddr,
    control_plane: ControlPlane,
    shutdown: tokio::sync::watch::Sender<bool>,
    http: JoinHandle<std::io::Result<()>>,
    loops: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests and job batches finish, closes the store.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.http.await;
        for task in self.loops {
            let _ = task.await;
        }
        self.control_plane.store().close().await;
    }
}

/// `certkeeper serve`: loads the settings, starts, and serves until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(&args)?;
    init_logging_at(settings.log_format, args.log_level.as_deref());
    let running = start(settings, args.reset_admin_token).await?;
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

/// Starts everything and returns once the listener is bound.
pub async fn start(mut settings: Settings, reset_admin_token: bool) -> anyhow::Result<Running> {
    let data_dir = settings.data_dir.clone();
    ensure_private_dir(&data_dir)?;
    if settings.server.node_id.is_empty() {
        settings.server.node_id = node_id(&data_dir)?;
    }
    if settings.database.backend() == Backend::Sqlite {
        precreate_private(&data_dir.join("certkeeper.db"))?;
    }
    let store = crate::secrets::open_store(&settings.database, &settings.kek).await?;
    tracing::info!(database = %settings.database, backend = store.backend().as_str(), "database ready");

    // Behind a TLS-terminating proxy the listener speaks plain HTTP but browsers use https:
    // the public URL tells, and the UI cookie must then be Secure too.
    let public_https = settings
        .server
        .public_base_url
        .as_deref()
        .is_some_and(|url| url.starts_with("https://"));
    let (control_plane, admin_token) = bootstrap(store, settings.server, reset_admin_token).await?;
    let token_path = data_dir.join("admin.token");
    match admin_token {
        Some(token) => {
            write_atomic(&token_path, format!("{}\n", token.0).as_bytes(), 0o600)?;
            tracing::info!(path = %token_path.display(), "admin token written (mode 0600)");
        }
        None if token_path.exists() => tracing::info!(path = %token_path.display(), "admin token unchanged"),
        // Normal on the second and later nodes of a cluster: the first one wrote it.
        None => tracing::info!(
            path = %token_path.display(),
            "no admin token file here: it was written where the database was first set up (another node, or a \
             deleted file); only its hash is stored, so restart with --reset-admin-token for a new one"
        ),
    }
    for issuer in control_plane.issuers.issuers().await? {
        match (&issuer.directory, issuer.not_after) {
            (Some(directory), _) => tracing::info!(issuer = %issuer.id, %directory, "ACME issuer ready"),
            (None, Some(not_after)) => tracing::info!(issuer = %issuer.id, %not_after,
                "issuer ready; its root CA is at GET /api/v1/issuers/{}/ca.pem", issuer.id),
            (None, None) => {}
        }
    }

    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {} (is another server running?)", settings.listen))?;
    let addr = listener.local_addr()?;
    let mut loops = spawn_background_loops(&control_plane, Some(addr.to_string()), shutdown_rx.clone()).await?;
    loops.push(crate::challenge_listeners::spawn(&control_plane, shutdown_rx.clone()));
    let tls = match &settings.tls {
        Some(tls) => {
            let listener_tls =
                ListenerTls::load(tls, settings.tls_client_ca.as_deref(), &control_plane, &data_dir).await?;
            let (config_tx, config_rx) = tokio::sync::watch::channel(listener_tls.config()?);
            if let crate::config::TlsSettings::Auto { names, validity } = tls {
                loops.push(tokio::spawn(renew_listener_certificate(
                    listener_tls,
                    names.clone(),
                    *validity,
                    control_plane.clone(),
                    config_tx,
                    shutdown_rx.clone(),
                )));
            }
            Some(config_rx)
        }
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    write_atomic(
        &data_dir.join("server.url"),
        format!("{scheme}://{addr}\n").as_bytes(),
        0o600,
    )?;
    tracing::info!(%addr, data_dir = %data_dir.display(), "certkeeper is serving on {scheme}://{addr}");

    // The web UI sits beside the API; its cookie is Secure whenever the listener or the
    // public URL speaks TLS.
    let app = ck_api::router(control_plane.clone())
        .nest(
            "/ui",
            ck_web::router(control_plane.clone(), tls.is_some() || public_https),
        )
        .route("/ui/", axum::routing::get(ck_web::redirect_to_root));
    let limits = settings.listener;
    let http = tokio::spawn(crate::tls_listener::serve(listener, tls, app, limits, shutdown_rx));
    Ok(Running {
        addr,
        control_plane,
        shutdown,
        http,
        loops,
    })
}

/// What the TLS listener serves: its certificate and key, and the CAs it accepts client
/// certificates from. With `auto_names` the local CA issues the certificate at start (and the
/// renewal task again at two thirds of its life); the root goes to `<data-dir>/ca.pem`.
struct ListenerTls {
    chain_pem: String,
    key_pem: String,
    client_anchors: String,
    not_after: Option<time::OffsetDateTime>,
}

impl ListenerTls {
    async fn load(
        tls: &crate::config::TlsSettings,
        client_ca: Option<&Path>,
        control_plane: &ck_server::ControlPlane,
        data_dir: &Path,
    ) -> anyhow::Result<Self> {
        let root_pem = control_plane
            .issuers
            .issuer("local")
            .await?
            .ca_pem
            .context("the local CA has no root certificate")?;
        let mut client_anchors = control_plane.pki.local_trust_anchors()?;
        if let Some(path) = client_ca {
            let extra = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the client CA file {}", path.display()))?;
            client_anchors.push_str(&extra);
        }
        let mut listener_tls = match tls {
            crate::config::TlsSettings::Files { cert_file, key_file } => Self {
                chain_pem: std::fs::read_to_string(cert_file)
                    .with_context(|| format!("cannot read {}", cert_file.display()))?,
                key_pem: std::fs::read_to_string(key_file)
                    .with_context(|| format!("cannot read {}", key_file.display()))?,
                client_anchors,
                not_after: None,
            },
            crate::config::TlsSettings::Auto { .. } => Self {
                chain_pem: String::new(),
                key_pem: String::new(),
                client_anchors,
                not_after: None,
            },
        };
        if let crate::config::TlsSettings::Auto { names, validity } = tls {
            listener_tls.issue(control_plane, names, *validity)?;
        }
        write_atomic(&data_dir.join("ca.pem"), root_pem.as_bytes(), 0o644)?;
        Ok(listener_tls)
    }

    fn issue(
        &mut self,
        control_plane: &ck_server::ControlPlane,
        names: &[String],
        validity: time::Duration,
    ) -> anyhow::Result<()> {
        let issued = control_plane.pki.listener_certificate(names, validity)?;
        tracing::info!(names = ?names, not_after = %issued.not_after, "issued the listener's TLS certificate from the local CA");
        self.chain_pem = issued.chain_pem;
        self.key_pem = issued.key_pem.expose().to_owned();
        self.not_after = Some(issued.not_after);
        Ok(())
    }

    fn config(&self) -> anyhow::Result<std::sync::Arc<rustls::ServerConfig>> {
        crate::tls_listener::server_config(&self.chain_pem, &self.key_pem, &self.client_anchors)
    }
}

/// Renews the `auto_names` certificate when two thirds of its life have passed, and hands the
/// new configuration to the listener; a failed attempt is retried a minute later.
async fn renew_listener_certificate(
    mut listener_tls: ListenerTls,
    names: Vec<String>,
    validity: time::Duration,
    control_plane: ck_server::ControlPlane,
    config_tx: tokio::sync::watch::Sender<std::sync::Arc<rustls::ServerConfig>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let renew_at = listener_tls
            .not_after
            .map_or_else(ck_server::now, |not_after| not_after - validity / 3);
        let wait = (renew_at - ck_server::now()).max(time::Duration::ZERO);
        let wait = std::time::Duration::try_from(wait).unwrap_or(std::time::Duration::from_secs(60));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return,
        }
        match listener_tls
            .issue(&control_plane, &names, validity)
            .and_then(|()| listener_tls.config())
        {
            Ok(config) => {
                let _ = config_tx.send(config);
            }
            Err(error) => {
                tracing::warn!(error = %error, "renewing the listener's TLS certificate failed; retrying in a minute");
                listener_tls.not_after = Some(ck_server::now() + time::Duration::minutes(1) + validity / 3);
            }
        }
    }
}

/// The node id, generated once and kept in the data directory so a restarted node recognises
/// its own unfinished jobs.
fn node_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("node.id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let id = format!("node-{}", uuid::Uuid::new_v4().simple());
    write_atomic(&path, format!("{id}\n").as_bytes(), 0o600)?;
    Ok(id)
}

/// Creates the SQLite file with mode 0600 before SQLite does (it would use the umask); the WAL
/// and shared-memory files inherit the database file's mode.
fn precreate_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if !path.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    Ok(())
}

/// Logging as text to stderr, at the level CERTKEEPER_LOG says (else info).
pub fn init_logging() {
    init_logging_at(LogFormat::Text, None);
}

/// Logging at `level` when given, else as CERTKEEPER_LOG says, else at info.
fn init_logging_at(format: LogFormat, level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_env("CERTKEEPER_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
    };
    use std::io::IsTerminal;
    // Colours only for a terminal: log files and journald get plain text.
    let ansi = std::io::stderr().is_terminal();
    match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .json()
            .init(),
        LogFormat::Logfmt => tracing_logfmt::builder()
            .subscriber_builder()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
}

/// Returns on SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
