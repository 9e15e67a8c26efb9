//! Runs the listeners ACME challenges need (http-01 on port 80, tls-alpn-01 on port 443 by
//! default), following the issuers: adding an issuer at run time starts its listener.
//!
//! These listeners are public on purpose (the CA must reach them), and serve nothing but the
//! answers of pending challenges.

use std::collections::BTreeMap;

use ck_server::{ChallengeListener, ControlPlane};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub(crate) fn spawn(control_plane: &ControlPlane, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    let mut wanted = control_plane.issuers.challenge_listeners();
    let responder = control_plane.issuers.challenge_responder();
    tokio::spawn(async move {
        let mut running: BTreeMap<ChallengeListener, JoinHandle<()>> = BTreeMap::new();
        loop {
            let set = wanted.borrow_and_update().clone();
            for listener in set {
                if running.contains_key(&listener) {
                    continue;
                }
                let (kind, addr) = match listener {
                    ChallengeListener::Http01(addr) => ("http-01", addr),
                    ChallengeListener::TlsAlpn01(addr) => ("tls-alpn-01", addr),
                };
                let socket = match tokio::net::TcpListener::bind(addr).await {
                    Ok(socket) => socket,
                    Err(error) => {
                        tracing::error!(%addr, %error, challenge = kind,
                            "cannot listen for ACME challenges: {kind} orders will fail until this is fixed \
                             (free the port, run with the right to bind it, or set the issuer's listen address)");
                        continue;
                    }
                };
                tracing::info!(%addr, challenge = kind, "answering ACME challenges");
                let responder = responder.clone();
                let task = match listener {
                    ChallengeListener::Http01(_) => tokio::spawn(async move {
                        if let Err(error) = axum::serve(socket, ck_api::acme_challenge_router(responder)).await {
                            tracing::error!(%addr, %error, "http-01 listener stopped");
                        }
                    }),
                    ChallengeListener::TlsAlpn01(_) => tokio::spawn(ck_acme::serve_tls_alpn01(socket, responder)),
                };
                running.insert(listener, task);
            }
            tokio::select! {
                changed = wanted.changed() => if changed.is_err() { break },
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        for (_, task) in running {
            task.abort();
        }
    })
}
