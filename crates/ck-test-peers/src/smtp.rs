//! An SMTP sink: aiosmtpd (Debian `python3-aiosmtpd`) on 127.0.0.1, plain, with STARTTLS or with
//! implicit TLS, recording every accepted message as JSON for the test to read back.
//!
//! aiosmtpd runs with a small Python handler (written into the sink's temporary directory) that
//! parses each message with Python's `email` package and writes it as `<n>.json`; the sink reads
//! those files back. A real server and an independent MIME parser check the client's dialogue
//! and its message, which a hand-written fake would not.
//!
//! Recipients named `reject@…` are refused with 550 and `later@…` with 451, so that tests can
//! see permanent and transient SMTP failures.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{ChildGuard, free_port, peers_required};

/// How long aiosmtpd gets to listen; Python starts in well under a second on a quiet machine,
/// a parallel `cargo test` on two cores can take many times that.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A free port can be taken by someone else between [`free_port`] and aiosmtpd's bind.
const START_ATTEMPTS: usize = 3;

/// The aiosmtpd handler: records each accepted message, parsed, as `<n>.json` in its directory
/// (written to a temporary name and renamed, so a reader never sees half a file).
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
        headers = {}
        for name, value in msg.items():
            name = name.lower()
            headers[name] = headers[name] + "\n" + str(value) if name in headers else str(value)
        part = msg.get_body(preferencelist=("plain", "html"))
        body = part.get_content() if part is not None else ""
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        record = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "subject": str(msg.get("Subject", "")),
            "message_id": str(msg.get("Message-ID", "")),
            "content_type": msg.get_content_type(),
            "headers": headers,
            "body": body.replace("\r\n", "\n"),
            "tls": session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
        }
        self.count += 1
        path = os.path.join(self.out_dir, "%d.json" % self.count)
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        return "250 Message accepted"
"#;

/// How the sink protects its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    Plain,
    /// STARTTLS offered, and required before MAIL FROM (aiosmtpd's default with a certificate).
    Starttls,
    /// TLS from the first byte (SMTPS, as on port 465).
    ImplicitTls,
}

/// aiosmtpd on 127.0.0.1, recording every accepted message; killed when dropped.
#[derive(Debug)]
pub struct SmtpSink {
    // Field order matters: the server stops before its directory is removed.
    server: ChildGuard,
    port: u16,
    ca_file: Option<PathBuf>,
    mail: PathBuf,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    /// Starts a plain SMTP sink (no TLS). Returns `None` after a "SKIPPED" line when aiosmtpd is
    /// not installed and peers are not required; panics naming `python3-aiosmtpd` when they are.
    pub fn start(test: &str) -> Option<SmtpSink> {
        Self::start_with(test, Security::Plain)
    }

    /// Starts a sink that offers STARTTLS and refuses mail before it, with a certificate for
    /// 127.0.0.1 and `localhost` issued by a fresh CA: trust [`Self::ca_file`]. `None` as for
    /// [`Self::start`].
    pub fn start_starttls(test: &str) -> Option<SmtpSink> {
        Self::start_with(test, Security::Starttls)
    }

    /// Starts a sink that speaks TLS from the first byte (SMTPS), with the same kind of
    /// certificate as [`Self::start_starttls`]. `None` as for [`Self::start`].
    pub fn start_implicit_tls(test: &str) -> Option<SmtpSink> {
        Self::start_with(test, Security::ImplicitTls)
    }

