//! An ACME issuer's account: registered once, restored from stored credentials afterwards.
//!
//! The credentials (account URL + P-256 key, as instant-acme serialises them) are a secret the
//! control plane stores; this module never logs them.

use std::sync::Arc;
use std::time::SystemTime;

use instant_acme::{Account, AccountCredentials, ExternalAccountKey, Key, NewAccount};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::chains::AccountSigner;
use crate::config::decode_hmac;
use crate::error::with_nonce_retry;
use crate::http::{AcmeHttpClient, RetryAfterSlot};
use crate::{AcmeFailure, AcmeIssuerConfig, ChallengeResponder};

/// A freshly registered (or re-keyed) account: store `credentials_json` and `account_url`.
pub struct RegisteredAccount {
    /// The issuer, ready for orders.
    pub issuer: AcmeIssuer,
    /// Serialised credentials, including the private key. Secret.
    pub credentials_json: String,
    /// The account's URL at the CA.
    pub account_url: String,
}

impl std::fmt::Debug for RegisteredAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredAccount")
            .field("account_url", &self.account_url)
            .finish_non_exhaustive()
    }
}

/// The outcome of a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountCheck {
    /// The directory answered and the account exists and is valid.
    pub healthy: bool,
    /// What was found, in one line.
    pub detail: String,
}

/// A ready account plus what its orders need: the settings and the challenge tables.
#[derive(Clone)]
pub struct AcmeIssuer {
    pub(crate) account: Account,
    pub(crate) config: Arc<AcmeIssuerConfig>,
    pub(crate) responder: ChallengeResponder,
    pub(crate) retry_after: RetryAfterSlot,
    pub(crate) dns: Option<Arc<crate::dns01::DnsSolver>>,
    /// Our own requests (alternate chains) and what the CA's responses announced.
    pub(crate) http: AcmeHttpClient,
    /// The account key for the requests instant-acme cannot make for us.
    pub(crate) signer: Option<Arc<AccountSigner>>,
}

impl std::fmt::Debug for AcmeIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeIssuer")
            .field("account", &self.account.id())
            .field("directory", &self.config.directory_url())
            .finish_non_exhaustive()
    }
}

fn http_client(config: &AcmeIssuerConfig, slot: &RetryAfterSlot) -> Result<AcmeHttpClient, AcmeFailure> {
    AcmeHttpClient::new(config.ca_bundle_pem.as_deref(), slot.clone())
}

impl AcmeIssuer {
    /// Registers a new account (agreeing to the CA's terms, with EAB when configured).
    pub async fn register(
        config: AcmeIssuerConfig,
        responder: ChallengeResponder,
    ) -> Result<RegisteredAccount, AcmeFailure> {
        let slot = RetryAfterSlot::default();
        let contact = config.email.as_ref().map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let eab = match &config.eab {
            Some(eab) => Some(ExternalAccountKey::new(
                eab.kid.clone(),
                &decode_hmac(eab.hmac.expose())?,
            )),
            None => None,
        };
        let http = http_client(&config, &slot)?;
        let new_account = NewAccount {
            contact: &contacts,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, credentials) = with_nonce_retry!(
            slot,
            "registering the ACME account",
            Account::builder_with_http(Box::new(http.clone())).create(
                &new_account,
                config.directory_url(),
                eab.as_ref()
            )
        )?;
        Self::registered(account, &credentials, config, responder, http, slot)
    }

    fn registered(
        account: Account,
        credentials: &AccountCredentials,
        config: AcmeIssuerConfig,
        responder: ChallengeResponder,
        http: AcmeHttpClient,
        slot: RetryAfterSlot,
    ) -> Result<RegisteredAccount, AcmeFailure> {
        let credentials_json = serde_json::to_string(credentials)
            .map_err(|e| AcmeFailure::local(format!("serialising the account credentials: {e}"), false))?;
        let account_url = account.id().to_owned();
        let signer = AccountSigner::from_credentials(&credentials_json);
        let issuer = Self::assemble(account, config, responder, http, slot, signer)?;
        Ok(RegisteredAccount {
            issuer,
            credentials_json,
            account_url,
        })
    }

