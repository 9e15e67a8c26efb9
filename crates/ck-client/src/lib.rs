//! A typed client of certkeeper's REST API, used by the CLI (and later the agent).

use std::time::Duration;

use ck_api_types::{
    Agent, AgentBundle, AgentCsr, AgentWork, AuditEvent, Certificate, CertificateVersion, CertificateWithJob,
    CreateAgent, CreateCertificate, CreateIssuer, CreateToken, CreatedAgent, CreatedToken, DeploymentReport, Heartbeat,
    HeartbeatAnswer, Issuer, Job, Notification, Page, Problem, RevokeCertificate, Token, Whoami,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

/// A failed API call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server could not be reached.
    #[error("cannot reach certkeeper at {url}: {reason} (is `certkeeper serve` running? set --url or CERTKEEPER_URL)")]
    Unreachable {
        /// The base URL tried.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server answered with a problem document.
    #[error("{} ({})", .0.detail, .0.status)]
    Api(Problem),
    /// The answer did not have the expected shape.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api(problem) => Some(problem.status),
            _ => None,
        }
    }
}

/// Filters of `GET /certificates`.
#[derive(Debug, Clone, Default)]
pub struct CertificateQuery {
    /// Status filter.
    pub status: Option<String>,
    /// Issuer filter.
    pub issuer: Option<String>,
    /// RFC 3339 time.
    pub expiring_before: Option<String>,
    /// Page cursor.
    pub cursor: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
}

