//! The control plane: what the API (and later the UI and the agent protocol) can ask for.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use ck_domain::{
    Certificate, CertificateId, CertificateStatus, CertificateVersion, IssuanceRequest, IssuerId, Job, JobId, JobKind,
    JobState, KeySource, KeyType, Labels, RenewalPolicy, RevocationReason, leaf_validity,
};
use ck_pki::{LocalCa, ParsedCsr};
use ck_store::{CertificateFilter, CertificatePage, EnqueueOutcome, JobFilter, Store};
use time::{Duration, OffsetDateTime};
use tokio::sync::{Notify, oneshot};

use crate::group_commit::CreateQueue;
use crate::metrics::Metrics;
use crate::{ServerConfig, ServiceError, TokenVerifier, now};

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
}

/// An issuer as the API shows it.
#[derive(Debug, Clone)]
pub struct IssuerInfo {
    /// Id.
    pub id: IssuerId,
    /// Kind (`local`).
    pub kind: String,
    /// The root certificate (what to trust).
    pub ca_pem: String,
    /// The signing CA's expiry.
    pub not_after: OffsetDateTime,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) config: ServerConfig,
    pub(crate) cas: HashMap<IssuerId, Arc<LocalCa>>,
    pub(crate) tokens: TokenVerifier,
    /// Wakes idle workers when a job is enqueued on this node.
    pub(crate) work_available: Arc<Notify>,
    /// Requests waiting for a job to finish (`?wait=`), woken by the worker that finishes it.
    pub(crate) waiters: Mutex<HashMap<JobId, Vec<oneshot::Sender<()>>>>,
    pub(crate) metrics: Metrics,
    /// Group commit of new certificates.
    creates: CreateQueue,
}

/// The control plane's services. Cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    pub(crate) inner: Arc<Inner>,
}

impl ControlPlane {
    pub(crate) fn new(
        store: Store,
        config: ServerConfig,
        cas: HashMap<IssuerId, Arc<LocalCa>>,
        tokens: TokenVerifier,
    ) -> Self {
        let work_available = Arc::new(Notify::new());
        let creates = CreateQueue::start(store.clone(), work_available.clone());
        let inner = Inner {
            store,
            config,
            cas,
            tokens,
            work_available,
            waiters: Mutex::new(HashMap::new()),
            metrics: Metrics::new(),
            creates,
        };
        Self { inner: Arc::new(inner) }
    }

    /// The token verifier for the API's authentication layer.
    pub fn tokens(&self) -> &TokenVerifier {
        &self.inner.tokens
    }

    /// The renewal policy of certificates whose request names none; a partial request policy
    /// fills its gaps from it.
    pub fn default_renewal(&self) -> RenewalPolicy {
        self.inner.config.default_renewal
    }

    /// The store (readiness checks).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Validates a request and stores the certificate with its first issuance job.
    pub async fn create_certificate(&self, request: NewCertificate) -> Result<(Certificate, Job), ServiceError> {
        let issuer_id: IssuerId = match request.issuer.as_deref() {
            Some(text) => text.parse().map_err(|e| ServiceError::Invalid(format!("{e}")))?,
            None => IssuerId::local(),
        };
        let ca = self.ca(&issuer_id)?;
        let csr = match request.csr_pem.as_deref() {
            Some(pem) => Some(ParsedCsr::parse(pem.as_bytes()).map_err(|e| ServiceError::Invalid(e.to_string()))?),
            None => None,
        };
        let names = IssuanceRequest::resolve(
            request.common_name.as_deref(),
            &request.sans,
            csr.as_ref().map(|c| &c.names),
            &self.inner.config.name_policy,
        )
        .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let labels = Labels::new(request.labels).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let validity = match request.validity_days {
            Some(days) => Duration::days(i64::from(days)),
            None => self.inner.config.default_validity,
        };
        let now = now();
        leaf_validity(now, validity, self.inner.config.max_validity, ca.not_after())
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let name = request
            .name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| names.common_name.clone());
        if name.len() > 255 {
            return Err(ServiceError::Invalid("name is longer than 255 characters".to_owned()));
        }
        let (key_source, csr_pem) = match csr {
            Some(csr) => (KeySource::Csr, Some(csr.pem)),
            None => (KeySource::Server, None),
        };
        let cert = Certificate {
            id: CertificateId::new(),
            name,
            common_name: names.common_name,
            sans: names.sans,
            issuer_id,
            key_type: request.key_type.unwrap_or_default(),
            key_source,
            csr_pem,
            status: CertificateStatus::Pending,
            validity,
            renewal_policy: request.renewal_policy.unwrap_or(self.inner.config.default_renewal),
            labels,
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
        let job = self.new_job(cert.id, JobKind::Issue, now);
        self.inner.creates.create(cert.clone(), job.clone()).await?;
        Ok((cert, job))
    }

