//! The pages: each handler reads through the services it takes as state, checks the session's scopes, and
//! fills a template with strings ready to show (templates hold no logic beyond loops and ifs).

use std::collections::BTreeMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use ck_domain::{
    Certificate, CertificateId, CertificateStatus, IssuerId, Job, JobKind, JobState, RevocationReason, RevocationScope,
    Scope, Scopes,
};
use ck_server::{Access, Agents, Certificates, Issuers, NewCertificate, NewToken, Notifications, ServiceError, now};
use ck_store::{AuditFilter, CertificateFilter, CertificateOrder, JobFilter, NotificationFilter, NotificationState};
use serde::Deserialize;
use time::{Duration, OffsetDateTime};

use crate::error::WebError;
use crate::session::Session;
use crate::view::{HeatDay, Page, Pager, expiry_heatmap, heatmap_of_counts, pager, relative, when};

/// Certificates per list page.
const PAGE_SIZE: u32 = 50;

pub(crate) async fn not_found() -> WebError {
    WebError::NotFound("no such page".to_owned())
}

type PageResult<T> = Result<T, WebError>;

/// A certificate row of a list.
struct CertRow {
    id: String,
    name: String,
    names: String,
    status: String,
    issuer: String,
    expires: String,
    expires_in: String,
}

fn cert_row(cert: &Certificate, now: OffsetDateTime) -> CertRow {
    CertRow {
        id: cert.id.to_string(),
        name: cert.name.clone(),
        names: cert.sans.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        status: cert.status_at(now).to_string(),
        issuer: cert.issuer_id.to_string(),
        expires: when(cert.not_after),
        expires_in: relative(cert.not_after, now),
    }
}

/// A job row.
struct JobRow {
    kind: String,
    state: String,
    attempts: String,
    certificate_id: String,
    error: String,
    updated: String,
    /// A failed issue or renew job: offer to try again.
    retryable: bool,
}

fn job_row(job: &Job, now: OffsetDateTime) -> JobRow {
    JobRow {
        kind: job.kind.as_str().to_owned(),
        state: job.state.as_str().to_owned(),
        attempts: format!("{}/{}", job.attempts, job.max_attempts),
        certificate_id: job.certificate_id.to_string(),
        error: job.last_error.clone().unwrap_or_default(),
        updated: relative(Some(job.updated_at), now),
        retryable: job.state == JobState::Failed && job.kind != JobKind::Deploy,
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "dashboard.html")]
pub(crate) struct DashboardPage {
    page: Page,
    counts: Vec<(String, u64)>,
    total: u64,
    heat: Vec<HeatDay>,
    heat_total: u64,
    attention: Vec<CertRow>,
    failed_jobs: Vec<JobRow>,
    jobs_shown: bool,
    issuers: Vec<IssuerRow>,
    agents_online: usize,
    agents_offline: usize,
    agents_never: usize,
}

