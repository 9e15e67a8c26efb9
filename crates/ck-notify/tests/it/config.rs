//! Notifier settings from YAML: each type, defaults, refusals, secret files and redaction.

use ck_notify::{NotifierConfig, SmtpSecurity};

use crate::support::config;

fn parse_error(yaml: &str) -> String {
    yaml_serde::from_str::<NotifierConfig>(yaml)
        .expect_err("the YAML must be refused")
        .to_string()
}

fn build_error(yaml: &str) -> String {
    config(yaml)
        .build()
        .expect_err("the settings must be refused")
        .to_string()
}

#[test]
fn each_type_parses_with_its_defaults() {
    let NotifierConfig::Webhook(webhook) = config("type: webhook\nurl: https://hooks.example.com/certkeeper\n") else {
        panic!("not a webhook");
    };
    assert_eq!(webhook.timeout_seconds, 10);
    assert!(webhook.secret.is_none() && webhook.headers.is_empty());

    let NotifierConfig::Slack(slack) = config("type: slack\nurl: https://hooks.slack.com/services/T1/B2/xyz\n") else {
        panic!("not slack");
    };
    assert_eq!(slack.timeout_seconds, 10);

    let email = config(
        "type: email\nhost: smtp.example.com\nusername: certkeeper\npassword: pw\nfrom: certkeeper@example.com\nto: [ops@example.com]\n",
    );
    assert_eq!(email.kind(), "email");
    let NotifierConfig::Email(email) = email else {
        panic!("not email");
    };
    assert_eq!(
        (email.security, email.effective_port(), email.timeout_seconds),
        (SmtpSecurity::Starttls, 587, 30)
    );
    let NotifierConfig::Email(tls) =
        config("type: email\nhost: smtp.example.com\nsecurity: tls\nfrom: a@example.com\nto: [b@example.com]\n")
    else {
        panic!("not email");
    };
    assert_eq!(tls.effective_port(), 465);

    let NotifierConfig::Command(command) = config("type: command\nprogram: /usr/local/bin/page-oncall\n") else {
        panic!("not a command");
    };
    assert_eq!((command.args.len(), command.timeout_seconds), (0, 30));

    for yaml in [
        "type: webhook\nurl: https://hooks.example.com/certkeeper\nsecret: k\nheaders: {X-Team: web}\ntimeout_seconds: 5\n",
        "type: slack\nurl: https://hooks.slack.com/services/T1/B2/xyz\n",
        "type: email\nhost: smtp.example.com\nusername: u\npassword: p\nfrom: a@example.com\nto: [b@example.com]\n",
        "type: email\nhost: localhost\nport: 25\nsecurity: none\nfrom: a@example.com\nto: [b@example.com]\n",
        "type: command\nprogram: /bin/true\nargs: [--quiet]\n",
    ] {
        let built = config(yaml).build().unwrap_or_else(|e| panic!("{yaml}: {e}"));
        assert_eq!(built.kind(), config(yaml).kind());
    }
}

#[test]
fn unknown_fields_and_types_are_refused() {
    let error = parse_error("type: webhook\nurl: https://x.example.com/\nsecrett: k\n");
    assert!(error.contains("unknown field `secrett`"), "{error}");
    let error = parse_error("type: email\nhost: h\nfrom: a@example.com\nto: [b@example.com]\nstarttls: true\n");
    assert!(error.contains("unknown field `starttls`"), "{error}");
    let error = parse_error("type: pager\nurl: https://x.example.com/\n");
    assert!(error.contains("unknown variant `pager`"), "{error}");
    let error = parse_error("type: email\nhost: h\nsecurity: ssl\nfrom: a@example.com\nto: [b@example.com]\n");
    assert!(error.contains("unknown variant `ssl`"), "{error}");
}

#[test]
fn plain_smtp_is_refused_to_a_remote_host() {
    let error =
        build_error("type: email\nhost: smtp.example.com\nsecurity: none\nfrom: a@example.com\nto: [b@example.com]\n");
    assert!(
        error.contains("`security: none`") && error.contains("smtp.example.com") && error.contains("starttls"),
        "{error}"
    );
    let error = build_error(
        "type: email\nhost: 10.1.2.3\nport: 25\nsecurity: none\nfrom: a@example.com\nto: [b@example.com]\n",
    );
    assert!(error.contains("loopback"), "{error}");
    for host in ["127.0.0.1", "'::1'", "'[::1]'", "localhost"] {
        config(&format!(
            "type: email\nhost: {host}\nsecurity: none\nfrom: a@example.com\nto: [b@example.com]\n"
        ))
        .build()
        .unwrap_or_else(|e| panic!("{host}: {e}"));
    }
}

