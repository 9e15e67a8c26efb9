//! The CLI verbs: thin wrappers over `ck-client` that print tables, PEM, or JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use ck_api_types::{Certificate, CertificateWithJob, CreateCertificate, CreateIssuer, Issuer, Job, Renewal};
use ck_client::{CertificateQuery, Client};
use comfy_table::{Table, presets};
use serde::Serialize;

use crate::cli::{
    AcmeIssuerArgs, AgentsCommand, AuditArgs, CertCommand, Connection, IssuerAddCommand, IssuerCommand, JobCommand,
    NotificationCommand, TokenCommand,
};

fn connect(connection: &Connection) -> anyhow::Result<Client> {
    let url = match &connection.url {
        Some(url) => url.clone(),
        None => std::fs::read_to_string(connection.data_dir.join("server.url"))
            .map(|text| text.trim().to_owned())
            .unwrap_or_else(|_| format!("http://{}", certkeeper::config::DEFAULT_LISTEN)),
    };
    let token =
        match &connection.token {
            Some(token) => token.clone(),
            None => {
                let path = connection.data_dir.join("admin.token");
                std::fs::read_to_string(&path).map(|t| t.trim().to_owned()).map_err(|_| {
                anyhow::anyhow!(
                    "no API token: pass --token, set CERTKEEPER_TOKEN, or point --data-dir at the server's data \
                     directory ({} is not readable)",
                    path.display()
                )
            })?
            }
        };
    // A server with a listener certificate from its own CA leaves the root in its data dir.
    let ca_pem = std::fs::read(connection.data_dir.join("ca.pem")).ok();
    Ok(Client::with_options(
        &url,
        &token,
        ca_pem.as_deref(),
        Duration::from_secs(180),
    )?)
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn short_time(time: Option<time::OffsetDateTime>) -> String {
    time.map(|t| {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        )
    })
    .unwrap_or_else(|| "-".to_owned())
}

fn certificate_table(certificates: &[Certificate]) -> Table {
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "ID",
        "NAME",
        "STATUS",
        "ISSUER",
        "VERSION",
        "NOT AFTER",
        "RENEW AT",
        "SANS",
    ]);
    for cert in certificates {
        table.add_row([
            cert.id.clone(),
            cert.name.clone(),
            cert.status.clone(),
            cert.issuer.clone(),
            cert.current_version.to_string(),
            short_time(cert.not_after),
            short_time(cert.renew_at),
            cert.sans.join(","),
        ]);
    }
    table
}

fn certificate_details(cert: &Certificate, job: Option<&Job>) -> Table {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    let mut row = |key: &str, value: String| {
        table.add_row([format!("{key}:"), value]);
    };
    row("id", cert.id.clone());
    row("name", cert.name.clone());
    row("status", cert.status.clone());
    row("common name", cert.common_name.clone());
    row("sans", cert.sans.join(", "));
    row("issuer", cert.issuer.clone());
    row("key", format!("{} ({})", cert.key_type, cert.key_source));
    if let Some(agent) = &cert.agent_id {
        row("agent", agent.clone());
    }
    row("version", cert.current_version.to_string());
    row("serial", cert.serial.clone().unwrap_or_else(|| "-".to_owned()));
    row("not before", short_time(cert.not_before));
    row("not after", short_time(cert.not_after));
    row("renew at", short_time(cert.renew_at));
    if let Some(reason) = &cert.revocation_reason {
        row("revoked", format!("{} ({reason})", short_time(cert.revoked_at)));
    }
    if let Some(error) = &cert.last_error {
        row("last error", error.clone());
    }
    if let Some(job) = job {
        let waiting = job.last_error.as_deref().filter(|e| e.starts_with("waiting for agent"));
        row(
            "job",
            format!(
                "{} {} ({}{})",
                job.kind,
                job.id,
                job.state,
                waiting.map(|w| format!(": {w}")).unwrap_or_default()
            ),
        );
    }
    table
}