pub(crate) async fn dashboard(
    State(certificates): State<Certificates>,
    State(agents): State<Agents>,
    State(issuers): State<Issuers>,
    Extension(session): Extension<Session>,
) -> PageResult<DashboardPage> {
    // The UI shows exactly what the API would: the dashboard is certificates, jobs and agents.
    session.require(Scope::Read)?;
    let restriction = &session.operator.restriction;
    let now = now();
    let mut counts = Vec::new();
    let mut total = 0;
    let mut attention = Vec::new();
    for status in CertificateStatus::ALL {
        let filter = CertificateFilter {
            status: Some(status),
            order: CertificateOrder::Expiry,
            limit: 10,
            ..CertificateFilter::default()
        };
        let (items, n) = certificates.browse_certificates(&filter, restriction).await?;
        total += n;
        counts.push((status.to_string(), n));
        if matches!(
            status,
            CertificateStatus::Failed | CertificateStatus::Expiring | CertificateStatus::Expired
        ) {
            attention.extend(items.iter().map(|c| cert_row(c, now)));
        }
    }
    // Expiries of the next 90 days, of what this token reaches: counted by the database for
    // an open token, from the reachable certificates for a restricted one.
    let heat = if restriction.is_unrestricted() {
        let midnight = now.replace_time(time::Time::MIDNIGHT);
        heatmap_of_counts(&certificates.expiries_per_day(midnight, 90).await?, now)
    } else {
        let mut scan = CertificateFilter {
            expiring_before: Some(now + Duration::days(90)),
            order: CertificateOrder::Expiry,
            limit: 1000,
            ..CertificateFilter::default()
        };
        let mut expiries = Vec::new();
        loop {
            let (items, n) = certificates.browse_certificates(&scan, restriction).await?;
            expiries.extend(
                items
                    .iter()
                    .filter(|c| c.status != CertificateStatus::Revoked)
                    .filter_map(|c| c.not_after),
            );
            scan.offset += 1000;
            if u64::from(scan.offset) >= n || scan.offset >= 20_000 {
                break;
            }
        }
        expiry_heatmap(&expiries, now, 90)
    };
    let heat_total = heat.iter().map(|d| d.count).sum();
    // Jobs are listed per certificate for restricted tokens (as in the API): only open tokens
    // see the failing jobs of the whole fleet here.
    let jobs_shown = restriction.is_unrestricted();
    let failed_jobs = if jobs_shown {
        recent_failed_jobs(&certificates, 10)
            .await?
            .iter()
            .map(|j| job_row(j, now))
            .collect()
    } else {
        Vec::new()
    };
    let agents = agents.reachable_agents(restriction).await?;
    let count = |s: ck_server::AgentStatus| agents.iter().filter(|a| a.status == s).count();
    Ok(DashboardPage {
        page: session.page("Dashboard", "dashboard"),
        counts,
        total,
        heat,
        heat_total,
        attention,
        failed_jobs,
        jobs_shown,
        issuers: issuer_rows(&issuers, now).await?,
        agents_online: count(ck_server::AgentStatus::Online),
        agents_offline: count(ck_server::AgentStatus::Offline),
        agents_never: count(ck_server::AgentStatus::Never),
    })
}

/// The newest failed jobs (jobs are listed oldest first, so read pages and keep the tail).
async fn recent_failed_jobs(certificates: &Certificates, n: usize) -> PageResult<Vec<Job>> {
    let mut filter = JobFilter {
        state: Some(JobState::Failed),
        limit: 1000,
        ..JobFilter::default()
    };
    let mut kept: Vec<Job> = Vec::new();
    for _ in 0..20 {
        let (jobs, more) = certificates.jobs(&filter).await?;
        filter.cursor = jobs.last().map(|j| j.id);
        kept.extend(jobs);
        let excess = kept.len().saturating_sub(n);
        kept.drain(..excess);
        if !more {
            break;
        }
    }
    kept.reverse();
    Ok(kept)
}

#[derive(Deserialize, Default)]
pub(crate) struct ListQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    sort: Option<String>,
    #[serde(default)]
    page: Option<u32>,
}

#[derive(Template, WebTemplate)]
#[template(path = "certificates.html")]
pub(crate) struct CertificatesPage {
    page: Page,
    rows: Vec<CertRow>,
    pager: Pager,
    q: String,
    status: String,
    issuer: String,
    sort: String,
    statuses: Vec<String>,
    issuers: Vec<String>,
    /// The query string without `page=`, for the page links.
    base_query: String,
    can_create: bool,
}

pub(crate) async fn certificates(
    State(certificates): State<Certificates>,
    State(issuers): State<Issuers>,
    Extension(session): Extension<Session>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> PageResult<CertificatesPage> {
    session.require(Scope::Read)?;
    let Query(query) = query.map_err(|e| WebError::Invalid(e.body_text()))?;
    let now = now();
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(s.parse::<CertificateStatus>().map_err(WebError::Invalid)?),
        None => None,
    };
    let issuer = match query.issuer.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(
            s.parse::<IssuerId>()
                .map_err(|e| WebError::Invalid(format!("issuer: {e}")))?,
        ),
        None => None,
    };
    let (order, sort) = match query.sort.as_deref() {
        Some("name") => (CertificateOrder::Name, "name"),
        Some("created") => (CertificateOrder::Created, "created"),
        _ => (CertificateOrder::Expiry, "expiry"),
    };
    let requested = query.page.unwrap_or(1).max(1);
    let mut filter = CertificateFilter {
        search: query.q.clone().filter(|q| !q.trim().is_empty()),
        status,
        issuer_id: issuer,
        order,
        offset: (requested - 1).saturating_mul(PAGE_SIZE),
        limit: PAGE_SIZE,
        ..CertificateFilter::default()
    };
    let (mut items, total) = certificates
        .browse_certificates(&filter, &session.operator.restriction)
        .await?;
    let pager = pager(requested, PAGE_SIZE, total);
    if pager.page != requested {
        // Past the end (the list shrank): show the last page instead of an empty one.
        filter.offset = (pager.page - 1) * PAGE_SIZE;
        items = certificates
            .browse_certificates(&filter, &session.operator.restriction)
            .await?
            .0;
    }
    let q = query.q.unwrap_or_default();
    let status = query.status.unwrap_or_default();
    let issuer = query.issuer.unwrap_or_default();
    let base_query = form_urlencoded(&[("q", &q), ("status", &status), ("issuer", &issuer), ("sort", sort)]);
    Ok(CertificatesPage {
        page: session.page("Certificates", "certificates"),
        rows: items.iter().map(|c| cert_row(c, now)).collect(),
        pager,
        q,
        status,
        issuer,
        sort: sort.to_owned(),
        statuses: CertificateStatus::ALL.iter().map(ToString::to_string).collect(),
        issuers: issuers.issuers().await?.iter().map(|i| i.id.to_string()).collect(),
        base_query,
        can_create: session.can(Scope::Create),
    })
}

