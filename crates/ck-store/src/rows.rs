//! Conversions between rows and domain types.

use std::collections::BTreeMap;

use ck_domain::{
    Certificate, CertificateVersion, ExpiryThresholds, Job, Labels, RenewalPolicy, RenewalTrigger, RevocationReason,
    SubjectAltName,
};
use sqlx::Row;
use sqlx::any::AnyRow;
use time::{Duration, OffsetDateTime};

use crate::StoreError;

pub(crate) fn to_ms(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

pub(crate) fn from_ms(ms: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {ms}: {e}")))
}

fn opt_time(row: &AnyRow, column: &str) -> Result<Option<OffsetDateTime>, StoreError> {
    row.try_get::<Option<i64>, _>(column)?.map(from_ms).transpose()
}

fn parse<T: std::str::FromStr>(column: &str, text: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e: T::Err| StoreError::Corrupt(format!("{column}: {e}")))
}

fn u32_of(column: &str, value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column}: {value} out of range")))
}

pub(crate) const CERTIFICATE_COLUMNS: &str = "id, name, common_name, sans, issuer_id, key_type, key_source, csr_pem, \
     challenge, agent_id, status, validity_days, renew_fraction, renew_days, renew_jitter, labels, expiry_thresholds, client_auth, current_version, serial, fingerprint, \
     not_before, not_after, renew_at, last_error, revoked_at, revocation_reason, created_at, updated_at";

pub(crate) fn certificate(row: &AnyRow) -> Result<Certificate, StoreError> {
    let sans_json: String = row.try_get("sans")?;
    let san_texts: Vec<String> =
        serde_json::from_str(&sans_json).map_err(|e| StoreError::Corrupt(format!("sans: {e}")))?;
    let sans = san_texts
        .iter()
        .map(|s| parse::<SubjectAltName>("sans", s))
        .collect::<Result<_, _>>()?;
    let labels_json: String = row.try_get("labels")?;
    let labels_map: BTreeMap<String, String> =
        serde_json::from_str(&labels_json).map_err(|e| StoreError::Corrupt(format!("labels: {e}")))?;
    let labels = Labels::new(labels_map).map_err(|e| StoreError::Corrupt(format!("labels: {e}")))?;
    let trigger = match (
        row.try_get::<Option<f64>, _>("renew_fraction")?,
        row.try_get::<Option<i64>, _>("renew_days")?,
    ) {
        (_, Some(days)) => RenewalTrigger::DaysBeforeExpiry(u32_of("renew_days", days)?),
        (Some(fraction), None) => RenewalTrigger::LifetimeFraction(fraction),
        (None, None) => return Err(StoreError::Corrupt("renewal trigger missing".to_owned())),
    };
    let renewal_policy = RenewalPolicy::new(trigger, row.try_get("renew_jitter")?)
        .map_err(|e| StoreError::Corrupt(format!("renewal policy: {e}")))?;
    let revocation_reason = row
        .try_get::<Option<String>, _>("revocation_reason")?
        .map(|r| parse::<RevocationReason>("revocation_reason", &r))
        .transpose()?;
    Ok(Certificate {
        id: parse("id", &row.try_get::<String, _>("id")?)?,
        name: row.try_get("name")?,
        common_name: row.try_get("common_name")?,
        sans,
        issuer_id: parse("issuer_id", &row.try_get::<String, _>("issuer_id")?)?,
        key_type: parse("key_type", &row.try_get::<String, _>("key_type")?)?,
        key_source: parse("key_source", &row.try_get::<String, _>("key_source")?)?,
        csr_pem: row.try_get("csr_pem")?,
        challenge: row.try_get("challenge")?,
        agent_id: row.try_get("agent_id")?,
        status: parse("status", &row.try_get::<String, _>("status")?)?,
        validity: Duration::days(row.try_get("validity_days")?),
        renewal_policy,
        expiry_thresholds: row
            .try_get::<Option<String>, _>("expiry_thresholds")?
            .map(|text| {
                ExpiryThresholds::from_text(&text).map_err(|e| StoreError::Corrupt(format!("expiry_thresholds: {e}")))
            })
            .transpose()?,
        labels,
        client_auth: row.try_get::<i64, _>("client_auth")? != 0,
        current_version: u32_of("current_version", row.try_get("current_version")?)?,
        serial: row.try_get("serial")?,
        fingerprint: row.try_get("fingerprint")?,
        not_before: opt_time(row, "not_before")?,
        not_after: opt_time(row, "not_after")?,
        renew_at: opt_time(row, "renew_at")?,
        last_error: row.try_get("last_error")?,
        revoked_at: opt_time(row, "revoked_at")?,
        revocation_reason,
        created_at: from_ms(row.try_get("created_at")?)?,
        updated_at: from_ms(row.try_get("updated_at")?)?,
    })
}