fn spinner(message: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Reports the outcome of a create or renew: fails (exit 1) when the job failed.
fn finish(answer: &CertificateWithJob, json: bool, waited: bool) -> anyhow::Result<()> {
    if json {
        print_json(answer)?;
    } else {
        println!("{}", certificate_details(&answer.certificate, Some(&answer.job)));
    }
    if answer.job.state == "failed" {
        bail!(
            "{} job failed: {}",
            answer.job.kind,
            answer.job.last_error.as_deref().unwrap_or("no error recorded")
        );
    }
    if waited && answer.job.state != "succeeded" {
        if let Some(error) = &answer.job.last_error {
            let problem = answer
                .job
                .problem
                .as_ref()
                .and_then(|p| p.get("type"))
                .and_then(|t| t.as_str())
                .map(|t| format!(" [{t}]"))
                .unwrap_or_default();
            bail!(
                "not issued yet: the last attempt failed: {error}{problem}; it is retried after {} \
                 (details: `certkeeper job get {}`)",
                answer.job.run_after,
                answer.job.id
            );
        }
        bail!(
            "still {} after the timeout; check later with `certkeeper job get {}`",
            answer.job.state,
            answer.job.id
        );
    }
    Ok(())
}

pub(crate) async fn cert(command: CertCommand) -> anyhow::Result<()> {
    match command {
        CertCommand::Create {
            common_name,
            sans,
            csr,
            key_type,
            issuer,
            name,
            labels,
            validity_days,
            renew_before_days,
            challenge,
            agent,
            key_source,
            client_auth,
            wait,
            timeout,
            connection,
        } => {
            let client = connect(&connection)?;
            let csr = match csr {
                Some(path) => Some(
                    std::fs::read_to_string(&path).with_context(|| format!("cannot read CSR {}", path.display()))?,
                ),
                None => None,
            };
            let label_map = label_map(labels)?;
            let request = CreateCertificate {
                name,
                common_name,
                sans,
                issuer,
                key_type,
                csr,
                labels: label_map,
                validity_days,
                renewal: renew_before_days.map(|days| Renewal {
                    renew_before_days: Some(days),
                    ..Renewal::default()
                }),
                challenge,
                agent,
                key_source,
                client_auth,
            };
            let progress = wait.then(|| spinner("issuing…"));
            let answer = client
                .create_certificate(&request, wait.then(|| Duration::from_secs(timeout)))
                .await;
            if let Some(bar) = progress {
                bar.finish_and_clear();
            }
            finish(&answer?, connection.json, wait)
        }
        CertCommand::List {
            status,
            issuer,
            expiring_within_days,
            limit,
            all,
            connection,
        } => {
            let client = connect(&connection)?;
            let expiring_before = expiring_within_days.map(|days| {
                let at = time::OffsetDateTime::now_utc() + time::Duration::days(i64::from(days));
                at.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            });
            let mut query = CertificateQuery {
                status,
                issuer,
                expiring_before,
                cursor: None,
                limit: Some(limit),
            };
            let mut certificates = Vec::new();
            let mut more = false;
            loop {
                let page = client.certificates(&query).await?;
                certificates.extend(page.items);
                match page.next_cursor {
                    Some(cursor) if all => query.cursor = Some(cursor),
                    Some(_) => {
                        more = true;
                        break;
                    }
                    None => break,
                }
            }
            if connection.json {
                return print_json(&certificates);
            }
            println!("{}", certificate_table(&certificates));
            if more {
                eprintln!("(more certificates follow: pass --all or a larger --limit)");
            }
            Ok(())
        }
        CertCommand::Get {
            id,
            pem,
            key,
            version,
            connection,
        } => {
            let client = connect(&connection)?;
            if pem || key {
                if pem {
                    print!("{}", client.chain_pem(&id, version).await?);
                }
                if key {
                    print!("{}", client.key_pem(&id, version).await?);
                }
                return Ok(());
            }
            let cert = client.certificate(&id).await?;
            if connection.json {
                return print_json(&cert);
            }
            println!("{}", certificate_details(&cert, None));
            Ok(())
        }
        CertCommand::Renew {
            id,
            wait,
            timeout,
            connection,
        } => {
            let client = connect(&connection)?;
            let progress = wait.then(|| spinner("renewing…"));
            let answer = client.renew(&id, wait.then(|| Duration::from_secs(timeout))).await;
            if let Some(bar) = progress {
                bar.finish_and_clear();
            }
            finish(&answer?, connection.json, wait)
        }
        CertCommand::Revoke {
            id,
            reason,
            version,
            connection,
        } => {
            let client = connect(&connection)?;
            let cert = client.revoke(&id, reason.as_deref(), version).await?;
            if connection.json {
                return print_json(&cert);
            }
            println!("{}", certificate_details(&cert, None));
            Ok(())
        }
        CertCommand::Delete {
            id,
            revoke,
            keep_valid,
            connection,
        } => {
            connect(&connection)?
                .delete_certificate(&id, revoke, keep_valid)
                .await?;
            if connection.json {
                return print_json(&serde_json::json!({ "id": id, "deleted": true }));
            }
            println!("deleted {id}");
            Ok(())
        }
        CertCommand::Versions { id, connection } => {
            let versions = connect(&connection)?.versions(&id).await?;
            if connection.json {
                return print_json(&versions);
            }
            let mut table = Table::new();
            table.load_style(presets::UTF8_FULL_CONDENSED);
            table.set_header(["VERSION", "SERIAL", "NOT BEFORE", "NOT AFTER", "JOB"]);
            for v in &versions {
                table.add_row([
                    v.version.to_string(),
                    v.serial.clone(),
                    short_time(Some(v.not_before)),
                    short_time(Some(v.not_after)),
                    v.job_id.clone(),
                ]);
            }
            println!("{table}");
            Ok(())
        }
    }
}

pub(crate) async fn issuer(command: IssuerCommand) -> anyhow::Result<()> {
    match command {
        IssuerCommand::List { connection } => {
            let issuers = connect(&connection)?.issuers().await?;
            if connection.json {
                return print_json(&issuers);
            }
            let mut table = Table::new();
            table.load_style(presets::UTF8_FULL_CONDENSED);
            table.set_header(["ID", "KIND", "DIRECTORY / CA NOT AFTER", "HEALTH"]);
            for issuer in &issuers {
                table.add_row([
                    issuer.id.clone(),
                    issuer.kind.clone(),
                    issuer.directory.clone().unwrap_or_else(|| short_time(issuer.not_after)),
                    health_text(issuer),
                ]);
            }
            println!("{table}");
            Ok(())
        }
        IssuerCommand::Show { id, connection } => {
            let issuer = connect(&connection)?.issuer(&id).await?;
            print_issuer(&issuer, connection.json)
        }
        IssuerCommand::Add(IssuerAddCommand::Acme(args)) => {
            let request = acme_issuer_request(&args)?;
            let client = connect(&args.connection)?;
            let progress = spinner("registering the ACME account…");
            let answer = client.create_issuer(&request).await;
            progress.finish_and_clear();
            print_issuer(&answer?, args.connection.json)
        }
        IssuerCommand::RolloverKey { id, connection } => {
            let issuer = connect(&connection)?.rollover_account_key(&id).await?;
            print_issuer(&issuer, connection.json)
        }
        IssuerCommand::DeactivateAccount { id, yes, connection } => {
            if !yes {
                bail!("deactivating the account of issuer '{id}' cannot be undone: pass --yes to confirm");
            }
            let issuer = connect(&connection)?.deactivate_account(&id).await?;
            print_issuer(&issuer, connection.json)
        }
        IssuerCommand::Ca { id, connection } => {
            print!("{}", connect(&connection)?.issuer_ca_pem(&id).await?);
            Ok(())
        }
    }
}

pub(crate) async fn job(command: JobCommand) -> anyhow::Result<()> {
    match command {
        JobCommand::List {
            state,
            limit,
            connection,
        } => {
            let page = connect(&connection)?.jobs(state.as_deref(), None, limit).await?;
            if connection.json {
                return print_json(&page.items);
            }
            let mut table = Table::new();
            table.load_style(presets::UTF8_FULL_CONDENSED);
            table.set_header(["ID", "KIND", "STATE", "ATTEMPTS", "CERTIFICATE", "LAST ERROR"]);
            for job in &page.items {
                table.add_row([
                    job.id.clone(),
                    job.kind.clone(),
                    job.state.clone(),
                    format!("{}/{}", job.attempts, job.max_attempts),
                    job.certificate_id.clone(),
                    job.last_error.clone().unwrap_or_default(),
                ]);
            }
            println!("{table}");
            Ok(())
        }
        JobCommand::Get { id, connection } => {
            let job = connect(&connection)?.job(&id).await?;
            print_json(&job)
        }
        JobCommand::Cancel { id, connection } => {
            let job = connect(&connection)?.cancel_job(&id).await?;
            if connection.json {
                return print_json(&job);
            }
            println!(
                "cancelled job {} ({} of certificate {})",
                job.id, job.kind, job.certificate_id
            );
            Ok(())
        }
    }
}

pub(crate) async fn notification(command: NotificationCommand) -> anyhow::Result<()> {
    match command {
        NotificationCommand::List {
            state,
            notifier,
            limit,
            connection,
        } => {
            let page = connect(&connection)?
                .notifications(state.as_deref(), notifier.as_deref(), limit)
                .await?;
            if connection.json {
                return print_json(&page.items);
            }
            let mut table = Table::new();
            table.load_style(presets::UTF8_FULL_CONDENSED);
            table.set_header(["ID", "WHEN", "NOTIFIER", "STATE", "ATTEMPTS", "SUMMARY", "LAST ERROR"]);
            for n in &page.items {
                table.add_row([
                    n.id.clone(),
                    short_time(Some(n.occurred_at)),
                    n.notifier.clone(),
                    n.state.clone(),
                    n.attempts.to_string(),
                    n.summary.clone(),
                    n.last_error.clone().unwrap_or_default(),
                ]);
            }
            println!("{table}");
            Ok(())
        }
        NotificationCommand::Get { id, connection } => print_json(&connect(&connection)?.notification(&id).await?),
        NotificationCommand::Requeue { id, connection } => {
            let requeued = connect(&connection)?.requeue_notification(&id).await?;
            if connection.json {
                return print_json(&requeued);
            }
            println!(
                "requeued {} ({}) for {}",
                requeued.id, requeued.summary, requeued.notifier
            );
            Ok(())
        }
    }
}

fn health_text(issuer: &Issuer) -> String {
    match &issuer.health {
        Some(health) => format!("{} ({})", health.status, short_time(Some(health.checked_at))),
        None if issuer.kind == "acme" => "not checked yet".to_owned(),
        None => "-".to_owned(),
    }
}

fn print_issuer(issuer: &Issuer, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(issuer);
    }
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    let mut row = |key: &str, value: String| {
        table.add_row([key.to_owned(), value]);
    };
    row("id", issuer.id.clone());
    row("kind", issuer.kind.clone());
    if let Some(directory) = &issuer.directory {
        row("directory", directory.clone());
    }
    row("account", issuer.account_url.clone().unwrap_or_else(|| "-".to_owned()));
    if issuer.not_after.is_some() {
        row("CA not after", short_time(issuer.not_after));
    }
    row("health", health_text(issuer));
    if let Some(health) = &issuer.health {
        row("health detail", health.detail.clone());
    }
    if let Some(settings) = &issuer.settings {
        row("settings", serde_json::to_string(settings)?);
    }
    println!("{table}");
    Ok(())
}