/// `a=1&b=x%20y`: form encoding for links.
fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| {
            let value: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={value}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

struct VersionRow {
    version: u32,
    serial: String,
    not_before: String,
    not_after: String,
    revoked: String,
}

struct AuditRow {
    at: String,
    actor: String,
    action: String,
    resource: String,
    outcome: String,
    detail: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "certificate.html")]
pub(crate) struct CertificatePage {
    page: Page,
    cert: CertRow,
    common_name: String,
    key_source: String,
    key_type: String,
    agent: String,
    created: String,
    renew_at: String,
    renew_in: String,
    version: u32,
    serial: String,
    fingerprint: String,
    labels: Vec<(String, String)>,
    last_error: String,
    versions: Vec<VersionRow>,
    jobs: Vec<JobRow>,
    deployments: Vec<JobRow>,
    audit: Vec<AuditRow>,
    audit_shown: bool,
    can_renew: bool,
    can_revoke: bool,
    /// A server-made key and a token with the export-key scope: offer PKCS#12.
    can_export_key: bool,
    chain_pem: String,
    reasons: Vec<String>,
    message: String,
}

#[derive(Deserialize, Default)]
pub(crate) struct DetailQuery {
    #[serde(default)]
    done: Option<String>,
}

pub(crate) async fn certificate(
    State(certificates): State<Certificates>,
    State(access): State<Access>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(query): Query<DetailQuery>,
) -> PageResult<CertificatePage> {
    session.require(Scope::Read)?;
    let cert = reachable(&certificates, &session, &id).await?;
    let now = now();
    let versions = certificates.versions(cert.id).await?;
    let (jobs, _) = certificates
        .jobs(&JobFilter {
            certificate_id: Some(cert.id),
            limit: 200,
            ..JobFilter::default()
        })
        .await?;
    let (deployments, jobs): (Vec<&Job>, Vec<&Job>) = jobs.iter().rev().partition(|j| j.kind == JobKind::Deploy);
    // The audit trail is the admin's; others see the certificate's own facts.
    let audit_shown = session.can(Scope::Admin) && session.operator.restriction.is_unrestricted();
    let audit = if audit_shown {
        access
            .audit_events(
                &session.principal(),
                &AuditFilter {
                    resource: Some(format!("certificates/{}", cert.id)),
                    limit: 200,
                    newest_first: true,
                    ..AuditFilter::default()
                },
            )
            .await?
            .0
            .iter()
            .map(audit_row)
            .collect()
    } else {
        Vec::new()
    };
    let message = match query.done.as_deref() {
        Some("renew") => "Renewal queued: the job below runs it.".to_owned(),
        Some("revoke") => "Revoked.".to_owned(),
        Some("create") => "Created: the issue job below runs it.".to_owned(),
        _ => String::new(),
    };
    let in_use = cert.status != CertificateStatus::Revoked && cert.status != CertificateStatus::Pending;
    let chain_pem = match cert.current_version {
        0 => String::new(),
        _ => certificates.chain(cert.id, None).await?.chain_pem,
    };
    Ok(CertificatePage {
        page: session.page(&cert.name, "certificates"),
        cert: cert_row(&cert, now),
        common_name: cert.common_name.clone(),
        key_source: cert.key_source.as_str().to_owned(),
        key_type: cert.key_type.to_string(),
        agent: cert.agent_id.clone().unwrap_or_else(|| "-".to_owned()),
        created: when(Some(cert.created_at)),
        renew_at: when(cert.renew_at),
        renew_in: cert.renew_at.map(|at| relative(Some(at), now)).unwrap_or_default(),
        version: cert.current_version,
        serial: cert.serial.clone().unwrap_or_else(|| "-".to_owned()),
        fingerprint: cert.fingerprint.clone().unwrap_or_else(|| "-".to_owned()),
        labels: cert
            .labels
            .as_map()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        last_error: cert.last_error.clone().unwrap_or_default(),
        versions: versions
            .iter()
            .rev()
            .map(|v| VersionRow {
                version: v.version,
                serial: v.serial.clone(),
                not_before: when(Some(v.not_before)),
                not_after: when(Some(v.not_after)),
                // Only the current version can be revoked (a renewal supersedes the old one).
                revoked: if v.version == cert.current_version && cert.status == CertificateStatus::Revoked {
                    cert.revocation_reason
                        .map_or_else(|| "revoked".to_owned(), |r| format!("revoked ({r})"))
                } else {
                    String::new()
                },
            })
            .collect(),
        jobs: jobs.into_iter().map(|j| job_row(j, now)).collect(),
        deployments: deployments.into_iter().map(|j| job_row(j, now)).collect(),
        audit,
        audit_shown,
        can_renew: session.can(Scope::Update) && cert.status != CertificateStatus::Pending,
        can_revoke: session.can(Scope::Delete) && in_use,
        can_export_key: session.can(Scope::ExportKey)
            && cert.key_source == ck_domain::KeySource::Server
            && cert.current_version > 0,
        chain_pem,
        reasons: RevocationReason::ALL.iter().map(ToString::to_string).collect(),
        message,
    })
}