    fn assemble(
        account: Account,
        config: AcmeIssuerConfig,
        responder: ChallengeResponder,
        http: AcmeHttpClient,
        retry_after: RetryAfterSlot,
        signer: Option<Arc<AccountSigner>>,
    ) -> Result<Self, AcmeFailure> {
        let dns = match &config.dns01 {
            Some(dns) => Some(Arc::new(crate::dns01::DnsSolver::new(dns)?)),
            None => None,
        };
        Ok(Self {
            account,
            config: Arc::new(config),
            responder,
            retry_after,
            dns,
            http,
            signer,
        })
    }

    /// Restores the account from stored credentials (fetches the directory, nothing else).
    pub async fn restore(
        config: AcmeIssuerConfig,
        credentials_json: &str,
        responder: ChallengeResponder,
    ) -> Result<Self, AcmeFailure> {
        let slot = RetryAfterSlot::default();
        let credentials: AccountCredentials = serde_json::from_str(credentials_json)
            .map_err(|e| AcmeFailure::local(format!("the stored account credentials are unreadable: {e}"), false))?;
        let http = http_client(&config, &slot)?;
        let account = Account::builder_with_http(Box::new(http.clone()))
            .from_credentials(credentials)
            .await
            .map_err(|e| AcmeFailure::from_acme("loading the ACME directory", e, slot.get()))?;
        let signer = AccountSigner::from_credentials(credentials_json);
        Self::assemble(account, config, responder, http, slot, signer)
    }

    /// Finds the account that belongs to the stored key again (RFC 8555 §7.3.1
    /// `onlyReturnExisting`): proves the account still exists and is valid.
    pub async fn check(config: &AcmeIssuerConfig, credentials_json: &str) -> AccountCheck {
        let slot = RetryAfterSlot::default();
        let outcome = async {
            let credentials: AccountCredentials = serde_json::from_str(credentials_json)
                .map_err(|e| AcmeFailure::local(format!("stored credentials unreadable: {e}"), false))?;
            let der = PrivatePkcs8KeyDer::from(credentials.private_key().secret_pkcs8_der().to_vec());
            Key::from_pkcs8_der(der.clone_key())
                .map_err(|e| AcmeFailure::local(format!("stored account key unusable: {e}"), false))?;
            let http = http_client(config, &slot)?;
            let (account, _) = with_nonce_retry!(slot, "looking up the account", async {
                let key = Key::from_pkcs8_der(der.clone_key())?;
                Account::builder_with_http(Box::new(http.clone()))
                    .from_key((key, PrivateKeyDer::Pkcs8(der.clone_key())), config.directory_url())
                    .await
            })?;
            Ok::<_, AcmeFailure>(account.id().to_owned())
        }
        .await;
        match outcome {
            Ok(url) => AccountCheck {
                healthy: true,
                detail: format!("directory answers; account {url} is valid"),
            },
            Err(failure) => AccountCheck {
                healthy: false,
                detail: failure.message,
            },
        }
    }

    /// Replaces the account key (RFC 8555 §7.3.5); store the returned credentials.
    pub async fn rollover_key(&self) -> Result<RegisteredAccount, AcmeFailure> {
        let mut account = self.account.clone();
        let credentials = with_nonce_retry!(self.retry_after, "rolling over the account key", account.update_key())?;
        Self::registered(
            account,
            &credentials,
            (*self.config).clone(),
            self.responder.clone(),
            self.http.clone(),
            self.retry_after.clone(),
        )
    }

    /// Deactivates the account at the CA (RFC 8555 §7.3.6); it cannot be used again.
    pub async fn deactivate(self) -> Result<(), AcmeFailure> {
        with_nonce_retry!(
            self.retry_after,
            "deactivating the account",
            self.account.clone().deactivate()
        )
    }

    /// The account URL.
    pub fn account_url(&self) -> &str {
        self.account.id()
    }

    /// The settings this issuer runs with.
    pub fn config(&self) -> &AcmeIssuerConfig {
        &self.config
    }

    /// Until when the CA asked us to hold off, if it did.
    pub fn retry_after(&self) -> Option<SystemTime> {
        self.retry_after.get()
    }
}
