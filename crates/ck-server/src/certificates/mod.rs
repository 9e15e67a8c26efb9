//! The certificates service: the managed certificates and their versions. Create (validated
//! against the name policy, the caller's restriction and the issuer, then group-committed),
//! renew, revoke (at the CA first for ACME issuers), delete, reads, exports, and waiting for a
//! job (`?wait=`).
//!
//! Owns the create queue, the waiters and the outage read cache; uses the store, the issuers,
//! the PKI service (a revocation refreshes CRL and OCSP), the cluster (database status) and
//! the metrics.

mod group_commit;
mod read_cache;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use ck_acme::ChallengeKind;
use ck_domain::{
    Certificate, CertificateId, CertificateStatus, CertificateVersion, ExpiryThresholds, IssuanceRequest, IssuerId,
    Job, JobId, JobKind, KeySource, KeyType, Labels, RenewalPolicy, Restriction, RevocationReason, RevocationScope,
    leaf_validity,
};
use ck_pki::{ParsedCsr, pem_block_der};
use ck_store::{AgentRecord, CertificateFilter, CertificatePage, EnqueueOutcome, JobFilter, Store};
use time::{Duration, OffsetDateTime};
use tokio::sync::oneshot;

use crate::access::auth::AgentScope;
use crate::cluster::Cluster;
use crate::issuers::{Issuer, Issuers};
use crate::job::new_job;
use crate::metrics::Metrics;
use crate::pki::Pki;
use crate::signals::WorkAvailable;
use crate::{ServerConfig, ServiceError, now};
use group_commit::CreateQueue;
use read_cache::ReadCache;

/// A request for a new managed certificate, as the API received it (names not yet checked).
#[derive(Debug, Clone, Default)]
pub struct NewCertificate {
    /// Display name; defaults to the common name.
    pub name: Option<String>,
    /// Subject CN; defaults to the first SAN or the CSR's CN.
    pub common_name: Option<String>,
    /// More names.
    pub sans: Vec<String>,
    /// Issuer id; defaults to `local`.
    pub issuer: Option<String>,
    /// Key type for server-generated keys.
    pub key_type: Option<KeyType>,
    /// CSR mode: the client's PEM CSR. Without it, the server generates the key.
    pub csr_pem: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Lifetime in days.
    pub validity_days: Option<u32>,
    /// Renewal policy; defaults to the server's.
    pub renewal_policy: Option<RenewalPolicy>,
    /// Days before expiry at which it warns; defaults to the server's thresholds.
    pub expiry_thresholds: Option<ExpiryThresholds>,
    /// ACME challenge type (`http-01`, `tls-alpn-01`, `dns-01`); defaults to the issuer's.
    pub challenge: Option<String>,
    /// The agent (name or id) that deploys it.
    pub agent: Option<String>,
    /// Who makes the key: the agent by default when one is named (the server for a read-scope
    /// agent), else the server; a CSR means the client.
    pub key_source: Option<KeySource>,
    /// The caller's token restriction: the certificate gets its labels, and every name must
    /// lie under its suffixes.
    pub restriction: Restriction,
    /// Whether its leaves may serve as TLS client certificates (clientAuth); serverAuth only
    /// when not asked.
    pub client_auth: bool,
}

/// Whether a token restriction reaches a certificate.
pub(crate) fn reaches(restriction: &Restriction, cert: &Certificate) -> bool {
    let names: Vec<String> = cert.sans.iter().map(ToString::to_string).collect();
    restriction.permits(cert.labels.as_map(), names.iter().map(String::as_str))
}

/// Requests waiting for a job to finish (`?wait=`), woken by the worker that finishes it.
type Waiters = Mutex<HashMap<JobId, Vec<oneshot::Sender<()>>>>;

/// The managed certificates: create, renew, revoke, delete, reads (served from the read cache
/// during a database outage), exports, and waiting for their jobs. Cheap to clone.
#[derive(Clone)]
pub struct Certificates(Arc<CertificatesState>);