/// A certificate this session's token reaches; any other is "not found".
async fn reachable(certificates: &Certificates, session: &Session, id: &str) -> PageResult<Certificate> {
    let id: CertificateId = id
        .parse()
        .map_err(|_| WebError::NotFound(format!("certificate {id}")))?;
    certificates
        .reachable_certificate(id, &session.operator.restriction)
        .await
        .map_err(|_| WebError::NotFound(format!("certificate {id} not found")))
}

fn audit_row(record: &ck_store::AuditRecord) -> AuditRow {
    AuditRow {
        at: when(Some(record.at)),
        actor: record.actor.clone(),
        action: record.action.clone(),
        resource: record.resource.clone().unwrap_or_default(),
        outcome: record.outcome.clone(),
        detail: record.detail.clone().unwrap_or_default(),
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    csrf: String,
}

pub(crate) async fn renew(
    State(certificates): State<Certificates>,
    State(access): State<Access>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> PageResult<Redirect> {
    let Form(form) = form?;
    session.authorize(&form.csrf, Scope::Update)?;
    let cert = reachable(&certificates, &session, &id).await?;
    let (job, _) = certificates.renew(cert.id).await?;
    session
        .record(
            &access,
            "certificate.renew",
            format!("certificates/{}", cert.id),
            Some(format!("web UI; job {}", job.id)),
        )
        .await;
    Ok(Redirect::to(&format!("/ui/certificates/{}?done=renew", cert.id)))
}

#[derive(Deserialize)]
pub(crate) struct RevokeForm {
    csrf: String,
    reason: String,
}

pub(crate) async fn revoke(
    State(certificates): State<Certificates>,
    State(access): State<Access>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    form: Result<Form<RevokeForm>, FormRejection>,
) -> PageResult<Redirect> {
    let Form(form) = form?;
    session.authorize(&form.csrf, Scope::Delete)?;
    let reason: RevocationReason = form
        .reason
        .parse()
        .map_err(|e: ck_domain::UnknownRevocationReason| WebError::Invalid(e.to_string()))?;
    let cert = reachable(&certificates, &session, &id).await?;
    certificates.revoke(cert.id, reason, RevocationScope::Unexpired).await?;
    session
        .record(
            &access,
            "certificate.revoke",
            format!("certificates/{}", cert.id),
            Some(format!("web UI; reason {reason}")),
        )
        .await;
    Ok(Redirect::to(&format!("/ui/certificates/{}?done=revoke", cert.id)))
}

pub(crate) async fn chain_pem(
    State(certificates): State<Certificates>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> PageResult<Response> {
    session.require(Scope::Read)?;
    let cert = reachable(&certificates, &session, &id).await?;
    let version = certificates.chain(cert.id, None).await?;
    let file = format!("attachment; filename=\"{}.pem\"", safe_file_name(&cert.name));
    Ok((
        [
            (header::CONTENT_TYPE, "application/pem-certificate-chain".to_owned()),
            (header::CONTENT_DISPOSITION, file),
        ],
        version.chain_pem,
    )
        .into_response())
}

#[derive(Deserialize)]
pub(crate) struct ExportForm {
    csrf: String,
    password: String,
}

/// The key and chain as a password-protected PKCS#12 file (a POST: the password stays out of
/// URLs and logs).
pub(crate) async fn export_pkcs12(
    State(certificates): State<Certificates>,
    State(access): State<Access>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    form: Result<Form<ExportForm>, FormRejection>,
) -> PageResult<Response> {
    let Form(form) = form?;
    session.authorize(&form.csrf, Scope::ExportKey)?;
    let cert = reachable(&certificates, &session, &id).await?;
    let export = certificates
        .export(cert.id, None, ck_server::ExportFormat::Pkcs12, Some(&form.password))
        .await
        .map_err(|error| match error {
            ServiceError::Invalid(_) => WebError::Invalid(
                "the PKCS#12 password needs at least 8 characters: go back and choose a longer one".to_owned(),
            ),
            error => error.into(),
        })?;
    session
        .record(
            &access,
            "certificate.export",
            format!("certificates/{}", cert.id),
            Some("web UI; PKCS#12".to_owned()),
        )
        .await;
    let file = format!("attachment; filename=\"{}\"", safe_file_name(&export.file_name));
    Ok((
        [
            (header::CONTENT_TYPE, export.content_type.to_owned()),
            (header::CONTENT_DISPOSITION, file),
        ],
        export.bytes,
    )
        .into_response())
}

fn safe_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Template, WebTemplate)]
#[template(path = "new_certificate.html")]
pub(crate) struct NewCertificatePage {
    page: Page,
    issuers: Vec<String>,
    form: NewCertificateForm,
    error: String,
}

#[derive(Deserialize, Default, Clone)]
pub(crate) struct NewCertificateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    common_name: String,
    #[serde(default)]
    sans: String,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    validity_days: String,
    #[serde(default)]
    labels: String,
}

