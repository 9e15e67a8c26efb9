//! One ACME order, from identifiers to a downloaded certificate chain.
//!
//! The steps follow RFC 8555 §7.4: new order (with `replaces` when renewing under ARI), one
//! challenge per pending authorization, wait for the order to become ready, finalize with our
//! CSR, download the chain. Whatever happens, every published challenge answer (token, ALPN
//! certificate, TXT record) is removed before returning.

use std::net::IpAddr;
use std::time::Duration;

use instant_acme::{
    AuthorizationStatus, CertificateIdentifier, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::error::{SubproblemDocument, with_nonce_retry};
use crate::{AcmeFailure, AcmeIssuer, ChallengeKind};

/// What to order.
#[derive(Debug, Clone)]
pub struct OrderRequest<'a> {
    /// DNS names (`*.example.com` for wildcards) and IP literals.
    pub names: &'a [String],
    /// DER CSR carrying the key to certify (server- or client-generated).
    pub csr_der: &'a [u8],
    /// The challenge for this certificate; `None` takes the issuer's default.
    pub challenge: Option<ChallengeKind>,
    /// DER of the certificate this order replaces, for ARI's `replaces` (RFC 9773 §5).
    pub replaces: Option<&'a [u8]>,
}

/// A finished order.
#[derive(Debug, Clone)]
pub struct IssuedChain {
    /// Leaf first, then the intermediates, as the CA sent them.
    pub chain_pem: String,
    /// The order's URL, for logs and support requests to the CA.
    pub order_url: String,
}

/// The CA's suggested renewal window (ARI, RFC 9773).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalWindow {
    /// Renew no earlier than this.
    pub start: OffsetDateTime,
    /// Renew before this.
    pub end: OffsetDateTime,
}

/// A published answer to remove when the order is over.
enum Published {
    Http01 { token: String },
    TlsAlpn01 { name: String },
    Dns01 { fqdn: String, value: String },
}

/// An order at the CA, placed or taken up again, not yet seen through.
pub struct OpenOrder {
    order: instant_acme::Order,
    resumed: bool,
}

impl std::fmt::Debug for OpenOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOrder")
            .field("url", &self.order.url())
            .field("resumed", &self.resumed)
            .finish()
    }
}

impl OpenOrder {
    /// The order's URL: record it to resume the order after a crash.
    pub fn url(&self) -> &str {
        self.order.url()
    }

    /// Whether this is an earlier order taken up again (rather than a new one).
    pub fn resumed(&self) -> bool {
        self.resumed
    }
}

impl AcmeIssuer {
    /// Places an order and sees it through. Challenge answers are cleaned up on every path.
    pub async fn order(&self, request: &OrderRequest<'_>) -> Result<IssuedChain, AcmeFailure> {
        let open = self.open_order(request, None).await?;
        self.complete_order(open, request).await
    }

    /// Takes up the order at `resume_url` when the CA still has it in a usable state (pending,
    /// ready, processing or valid), and places a new one otherwise.
    pub async fn open_order(
        &self,
        request: &OrderRequest<'_>,
        resume_url: Option<&str>,
    ) -> Result<OpenOrder, AcmeFailure> {
        // Refused before anything is placed at the CA.
        self.config
            .challenge_for(request.challenge, request.names)
            .map_err(|message| AcmeFailure::local(message, false))?;
        if let Some(url) = resume_url {
            match with_nonce_retry!(
                self.retry_after,
                "reading the order",
                self.account.order(url.to_owned())
            ) {
                Ok(mut order) => {
                    let status = order.state().status;
                    if status != OrderStatus::Invalid {
                        tracing::debug!(order = %url, ?status, "resuming the order");
                        return Ok(OpenOrder { order, resumed: true });
                    }
                    tracing::info!(order = %url, "the earlier order is invalid; placing a new one");
                }
                Err(failure) => {
                    tracing::info!(order = %url, error = %failure, "the earlier order is unavailable; placing a new one")
                }
            }
        }
        let identifiers = identifiers(request.names)?;
        let replaces = request
            .replaces
            .and_then(|der| CertificateIdentifier::try_from(&CertificateDer::from(der)).ok());
        let order = match replaces {
            Some(replaces) => {
                let with_replaces = || self.new_order(&identifiers).replaces(replaces.clone());
                match with_nonce_retry!(
                    self.retry_after,
                    "creating the order",
                    self.account.new_order(&with_replaces())
                ) {
                    Ok(order) => order,
                    // A CA without ARI, or one that no longer knows the old certificate: order afresh.
                    Err(failure) => {
                        tracing::debug!(error = %failure, "order with `replaces` refused; ordering without it");
                        with_nonce_retry!(
                            self.retry_after,
                            "creating the order",
                            self.account.new_order(&self.new_order(&identifiers))
                        )?
                    }
                }
            }
            None => with_nonce_retry!(
                self.retry_after,
                "creating the order",
                self.account.new_order(&self.new_order(&identifiers))
            )?,
        };
        Ok(OpenOrder { order, resumed: false })
    }