    fn start_with(test: &str, security: Security) -> Option<SmtpSink> {
        let python = python_with_aiosmtpd(test)?;
        let dir = tempfile::Builder::new().prefix("ck-smtp-").tempdir().unwrap();
        std::fs::write(dir.path().join("ckhandler.py"), HANDLER).unwrap();
        let mail = dir.path().join("mail");
        std::fs::create_dir(&mail).unwrap();
        let ca_file = match security {
            Security::Plain => None,
            Security::Starttls | Security::ImplicitTls => Some(crate::pebble::make_listener_cert(dir.path())),
        };
        let (cert, key) = (dir.path().join("tls.pem"), dir.path().join("tls.key"));

        let log = dir.path().join("aiosmtpd.log");
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let mut command = Command::new(&python);
            // The handler module is imported from the sink's directory.
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
                    command.arg("--tlscert").arg(&cert).arg("--tlskey").arg(&key);
                }
                Security::ImplicitTls => {
                    command.arg("--smtpscert").arg(&cert).arg("--smtpskey").arg(&key);
                }
            }
            // The class argument: where the handler writes the messages.
            command.arg(&mail).current_dir(dir.path());
            let mut server = ChildGuard::spawn(command, log.clone());
            if wait_for_listener(&mut server, port) {
                return Some(SmtpSink {
                    server,
                    port,
                    ca_file,
                    mail,
                    dir,
                });
            }
            last_log = server.log_text();
            drop(server);
            if !last_log.to_ascii_lowercase().contains("address already in use") {
                panic!("{test}: aiosmtpd did not listen on 127.0.0.1:{port}:\n{last_log}");
            }
        }
        panic!("{test}: aiosmtpd found its port taken {START_ATTEMPTS} times:\n{last_log}");
    }

    /// The SMTP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM file of the CA that issued the sink's certificate, for the TLS variants; `None`
    /// for a plain sink.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.ca_file.clone()
    }

    /// Every message accepted so far, in order, as the handler parsed it:
    /// - `from`: the envelope sender (MAIL FROM), `to`: the envelope recipients (RCPT TO) it
    ///   accepted, a list;
    /// - `subject`, `message_id`, `content_type` (e.g. `text/plain`);
    /// - `headers`: every header by lower-case name, decoded; a repeated header's values are
    ///   joined with a newline;
    /// - `body`: the text (the `text/plain` part of a multipart message), with `\n` line ends;
    /// - `tls`: whether the message came over TLS (after STARTTLS or on the SMTPS port).
    pub fn messages(&self) -> Vec<serde_json::Value> {
        let mut numbered: Vec<(usize, PathBuf)> = std::fs::read_dir(&self.mail)
            .unwrap()
            .filter_map(|entry| {
                let path = entry.unwrap().path();
                // `<n>.json.tmp` files are still being written.
                let n = path.file_name()?.to_str()?.strip_suffix(".json")?.parse().ok()?;
                Some((n, path))
            })
            .collect();
        numbered.sort();
        numbered
            .into_iter()
            .map(|(_, path)| {
                let text = std::fs::read_to_string(&path).unwrap();
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {text}", path.display()))
            })
            .collect()
    }

    /// Waits up to `timeout` for at least `n` accepted messages and returns them all; panics
    /// with aiosmtpd's log when they do not come.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "the SMTP sink on port {} has {} message(s) after {timeout:?}, expected {n}:\n{messages:#?}\n\
                 ---- aiosmtpd ----\n{}",
                self.port,
                messages.len(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// aiosmtpd's log (a refused TLS handshake logs a traceback), for assertion messages.
    pub fn log_text(&self) -> String {
        self.server.log_text()
    }

    /// The sink's working directory (handler, certificate, messages, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The Python that can import aiosmtpd: a pyenv or venv `python3` first on PATH may shadow
/// Debian's, which is the one `python3-aiosmtpd` installs into. `None` after a "SKIPPED" line
/// when none can; panics when peers are required.
fn python_with_aiosmtpd(test: &str) -> Option<PathBuf> {
    let found = ["python3", "/usr/bin/python3"]
        .into_iter()
        .map(PathBuf::from)
        .find(|python| {
            Command::new(python)
                .args(["-c", "import aiosmtpd"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        });
    if found.is_some() {
        return found;
    }
    assert!(
        !peers_required(),
        "{test}: python3 cannot import aiosmtpd: run `apt-get install -y python3-aiosmtpd` \
         (scripts/install-deps.sh does)"
    );
    eprintln!("SKIPPED: {test} needs aiosmtpd (apt-get install -y python3-aiosmtpd, or run scripts/test.sh)");
    None
}

/// Waits until something accepts connections on `port` while the server still runs (true), or
/// until it exits or the start timeout passes (false).
fn wait_for_listener(server: &mut ChildGuard, port: u16) -> bool {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if !server.is_running() {
            return false;
        }
        // A plain connect (no SMTP): it works for the SMTPS port too.
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Still running: the listener is this server's, not a squatter's on a port it lost.
            return server.is_running();
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};

    use super::*;

    /// Sends `line` (unless empty) and returns the server's complete reply.
    fn say(reader: &mut BufReader<TcpStream>, line: &str) -> String {
        if !line.is_empty() {
            reader.get_mut().write_all(format!("{line}\r\n").as_bytes()).unwrap();
        }
        let mut reply = String::new();
        loop {
            let mut next = String::new();
            assert!(
                reader.read_line(&mut next).unwrap() > 0,
                "closed after {line:?}: {reply}"
            );
            reply.push_str(&next);
            // "250-..." continues a multi-line reply, "250 ..." ends it.
            if next.as_bytes().get(3) == Some(&b' ') {
                return reply;
            }
        }
    }

    #[test]
    fn a_plain_sink_records_envelope_headers_and_body() {
        let Some(sink) = SmtpSink::start("a_plain_sink_records") else {
            return;
        };
        assert_eq!(sink.ca_file(), None);
        let stream = TcpStream::connect(("127.0.0.1", sink.port())).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut smtp = BufReader::new(stream);
        assert!(say(&mut smtp, "").starts_with("220"));
        assert!(say(&mut smtp, "EHLO client.test").starts_with("250"));
        assert!(say(&mut smtp, "MAIL FROM:<ck@example.com>").starts_with("250"));
        assert!(say(&mut smtp, "RCPT TO:<ops@example.com>").starts_with("250"));
        assert!(say(&mut smtp, "RCPT TO:<reject@example.com>").starts_with("550"));
        assert!(say(&mut smtp, "RCPT TO:<later@example.com>").starts_with("451"));
        assert!(say(&mut smtp, "DATA").starts_with("354"));
        let data = "From: certkeeper <ck@example.com>\r\nTo: ops@example.com\r\nSubject: renewed\r\n\
                    X-Certkeeper-Event: renewed\r\n\r\nline one\r\nline two\r\n.";
        assert!(say(&mut smtp, data).starts_with("250"));
        say(&mut smtp, "QUIT");

        let messages = sink.wait_for(1, Duration::from_secs(10));
        let message = &messages[0];
        assert_eq!(message["from"], "ck@example.com");
        assert_eq!(message["to"], serde_json::json!(["ops@example.com"]));
        assert_eq!(message["subject"], "renewed");
        assert_eq!(message["headers"]["x-certkeeper-event"], "renewed");
        assert_eq!(message["headers"]["from"], "certkeeper <ck@example.com>");
        assert_eq!(message["body"], "line one\nline two\n");
        assert_eq!(message["tls"], false);
    }

    #[test]
    fn a_starttls_sink_offers_starttls_and_refuses_mail_before_it() {
        let Some(sink) = SmtpSink::start_starttls("a_starttls_sink_refuses_plain_mail") else {
            return;
        };
        let ca_file = sink.ca_file().expect("a TLS sink has a CA");
        assert!(std::fs::read_to_string(ca_file).unwrap().contains("BEGIN CERTIFICATE"));
        let stream = TcpStream::connect(("127.0.0.1", sink.port())).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut smtp = BufReader::new(stream);
        assert!(say(&mut smtp, "").starts_with("220"));
        let ehlo = say(&mut smtp, "EHLO client.test");
        assert!(ehlo.contains("STARTTLS"), "{ehlo}");
        let refused = say(&mut smtp, "MAIL FROM:<ck@example.com>");
        assert!(refused.starts_with("530"), "{refused}");
        assert!(sink.messages().is_empty());
    }
}