pub(crate) async fn new_certificate(
    State(issuers): State<Issuers>,
    Extension(session): Extension<Session>,
) -> PageResult<NewCertificatePage> {
    session.require(Scope::Create)?;
    new_certificate_page(&issuers, &session, NewCertificateForm::default(), String::new()).await
}

async fn new_certificate_page(
    issuers: &Issuers,
    session: &Session,
    form: NewCertificateForm,
    error: String,
) -> PageResult<NewCertificatePage> {
    Ok(NewCertificatePage {
        page: session.page("New certificate", "certificates"),
        issuers: issuers.issuers().await?.iter().map(|i| i.id.to_string()).collect(),
        form,
        error,
    })
}

pub(crate) async fn create_certificate(
    State(certificates): State<Certificates>,
    State(issuers): State<Issuers>,
    State(access): State<Access>,
    Extension(session): Extension<Session>,
    form: Result<Form<NewCertificateForm>, FormRejection>,
) -> PageResult<Response> {
    let Form(form) = form?;
    session.authorize(&form.csrf, Scope::Create)?;
    let request = match parse_new_certificate(&form, &session) {
        Ok(request) => request,
        Err(message) => {
            let page = new_certificate_page(&issuers, &session, form, message).await?;
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
        }
    };
    match certificates.create_certificate(request).await {
        Ok((cert, job)) => {
            session
                .record(
                    &access,
                    "certificate.create",
                    format!("certificates/{}", cert.id),
                    Some(format!("web UI; job {}", job.id)),
                )
                .await;
            Ok(Redirect::to(&format!("/ui/certificates/{}?done=create", cert.id)).into_response())
        }
        // The caller's mistakes are shown on the form, with what was typed.
        Err(ServiceError::Invalid(message) | ServiceError::Forbidden(message) | ServiceError::Conflict(message)) => {
            let page = new_certificate_page(&issuers, &session, form, message).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(error) => Err(error.into()),
    }
}

/// The form as a request, or the message that says which field is wrong and how.
fn parse_new_certificate(form: &NewCertificateForm, session: &Session) -> Result<NewCertificate, String> {
    let common_name = form.common_name.trim();
    if common_name.is_empty() {
        return Err("Common name: give the main DNS name, e.g. www.example.com".to_owned());
    }
    let sans = form
        .sans
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let validity_days = match form.validity_days.trim() {
        "" => None,
        text => Some(
            text.parse::<u32>()
                .ok()
                .filter(|d| *d > 0)
                .ok_or_else(|| format!("Validity: '{text}' is not a number of days, e.g. 90"))?,
        ),
    };
    let mut labels = BTreeMap::new();
    for line in form.labels.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("Labels: '{line}' is not key=value, e.g. team=web"))?;
        labels.insert(key.trim().to_owned(), value.trim().to_owned());
    }
    Ok(NewCertificate {
        common_name: Some(common_name.to_owned()),
        sans,
        issuer: Some(form.issuer.trim().to_owned()).filter(|s| !s.is_empty()),
        validity_days,
        labels,
        restriction: session.operator.restriction.clone(),
        ..NewCertificate::default()
    })
}