/// Builds `POST /issuers` from the flags, reading the files they name (the server may be
/// remote, so contents travel, not paths; and the server never reads a file an API caller
/// names). DNS providers, listeners and server-side CA bundles travel as names of the server's
/// config file entries.
fn acme_issuer_request(args: &AcmeIssuerArgs) -> anyhow::Result<CreateIssuer> {
    let mut acme = serde_json::Map::new();
    acme.insert("directory".into(), args.directory.clone().into());
    if let Some(email) = &args.email {
        acme.insert("email".into(), email.clone().into());
    }
    if let Some(path) = &args.ca_bundle {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the CA bundle {}: give a PEM file", path.display()))?;
        acme.insert("ca_bundle_pem".into(), pem.into());
    }
    if let Some(name) = &args.server_ca_bundle {
        acme.insert("ca_bundle".into(), name.clone().into());
    }
    if let (Some(kid), Some(path)) = (&args.eab_kid, &args.eab_hmac_file) {
        let hmac = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the EAB MAC key file {}", path.display()))?;
        acme.insert("eab".into(), serde_json::json!({ "kid": kid, "hmac": hmac.trim() }));
    }
    if let Some(challenge) = &args.challenge {
        acme.insert("challenge".into(), challenge.clone().into());
    }
    if args.http01_via_api {
        acme.insert("http01".into(), serde_json::json!({ "via_api": true }));
    }
    if let Some(solver) = &args.solver {
        acme.insert("solver".into(), solver.clone().into());
    }
    if let Some(provider) = &args.dns_provider {
        acme.insert("dns_provider".into(), provider.clone().into());
    }
    if let Some(profile) = &args.profile {
        acme.insert("profile".into(), profile.clone().into());
    }
    if let Some(preferred) = &args.preferred_chain {
        acme.insert("preferred_chain".into(), preferred.clone().into());
    }
    Ok(CreateIssuer {
        id: args.id.clone(),
        kind: "acme".to_owned(),
        acme: acme.into(),
    })
}

