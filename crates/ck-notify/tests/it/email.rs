//! The email notifier against a real SMTP server: aiosmtpd (Debian python3-aiosmtpd) on 127.0.0.1,
//! plain, with STARTTLS and with implicit TLS, its certificate trusted through `ca_file`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ck_notify::DeliveryError;

use crate::support::{free_port, message, notifier, peers_required};

/// An aiosmtpd handler that writes each accepted message, parsed, as `<n>.json` in its directory,
/// and refuses recipients `reject@…` (550) and `later@…` (451).
const HANDLER: &str = r#"
import email, email.policy, json, os

class Store:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.count = 0

    @classmethod
    def from_cli(cls, parser, *args):
        return cls(args[0])

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject@"):
            return "550 5.1.1 no such mailbox here"
        if address.startswith("later@"):
            return "451 4.3.0 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": str(msg["Subject"]),
            "delivery": str(msg["X-Certkeeper-Delivery"]),
            "event": str(msg["X-Certkeeper-Event"]),
            "message_id": str(msg["Message-ID"]),
            "content_type": msg.get_content_type(),
            "body": msg.get_content().replace("\r\n", "\n"),
            "tls": session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
        }
        self.count += 1
        path = os.path.join(self.out_dir, "%d.json" % self.count)
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        return "250 Message accepted"
"#;