struct IssuerRow {
    id: String,
    kind: String,
    directory: String,
    health: String,
    healthy: bool,
    detail: String,
    checked: String,
    ca_expires: String,
}

async fn issuer_rows(issuers: &Issuers, now: OffsetDateTime) -> PageResult<Vec<IssuerRow>> {
    Ok(issuers
        .issuers()
        .await?
        .iter()
        .map(|i| {
            let (health, healthy, detail, checked) = match &i.health {
                Some(h) => (
                    if h.healthy { "healthy" } else { "unhealthy" }.to_owned(),
                    h.healthy,
                    h.detail.clone(),
                    relative(Some(h.checked_at), now),
                ),
                None => ("not checked yet".to_owned(), true, String::new(), "-".to_owned()),
            };
            IssuerRow {
                id: i.id.to_string(),
                kind: i.kind.clone(),
                directory: i.directory.clone().unwrap_or_default(),
                health,
                healthy,
                detail,
                checked,
                ca_expires: when(i.not_after),
            }
        })
        .collect())
}

#[derive(Template, WebTemplate)]
#[template(path = "issuers.html")]
pub(crate) struct IssuersPage {
    page: Page,
    issuers: Vec<IssuerRow>,
}

pub(crate) async fn issuers(
    State(issuers): State<Issuers>,
    Extension(session): Extension<Session>,
) -> PageResult<IssuersPage> {
    session.require(Scope::Read)?;
    Ok(IssuersPage {
        page: session.page("Issuers", "issuers"),
        issuers: issuer_rows(&issuers, now()).await?,
    })
}

struct AgentRow {
    name: String,
    status: String,
    hostname: String,
    version: String,
    last_seen: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "agents.html")]
pub(crate) struct AgentsPage {
    page: Page,
    agents: Vec<AgentRow>,
}

pub(crate) async fn agents(
    State(agents): State<Agents>,
    Extension(session): Extension<Session>,
) -> PageResult<AgentsPage> {
    session.require(Scope::Read)?;
    let now = now();
    Ok(AgentsPage {
        page: session.page("Agents", "agents"),
        agents: agents
            .reachable_agents(&session.operator.restriction)
            .await?
            .iter()
            .map(|a| AgentRow {
                name: a.record.name.clone(),
                status: a.status.as_str().to_owned(),
                hostname: a.record.facts.hostname.clone().unwrap_or_default(),
                version: a.record.facts.version.clone().unwrap_or_default(),
                last_seen: relative(a.record.last_seen, now),
            })
            .collect(),
    })
}

#[derive(Deserialize, Default)]
pub(crate) struct StateQuery {
    #[serde(default)]
    state: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "jobs.html")]
pub(crate) struct JobsPage {
    page: Page,
    jobs: Vec<JobRow>,
    state: String,
    states: Vec<String>,
    can_retry: bool,
}

pub(crate) async fn jobs(
    State(certificates): State<Certificates>,
    Extension(session): Extension<Session>,
    Query(query): Query<StateQuery>,
) -> PageResult<JobsPage> {
    session.require(Scope::Read)?;
    if !session.operator.restriction.is_unrestricted() {
        return Err(WebError::Forbidden(
            "a restricted token sees jobs on each certificate's page, not the whole queue".to_owned(),
        ));
    }
    let state = match query.state.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(s.parse::<JobState>().map_err(WebError::Invalid)?),
        None => None,
    };
    let now = now();
    let jobs = match state {
        Some(JobState::Failed) => recent_failed_jobs(&certificates, 200).await?,
        _ => {
            let (mut jobs, _) = certificates
                .jobs(&JobFilter {
                    state,
                    limit: 200,
                    ..JobFilter::default()
                })
                .await?;
            jobs.reverse();
            jobs
        }
    };
    Ok(JobsPage {
        page: session.page("Jobs", "jobs"),
        jobs: jobs.iter().map(|j| job_row(j, now)).collect(),
        state: query.state.unwrap_or_default(),
        states: JobState::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
        can_retry: session.can(Scope::Update),
    })
}