pub(crate) async fn agents(command: AgentsCommand) -> anyhow::Result<()> {
    match command {
        AgentsCommand::Add {
            name,
            scope,
            labels,
            connection,
        } => {
            let request = ck_api_types::CreateAgent {
                name,
                scope: Some(scope),
                labels: label_map(labels)?,
            };
            let created = connect(&connection)?.register_agent(&request).await?;
            if connection.json {
                return print_json(&created);
            }
            println!(
                "agent {} ({}) registered, scope {}{}.",
                created.agent.name,
                created.agent.id,
                created.agent.scope,
                labels_text(&created.agent.labels)
            );
            println!("Its token, shown only now: give it to the agent (certkeeper agent --token-file …):");
            println!("{}", created.token);
            Ok(())
        }
        AgentsCommand::List { connection } => {
            let agents = connect(&connection)?.agents().await?;
            if connection.json {
                return print_json(&agents);
            }
            let mut table = Table::new();
            table.load_style(presets::UTF8_FULL_CONDENSED);
            table.set_header([
                "NAME",
                "SCOPE",
                "LABELS",
                "STATUS",
                "HOSTNAME",
                "OS/ARCH",
                "VERSION",
                "LAST SEEN",
            ]);
            for agent in &agents {
                table.add_row([
                    agent.name.clone(),
                    agent.scope.clone(),
                    Some(label_pairs(&agent.labels))
                        .filter(|l| !l.is_empty())
                        .unwrap_or_else(|| "-".into()),
                    agent.status.clone(),
                    agent.hostname.clone().unwrap_or_else(|| "-".into()),
                    format!(
                        "{}/{}",
                        agent.os.as_deref().unwrap_or("-"),
                        agent.arch.as_deref().unwrap_or("-")
                    ),
                    agent.version.clone().unwrap_or_else(|| "-".into()),
                    short_time(agent.last_seen),
                ]);
            }
            println!("{table}");
            Ok(())
        }
        AgentsCommand::Revoke { name_or_id, connection } => {
            let agent = connect(&connection)?.revoke_agent(&name_or_id).await?;
            if connection.json {
                return print_json(&agent);
            }
            println!(
                "agent {} ({}) revoked: its token no longer works.",
                agent.name, agent.id
            );
            Ok(())
        }
    }
}