    /// Forces a renewal now. If the certificate already has a job in flight, that job is
    /// returned instead of a second one.
    pub async fn renew(&self, id: CertificateId) -> Result<(Job, bool), ServiceError> {
        let cert = self.certificate(id).await?;
        self.ca(&cert.issuer_id)?;
        let outcome = self
            .inner
            .store
            .enqueue(&self.new_job(id, JobKind::Renew, now()))
            .await?;
        self.inner.work_available.notify_one();
        let created = matches!(outcome, EnqueueOutcome::Created(_));
        Ok((outcome.job().clone(), created))
    }

    /// Revokes the current version.
    pub async fn revoke(&self, id: CertificateId, reason: RevocationReason) -> Result<Certificate, ServiceError> {
        self.inner
            .store
            .revoke_certificate(id, reason, now())
            .await
            .map_err(|e| not_found(e, "certificate", id))
    }

    /// Deletes a certificate, its versions and jobs.
    pub async fn delete(&self, id: CertificateId) -> Result<(), ServiceError> {
        if self.inner.store.delete_certificate(id).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!("certificate {id}")))
        }
    }

    /// One certificate.
    pub async fn certificate(&self, id: CertificateId) -> Result<Certificate, ServiceError> {
        self.inner
            .store
            .certificate(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("certificate {id}")))
    }

    /// A page of certificates.
    pub async fn certificates(&self, filter: &CertificateFilter) -> Result<CertificatePage, ServiceError> {
        Ok(self.inner.store.certificates(filter, now()).await?)
    }

    /// Every version of a certificate.
    pub async fn versions(&self, id: CertificateId) -> Result<Vec<CertificateVersion>, ServiceError> {
        self.certificate(id).await?;
        Ok(self.inner.store.versions(id).await?)
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
        self.inner
            .store
            .version_with_key(id, number)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("version {number} of certificate {id}")))
    }

    /// Every issuer.
    pub fn issuers(&self) -> Vec<IssuerInfo> {
        let mut issuers: Vec<IssuerInfo> = self
            .inner
            .cas
            .iter()
            .map(|(id, ca)| IssuerInfo {
                id: id.clone(),
                kind: "local".to_owned(),
                ca_pem: ca.root_pem().to_owned(),
                not_after: ca.not_after(),
            })
            .collect();
        issuers.sort_by(|a, b| a.id.cmp(&b.id));
        issuers
    }

    /// One issuer.
    pub fn issuer(&self, id: &str) -> Result<IssuerInfo, ServiceError> {
        self.issuers()
            .into_iter()
            .find(|issuer| issuer.id.as_str() == id)
            .ok_or_else(|| ServiceError::NotFound(format!("issuer '{id}'")))
    }

    /// One job.
    pub async fn job(&self, id: JobId) -> Result<Job, ServiceError> {
        self.inner
            .store
            .job(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("job {id}")))
    }

    /// A page of jobs.
    pub async fn jobs(&self, filter: &JobFilter) -> Result<(Vec<Job>, bool), ServiceError> {
        Ok(self.inner.store.jobs(filter).await?)
    }

    /// Waits until the job is finished or `timeout` passes, and returns it as it is then.
    pub async fn wait_for_job(&self, id: JobId, timeout: StdDuration) -> Result<Job, ServiceError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (sender, receiver) = oneshot::channel();
            // Register before reading, so a finish between the read and the wait is not missed.
            if let Ok(mut waiters) = self.inner.waiters.lock() {
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

    /// Prometheus text exposition of the control plane's metrics.
    pub async fn render_metrics(&self) -> Result<String, ServiceError> {
        let certificates = self.inner.store.certificate_counts().await?;
        let jobs = self.inner.store.job_counts().await?;
        self.inner.metrics.render(&certificates, &jobs)
    }

    fn forget_waiters(&self, id: JobId) {
        if let Ok(mut waiters) = self.inner.waiters.lock() {
            waiters.remove(&id);
        }
    }

    pub(crate) fn notify_finished(&self, ids: &[JobId]) {
        if let Ok(mut waiters) = self.inner.waiters.lock() {
            for id in ids {
                for sender in waiters.remove(id).unwrap_or_default() {
                    let _ = sender.send(());
                }
            }
        }
    }

    pub(crate) fn ca(&self, id: &IssuerId) -> Result<Arc<LocalCa>, ServiceError> {
        self.inner.cas.get(id).cloned().ok_or_else(|| {
            ServiceError::Invalid(format!(
                "unknown issuer '{id}' (known: {})",
                self.inner
                    .cas
                    .keys()
                    .map(IssuerId::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    pub(crate) fn new_job(&self, certificate_id: CertificateId, kind: JobKind, now: OffsetDateTime) -> Job {
        Job {
            id: JobId::new(),
            kind,
            certificate_id,
            state: JobState::Pending,
            attempts: 0,
            max_attempts: self.inner.config.retry.max_attempts,
            run_after: now,
            last_error: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
        }
    }
}

fn not_found(error: ck_store::StoreError, what: &str, id: impl std::fmt::Display) -> ServiceError {
    match error {
        ck_store::StoreError::NotFound => ServiceError::NotFound(format!("{what} {id}")),
        other => other.into(),
    }
}
