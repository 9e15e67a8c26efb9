//! Running one job against an ACME issuer: an order that takes seconds to minutes of waiting on
//! the CA and DNS, so each runs as its own task (bounded by a semaphore), keeps its lease alive
//! while it waits, and commits alone.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use ck_acme::{AcmeFailure, AcmeIssuer, ChallengeKind, OrderRequest};
use ck_domain::{Certificate, KeySource, renew_within_window};
use ck_pki::{ParsedCsr, ServerKey, inspect_received_chain, pem_block_der};
use ck_store::{ClaimedJob, Completion, NewVersion, RecordedOrder};
use rand::Rng;
use time::{Duration, OffsetDateTime};

use super::runner::{JobRunner, record_completions};
use crate::issuers::AcmeIssuerState;
use crate::now;

/// The longest an identifier backs off after repeated failures: a good citizen of CA rate
/// limits, yet a certificate still gets a daily try.
const MAX_IDENTIFIER_BACKOFF: Duration = Duration::hours(24);

/// Runs one claimed job against `issuer` and records the outcome.
pub(crate) async fn run_acme_job(
    runner: JobRunner,
    owner: String,
    claimed: ClaimedJob,
    cert: Certificate,
    issuer: Arc<AcmeIssuerState>,
) {
    let names: Vec<String> = cert.sans.iter().map(ToString::to_string).collect();
    let issuer_id = issuer.id.to_string();

    // One bad name must not be retried into the CA's rate limits by every job that carries it.
    match runner.store.identifier_backoff(&issuer_id, &names, now()).await {
        Ok(Some((name, until))) => {
            let reason = format!("{name} is backing off after failed orders; next try at {until}");
            tracing::info!(job = %claimed.job.id, certificate = %cert.id, %reason, "order deferred");
            if let Err(error) = runner.store.defer_job(&owner, &claimed, &reason, until, now()).await {
                tracing::warn!(job = %claimed.job.id, %error, "deferring the job failed; the lease will expire");
            }
            return;
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "reading identifier backoff failed; ordering anyway"),
    }

    let started = std::time::Instant::now();
    let order = order_with_lease(&runner, &owner, &claimed, &cert, &issuer, &names);
    let outcome = order.await;
    let challenge = cert
        .challenge
        .clone()
        .unwrap_or_else(|| issuer.config.challenge.as_str().to_owned());
    runner
        .metrics
        .observe_issuance(&issuer_id, &challenge, started.elapsed());
    match outcome {
        Ok((version, renew_at)) => {
            runner.metrics.acme_order(&issuer_id, "valid");
            let completion = Completion {
                claimed,
                version,
                renew_at,
            };
            match runner
                .store
                .complete_jobs(&owner, std::slice::from_ref(&completion), now())
                .await
            {
                Ok(stored) => {
                    let mut finished = Vec::new();
                    record_completions(
                        &runner,
                        std::slice::from_ref(&completion),
                        &stored,
                        &|_| issuer_id.clone(),
                        &mut finished,
                    );
                    runner.certificates.notify_finished(&finished);
                    if let Err(error) = runner.store.clear_identifier_backoff(&issuer_id, &names).await {
                        tracing::warn!(%error, "clearing identifier backoff failed");
                    }
                    forget_order(&runner, &completion.claimed).await;
                }
                Err(error) => {
                    tracing::warn!(job = %completion.claimed.job.id, %error, "storing the ACME certificate failed; the job will be retried");
                    let failure = AcmeFailure::local(format!("storing the certificate failed: {error}"), true);
                    record_failure(&runner, &owner, &completion.claimed, &issuer_id, &names, failure).await;
                }
            }
        }
        Err(failure) => {
            runner.metrics.acme_order(&issuer_id, "failed");
            record_failure(&runner, &owner, &claimed, &issuer_id, &names, failure).await;
        }
    }
}