/// What [`Certificates`] holds, shared by its clones.
pub struct CertificatesState {
    store: Store,
    config: Arc<ServerConfig>,
    issuers: Issuers,
    pki: Pki,
    cluster: Cluster,
    metrics: Arc<Metrics>,
    work: WorkAvailable,
    /// Group commit of new certificates.
    creates: CreateQueue,
    waiters: Arc<Waiters>,
    /// The certificates and chains read last, served during a database outage.
    read_cache: Arc<ReadCache>,
}

impl std::ops::Deref for Certificates {
    type Target = CertificatesState;

    fn deref(&self) -> &CertificatesState {
        &self.0
    }
}

impl Certificates {
    pub(crate) fn new(
        store: Store,
        config: Arc<ServerConfig>,
        issuers: Issuers,
        pki: Pki,
        cluster: Cluster,
        metrics: Arc<Metrics>,
        work: WorkAvailable,
    ) -> Self {
        Self(Arc::new(CertificatesState {
            creates: CreateQueue::start(store.clone(), work.clone()),
            read_cache: Arc::new(ReadCache::new(config.outage_read_cache)),
            waiters: Arc::default(),
            store,
            config,
            issuers,
            pki,
            cluster,
            metrics,
            work,
        }))
    }

    /// The renewal policy of certificates whose request names none; a partial request policy
    /// fills its gaps from it.
    pub fn default_renewal(&self) -> RenewalPolicy {
        self.config.default_renewal
    }