struct TokenRow {
    id: String,
    name: String,
    scopes: String,
    status: String,
    expires: String,
    created_by: String,
    live: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "tokens.html")]
pub(crate) struct TokensPage {
    page: Page,
    tokens: Vec<TokenRow>,
    scopes: Vec<String>,
    created: String,
    error: String,
}

async fn tokens_page(access: &Access, session: &Session, created: String, error: String) -> PageResult<TokensPage> {
    Ok(TokensPage {
        page: session.page("Tokens", "tokens"),
        tokens: access
            .tokens(&session.principal())
            .await?
            .iter()
            .map(|t| TokenRow {
                id: t.id.clone(),
                name: t.name.clone(),
                scopes: t.scopes.to_string(),
                status: t.status.as_str().to_owned(),
                expires: when(t.expires_at),
                created_by: t.created_by.clone().unwrap_or_default(),
                live: t.status == ck_server::TokenStatus::Active,
            })
            .collect(),
        scopes: Scope::ALL
            .iter()
            .filter(|s| **s != Scope::Agent)
            .map(ToString::to_string)
            .collect(),
        created,
        error,
    })
}

pub(crate) async fn tokens(
    State(access): State<Access>,
    Extension(session): Extension<Session>,
) -> PageResult<TokensPage> {
    session.require(Scope::Admin)?;
    tokens_page(&access, &session, String::new(), String::new()).await
}

struct TokenForm {
    csrf: String,
    name: String,
    scope: Vec<String>,
    expires_days: String,
}

/// The token form: checkboxes repeat the `scope` field, so it is read as a list of pairs.
pub(crate) async fn create_token(
    State(access): State<Access>,
    Extension(session): Extension<Session>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> PageResult<Response> {
    let Form(pairs) = form?;
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let form = TokenForm {
        csrf: field("csrf"),
        name: field("name"),
        scope: pairs
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .collect(),
        expires_days: field("expires_days"),
    };
    session.authorize(&form.csrf, Scope::Admin)?;
    let scopes = form
        .scope
        .iter()
        .map(|s| s.parse::<Scope>())
        .collect::<Result<Scopes, _>>()
        .map_err(|e| WebError::Invalid(e.to_string()));
    let lifetime = match form.expires_days.trim() {
        "" => Ok(None),
        text => text
            .parse::<i64>()
            .ok()
            .filter(|d| (1..=3650).contains(d))
            .map(|d| Some(d * 86_400))
            .ok_or_else(|| WebError::Invalid(format!("Expires: '{text}' is not 1 to 3650 days"))),
    };
    let (scopes, lifetime) = match (scopes, lifetime) {
        (Ok(scopes), Ok(lifetime)) if !form.scope.is_empty() => (scopes, lifetime),
        (Err(WebError::Invalid(m)), _) | (_, Err(WebError::Invalid(m))) => {
            let page = tokens_page(&access, &session, String::new(), m).await?;
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
        }
        _ => {
            let page = tokens_page(&access, &session, String::new(), "Scopes: tick at least one".to_owned()).await?;
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
        }
    };
    let new = NewToken {
        name: form.name.trim().to_owned(),
        scopes,
        restriction: None,
        lifetime_seconds: lifetime,
        client_cert_sha256: None,
    };
    let creator = ck_server::Principal::Operator(session.operator.clone());
    match access.create_token(&creator, new).await {
        Ok((info, secret)) => {
            session
                .record(&access, "token.create", format!("tokens/{}", info.id), None)
                .await;
            Ok(tokens_page(&access, &session, secret, String::new())
                .await?
                .into_response())
        }
        Err(ServiceError::Invalid(m) | ServiceError::Conflict(m) | ServiceError::Forbidden(m)) => {
            let page = tokens_page(&access, &session, String::new(), m).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(error) => Err(error.into()),
    }
}

pub(crate) async fn revoke_token(
    State(access): State<Access>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> PageResult<Redirect> {
    let Form(form) = form?;
    session.authorize(&form.csrf, Scope::Admin)?;
    let info = access.revoke_token(&session.principal(), &id).await?;
    session
        .record(&access, "token.revoke", format!("tokens/{}", info.id), None)
        .await;
    Ok(Redirect::to("/ui/tokens"))
}

#[derive(Deserialize, Default)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    days: Option<i64>,
    #[serde(default)]
    format: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "audit.html")]
pub(crate) struct AuditPage {
    page: Page,
    rows: Vec<AuditRow>,
    actor: String,
    action: String,
    days: i64,
    csv_query: String,
}

pub(crate) async fn audit(
    State(access): State<Access>,
    Extension(session): Extension<Session>,
    Query(query): Query<AuditQuery>,
) -> PageResult<Response> {
    session.require(Scope::Admin)?;
    let days = query.days.unwrap_or(7).clamp(1, 3650);
    let csv = query.format.as_deref() == Some("csv");
    let filter = AuditFilter {
        actor: query.actor.clone().filter(|s| !s.is_empty()),
        action: query.action.clone().filter(|s| !s.is_empty()),
        since: Some(now() - Duration::days(days)),
        // The page shows the newest 500; the CSV export has up to 10,000, oldest first.
        limit: if csv { 10_000 } else { 500 },
        newest_first: !csv,
        ..AuditFilter::default()
    };
    let (records, _) = access.audit_events(&session.principal(), &filter).await?;
    if csv {
        let csv = ck_server::audit_csv(&records);
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"certkeeper-audit.csv\"",
                ),
            ],
            csv,
        )
            .into_response());
    }
    let actor = query.actor.unwrap_or_default();
    let action = query.action.unwrap_or_default();
    let csv_query = form_urlencoded(&[
        ("actor", &actor),
        ("action", &action),
        ("days", &days.to_string()),
        ("format", "csv"),
    ]);
    Ok(AuditPage {
        page: session.page("Audit trail", "audit"),
        rows: records.iter().map(audit_row).collect(),
        actor,
        action,
        days,
        csv_query,
    }
    .into_response())
}