/// The Python that can import aiosmtpd: pyenv or venv shims may shadow Debian's.
fn python_with_aiosmtpd() -> Option<PathBuf> {
    ["python3", "/usr/bin/python3"]
        .into_iter()
        .map(PathBuf::from)
        .find(|python| {
            Command::new(python)
                .args(["-c", "import aiosmtpd"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        })
}

enum Security {
    Plain,
    Starttls,
    ImplicitTls,
}

/// aiosmtpd running on 127.0.0.1; killed when dropped.
struct SmtpServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl SmtpServer {
    /// Starts aiosmtpd, or returns `None` after a "skipped" line when it is not installed and
    /// peers are not required.
    fn start(test: &str, security: Security) -> Option<Self> {
        let Some(python) = python_with_aiosmtpd() else {
            assert!(
                !peers_required(),
                "{test}: python3 cannot import aiosmtpd: run `apt-get install -y python3-aiosmtpd` \
                 (scripts/install-deps.sh does)"
            );
            eprintln!("skipped: {test} needs aiosmtpd (apt-get install -y python3-aiosmtpd, or run scripts/test.sh)");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ckhandler.py"), HANDLER).expect("write the handler");
        let out = dir.path().join("mail");
        std::fs::create_dir(&out).expect("mail dir");
        let port = free_port();
        let mut command = Command::new(python);
        command.env("PYTHONPATH", dir.path()).args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "ckhandler.Store",
        ]);
        match security {
            Security::Plain => {}
            Security::Starttls => {
                write_certificate(dir.path());
                command.arg("--tlscert").arg(dir.path().join("cert.pem"));
                command.arg("--tlskey").arg(dir.path().join("key.pem"));
            }
            Security::ImplicitTls => {
                write_certificate(dir.path());
                command.arg("--smtpscert").arg(dir.path().join("cert.pem"));
                command.arg("--smtpskey").arg(dir.path().join("key.pem"));
            }
        }
        // Its log (a refused TLS handshake logs a traceback) goes to a file, shown if it fails to start.
        let log = std::fs::File::create(dir.path().join("aiosmtpd.log")).expect("create the log");
        command.arg(&out).stdout(Stdio::null()).stderr(log);
        let child = command.spawn().expect("start aiosmtpd");
        let mut server = Self { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait().expect("poll aiosmtpd") {
                let log = std::fs::read_to_string(server.dir.path().join("aiosmtpd.log")).unwrap_or_default();
                panic!("{test}: aiosmtpd exited with {status} before listening on {port}:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "{test}: aiosmtpd did not listen on {port} within 15 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(server)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// The `n`th stored message (1-based).
    fn stored(&self, n: usize) -> serde_json::Value {
        let path = self.dir.path().join("mail").join(format!("{n}.json"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).expect("handler JSON")
    }

    fn stored_count(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("mail"))
            .expect("mail dir")
            .count()
    }

    fn yaml(&self, security: &str, extra: &str) -> String {
        format!(
            "type: email\nhost: 127.0.0.1\nport: {}\nsecurity: {security}\nfrom: certkeeper <certkeeper@example.com>\n\
             to: [ops@example.com, Second <second@example.com>]\ntimeout_seconds: 10\n{extra}",
            self.port
        )
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost, as cert.pem and key.pem in `dir`.
fn write_certificate(dir: &Path) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("self-signed certificate");
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).expect("write cert.pem");
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).expect("write key.pem");
}

fn assert_is_the_message(stored: &serde_json::Value, tls: bool) {
    let message = message();
    assert_eq!(stored["subject"], message.subject);
    assert_eq!(stored["delivery"], message.id);
    assert_eq!(stored["event"], "renewal_failed");
    assert_eq!(stored["message_id"], format!("<{}@certkeeper>", message.id));
    assert_eq!(stored["mail_from"], "certkeeper@example.com");
    assert_eq!(
        stored["rcpt_tos"],
        serde_json::json!(["ops@example.com", "second@example.com"])
    );
    assert_eq!(stored["content_type"], "text/plain");
    assert_eq!(stored["tls"], tls);
    let body = stored["body"].as_str().expect("body text");
    let (text, payload) = body.split_once("\n\n").expect("text, blank line, payload");
    assert_eq!(text, message.text);
    let payload: serde_json::Value = serde_json::from_str(payload).expect("the payload is JSON");
    assert_eq!(payload, message.payload);
}

#[tokio::test]
async fn plain_smtp_to_loopback_delivers_subject_id_and_payload() {
    let Some(server) = SmtpServer::start("plain_smtp_to_loopback", Security::Plain) else {
        return;
    };
    let email = notifier(&server.yaml("none", ""));
    assert_eq!(email.kind(), "email");
    email.deliver(&message()).await.expect("delivered");
    assert_is_the_message(&server.stored(1), false);
    // The pooled connection is reused for the next attempt.
    email.deliver(&message()).await.expect("delivered again");
    assert_eq!(server.stored_count(), 2);
}

#[tokio::test]
async fn smtp_replies_map_to_permanent_and_transient() {
    let Some(server) = SmtpServer::start("smtp_replies_map", Security::Plain) else {
        return;
    };
    let rejected = notifier(&server.yaml("none", "").replace("ops@example.com", "reject@example.com"));
    let error = rejected.deliver(&message()).await.expect_err("550");
    assert!(
        matches!(&error, DeliveryError::Permanent(text) if text.starts_with("smtp: ") && text.contains("550") && text.contains("no such mailbox")),
        "{error:?}"
    );
    let busy = notifier(&server.yaml("none", "").replace("ops@example.com", "later@example.com"));
    let error = busy.deliver(&message()).await.expect_err("451");
    assert!(
        matches!(&error, DeliveryError::Transient(text) if text.contains("451") && text.contains("try again later")),
        "{error:?}"
    );
    assert_eq!(server.stored_count(), 0);
}

#[tokio::test]
async fn starttls_with_a_private_ca_delivers_encrypted() {
    let Some(server) = SmtpServer::start("starttls_with_a_private_ca", Security::Starttls) else {
        return;
    };
    let email = notifier(&server.yaml("starttls", &format!("ca_file: {}\n", server.ca_file().display())));
    email.deliver(&message()).await.expect("delivered over STARTTLS");
    assert_is_the_message(&server.stored(1), true);
}

#[tokio::test]
async fn starttls_refuses_a_certificate_it_cannot_verify() {
    let Some(server) = SmtpServer::start("starttls_refuses_unverified", Security::Starttls) else {
        return;
    };
    // Only the webpki roots: the self-signed certificate is not trusted.
    let email = notifier(&server.yaml("starttls", ""));
    let error = email.deliver(&message()).await.expect_err("untrusted certificate");
    assert!(error.is_transient(), "{error:?}");
    assert!(error.to_string().contains("certificate"), "{error}");
    assert_eq!(server.stored_count(), 0);
}

#[tokio::test]
async fn starttls_is_required_not_optional() {
    let Some(server) = SmtpServer::start("starttls_is_required", Security::Plain) else {
        return;
    };
    // The server offers no STARTTLS: the message must not go out in plain text.
    let email = notifier(&server.yaml("starttls", ""));
    let error = email.deliver(&message()).await.expect_err("no STARTTLS offered");
    assert!(error.to_string().starts_with("smtp: "), "{error}");
    assert_eq!(server.stored_count(), 0);
}

#[tokio::test]
async fn implicit_tls_with_a_private_ca_delivers_encrypted() {
    let Some(server) = SmtpServer::start("implicit_tls_with_a_private_ca", Security::ImplicitTls) else {
        return;
    };
    let email = notifier(&server.yaml("tls", &format!("ca_file: {}\n", server.ca_file().display())));
    email.deliver(&message()).await.expect("delivered over TLS");
    assert_is_the_message(&server.stored(1), true);
}

#[tokio::test]
async fn a_closed_smtp_port_is_transient() {
    let yaml = format!(
        "type: email\nhost: localhost\nport: {}\nsecurity: none\nfrom: a@example.com\nto: [b@example.com]\n",
        free_port()
    );
    let error = notifier(&yaml).deliver(&message()).await.expect_err("nothing listens");
    assert!(
        error.is_transient() && error.to_string().starts_with("smtp: "),
        "{error:?}"
    );
}