    /// Validates a request and stores the certificate with its first issuance job.
    pub async fn create_certificate(&self, request: NewCertificate) -> Result<(Certificate, Job), ServiceError> {
        let issuer_id: IssuerId = match request.issuer.as_deref() {
            Some(text) => text.parse().map_err(|e| ServiceError::Invalid(format!("{e}")))?,
            None => IssuerId::local(),
        };
        let issuer = self.issuers.issuer_handle(&issuer_id).await?;
        let csr = match request.csr_pem.as_deref() {
            Some(pem) => Some(ParsedCsr::parse(pem.as_bytes()).map_err(|e| ServiceError::Invalid(e.to_string()))?),
            None => None,
        };
        let names = IssuanceRequest::resolve(
            request.common_name.as_deref(),
            &request.sans,
            csr.as_ref().map(|c| &c.names),
            &self.config.name_policy,
        )
        .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let labels = request.restriction.apply_labels(request.labels).map_err(|key| {
            ServiceError::Forbidden(format!(
                "this token only reaches certificates with {key}={}: drop the label or use that value",
                request
                    .restriction
                    .labels()
                    .get(&key)
                    .map(String::as_str)
                    .unwrap_or_default()
            ))
        })?;
        let labels = Labels::new(labels).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        if let Some(outside) = names
            .sans
            .iter()
            .map(ToString::to_string)
            .find(|n| !request.restriction.name_permitted(n))
        {
            return Err(ServiceError::Forbidden(format!(
                "this token only reaches names under {}: '{outside}' is outside",
                request.restriction.name_suffixes().join(", ")
            )));
        }
        let validity = match request.validity_days {
            Some(days) => Duration::days(i64::from(days)),
            None => self.config.default_validity,
        };
        let now = now();
        let challenge = match request.challenge.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
            Some(text) => Some(text.parse::<ChallengeKind>().map_err(ServiceError::Invalid)?),
            None => None,
        };
        match &issuer {
            Issuer::Local(ca) => {
                leaf_validity(now, validity, self.config.max_validity, ca.not_after())
                    .map_err(|e| ServiceError::Invalid(e.to_string()))?;
                if challenge.is_some() {
                    return Err(ServiceError::Invalid(format!(
                        "issuer '{issuer_id}' is the local CA, which needs no challenge: drop the challenge or pick an ACME issuer"
                    )));
                }
            }
            Issuer::Acme(state) => {
                let texts: Vec<String> = names.sans.iter().map(ToString::to_string).collect();
                state
                    .check_challenge(challenge, &texts)
                    .map_err(ServiceError::Invalid)?;
            }
        }
        let name = request
            .name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| names.common_name.clone());
        if name.len() > 255 {
            return Err(ServiceError::Invalid("name is longer than 255 characters".to_owned()));
        }
        let agent = match request.agent.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
            Some(agent) => Some(self.bound_agent(agent, &request.restriction).await?),
            None => None,
        };
        let (key_source, csr_pem) = custody(csr, request.key_source, agent.as_ref())?;
        let cert = Certificate {
            id: CertificateId::new(),
            name,
            common_name: names.common_name,
            sans: names.sans,
            issuer_id,
            key_type: request.key_type.unwrap_or_default(),
            key_source,
            csr_pem,
            challenge: challenge.map(|c| c.as_str().to_owned()),
            agent_id: agent.map(|a| a.id),
            status: CertificateStatus::Pending,
            validity,
            renewal_policy: request.renewal_policy.unwrap_or(self.config.default_renewal),
            expiry_thresholds: request.expiry_thresholds.clone(),
            labels,
            client_auth: request.client_auth,
            current_version: 0,
            serial: None,
            fingerprint: None,
            not_before: None,
            not_after: None,
            renew_at: None,
            last_error: None,
            revoked_at: None,
            revocation_reason: None,
            created_at: now,
            updated_at: now,
        };
        let job = new_job(cert.id, JobKind::Issue, now, self.config.retry.max_attempts);
        self.creates.create(cert.clone(), job.clone()).await?;
        Ok((cert, job))
    }

    /// The certificate if `restriction` reaches it; one it does not reach is "not found", so a
    /// team's token cannot even learn that another team's certificate exists.
    pub async fn reachable_certificate(
        &self,
        id: CertificateId,
        restriction: &Restriction,
    ) -> Result<Certificate, ServiceError> {
        let cert = self.certificate(id).await?;
        if restriction.is_unrestricted() || reaches(restriction, &cert) {
            Ok(cert)
        } else {
            Err(ServiceError::NotFound(format!("certificate {id}")))
        }
    }

    /// Forces a renewal now. If the certificate already has a job in flight, that job is
    /// returned instead of a second one.
    pub async fn renew(&self, id: CertificateId) -> Result<(Job, bool), ServiceError> {
        let cert = self.certificate(id).await?;
        // A renewal of a CSR-mode certificate re-signs the stored CSR, i.e. the same key: after
        // a keyCompromise revocation that would certify the key an attacker may hold. Server
        // keys are new for every version, and an agent sends a CSR for each; a client's CSR
        // cannot change, so it needs a new certificate with a new key.
        if cert.key_source == KeySource::Csr && cert.revocation_reason == Some(RevocationReason::KeyCompromise) {
            return Err(ServiceError::Conflict(format!(
                "certificate {id} was revoked for keyCompromise, and renewing it would re-sign its CSR's compromised \
                 key: make a new key and submit a new CSR (POST /api/v1/certificates with `csr`), then delete this \
                 certificate"
            )));
        }
        self.issuers.issuer_handle(&cert.issuer_id).await?;
        let outcome = self
            .store
            .enqueue(&new_job(id, JobKind::Renew, now(), self.config.retry.max_attempts))
            .await?;
        self.work.notify_one();
        let created = matches!(outcome, EnqueueOutcome::Created(_));
        Ok((outcome.job().clone(), created))
    }

    /// Revokes the versions `scope` covers: by default every version not expired yet, since an
    /// older version stays trusted until it expires. For an ACME issuer the CA revokes each one
    /// first; a CA that refuses leaves the certificate as it was (a version it had revoked
    /// already counts as revoked). Returns the certificate and the version numbers revoked.
    pub async fn revoke(
        &self,
        id: CertificateId,
        reason: RevocationReason,
        scope: RevocationScope,
    ) -> Result<(Certificate, Vec<u32>), ServiceError> {
        let cert = self.certificate(id).await?;
        if let Ok(Issuer::Acme(state)) = self.issuers.issuer_handle(&cert.issuer_id).await {
            let now = now();
            let at_the_ca: Vec<CertificateVersion> = self
                .store
                .versions(id)
                .await?
                .into_iter()
                .filter(|v| match scope {
                    // Versions revoked before are answered `alreadyRevoked`, which is fine.
                    RevocationScope::Unexpired => v.not_after > now || v.version == cert.current_version,
                    RevocationScope::Version(number) => v.version == number,
                })
                .collect();
            if !at_the_ca.is_empty() {
                let acme = self
                    .issuers
                    .ready(&state)
                    .await
                    .map_err(|e| ServiceError::Upstream(e.message))?;
                for version in at_the_ca {
                    let der = pem_block_der(&version.cert_pem, "CERTIFICATE")
                        .map_err(|e| ServiceError::Unavailable(e.to_string()))?;
                    match acme.revoke(&der, reason.code()).await {
                        Ok(()) => {
                            tracing::info!(certificate = %id, version = version.version, serial = %version.serial,
                            issuer = %state.id, "revoked at the CA")
                        }
                        Err(failure)
                            if failure
                                .problem
                                .as_ref()
                                .is_some_and(|p| p.short_type() == "alreadyRevoked") =>
                        {
                            tracing::info!(certificate = %id, version = version.version, "the CA had already revoked it")
                        }
                        Err(failure) => {
                            self.metrics.revocation(state.id.as_str(), "failure");
                            return Err(ServiceError::Upstream(format!(
                                "the CA did not revoke version {} (serial {}): {}",
                                version.version, version.serial, failure.message
                            )));
                        }
                    }
                }
            }
        }
        let (revoked, versions) = self
            .store
            .revoke_certificate(id, reason, scope, now())
            .await
            .map_err(|e| match (e, scope) {
                (ck_store::StoreError::NotFound, RevocationScope::Version(number)) if cert.current_version > 0 => {
                    ServiceError::NotFound(format!("version {number} of certificate {id}"))
                }
                (e, _) => not_found(e, "certificate", id),
            })?;
        self.metrics.revocation(revoked.issuer_id.as_str(), "success");
        self.pki.revoked_on(&revoked.issuer_id).await;
        Ok((revoked, versions))
    }

    /// Drops the stored CSR of certificate `id` (one that carried a secret, such as a SCEP
    /// challenge password, once its job has ended).
    pub(crate) async fn forget_csr(&self, id: CertificateId) -> Result<(), ServiceError> {
        Ok(self.store.forget_csr(id).await?)
    }

    /// Deletes a certificate, its versions and jobs. A certificate with versions still valid
    /// (not expired, not revoked) is refused unless `valid` says what to do with them: revoke
    /// them first (reason cessationOfOperation) or keep them valid, on purpose.
    pub async fn delete(&self, id: CertificateId, valid: ValidVersions) -> Result<(), ServiceError> {
        if valid == ValidVersions::Revoke {
            match self
                .revoke(id, RevocationReason::CessationOfOperation, RevocationScope::Unexpired)
                .await
            {
                // Nothing left to revoke (never issued, or revoked and expired already).
                Ok(_) | Err(ServiceError::Conflict(_)) => {}
                Err(error) => return Err(error),
            }
        }
        match self
            .store
            .delete_certificate(id, valid == ValidVersions::Keep, now())
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(ServiceError::NotFound(format!("certificate {id}"))),
            Err(ck_store::StoreError::Conflict(why)) => Err(ServiceError::Conflict(format!(
                "certificate {id} is still in use: {why}; revoke them with the deletion (`cert delete --revoke`, \
                 `?revoke=true`) or delete it anyway and let them run out (`--keep-valid`, `?keep_valid=true`)"
            ))),
            Err(error) => Err(error.into()),
        }
    }

    /// One certificate; during a database outage, as this node read it last.
    pub async fn certificate(&self, id: CertificateId) -> Result<Certificate, ServiceError> {
        let cache = &self.read_cache;
        if !self.cluster.database_reachable() {
            return cache.certificate(id).ok_or_else(ServiceError::database_unreachable);
        }
        match self.store.certificate(id).await {
            Ok(Some(cert)) => {
                cache.keep_certificate(&cert);
                Ok(cert)
            }
            Ok(None) => Err(ServiceError::NotFound(format!("certificate {id}"))),
            Err(ck_store::StoreError::Disconnected(_)) => {
                self.cluster.database_unreachable();
                cache.certificate(id).ok_or_else(ServiceError::database_unreachable)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// A version's chain (the current version by default), without its key; during a
    /// database outage, as this node read it last.
    pub async fn chain(&self, id: CertificateId, number: Option<u32>) -> Result<CertificateVersion, ServiceError> {
        let cert = self.certificate(id).await?;
        let number = number.unwrap_or(cert.current_version);
        let cache = &self.read_cache;
        if number != 0 && !self.cluster.database_reachable() {
            return cache.version(id, number).ok_or_else(ServiceError::database_unreachable);
        }
        match self.version(id, Some(number)).await {
            Ok((version, _)) => {
                cache.keep_version(&version);
                Ok(version)
            }
            Err(ServiceError::DatabaseUnreachable { .. }) => {
                self.cluster.database_unreachable();
                cache.version(id, number).ok_or_else(ServiceError::database_unreachable)
            }
            Err(error) => Err(error),
        }
    }

    /// A page of the certificates `restriction` reaches. A restricted page is filled from
    /// several store pages (at most 20), so it may hold fewer items than asked while `more`
    /// still says to go on from the last one.
    pub async fn certificates(
        &self,
        filter: &CertificateFilter,
        restriction: &Restriction,
    ) -> Result<CertificatePage, ServiceError> {
        let mut page = self.store.certificates(filter, now()).await?;
        if restriction.is_unrestricted() {
            return Ok(page);
        }
        let limit = filter.limit.clamp(1, 1000) as usize;
        let mut items: Vec<Certificate> = Vec::new();
        for _ in 0..20 {
            let last = page.items.last().map(|c| c.id);
            items.extend(page.items.into_iter().filter(|c| reaches(restriction, c)));
            if items.len() >= limit || !page.more {
                let more = page.more || items.len() > limit;
                items.truncate(limit);
                return Ok(CertificatePage { items, more });
            }
            let next = CertificateFilter {
                cursor: last,
                ..filter.clone()
            };
            page = self.store.certificates(&next, now()).await?;
        }
        // A page of only unreachable certificates still moves the cursor on: the client
        // continues from the last one it was given.
        Ok(CertificatePage { items, more: true })
    }

    /// A page of a sorted, searched list for people (the web UI): the certificates at
    /// `filter.offset` and how many match in all. A restricted token sees only what it
    /// reaches; its list is filtered here (up to 10,000 matches), so its total is exact too.
    pub async fn browse_certificates(
        &self,
        filter: &CertificateFilter,
        restriction: &Restriction,
    ) -> Result<(Vec<Certificate>, u64), ServiceError> {
        let store = &self.store;
        if restriction.is_unrestricted() {
            let page = store.certificates(filter, now()).await?;
            return Ok((page.items, store.count_certificates(filter, now()).await?));
        }
        let mut reachable = Vec::new();
        let mut scan = CertificateFilter {
            offset: 0,
            limit: 1000,
            ..filter.clone()
        };
        for _ in 0..10 {
            let page = store.certificates(&scan, now()).await?;
            reachable.extend(page.items.into_iter().filter(|c| reaches(restriction, c)));
            if !page.more {
                break;
            }
            scan.offset += 1000;
        }
        let total = reachable.len() as u64;
        let items = reachable
            .into_iter()
            .skip(filter.offset as usize)
            .take(filter.limit.clamp(1, 1000) as usize)
            .collect();
        Ok((items, total))
    }

    /// Expiries per day of certificates in use, for `days` days from `start` (a midnight).
    pub async fn expiries_per_day(&self, start: OffsetDateTime, days: u32) -> Result<Vec<u64>, ServiceError> {
        Ok(self.store.expiries_per_day(start, days).await?)
    }

    /// Certificates in use (not revoked) with their expiry, for overviews: id, name, issuer,
    /// expiry and renewal time.
    pub async fn certificate_times(&self) -> Result<Vec<ck_store::CertificateTimes>, ServiceError> {
        Ok(self.store.certificate_times().await?)
    }

    /// Every version of a certificate.
    pub async fn versions(&self, id: CertificateId) -> Result<Vec<CertificateVersion>, ServiceError> {
        self.certificate(id).await?;
        Ok(self.store.versions(id).await?)
    }

    /// A version (the current one by default) and the server-held key, if any.
    pub async fn version(
        &self,
        id: CertificateId,
        number: Option<u32>,
    ) -> Result<(CertificateVersion, Option<String>), ServiceError> {
        let cert = self.certificate(id).await?;
        let number = number.unwrap_or(cert.current_version);
        if number == 0 {
            return Err(ServiceError::Conflict(format!(
                "certificate {id} has no issued version yet (status {}); wait for its job",
                cert.status
            )));
        }
        self.store
            .version_with_key(id, number)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("version {number} of certificate {id}")))
    }

    /// One job.
    pub async fn job(&self, id: JobId) -> Result<Job, ServiceError> {
        self.store
            .job(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("job {id}")))
    }

    /// Cancels a pending job (queued, backing off, or waiting for an agent's CSR) on behalf of
    /// `actor`; requests waiting for it are answered at once. A running or finished job is
    /// refused with 409.
    pub async fn cancel_job(&self, id: JobId, actor: &str) -> Result<Job, ServiceError> {
        let job = self
            .store
            .cancel_job(id, &format!("cancelled by {actor}"), now())
            .await
            .map_err(|e| match e {
                ck_store::StoreError::Conflict(why) => ServiceError::Conflict(format!("job {id}: {why}")),
                other => not_found(other, "job", id),
            })?;
        tracing::info!(job = %id, certificate = %job.certificate_id, kind = %job.kind, actor, "job cancelled");
        self.notify_finished(&[id]);
        Ok(job)
    }

    /// A page of jobs.
    pub async fn jobs(&self, filter: &JobFilter) -> Result<(Vec<Job>, bool), ServiceError> {
        Ok(self.store.jobs(filter).await?)
    }

    /// Waits until the job is finished or `timeout` passes, and returns it as it is then.
    pub async fn wait_for_job(&self, id: JobId, timeout: StdDuration) -> Result<Job, ServiceError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (sender, receiver) = oneshot::channel();
            // Register before reading, so a finish between the read and the wait is not missed.
            if let Ok(mut waiters) = self.waiters.lock() {
                waiters.entry(id).or_default().push(sender);
            }
            let job = self.job(id).await?;
            if job.state.is_terminal() {
                self.forget_waiters(id);
                return Ok(job);
            }
            // Another node may finish the job: poll the store now and then as well.
            let slice = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .min(StdDuration::from_millis(500));
            if slice.is_zero() {
                self.forget_waiters(id);
                return Ok(job);
            }
            let _ = tokio::time::timeout(slice, receiver).await;
        }
    }

    fn forget_waiters(&self, id: JobId) {
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.remove(&id);
        }
    }

    /// Wakes the requests waiting for `ids`, here and (through the database) on other nodes.
    pub(crate) fn notify_finished(&self, ids: &[JobId]) {
        self.wake_waiters(ids);
        if self.store.backend() == ck_store::Backend::Postgres && !ids.is_empty() {
            let (store, ids) = (self.store.clone(), ids.to_vec());
            tokio::spawn(async move {
                if let Err(error) = store.publish_jobs_finished(&ids).await {
                    tracing::debug!(%error, "publishing finished jobs failed; waiters elsewhere poll");
                }
            });
        }
    }

    /// Wakes this node's requests waiting for `ids`.
    pub(crate) fn wake_waiters(&self, ids: &[JobId]) {
        if let Ok(mut waiters) = self.waiters.lock() {
            for id in ids {
                for sender in waiters.remove(id).unwrap_or_default() {
                    let _ = sender.send(());
                }
            }
        }
    }

    /// The agent named or numbered `id_or_name`, for binding a certificate by a caller with
    /// `restriction`. One outside the restriction is "not found" exactly like an unknown one,
    /// so a caller can neither fill another team's work list nor learn which agents exist.
    async fn bound_agent(&self, id_or_name: &str, restriction: &Restriction) -> Result<AgentRecord, ServiceError> {
        match self.store.agent(id_or_name).await? {
            Some(record) if restriction.reaches_labels(record.labels.as_map()) => Ok(record),
            _ => Err(ServiceError::NotFound(format!("agent '{id_or_name}'"))),
        }
    }

    /// One scheduler pass: enqueues a renewal for every due certificate without an active job.
    /// Returns how many jobs were created. Only the leader may run it (`Forbidden` otherwise),
    /// and its writes are refused once the lease has moved on.
    pub async fn enqueue_due_renewals(&self) -> Result<usize, ServiceError> {
        let mut created = 0;
        loop {
            let fence = self
                .cluster
                .leader_fence()
                .ok_or_else(|| ServiceError::Forbidden("this node is not the leader".to_owned()))?;
            let now = now();
            let due = self
                .store
                .due_for_renewal(now, self.config.retry.max_delay, 500)
                .await?;
            let jobs: Vec<_> = due
                .iter()
                .map(|id| new_job(*id, JobKind::Renew, now, self.config.retry.max_attempts))
                .collect();
            let refs: Vec<_> = jobs.iter().collect();
            let created_this_round = usize::try_from(self.store.enqueue_fenced(&refs, &fence).await?).unwrap_or(0);
            created += created_this_round;
            if created_this_round > 0 {
                self.work.notify_waiters();
            }
            if due.len() < 500 || created_this_round == 0 {
                return Ok(created);
            }
        }
    }
}