/// The order, with the job's lease renewed every third of its length while it runs.
async fn order_with_lease(
    runner: &JobRunner,
    owner: &str,
    claimed: &ClaimedJob,
    cert: &Certificate,
    issuer: &AcmeIssuerState,
    names: &[String],
) -> Result<(NewVersion, OffsetDateTime), AcmeFailure> {
    let lease = runner.config.job_lease;
    let period = StdDuration::try_from(lease / 3).unwrap_or(StdDuration::from_secs(20));
    // The wait for a free order slot is inside the leased part: a queue of orders must not
    // let leases lapse, or another worker would start a second order for the same certificate.
    let order = async {
        let _slot = runner.acme_orders.acquire().await;
        order_certificate(runner, owner, claimed, cert, issuer, names).await
    };
    tokio::pin!(order);
    let mut ticker = tokio::time::interval(period);
    ticker.tick().await;
    loop {
        tokio::select! {
            outcome = &mut order => return outcome,
            _ = ticker.tick() => {
                match runner.store.extend_lease(owner, claimed, now() + lease).await {
                    Ok(true) => {}
                    Ok(false) => return Err(AcmeFailure::local("the job was taken over by another worker", true)),
                    Err(error) => tracing::warn!(%error, "extending the job lease failed; trying again"),
                }
            }
        }
    }
}

async fn order_certificate(
    runner: &JobRunner,
    owner: &str,
    claimed: &ClaimedJob,
    cert: &Certificate,
    issuer: &AcmeIssuerState,
    names: &[String],
) -> Result<(NewVersion, OffsetDateTime), AcmeFailure> {
    let acme: AcmeIssuer = runner.issuers.ready(issuer).await?;
    // A worker that died may have placed the order already, maybe finalized it: take it up
    // with the CSR (and key) it was placed with, so the CA sees one order per renewal.
    let recorded = runner
        .store
        .recorded_acme_order(claimed.job.id)
        .await
        .map_err(|e| AcmeFailure::local(format!("reading the job's recorded order: {e}"), true))?;
    let (csr_pem, private_key_pem) = match &recorded {
        Some(order) => (order.csr_pem.clone(), order.private_key_pem.clone()),
        None => fresh_csr(cert).await?,
    };
    let public_key_der = ParsedCsr::parse_stored(csr_pem.as_bytes())
        .map_err(|e| AcmeFailure::local(e.to_string(), false))?
        .public_key_der;
    let csr_der =
        pem_block_der(&csr_pem, "CERTIFICATE REQUEST").map_err(|e| AcmeFailure::local(e.to_string(), false))?;
    let replaces = previous_leaf_der(runner, cert).await;
    let challenge = cert.challenge.as_deref().and_then(|c| c.parse::<ChallengeKind>().ok());
    let request = OrderRequest {
        names,
        csr_der: &csr_der,
        challenge,
        replaces: replaces.as_deref(),
    };
    let open = acme
        .open_order(&request, recorded.as_ref().map(|order| order.order_url.as_str()))
        .await?;
    if open.resumed() {
        tracing::info!(job = %claimed.job.id, certificate = %cert.id, order = open.url(), "resuming the order of an earlier attempt");
    } else {
        let record = RecordedOrder {
            order_url: open.url().to_owned(),
            csr_pem: csr_pem.clone(),
            private_key_pem: private_key_pem.clone(),
        };
        match runner.store.record_acme_order(owner, claimed, &record, now()).await {
            Ok(true) => {}
            Ok(false) => return Err(AcmeFailure::local("the job was taken over by another worker", true)),
            Err(error) => return Err(AcmeFailure::local(format!("recording the order failed: {error}"), true)),
        }
    }
    let issued = acme.complete_order(open, &request).await?;
    let chain = inspect_received_chain(&issued.chain_pem, &public_key_der)
        .map_err(|e| AcmeFailure::local(e.to_string(), false))?;
    let jitter = rand::rng().random::<f64>();
    let renew_at = match acme.renewal_window(&chain.leaf_der).await {
        Ok(Some(window)) => renew_within_window(window.start, window.end, now(), jitter),
        Ok(None) => cert.renewal_policy.renew_at(chain.not_before, chain.not_after, jitter),
        Err(error) => {
            tracing::warn!(certificate = %cert.id, %error, "renewal info unavailable; using the renewal policy");
            cert.renewal_policy.renew_at(chain.not_before, chain.not_after, jitter)
        }
    };
    tracing::debug!(certificate = %cert.id, order = %issued.order_url, "ACME order valid");
    Ok((
        NewVersion {
            serial: chain.serial,
            fingerprint: chain.fingerprint,
            cert_pem: chain.cert_pem,
            chain_pem: chain.chain_pem,
            csr_pem,
            private_key_pem,
            not_before: chain.not_before,
            not_after: chain.not_after,
        },
        renew_at,
    ))
}