/// `k=v,k2=v2` (empty without labels).
fn label_pairs(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

/// `, labels k=v,…` for a registration message, or nothing.
fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!(", labels {}", label_pairs(labels))
    }
}

fn label_map(labels: Vec<String>) -> anyhow::Result<BTreeMap<String, String>> {
    labels
        .into_iter()
        .map(|label| {
            label
                .split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("label '{label}' is not KEY=VALUE (e.g. --label team=web)"))
        })
        .collect()
}

fn print_created_token(created: &ck_api_types::CreatedToken, verb: &str) {
    let details = &created.details;
    println!(
        "token {} ({}) {verb}: scopes {}{}.",
        details.name,
        details.id,
        details.scopes.join(","),
        details
            .expires_at
            .map(|t| format!(", expires {}", short_time(Some(t))))
            .unwrap_or_default()
    );
    println!("The token, shown only now (send it as 'Authorization: Bearer …' or CERTKEEPER_TOKEN):");
    println!("{}", created.token);
}

fn restriction_text(labels: &BTreeMap<String, String>, suffixes: &[String]) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.extend(suffixes.iter().map(|s| format!("*.{s}")));
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(" ")
    }
}

pub(crate) async fn token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            name,
            scopes,
            expires,
            labels,
            name_suffixes,
            client_cert,
            client_cert_sha256,
            connection,
        } => {
            let client_cert_sha256 = match client_cert {
                Some(path) => {
                    let pem = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read client certificate {}", path.display()))?;
                    let der = ck_pki::pem_block_der(&pem, "CERTIFICATE")
                        .map_err(|e| anyhow::anyhow!("{}: no PEM certificate in it ({e})", path.display()))?;
                    Some(ck_pki::sha256_hex(&der))
                }
                None => client_cert_sha256,
            };
            let request = ck_api_types::CreateToken {
                name,
                scopes,
                expires_in: expires,
                labels: label_map(labels)?,
                name_suffixes,
                client_cert_sha256,
            };
            let created = connect(&connection)?.create_token(&request).await?;
            if connection.json {
                return print_json(&created);
            }
            print_created_token(&created, "created");
            Ok(())
        }
        TokenCommand::List { connection } => {
            let tokens = connect(&connection)?.tokens().await?;
            if connection.json {
                return print_json(&tokens);
            }
            let mut table = Table::new();
            table.load_style(presets::UTF8_FULL_CONDENSED);
            table.set_header([
                "NAME",
                "ID",
                "SCOPES",
                "RESTRICTED TO",
                "CLIENT CERT (SHA-256)",
                "STATUS",
                "EXPIRES",
                "CREATED BY",
            ]);
            for token in &tokens {
                table.add_row([
                    token.name.clone(),
                    token.id.clone(),
                    token.scopes.join(","),
                    restriction_text(&token.labels, &token.name_suffixes),
                    token.client_cert_sha256.clone().unwrap_or_else(|| "-".into()),
                    token.status.clone(),
                    short_time(token.expires_at),
                    token.created_by.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            println!("{table}");
            Ok(())
        }
        TokenCommand::Revoke { name_or_id, connection } => {
            let revoked = connect(&connection)?.revoke_token(&name_or_id).await?;
            if connection.json {
                return print_json(&revoked);
            }
            println!("token {} ({}) revoked.", revoked.name, revoked.id);
            Ok(())
        }
        TokenCommand::Rotate { name_or_id, connection } => {
            let rotated = connect(&connection)?.rotate_token(&name_or_id).await?;
            if connection.json {
                return print_json(&rotated);
            }
            print_created_token(&rotated, "rotated");
            Ok(())
        }
    }
}

pub(crate) async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let mut query: Vec<(&str, String)> = Vec::new();
    for (key, value) in [
        ("actor", args.actor),
        ("action", args.action),
        ("resource", args.resource),
        ("outcome", args.outcome),
        ("since", args.since),
        ("until", args.until),
    ] {
        if let Some(value) = value {
            query.push((key, value));
        }
    }
    query.push(("limit", args.limit.to_string()));
    let client = connect(&args.connection)?;
    if args.csv {
        print!("{}", client.audit_csv(&query).await?);
        return Ok(());
    }
    let page = client.audit(&query).await?;
    if args.connection.json {
        return print_json(&page.items);
    }
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "TIME", "ACTOR", "ACTION", "RESOURCE", "OUTCOME", "STATUS", "CLIENT", "DETAIL",
    ]);
    for event in &page.items {
        table.add_row([
            short_time(Some(event.at)),
            event.actor.clone(),
            event.action.clone(),
            event.resource.clone().unwrap_or_else(|| "-".into()),
            event.outcome.clone(),
            event.status.map_or_else(|| "-".into(), |s| s.to_string()),
            event.client.clone().unwrap_or_else(|| "-".into()),
            event.detail.clone().unwrap_or_default(),
        ]);
    }
    println!("{table}");
    if page.next_cursor.is_some() {
        eprintln!("(more events follow: narrow the filters, raise --limit, or use --csv)");
    }
    Ok(())
}