    /// Sees an open order through: challenges for pending authorizations, finalization with
    /// the request's CSR unless an earlier worker finalized it already, the chain's download.
    /// Challenge answers are cleaned up on every path.
    pub async fn complete_order(
        &self,
        open: OpenOrder,
        request: &OrderRequest<'_>,
    ) -> Result<IssuedChain, AcmeFailure> {
        let challenge = self
            .config
            .challenge_for(request.challenge, request.names)
            .map_err(|message| AcmeFailure::local(message, false))?;
        let mut published = Vec::new();
        let outcome = self.run_order(open.order, request, challenge, &mut published).await;
        self.clean_up(published).await;
        outcome
    }

    async fn run_order(
        &self,
        mut order: instant_acme::Order,
        request: &OrderRequest<'_>,
        challenge: ChallengeKind,
        published: &mut Vec<Published>,
    ) -> Result<IssuedChain, AcmeFailure> {
        let order_url = order.url().to_owned();
        let policy = RetryPolicy::new()
            .initial_delay(Duration::from_millis(100))
            .backoff(1.5)
            .timeout(Duration::from_secs(120));
        // Finalized by an earlier worker: only the download is left.
        if matches!(order.state().status, OrderStatus::Processing | OrderStatus::Valid) {
            return self.download(&mut order, &policy, order_url).await;
        }

        // Fetch every authorization; a rejected nonce leaves one unfetched for the next pass.
        for pass in 0..=crate::error::BAD_NONCE_RETRIES {
            let mut missing = false;
            let mut authorizations = order.authorizations();
            while let Some(next) = authorizations.next().await {
                if let Err(error) = next {
                    if AcmeFailure::is_bad_nonce(&error) && pass < crate::error::BAD_NONCE_RETRIES {
                        missing = true;
                    } else {
                        return Err(AcmeFailure::from_acme(
                            "fetching authorizations",
                            error,
                            self.retry_after.get(),
                        ));
                    }
                }
            }
            if !missing {
                break;
            }
        }

        let challenge_type = match challenge {
            ChallengeKind::Http01 => ChallengeType::Http01,
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
            ChallengeKind::Dns01 => ChallengeType::Dns01,
        };
        let mut authorizations = order.authorizations();
        while let Some(next) = authorizations.next().await {
            let mut authz =
                next.map_err(|e| AcmeFailure::from_acme("fetching authorizations", e, self.retry_after.get()))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeFailure::local(
                        format!(
                            "authorization for {} is {other:?}; a new order is needed",
                            authz.identifier()
                        ),
                        true,
                    ));
                }
            }
            let name = match &authz.identifier().identifier {
                Identifier::Dns(name) => name.clone(),
                Identifier::Ip(ip) => ip.to_string(),
                _ => {
                    return Err(AcmeFailure::local(
                        "the CA asked about an identifier type we did not order",
                        false,
                    ));
                }
            };
            let shown = authz.identifier().to_string();
            let mut handle = authz.challenge(challenge_type.clone()).ok_or_else(|| {
                AcmeFailure::local(
                    format!(
                        "the CA offers no {} challenge for {shown}: choose another challenge type",
                        challenge.as_str()
                    ),
                    false,
                )
            })?;
            let key_authorization = handle.key_authorization();
            match challenge {
                ChallengeKind::Http01 => {
                    // Recorded first so a half-done publication is still withdrawn.
                    published.push(Published::Http01 {
                        token: handle.token.clone(),
                    });
                    self.responder
                        .add_http01(&handle.token, key_authorization.as_str())
                        .await?;
                }
                ChallengeKind::TlsAlpn01 => {
                    self.responder
                        .add_tls_alpn01(&name, key_authorization.digest().as_ref())?;
                    published.push(Published::TlsAlpn01 { name: name.clone() });
                }
                ChallengeKind::Dns01 => {
                    let dns = self
                        .dns
                        .as_ref()
                        .ok_or_else(|| AcmeFailure::local("the issuer has no dns01 provider", false))?;
                    let value = key_authorization.dns_value();
                    let challenge_name = format!("_acme-challenge.{name}.");
                    let fqdn = dns
                        .challenge_target(&challenge_name)
                        .await
                        .map_err(|e| AcmeFailure::local(format!("dns-01 for {shown}: {e}"), true))?;
                    // Published first so a half-done present is still cleaned up.
                    published.push(Published::Dns01 {
                        fqdn: fqdn.clone(),
                        value: value.clone(),
                    });
                    dns.provider.present(&fqdn, &value).await.map_err(|e| {
                        AcmeFailure::local(format!("dns-01 for {shown}: writing the TXT record failed: {e}"), true)
                    })?;
                    let waiting = std::time::Instant::now();
                    let propagated = dns.check.wait_for(&fqdn, &value).await;
                    crate::stats::record_dns_wait(waiting.elapsed().as_secs_f64());
                    propagated.map_err(|e| AcmeFailure::local(format!("dns-01 for {shown}: {e}"), true))?;
                }
            }
            with_nonce_retry!(
                self.retry_after,
                "telling the CA the challenge is ready",
                handle.set_ready()
            )?;
        }

        // An order that turns invalid carries no per-identifier detail: the failed challenges do.
        match with_nonce_retry!(self.retry_after, "waiting for validation", order.poll_ready(&policy)) {
            Ok(OrderStatus::Ready) => {}
            Ok(_) => return Err(AcmeFailure::challenge_invalid(self.challenge_errors(&mut order).await)),
            Err(failure) if failure.problem.is_some() => {
                let subproblems = self.challenge_errors(&mut order).await;
                return Err(if subproblems.is_empty() {
                    failure
                } else {
                    AcmeFailure::challenge_invalid(subproblems)
                });
            }
            Err(failure) => return Err(failure),
        }
        with_nonce_retry!(
            self.retry_after,
            "finalizing the order",
            order.finalize_csr(request.csr_der)
        )?;
        self.download(&mut order, &policy, order_url).await
    }

    async fn download(
        &self,
        order: &mut instant_acme::Order,
        policy: &RetryPolicy,
        order_url: String,
    ) -> Result<IssuedChain, AcmeFailure> {
        let chain_pem = with_nonce_retry!(
            self.retry_after,
            "downloading the certificate",
            order.poll_certificate(policy)
        )?;
        let certificate_url = order.state().certificate.clone().unwrap_or_default();
        let alternates = self.http.alternates.take(&certificate_url);
        let chain_pem = self.preferred_chain(chain_pem, &alternates).await;
        Ok(IssuedChain { chain_pem, order_url })
    }

    /// The configured preferred chain among the default and the alternates, or the default.
    async fn preferred_chain(&self, default: String, alternates: &[String]) -> String {
        let Some(preferred) = &self.config.preferred_chain else {
            return default;
        };
        if crate::chains::chain_matches(&default, preferred) {
            return default;
        }
        let Some(signer) = &self.signer else {
            return default;
        };
        for url in alternates {
            match crate::chains::fetch_chain(&self.http, signer, &self.config.directory_url(), url).await {
                Ok(chain) if crate::chains::chain_matches(&chain, preferred) => {
                    tracing::debug!(%url, %preferred, "took the preferred alternate chain");
                    return chain;
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%url, %error, "alternate chain unavailable"),
            }
        }
        tracing::info!(%preferred, offered = alternates.len() + 1, "no chain leads to the preferred CA; keeping the default");
        default
    }

    /// The errors of the order's failed challenges, one subproblem per identifier.
    async fn challenge_errors(&self, order: &mut instant_acme::Order) -> Vec<SubproblemDocument> {
        let mut subproblems = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(Ok(mut authz)) = authorizations.next().await {
            let Ok(state) = with_nonce_retry!(self.retry_after, "reading the authorization", authz.refresh()) else {
                continue;
            };
            for challenge in &state.challenges {
                if let Some(error) = &challenge.error {
                    subproblems.push(SubproblemDocument {
                        identifier: Some(state.identifier().to_string()),
                        problem_type: error.r#type.clone(),
                        detail: error.detail.clone(),
                    });
                }
            }
        }
        subproblems
    }

    fn new_order<'a>(&'a self, identifiers: &'a [Identifier]) -> NewOrder<'a> {
        let order = NewOrder::new(identifiers);
        match &self.config.profile {
            Some(profile) => order.profile(profile),
            None => order,
        }
    }

    async fn clean_up(&self, published: Vec<Published>) {
        for item in published {
            match item {
                Published::Http01 { token } => self.responder.remove_http01(&token).await,
                Published::TlsAlpn01 { name } => self.responder.remove_tls_alpn01(&name),
                Published::Dns01 { fqdn, value } => {
                    if let Some(dns) = &self.dns
                        && let Err(error) = dns.provider.cleanup(&fqdn, &value).await
                    {
                        tracing::warn!(%fqdn, provider = dns.provider.kind(), %error, "removing the dns-01 TXT record failed");
                    }
                }
            }
        }
    }

    /// Revokes `cert_der` through the CA, signed with the account key (RFC 8555 §7.6).
    pub async fn revoke(&self, cert_der: &[u8], reason_code: u8) -> Result<(), AcmeFailure> {
        use instant_acme::RevocationReason as R;
        let reason = match reason_code {
            1 => R::KeyCompromise,
            2 => R::CaCompromise,
            3 => R::AffiliationChanged,
            4 => R::Superseded,
            5 => R::CessationOfOperation,
            6 => R::CertificateHold,
            8 => R::RemoveFromCrl,
            9 => R::PrivilegeWithdrawn,
            10 => R::AaCompromise,
            _ => R::Unspecified,
        };
        let certificate = CertificateDer::from(cert_der);
        let request = instant_acme::RevocationRequest {
            certificate: &certificate,
            reason: Some(reason),
        };
        with_nonce_retry!(
            self.retry_after,
            "revoking the certificate",
            self.account.revoke(&request)
        )
    }

    /// The CA's suggested renewal window for `cert_der`, or `None` when the CA has no ARI.
    pub async fn renewal_window(&self, cert_der: &[u8]) -> Result<Option<RenewalWindow>, AcmeFailure> {
        let id = CertificateIdentifier::try_from(&CertificateDer::from(cert_der))
            .map_err(|e| AcmeFailure::local(format!("ARI certificate id: {e}"), false))?;
        match self.account.renewal_info(&id).await {
            Ok((info, _)) => Ok(Some(RenewalWindow {
                start: info.suggested_window.start,
                end: info.suggested_window.end,
            })),
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(error) => Err(AcmeFailure::from_acme(
                "fetching renewal info",
                error,
                self.retry_after.get(),
            )),
        }
    }
}

/// The order's identifiers: IP literals as IP identifiers, everything else as DNS names.
fn identifiers(names: &[String]) -> Result<Vec<Identifier>, AcmeFailure> {
    if names.is_empty() {
        return Err(AcmeFailure::local("the certificate has no names to order", false));
    }
    Ok(names
        .iter()
        .map(|name| match name.parse::<IpAddr>() {
            Ok(ip) => Identifier::Ip(ip),
            Err(_) => Identifier::Dns(name.clone()),
        })
        .collect())
}