struct NotificationRow {
    id: String,
    occurred: String,
    event: String,
    summary: String,
    notifier: String,
    state: String,
    attempts: u32,
    error: String,
    dead: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "notifications.html")]
pub(crate) struct NotificationsPage {
    page: Page,
    rows: Vec<NotificationRow>,
    state: String,
    states: Vec<String>,
}

pub(crate) async fn notifications(
    State(notifications): State<Notifications>,
    Extension(session): Extension<Session>,
    Query(query): Query<StateQuery>,
) -> PageResult<NotificationsPage> {
    session.require(Scope::Admin)?;
    let state = match query.state.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(s.parse::<NotificationState>().map_err(WebError::Invalid)?),
        None => None,
    };
    let (records, _) = notifications
        .notifications(
            &session.principal(),
            &NotificationFilter {
                state,
                limit: 200,
                ..NotificationFilter::default()
            },
        )
        .await?;
    let now = now();
    Ok(NotificationsPage {
        page: session.page("Notifications", "notifications"),
        rows: records
            .iter()
            .map(|n| NotificationRow {
                id: n.id.clone(),
                occurred: relative(Some(n.event.created_at), now),
                event: n.event.kind.as_str().to_owned(),
                summary: n
                    .event
                    .payload
                    .get("subject")
                    .and_then(|s| s.as_str())
                    .unwrap_or_default()
                    .to_owned(),
                notifier: n.notifier.clone(),
                state: n.state.as_str().to_owned(),
                attempts: n.attempts,
                error: n.last_error.clone().unwrap_or_default(),
                dead: n.state == NotificationState::Dead,
            })
            .collect(),
        state: query.state.unwrap_or_default(),
        states: NotificationState::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
    })
}

pub(crate) async fn requeue_notification(
    State(notifications): State<Notifications>,
    State(access): State<Access>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> PageResult<Redirect> {
    let Form(form) = form?;
    session.authorize(&form.csrf, Scope::Admin)?;
    let record = notifications.requeue_notification(&session.principal(), &id).await?;
    session
        .record(
            &access,
            "notification.requeue",
            format!("notifications/{}", record.id),
            None,
        )
        .await;
    Ok(Redirect::to("/ui/notifications?state=dead"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_encode_their_values() {
        assert_eq!(
            form_urlencoded(&[("q", "a b&c"), ("status", ""), ("sort", "name")]),
            "q=a%20b%26c&sort=name"
        );
    }
}
