//! First start and every start: the local CA exists, issuers are loaded, an admin token exists.

use std::collections::BTreeMap;

use ck_acme::SettingsOrigin;
use ck_domain::{IssuerId, Restriction, Scopes};
use ck_pki::CaMaterial;
use ck_store::{IssuerRecord, Store};

use crate::access::auth::{TokenVerifier, mint_token};
use crate::access::tokens::{load_credentials, token_record};
use crate::issuers::{acme_settings, issuer_from_record};
use crate::{ControlPlane, ServerConfig, ServiceError, now};

/// The admin token when bootstrap created (or reset) it: the only moment its plain text exists.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Prepares the store and returns the control plane, plus the admin token if one was created.
pub async fn bootstrap(
    store: Store,
    config: ServerConfig,
    reset_admin_token: bool,
) -> Result<(ControlPlane, Option<AdminToken>), ServiceError> {
    let mut records = store.issuers().await?;
    if !records.iter().any(|r| r.id == IssuerId::local().as_str()) {
        let ca_config = config.local_ca.clone();
        let created_at = now();
        // RSA CA keys take seconds to generate: keep them off the async workers.
        let material = tokio::task::spawn_blocking(move || CaMaterial::create(&ca_config, created_at))
            .await
            .map_err(|e| ServiceError::Unavailable(e.to_string()))?
            .map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        let record = IssuerRecord {
            id: IssuerId::local().to_string(),
            kind: "local".to_owned(),
            root_cert_pem: Some(material.root_cert_pem.clone()),
            root_key_pem: Some(material.root_key.expose().to_owned()),
            intermediate_cert_pem: Some(material.intermediate_cert_pem.clone()),
            intermediate_key_pem: Some(material.intermediate_key.expose().to_owned()),
            settings: None,
            account_credentials: None,
            account_url: None,
            health: None,
            created_at,
        };
        // Another node may have won the race; either way the stored CA is the one to load.
        if store.insert_issuer_if_absent(&record).await? {
            tracing::info!(issuer = "local", key_type = %config.local_ca.key_type, "created the local private CA (root + intermediate, stored in the database)");
        }
        records = store.issuers().await?;
    }
    // Issuers of the config file: the file wins over what an earlier start stored.
    for (id, settings) in &config.acme_issuers {
        let _: IssuerId = id
            .parse()
            .map_err(|e| ServiceError::Invalid(format!("config file issuer '{id}': {e}")))?;
        acme_settings(settings, SettingsOrigin::ConfigFile, &config)
            .map_err(|e| ServiceError::Invalid(format!("config file issuer '{id}': {}", e.message)))?;
        if store
            .upsert_issuer_settings(id, "acme", &settings.to_string(), now())
            .await?
        {
            tracing::info!(issuer = %id, "stored the ACME issuer settings from the config file");
        }
    }
    if !config.acme_issuers.is_empty() {
        records = store.issuers().await?;
    }
    let mut issuers = BTreeMap::new();
    for record in &records {
        if let Some(issuer) = issuer_from_record(record, &config)? {
            issuers.insert(issuer.0, issuer.1);
        }
    }

    let tokens = store.tokens().await?;
    let mut created = None;
    if reset_admin_token || !tokens.iter().any(|t| t.name == "admin" && t.revoked_at.is_none()) {
        let minted = mint_token().map_err(ServiceError::Unavailable)?;
        let record = token_record(
            "admin",
            &minted,
            Scopes::operator(),
            &Restriction::default(),
            None,
            "bootstrap",
            now(),
        );
        store.replace_token(&record).await?;
        created = Some(AdminToken(minted.token));
    }
    let verifier = TokenVerifier::default();
    verifier.replace_all(load_credentials(&store).await?);
    let control_plane = ControlPlane::new(store, config, issuers, verifier);
    Ok((control_plane, created))
}