/// What deleting a certificate does with its versions that are still valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValidVersions {
    /// Refuse the deletion (the default: a deleted certificate is no longer tracked, yet
    /// clients would keep trusting it).
    #[default]
    Refuse,
    /// Revoke them first.
    Revoke,
    /// Leave them valid, on purpose.
    Keep,
}

/// Who makes the key of a new certificate, and its CSR when the client sent one.
fn custody(
    csr: Option<ParsedCsr>,
    asked: Option<KeySource>,
    agent: Option<&AgentRecord>,
) -> Result<(KeySource, Option<String>), ServiceError> {
    let agent_scope = agent.map(|a| a.scope.parse().unwrap_or(AgentScope::Read));
    match (csr, asked, agent_scope) {
        (Some(_), _, Some(_)) => Err(ServiceError::Invalid(
            "a certificate bound to an agent gets its CSRs from the agent: drop the CSR".to_owned(),
        )),
        (Some(csr), None | Some(KeySource::Csr), None) => Ok((KeySource::Csr, Some(csr.pem))),
        (Some(_), Some(other), None) => Err(ServiceError::Invalid(format!(
            "key_source '{}' contradicts the CSR: drop one of them",
            other.as_str()
        ))),
        (None, Some(KeySource::Csr), _) => Err(ServiceError::Invalid(
            "key_source 'csr' needs the CSR itself (csr field)".to_owned(),
        )),
        (None, Some(KeySource::Agent), None) => Err(ServiceError::Invalid(
            "key_source 'agent' needs an agent: name it (agent field, --agent)".to_owned(),
        )),
        (None, Some(KeySource::Agent), Some(AgentScope::Read)) => Err(ServiceError::Invalid(
            "this agent has a read-scope token and cannot make keys: use key_source 'server'".to_owned(),
        )),
        (None, None | Some(KeySource::Agent), Some(AgentScope::Deploy)) => Ok((KeySource::Agent, None)),
        (None, None | Some(KeySource::Server), _) => Ok((KeySource::Server, None)),
    }
}

