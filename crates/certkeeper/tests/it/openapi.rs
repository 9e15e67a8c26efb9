//! The OpenAPI document against the real server, checked by schemathesis (PyPI): no 5xx, no
//! answer that contradicts the document (status, content type, body schema, headers), schema-
//! violating requests refused.

use std::process::Command;

use crate::support::Server;

/// The schemathesis command: `CERTKEEPER_SCHEMATHESIS` (set by scripts/test.sh, which installs
/// it into a virtualenv), else `schemathesis` on the PATH.
fn schemathesis() -> Option<String> {
    if let Ok(path) = std::env::var("CERTKEEPER_SCHEMATHESIS") {
        return Some(path);
    }
    let on_path = Command::new("sh")
        .args(["-c", "command -v schemathesis"])
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return Some("schemathesis".to_owned());
    }
    let required = std::env::var_os("CERTKEEPER_REQUIRE_PEERS").is_some() || std::env::var_os("CI").is_some();
    assert!(
        !required,
        "schemathesis is missing: pip install schemathesis==4.32.5 (scripts/test.sh does it in target/schemathesis-venv)"
    );
    eprintln!("SKIPPED: schemathesis not found (pip install schemathesis)");
    None
}

fn run(schemathesis: &str, server: &Server, token: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(schemathesis);
    command
        .current_dir(dir.path())
        .args(["run", &format!("{}/api/v1/openapi.json", server.url)])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        // Every check but "schema-valid requests are accepted": names, CSRs and ids that match
        // the schema are still refused when they are not real (a 400 or 404 is right then).
        .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
        .args(["--max-examples", "50", "--seed", "1", "--no-color"])
        .args(extra)
        .env("SCHEMATHESIS_HOOKS", "")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY");
    let output = command.output().expect("run schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: String = text
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("schemathesis {extra:?}:\n{summary}");
    assert!(output.status.success(), "schemathesis found problems:\n{text}");
    assert!(text.contains(" passed"), "{text}");
}

#[test]
fn openapi_document_holds_under_schemathesis() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Schemathesis sends thousands of requests and invalid tokens on purpose: no rate limits.
    let server = Server::start(
        &dir.path().join("data"),
        &["--token-rate-limit", "0", "--auth-failures-per-minute", "0"],
    );
    // The operator's routes with the admin token. Revoking or rotating tokens would pull the
    // admin token from under the run (the stateful phase finds it in GET /tokens); the
    // authorization matrix covers those two.
    run(
        &schemathesis,
        &server,
        &server.token(),
        &[
            "--exclude-tag",
            "agent protocol",
            "--exclude-operation-id",
            "token.revoke",
            "--exclude-operation-id",
            "token.rotate",
        ],
    );
    // The agent protocol with an agent's token.
    let created = server.cli_ok(&["agents", "add", "fuzzed-host", "--json"]);
    let token = serde_json::from_str::<serde_json::Value>(&created).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    run(&schemathesis, &server, &token, &["--include-tag", "agent protocol"]);
}
