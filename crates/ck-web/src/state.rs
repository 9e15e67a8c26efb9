//! What the handlers take as axum `State`: the services of the control plane they use, each a
//! sub-state of [`WebState`], and the cookie policy. A handler's signature says which
//! capability it touches.

use axum::extract::FromRef;
use ck_server::{Access, Agents, Certificates, ControlPlane, Issuers, Notifications};

/// Whether cookies get `Secure` (the server speaks HTTPS, itself or behind a TLS proxy).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SecureCookies(pub(crate) bool);

/// The router's state.
#[derive(Clone, FromRef)]
pub(crate) struct WebState {
    certificates: Certificates,
    issuers: Issuers,
    access: Access,
    agents: Agents,
    notifications: Notifications,
    cookies: SecureCookies,
}

impl WebState {
    pub(crate) fn new(plane: &ControlPlane, secure_cookies: bool) -> Self {
        Self {
            certificates: plane.certificates.clone(),
            issuers: plane.issuers.clone(),
            access: plane.access.clone(),
            agents: plane.agents.clone(),
            notifications: plane.notifications.clone(),
            cookies: SecureCookies(secure_cookies),
        }
    }
}