#[test]
fn invalid_settings_name_the_field() {
    let cases = [
        (
            "type: webhook\nurl: ftp://x.example.com/\n",
            "`url` must be an http or https URL",
        ),
        ("type: webhook\nurl: /relative\n", "`url` is not a valid URL"),
        (
            "type: webhook\nurl: https://x.example.com/\nsecret: ''\n",
            "`secret` is empty",
        ),
        (
            "type: webhook\nurl: https://x.example.com/\nsecret: a\nsecret_file: /k\n",
            "set only one of `secret` and `secret_file`",
        ),
        (
            "type: webhook\nurl: https://x.example.com/\nsecret_file: /nonexistent/k\n",
            "cannot read `secret_file` /nonexistent/k",
        ),
        (
            "type: webhook\nurl: https://x.example.com/\nheaders: {X-Certkeeper-Event: x}\n",
            "may not set X-Certkeeper-Event",
        ),
        (
            "type: webhook\nurl: https://x.example.com/\nheaders: {'bad header': x}\n",
            "invalid header name",
        ),
        (
            "type: webhook\nurl: https://x.example.com/\ntimeout_seconds: 0\n",
            "`timeout_seconds` must be between 1 and 600",
        ),
        ("type: slack\ntimeout_seconds: 5\n", "slack: set `url`"),
        (
            "type: slack\nurl: http://hooks.slack.com/services/T/B/tok\n",
            "`url` must use https",
        ),
        ("type: email\nhost: h\nfrom: a@example.com\nto: []\n", "`to` is empty"),
        (
            "type: email\nhost: h\nfrom: nobody\nto: [b@example.com]\n",
            "`from` \"nobody\" is not an email address",
        ),
        (
            "type: email\nhost: h\nfrom: a@example.com\nto: ['b@example.com, c@example.com']\n",
            "one address per list entry",
        ),
        (
            "type: email\nhost: h\nusername: u\nfrom: a@example.com\nto: [b@example.com]\n",
            "`username` is set without `password`",
        ),
        (
            "type: email\nhost: h\npassword: p\nfrom: a@example.com\nto: [b@example.com]\n",
            "without `username`",
        ),
        (
            "type: email\nhost: h\nca_file: /nonexistent.pem\nfrom: a@example.com\nto: [b@example.com]\n",
            "cannot read `ca_file`",
        ),
        (
            "type: command\nprogram: notify.sh\n",
            "`program` must be an absolute path",
        ),
        (
            "type: command\nprogram: /bin/true\ntimeout_seconds: 601\n",
            "between 1 and 600",
        ),
    ];
    for (yaml, expected) in cases {
        let error = build_error(yaml);
        assert!(error.contains(expected), "{yaml}: {error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
}

#[test]
fn a_ca_file_without_certificates_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, "not a certificate\n").expect("write");
    let error = build_error(&format!(
        "type: email\nhost: h\nca_file: {}\nfrom: a@example.com\nto: [b@example.com]\n",
        ca_file.display()
    ));
    assert!(error.contains("holds no PEM certificate"), "{error}");
}

#[test]
fn secret_files_are_read_and_secrets_never_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let password_file = dir.path().join("smtp.pw");
    std::fs::write(&password_file, "pw-from-file-42\n").expect("write");
    let cases = [
        "type: webhook\nurl: https://hooks.example.com/in/url-token-1?key=url-token-2\nsecret: hmac-secret-3\n\
         headers: {Authorization: Bearer header-secret-4}\n"
            .to_owned(),
        "type: slack\nurl: https://hooks.slack.com/services/T1/B2/slack-secret-5\n".to_owned(),
        "type: email\nhost: smtp.example.com\nusername: certkeeper\npassword: smtp-secret-6\nfrom: a@example.com\nto: [b@example.com]\n"
            .to_owned(),
        format!(
            "type: email\nhost: smtp.example.com\nusername: certkeeper\npassword_file: {}\nfrom: a@example.com\nto: [b@example.com]\n",
            password_file.display()
        ),
    ];
    let secrets = [
        "url-token",
        "hmac-secret",
        "header-secret",
        "slack-secret",
        "smtp-secret",
        "pw-from-file",
    ];
    for yaml in cases {
        let settings = config(&yaml);
        let notifier = settings.build().unwrap_or_else(|e| panic!("{yaml}: {e}"));
        for shown in [
            format!("{settings:?}"),
            format!("{settings:#?}"),
            format!("{notifier:?}"),
        ] {
            assert!(
                !secrets.iter().any(|secret| shown.contains(secret)),
                "secret shown: {shown}"
            );
        }
    }
    let shown = format!(
        "{:?}",
        config("type: webhook\nurl: https://hooks.example.com/in/tok\nsecret: k\n")
    );
    assert!(
        shown.contains("https://hooks.example.com/…") && shown.contains("<redacted>"),
        "{shown}"
    );
}