/// The API client.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    token: String,
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:8989`).
    pub fn new(base_url: &str, token: &str) -> Result<Self, ClientError> {
        Self::with_options(base_url, token, None, Duration::from_secs(180))
    }

    /// A client that also trusts the CA certificates in `ca_pem` (a server with a private CA's
    /// certificate) and gives each request `timeout`.
    pub fn with_options(
        base_url: &str,
        token: &str,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout);
        if let Some(pem) = ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientError::Decode(format!("the CA file is not PEM certificates: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        // The server takes a state-changing call only as JSON (a cross-site form cannot send
        // that without a CORS preflight, which it never grants), even when there is no body.
        let json = method == Method::POST || method == Method::PUT || method == Method::PATCH;
        let builder = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base_url))
            .bearer_auth(&self.token);
        if json {
            builder.header(reqwest::header::CONTENT_TYPE, "application/json")
        } else {
            builder
        }
    }

    async fn send(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base_url.clone(),
            reason: std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string),
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        Err(ClientError::Api(serde_json::from_str(&text).unwrap_or_else(|_| {
            Problem {
                problem_type: "about:blank".to_owned(),
                title: status.canonical_reason().unwrap_or("error").to_owned(),
                status: status.as_u16(),
                detail: if text.is_empty() { status.to_string() } else { text },
            }
        })))
    }

    async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        let response = self.send(request).await?;
        response.json().await.map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn text(&self, request: RequestBuilder) -> Result<String, ClientError> {
        let response = self.send(request).await?;
        response.text().await.map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Creates a certificate; with `wait`, the server holds the answer until issuance finishes.
    pub async fn create_certificate(
        &self,
        request: &CreateCertificate,
        wait: Option<Duration>,
    ) -> Result<CertificateWithJob, ClientError> {
        let mut builder = self.request(Method::POST, "/certificates").json(request);
        if let Some(wait) = wait {
            builder = builder.query(&[("wait", wait.as_secs().to_string())]);
        }
        self.json(builder).await
    }

    /// One page of certificates.
    pub async fn certificates(&self, query: &CertificateQuery) -> Result<Page<Certificate>, ClientError> {
        let mut params: Vec<(&str, String)> = Vec::new();
        let optional = [
            ("status", &query.status),
            ("issuer", &query.issuer),
            ("expiring_before", &query.expiring_before),
            ("cursor", &query.cursor),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                params.push((name, value.clone()));
            }
        }
        if let Some(limit) = query.limit {
            params.push(("limit", limit.to_string()));
        }
        self.json(self.request(Method::GET, "/certificates").query(&params))
            .await
    }

    /// One certificate.
    pub async fn certificate(&self, id: &str) -> Result<Certificate, ClientError> {
        self.json(self.request(Method::GET, &format!("/certificates/{id}")))
            .await
    }

    /// Deletes a certificate. With versions still valid it is refused unless `revoke` (revoke
    /// them first) or `keep_valid` (leave them valid).
    pub async fn delete_certificate(&self, id: &str, revoke: bool, keep_valid: bool) -> Result<(), ClientError> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if revoke {
            query.push(("revoke", "true"));
        }
        if keep_valid {
            query.push(("keep_valid", "true"));
        }
        self.send(
            self.request(Method::DELETE, &format!("/certificates/{id}"))
                .query(&query),
        )
        .await
        .map(drop)
    }

    /// The chain (leaf first) of a version, the current one by default.
    pub async fn chain_pem(&self, id: &str, version: Option<u32>) -> Result<String, ClientError> {
        let mut builder = self.request(Method::GET, &format!("/certificates/{id}/pem"));
        if let Some(version) = version {
            builder = builder.query(&[("version", version)]);
        }
        self.text(builder).await
    }

    /// The server-held private key of a version.
    pub async fn key_pem(&self, id: &str, version: Option<u32>) -> Result<String, ClientError> {
        let mut builder = self.request(Method::GET, &format!("/certificates/{id}/key"));
        if let Some(version) = version {
            builder = builder.query(&[("version", version)]);
        }
        self.text(builder).await
    }

    /// Forces a renewal.
    pub async fn renew(&self, id: &str, wait: Option<Duration>) -> Result<CertificateWithJob, ClientError> {
        let mut builder = self.request(Method::POST, &format!("/certificates/{id}/renew"));
        if let Some(wait) = wait {
            builder = builder.query(&[("wait", wait.as_secs().to_string())]);
        }
        self.json(builder).await
    }

    /// Revokes the current version.
    pub async fn revoke(
        &self,
        id: &str,
        reason: Option<&str>,
        version: Option<u32>,
    ) -> Result<Certificate, ClientError> {
        let body = RevokeCertificate {
            reason: reason.map(str::to_owned),
            version,
        };
        self.json(
            self.request(Method::POST, &format!("/certificates/{id}/revoke"))
                .json(&body),
        )
        .await
    }

    /// Every version of a certificate.
    pub async fn versions(&self, id: &str) -> Result<Vec<CertificateVersion>, ClientError> {
        self.json(self.request(Method::GET, &format!("/certificates/{id}/versions")))
            .await
    }

    /// Every issuer.
    pub async fn issuers(&self) -> Result<Vec<Issuer>, ClientError> {
        self.json(self.request(Method::GET, "/issuers")).await
    }

    /// Registers an agent with a scope (`deploy` by default) and no labels of its own; the
    /// answer carries its token (shown once).
    pub async fn create_agent(&self, name: &str, scope: Option<&str>) -> Result<CreatedAgent, ClientError> {
        let body = CreateAgent {
            name: name.to_owned(),
            scope: scope.map(str::to_owned),
            labels: Default::default(),
        };
        self.register_agent(&body).await
    }

    /// Registers an agent as described (scope, labels); the answer carries its token (shown once).
    pub async fn register_agent(&self, request: &CreateAgent) -> Result<CreatedAgent, ClientError> {
        self.json(self.request(Method::POST, "/agents").json(request)).await
    }

    /// Creates an API token; the answer carries it (shown once).
    pub async fn create_token(&self, request: &CreateToken) -> Result<CreatedToken, ClientError> {
        self.json(self.request(Method::POST, "/tokens").json(request)).await
    }

    /// Every token (never their secrets).
    pub async fn tokens(&self) -> Result<Vec<Token>, ClientError> {
        self.json(self.request(Method::GET, "/tokens")).await
    }

    /// Revokes a token by id or name.
    pub async fn revoke_token(&self, id_or_name: &str) -> Result<Token, ClientError> {
        let path = format!("/tokens/{}/revoke", segment(id_or_name));
        self.json(self.request(Method::POST, &path)).await
    }

    /// Gives a token a new secret; the answer carries it (shown once).
    pub async fn rotate_token(&self, id_or_name: &str) -> Result<CreatedToken, ClientError> {
        let path = format!("/tokens/{}/rotate", segment(id_or_name));
        self.json(self.request(Method::POST, &path)).await
    }

    /// What the client's own token is and may do.
    pub async fn whoami(&self) -> Result<Whoami, ClientError> {
        self.json(self.request(Method::GET, "/token")).await
    }

    /// A page of audit events; `query` holds the filters as query parameters.
    pub async fn audit(&self, query: &[(&str, String)]) -> Result<Page<AuditEvent>, ClientError> {
        self.json(self.request(Method::GET, "/audit").query(query)).await
    }

    /// Audit events as CSV.
    pub async fn audit_csv(&self, query: &[(&str, String)]) -> Result<String, ClientError> {
        self.text(
            self.request(Method::GET, "/audit")
                .query(query)
                .query(&[("format", "csv")]),
        )
        .await
    }

    /// Revokes an agent's token by id or name.
    pub async fn revoke_agent(&self, id_or_name: &str) -> Result<Agent, ClientError> {
        let path = format!("/agents/{}/revoke", segment(id_or_name));
        self.json(self.request(Method::POST, &path)).await
    }

    /// Every agent with its status.
    pub async fn agents(&self) -> Result<Vec<Agent>, ClientError> {
        self.json(self.request(Method::GET, "/agents")).await
    }

    /// An agent's heartbeat (with the agent's own token).
    pub async fn heartbeat(&self, heartbeat: &Heartbeat) -> Result<HeartbeatAnswer, ClientError> {
        self.json(self.request(Method::POST, "/agent/heartbeat").json(heartbeat))
            .await
    }

    /// The agent's certificates and what each needs (agent token).
    pub async fn agent_work(&self) -> Result<AgentWork, ClientError> {
        self.json(self.request(Method::GET, "/agent/work")).await
    }

    /// Sends the CSR for the next version of one of the agent's certificates (agent token).
    pub async fn submit_csr(&self, certificate_id: &str, csr_pem: &str) -> Result<Job, ClientError> {
        let body = AgentCsr {
            csr: csr_pem.to_owned(),
        };
        let path = format!("/agent/certificates/{certificate_id}/csr");
        self.json(self.request(Method::POST, &path).json(&body)).await
    }

    /// The current version of one of the agent's certificates (agent token).
    pub async fn agent_bundle(&self, certificate_id: &str) -> Result<AgentBundle, ClientError> {
        let path = format!("/agent/certificates/{certificate_id}/bundle");
        self.json(self.request(Method::GET, &path)).await
    }

    /// Reports a deployment; the answer is the `deploy` job recorded (agent token).
    pub async fn report_deployment(&self, certificate_id: &str, report: &DeploymentReport) -> Result<Job, ClientError> {
        let path = format!("/agent/certificates/{certificate_id}/deployments");
        self.json(self.request(Method::POST, &path).json(report)).await
    }

    /// One issuer.
    pub async fn issuer(&self, id: &str) -> Result<Issuer, ClientError> {
        self.json(self.request(Method::GET, &format!("/issuers/{id}"))).await
    }

    /// Adds an issuer (the server registers its ACME account before answering).
    pub async fn create_issuer(&self, request: &CreateIssuer) -> Result<Issuer, ClientError> {
        self.json(self.request(Method::POST, "/issuers").json(request)).await
    }

    /// Replaces an ACME issuer's account key.
    pub async fn rollover_account_key(&self, id: &str) -> Result<Issuer, ClientError> {
        self.json(self.request(Method::POST, &format!("/issuers/{id}/account/rollover")))
            .await
    }

    /// Deactivates an ACME issuer's account at the CA.
    pub async fn deactivate_account(&self, id: &str) -> Result<Issuer, ClientError> {
        self.json(self.request(Method::POST, &format!("/issuers/{id}/account/deactivate")))
            .await
    }

    /// An issuer's root certificate (PEM).
    pub async fn issuer_ca_pem(&self, id: &str) -> Result<String, ClientError> {
        self.text(self.request(Method::GET, &format!("/issuers/{id}/ca.pem")))
            .await
    }

    /// One page of jobs.
    pub async fn jobs(&self, state: Option<&str>, cursor: Option<&str>, limit: u32) -> Result<Page<Job>, ClientError> {
        let mut params = vec![("limit", limit.to_string())];
        if let Some(state) = state {
            params.push(("state", state.to_owned()));
        }
        if let Some(cursor) = cursor {
            params.push(("cursor", cursor.to_owned()));
        }
        self.json(self.request(Method::GET, "/jobs").query(&params)).await
    }

    /// One job.
    pub async fn job(&self, id: &str) -> Result<Job, ClientError> {
        self.json(self.request(Method::GET, &format!("/jobs/{id}"))).await
    }

    /// Cancels a pending job.
    pub async fn cancel_job(&self, id: &str) -> Result<Job, ClientError> {
        self.json(self.request(Method::POST, &format!("/jobs/{}/cancel", segment(id))))
            .await
    }

    /// One page of notifications, newest first (admin scope).
    pub async fn notifications(
        &self,
        state: Option<&str>,
        notifier: Option<&str>,
        limit: u32,
    ) -> Result<Page<Notification>, ClientError> {
        let mut params = vec![("limit", limit.to_string())];
        if let Some(state) = state {
            params.push(("state", state.to_owned()));
        }
        if let Some(notifier) = notifier {
            params.push(("notifier", notifier.to_owned()));
        }
        self.json(self.request(Method::GET, "/notifications").query(&params))
            .await
    }

    /// One notification.
    pub async fn notification(&self, id: &str) -> Result<Notification, ClientError> {
        self.json(self.request(Method::GET, &format!("/notifications/{}", segment(id))))
            .await
    }

    /// Sends a dead notification again, with a fresh budget of attempts.
    pub async fn requeue_notification(&self, id: &str) -> Result<Notification, ClientError> {
        self.json(self.request(Method::POST, &format!("/notifications/{}/requeue", segment(id))))
            .await
    }

    /// Whether `/health` answers.
    pub async fn healthy(&self) -> bool {
        let url = format!("{}/health", self.base_url);
        matches!(self.http.get(url).send().await, Ok(r) if r.status() == StatusCode::OK)
    }
}

/// A path segment from user input: token names are plain, but a stray `/` or `?` must not
/// change the route.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