/// The CSR to order with: the certificate's own (from a client or agent), or one for a new
/// server-made key, with that key.
async fn fresh_csr(cert: &Certificate) -> Result<(String, Option<String>), AcmeFailure> {
    match cert.key_source {
        KeySource::Csr | KeySource::Agent => {
            let stored = cert
                .csr_pem
                .clone()
                .ok_or_else(|| AcmeFailure::local("the stored CSR is missing", false))?;
            Ok((stored, None))
        }
        KeySource::Server => {
            let (key_type, sans) = (cert.key_type, cert.sans.clone());
            // RSA key generation takes a while: keep it off the async threads.
            let key = tokio::task::spawn_blocking(move || ServerKey::generate(key_type, &sans))
                .await
                .map_err(|e| AcmeFailure::local(format!("key generation: {e}"), true))?
                .map_err(|e| AcmeFailure::local(e.to_string(), false))?;
            Ok((key.csr_pem, Some(key.private_key.expose().to_owned())))
        }
    }
}

/// The DER of the certificate a renewal replaces (for ARI's `replaces`), if there is one.
async fn previous_leaf_der(runner: &JobRunner, cert: &Certificate) -> Option<Vec<u8>> {
    if cert.current_version == 0 {
        return None;
    }
    let (version, _) = runner
        .store
        .version_with_key(cert.id, cert.current_version)
        .await
        .ok()??;
    pem_block_der(&version.cert_pem, "CERTIFICATE").ok()
}

async fn record_failure(
    runner: &JobRunner,
    owner: &str,
    claimed: &ClaimedJob,
    issuer_id: &str,
    names: &[String],
    failure: AcmeFailure,
) {
    let retry = runner.config.retry;
    let base = retry.base_delay;
    let identifier_delay = move |failures: u32| {
        let exponent = failures.saturating_sub(1).min(20);
        (base * 2_i32.saturating_pow(exponent)).min(MAX_IDENTIFIER_BACKOFF)
    };
    // Only failures that reached the CA count against the names.
    if (failure.problem.is_some() || failure.transient)
        && let Err(error) = runner
            .store
            .record_identifier_failures(issuer_id, names, now(), identifier_delay)
            .await
    {
        tracing::warn!(%error, "recording identifier backoff failed");
    }
    let retry_at = if failure.transient {
        retry
            .next_delay(claimed.attempt, rand::rng().random::<f64>())
            .map(|delay| {
                let at = now() + delay;
                match failure.retry_after {
                    Some(ca_asked) => at.max(OffsetDateTime::from(ca_asked)),
                    None => at,
                }
            })
    } else {
        None
    };
    let problem = failure.problem.as_ref().and_then(|p| serde_json::to_string(p).ok());
    tracing::warn!(job = %claimed.job.id, certificate = %claimed.job.certificate_id, issuer = issuer_id,
        error = %failure.message, retry_at = ?retry_at, "ACME order failed");
    runner.metrics.job_failed(claimed.job.kind.as_str());
    runner.metrics.issuance(claimed.job.kind.as_str(), issuer_id, "failure");
    match runner
        .store
        .fail_job(owner, claimed, &failure.message, problem.as_deref(), retry_at, now())
        .await
    {
        Ok(true) if retry_at.is_none() => {
            forget_order(runner, claimed).await;
            runner.certificates.notify_finished(&[claimed.job.id]);
        }
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(job = %claimed.job.id, %error, "recording the failure failed; the lease will expire")
        }
    }
}

/// Drops the recorded order of a job that is over; a leftover row only costs space.
async fn forget_order(runner: &JobRunner, claimed: &ClaimedJob) {
    if let Err(error) = runner.store.forget_acme_order(claimed.job.id).await {
        tracing::warn!(job = %claimed.job.id, %error, "forgetting the recorded order failed");
    }
}