pub(crate) fn sans_json(sans: &[SubjectAltName]) -> String {
    let texts: Vec<String> = sans.iter().map(ToString::to_string).collect();
    serde_json::Value::from(texts).to_string()
}

pub(crate) fn labels_json(labels: &Labels) -> String {
    let map: serde_json::Map<String, serde_json::Value> = labels
        .as_map()
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

pub(crate) const VERSION_COLUMNS: &str = "certificate_id, version, serial, fingerprint, cert_pem, chain_pem, csr_pem, \
     not_before, not_after, job_id, created_at";

pub(crate) fn version(row: &AnyRow) -> Result<CertificateVersion, StoreError> {
    Ok(CertificateVersion {
        certificate_id: parse("certificate_id", &row.try_get::<String, _>("certificate_id")?)?,
        version: u32_of("version", row.try_get("version")?)?,
        serial: row.try_get("serial")?,
        fingerprint: row.try_get("fingerprint")?,
        cert_pem: row.try_get("cert_pem")?,
        chain_pem: row.try_get("chain_pem")?,
        csr_pem: row.try_get("csr_pem")?,
        not_before: from_ms(row.try_get("not_before")?)?,
        not_after: from_ms(row.try_get("not_after")?)?,
        job_id: parse("job_id", &row.try_get::<String, _>("job_id")?)?,
        created_at: from_ms(row.try_get("created_at")?)?,
    })
}

pub(crate) const JOB_COLUMNS: &str = "id, kind, certificate_id, state, attempts, max_attempts, run_after, last_error, problem, created_at, updated_at, finished_at";

pub(crate) fn job(row: &AnyRow) -> Result<Job, StoreError> {
    Ok(Job {
        id: parse("id", &row.try_get::<String, _>("id")?)?,
        kind: parse("kind", &row.try_get::<String, _>("kind")?)?,
        certificate_id: parse("certificate_id", &row.try_get::<String, _>("certificate_id")?)?,
        state: parse("state", &row.try_get::<String, _>("state")?)?,
        attempts: u32_of("attempts", row.try_get("attempts")?)?,
        max_attempts: u32_of("max_attempts", row.try_get("max_attempts")?)?,
        run_after: from_ms(row.try_get("run_after")?)?,
        last_error: row.try_get("last_error")?,
        problem: row.try_get("problem")?,
        created_at: from_ms(row.try_get("created_at")?)?,
        updated_at: from_ms(row.try_get("updated_at")?)?,
        finished_at: opt_time(row, "finished_at")?,
    })
}

/// Rows per multi-row statement: far below the engines' parameter limits (SQLite 32766,
/// PostgreSQL 65535) even for the widest table.
pub(crate) const ROWS_PER_STATEMENT: usize = 200;

/// A value bound into a statement built at run time (multi-row inserts, optional filters).
pub(crate) enum SqlValue {
    Text(Option<String>),
    Int(Option<i64>),
    Real(Option<f64>),
}

impl From<String> for SqlValue {
    fn from(text: String) -> Self {
        Self::Text(Some(text))
    }
}

impl From<&str> for SqlValue {
    fn from(text: &str) -> Self {
        Self::Text(Some(text.to_owned()))
    }
}

impl From<Option<String>> for SqlValue {
    fn from(text: Option<String>) -> Self {
        Self::Text(text)
    }
}

impl From<i64> for SqlValue {
    fn from(int: i64) -> Self {
        Self::Int(Some(int))
    }
}

impl From<Option<i64>> for SqlValue {
    fn from(int: Option<i64>) -> Self {
        Self::Int(int)
    }
}

impl From<Option<f64>> for SqlValue {
    fn from(real: Option<f64>) -> Self {
        Self::Real(real)
    }
}

impl From<f64> for SqlValue {
    fn from(real: f64) -> Self {
        Self::Real(Some(real))
    }
}

pub(crate) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds values in order.
pub(crate) fn bind_all(mut query: AnyQuery<'_>, values: Vec<SqlValue>) -> AnyQuery<'_> {
    for value in values {
        query = match value {
            SqlValue::Text(text) => query.bind(text),
            SqlValue::Int(int) => query.bind(int),
            SqlValue::Real(real) => query.bind(real),
        };
    }
    query
}

/// `($3, $4), ($5, $6)` for 2 rows of 2 columns after 2 other parameters: the VALUES list of a
/// multi-row statement.
pub(crate) fn values_list(n_rows: usize, n_cols: usize, n_before: usize) -> String {
    let rows: Vec<String> = (0..n_rows)
        .map(|row| {
            let cells: Vec<String> = (1..=n_cols)
                .map(|col| format!("${}", n_before + row * n_cols + col))
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect();
    rows.join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_lists_number_placeholders_row_by_row() {
        assert_eq!(super::values_list(2, 3, 0), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(super::values_list(2, 2, 2), "($3, $4), ($5, $6)");
    }
}