fn not_found(error: ck_store::StoreError, what: &str, id: impl std::fmt::Display) -> ServiceError {
    match error {
        ck_store::StoreError::NotFound => ServiceError::NotFound(format!("{what} {id}")),
        other => other.into(),
    }
}

/// How `export` encodes a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// The chain, PEM, leaf first.
    Pem,
    /// The leaf alone, DER.
    Der,
    /// Key and chain in a password-protected PKCS#12 file (server-made keys only).
    Pkcs12,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pem" => Ok(Self::Pem),
            "der" => Ok(Self::Der),
            "pkcs12" | "p12" | "pfx" => Ok(Self::Pkcs12),
            other => Err(format!("unknown export format '{other}' (expected pem, der or pkcs12)")),
        }
    }
}

/// An exported certificate.
#[derive(Debug, Clone)]
pub struct Export {
    /// The encoded bytes.
    pub bytes: Vec<u8>,
    /// Their media type.
    pub content_type: &'static str,
    /// A file name for them.
    pub file_name: String,
}

impl Certificates {
    /// A version (the current one by default) as PEM, DER or PKCS#12. PKCS#12 needs the
    /// server-held key and a password of at least 8 characters.
    pub async fn export(
        &self,
        id: CertificateId,
        number: Option<u32>,
        format: ExportFormat,
        password: Option<&str>,
    ) -> Result<Export, ServiceError> {
        let cert = self.certificate(id).await?;
        let (version, key) = self.version(id, number).await?;
        let stem = cert
            .name
            .replace(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'), "_");
        match format {
            ExportFormat::Pem => Ok(Export {
                bytes: version.chain_pem.into_bytes(),
                content_type: "application/x-pem-file",
                file_name: format!("{stem}.pem"),
            }),
            ExportFormat::Der => Ok(Export {
                bytes: pem_block_der(&version.cert_pem, "CERTIFICATE")
                    .map_err(|e| ServiceError::Unavailable(e.to_string()))?,
                content_type: "application/pkix-cert",
                file_name: format!("{stem}.der"),
            }),
            ExportFormat::Pkcs12 => {
                let key = key.ok_or_else(|| {
                    ServiceError::Conflict(format!(
                        "certificate '{}' has a key made by the {}: the server has no key to put in a PKCS#12 file",
                        cert.name,
                        match cert.key_source {
                            KeySource::Agent => "agent",
                            _ => "client",
                        }
                    ))
                })?;
                let password = password.filter(|p| p.chars().count() >= 8).ok_or_else(|| {
                    ServiceError::Invalid(
                        "a PKCS#12 export needs a password of at least 8 characters (X-Export-Password header)"
                            .to_owned(),
                    )
                })?;
                let bytes = ck_pki::pkcs12_from_pem(&version.chain_pem, &key, password, &cert.name)
                    .map_err(|e| ServiceError::Unavailable(e.to_string()))?;
                tracing::info!(certificate = %id, version = version.version, "exported key and chain as PKCS#12");
                Ok(Export {
                    bytes,
                    content_type: "application/x-pkcs12",
                    file_name: format!("{stem}.p12"),
                })
            }
        }
    }
}
