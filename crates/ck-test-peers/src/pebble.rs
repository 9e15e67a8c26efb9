//! Pebble (the ACME test CA) and pebble-challtestsrv (its test DNS server), started per test.
//!
//! [`Pebble::start`] generates a small TLS CA and a leaf for Pebble's own HTTPS listeners, starts
//! pebble-challtestsrv (unless another DNS server is given) and Pebble on free loopback ports, and
//! fetches Pebble's issuing root and intermediate, which Pebble regenerates at every start.
//! Everything lives in a temporary directory removed with the [`Pebble`] value.
//!
//! Management calls go through `curl` rather than reqwest: they are few, and a synchronous
//! helper keeps the fixture usable from plain `#[test]` functions and from async tests alike.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::{ChildGuard, free_port, peer_or_skip};

/// Pebble's example EAB keys (public test values from its documentation).
pub const EAB_KEYS: [(&str, &str); 2] = [
    (
        "kid-1",
        "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W",
    ),
    (
        "kid-2",
        "b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH",
    ),
];

/// How long a peer gets to answer its first request. Pebble needs 0.3–1.3 s on a quiet machine;
/// a parallel `cargo test` on two cores can take many times that.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A free port can be taken by someone else between [`free_port`] and the peer's bind: retry
/// with fresh ports a few times before calling it a failure.
const START_ATTEMPTS: usize = 3;

/// Which DNS server Pebble's validation authority asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PebbleDns {
    /// Start a pebble-challtestsrv for this Pebble; every name resolves to 127.0.0.1.
    #[default]
    ChallTestSrv,
    /// Use an already running server, e.g. a BIND fixture.
    Server(SocketAddr),
}

/// How to configure a [`Pebble`].
#[derive(Debug, Clone, Default)]
pub struct PebbleOptions {
    /// Require External Account Binding with the keys of [`EAB_KEYS`].
    pub eab: bool,
    /// Percentage of good nonces Pebble rejects with `badNonce` (Pebble's own default is 5).
    pub nonce_reject_percent: u8,
    /// Lifetime of issued certificates; `None` keeps Pebble's default of five years.
    pub validity_seconds: Option<u64>,
    /// The DNS server Pebble resolves names and dns-01 TXT records with.
    pub dns: PebbleDns,
    /// Port Pebble's validation authority connects to for http-01; default: a free port.
    pub http_port: Option<u16>,
    /// Port Pebble's validation authority connects to for tls-alpn-01; default: a free port.
    pub tls_port: Option<u16>,
    /// Extra issuing hierarchies: each order then offers this many alternate chains
    /// (`PEBBLE_ALTERNATE_ROOTS`), each to its own root ([`Pebble::root_pem`]).
    pub alternate_roots: u8,
    /// Skip validation (`PEBBLE_VA_ALWAYS_VALID`): for tests about ordering, not challenges,
    /// such as several nodes on one host that cannot all answer on one port.
    pub always_valid: bool,
}

/// A running Pebble, stopped (with its challtestsrv) and cleaned up on drop.
#[derive(Debug)]
pub struct Pebble {
    // Field order matters: the processes stop before their directory goes away.
    pebble: ChildGuard,
    challtestsrv: Option<ChallTestSrv>,
    listen_port: u16,
    mgmt_port: u16,
    http_port: u16,
    tls_port: u16,
    tls_ca: PathBuf,
    issuer_root: PathBuf,
    issuer_intermediate: PathBuf,
    dir: tempfile::TempDir,
}

impl Pebble {
    /// Starts Pebble as `options` say. Returns `None` when Pebble is not installed and peers are
    /// not required (see [`peer_or_skip`]); panics with the peers' log tails on any other failure.
    pub fn start(options: PebbleOptions, test: &str) -> Option<Pebble> {
        let pebble_bin = peer_or_skip("pebble", "pebble", test)?;
        let challtestsrv_bin = match options.dns {
            PebbleDns::ChallTestSrv => Some(peer_or_skip("pebble-challtestsrv", "pebble", test)?),
            PebbleDns::Server(_) => None,
        };
        let dir = tempfile::Builder::new().prefix("ck-pebble-").tempdir().unwrap();
        let tls_ca = make_listener_cert(dir.path());
        let challtestsrv = challtestsrv_bin.map(|bin| ChallTestSrv::spawn(&bin, dir.path()));
        let dns_addr = match (&challtestsrv, options.dns) {
            (Some(srv), _) => srv.dns_addr(),
            (None, PebbleDns::Server(addr)) => addr,
            (None, PebbleDns::ChallTestSrv) => unreachable!("challtestsrv was started above"),
        };
        let http_port = options.http_port.unwrap_or_else(free_port);
        let tls_port = options.tls_port.unwrap_or_else(free_port);

        let log = dir.path().join("pebble.log");
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let listen_port = free_port();
            let mgmt_port = free_port();
            let config = dir.path().join("pebble-config.json");
            let json = config_json(dir.path(), &options, listen_port, mgmt_port, http_port, tls_port);
            std::fs::write(&config, serde_json::to_vec_pretty(&json).unwrap()).unwrap();

            let mut command = Command::new(&pebble_bin);
            command
                .arg("-config")
                .arg(&config)
                .arg("-dnsserver")
                .arg(dns_addr.to_string())
                .current_dir(dir.path())
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", options.nonce_reject_percent.to_string())
                .env("PEBBLE_AUTHZREUSE", "0")
                .env("PEBBLE_ALTERNATE_ROOTS", options.alternate_roots.to_string());
            if options.always_valid {
                command.env("PEBBLE_VA_ALWAYS_VALID", "1");
            }
            let mut pebble = ChildGuard::spawn(command, log.clone());
            let dir_url = format!("https://127.0.0.1:{listen_port}/dir");
            let ready = wait_while_running(&mut pebble, || {
                curl_tls(&tls_ca, &["-o", "/dev/null", &dir_url]).is_ok()
            });
            if !ready {
                last_log = pebble.log_text();
                drop(pebble);
                if last_log.contains("address already in use") {
                    continue;
                }
                panic!("{test}: Pebble did not start:\n{}", tail(&last_log));
            }

            let mgmt = format!("https://127.0.0.1:{mgmt_port}");
            let issuer_root = dir.path().join("issuer-root.pem");
            let issuer_intermediate = dir.path().join("issuer-intermediate.pem");
            for (what, path) in [("roots/0", &issuer_root), ("intermediates/0", &issuer_intermediate)] {
                let pem = curl_tls(&tls_ca, &[&format!("{mgmt}/{what}")]).unwrap_or_else(|e| {
                    panic!(
                        "{test}: cannot fetch Pebble's {what}: {e}\n{}",
                        tail(&pebble.log_text())
                    )
                });
                assert!(
                    pem.contains("BEGIN CERTIFICATE"),
                    "{test}: Pebble's {what} is not PEM: {pem}"
                );
                std::fs::write(path, pem).unwrap();
            }
            return Some(Pebble {
                pebble,
                challtestsrv,
                listen_port,
                mgmt_port,
                http_port,
                tls_port,
                tls_ca,
                issuer_root,
                issuer_intermediate,
                dir,
            });
        }
        panic!(
            "{test}: Pebble found its ports taken {START_ATTEMPTS} times:\n{}",
            tail(&last_log)
        );
    }

    /// Root number `n` (0: the default chain's root; 1…: the alternate chains' roots) as PEM,
    /// written to a file in the fixture's directory; returns its path.
    pub fn root_pem(&self, n: u8) -> PathBuf {
        let pem = curl_tls(&self.tls_ca, &[&format!("{}/roots/{n}", self.mgmt_url())])
            .unwrap_or_else(|e| panic!("cannot fetch Pebble's roots/{n}: {e}"));
        assert!(
            pem.contains("BEGIN CERTIFICATE"),
            "Pebble's roots/{n} is not PEM: {pem}"
        );
        let path = self.dir.path().join(format!("root-{n}.pem"));
        std::fs::write(&path, pem).unwrap();
        path
    }

    /// The ACME directory URL.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.listen_port)
    }

    /// The ACME directory object, fetched now.
    pub fn directory(&self) -> serde_json::Value {
        let body = curl_tls(&self.tls_ca, &[&self.directory_url()]).unwrap_or_else(|e| panic!("GET /dir: {e}"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/dir is not JSON ({e}): {body}"))
    }

    /// Base URL of Pebble's management interface (same TLS trust anchor as the directory).
    pub fn mgmt_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.mgmt_port)
    }

    /// PEM file of the CA that signed Pebble's HTTPS listener certificate: the trust anchor for
    /// the directory and management connections (not for the certificates Pebble issues).
    pub fn tls_ca_pem_path(&self) -> &Path {
        &self.tls_ca
    }

    /// Contents of [`Self::tls_ca_pem_path`].
    pub fn tls_ca_pem(&self) -> String {
        std::fs::read_to_string(&self.tls_ca).unwrap()
    }

    /// PEM file of the root Pebble issues under; new at every start.
    pub fn issuer_root_pem_path(&self) -> &Path {
        &self.issuer_root
    }

    /// PEM file of the intermediate that signs Pebble's leaves; new at every start.
    pub fn issuer_intermediate_pem_path(&self) -> &Path {
        &self.issuer_intermediate
    }

    /// Port Pebble's validation authority connects to for http-01.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// Port Pebble's validation authority connects to for tls-alpn-01.
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// The key id and base64url HMAC key accepted when started with `eab: true`.
    pub fn eab_credentials() -> (&'static str, &'static str) {
        EAB_KEYS[0]
    }

    /// Pebble's view of a certificate: `"Valid"` or `"Revoked"`. `serial_hex` may carry colons,
    /// upper case or leading zeros, as `openssl x509 -serial` or a DER dump would print it.
    pub fn revocation_status(&self, serial_hex: &str) -> String {
        self.cert_status(serial_hex).0
    }

    /// Like [`Self::revocation_status`], with the RFC 5280 reason code when Pebble recorded one.
    pub fn cert_status(&self, serial_hex: &str) -> (String, Option<u64>) {
        let serial: String = serial_hex
            .trim()
            .trim_start_matches("0x")
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_ascii_lowercase();
        let url = format!("{}/cert-status-by-serial/{serial}", self.mgmt_url());
        let body = curl_tls(&self.tls_ca, &[&url]).unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let json: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url} is not JSON ({e}): {body}"));
        let status = json["Status"]
            .as_str()
            .unwrap_or_else(|| panic!("{url}: no Status in {body}"));
        (status.to_owned(), json["Reason"].as_u64())
    }

    /// The challtestsrv started for this Pebble, unless another DNS server was configured.
    pub fn challtestsrv(&self) -> Option<&ChallTestSrv> {
        self.challtestsrv.as_ref()
    }

    /// How many certificates Pebble has issued (one per finalized order), from its log.
    pub fn issued_count(&self) -> usize {
        self.pebble.log_text().matches("Issued certificate serial").count()
    }

    /// Pebble's log, then challtestsrv's, for assertion messages.
    pub fn log_text(&self) -> String {
        let mut text = format!("---- pebble ----\n{}", self.pebble.log_text());
        if let Some(srv) = &self.challtestsrv {
            text.push_str(&format!("---- pebble-challtestsrv ----\n{}", srv.log_text()));
        }
        text
    }

    /// The fixture's working directory (config, keys, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A running pebble-challtestsrv, DNS only: its http-01, https-01 and tls-alpn-01 responders are
/// off so that the client under test can serve those challenges itself on 127.0.0.1.
#[derive(Debug)]
pub struct ChallTestSrv {
    guard: ChildGuard,
    dns_port: u16,
    mgmt_port: u16,
    // Only set when started on its own (without a Pebble owning the directory).
    _dir: Option<tempfile::TempDir>,
}

impl ChallTestSrv {
    /// Starts a challtestsrv on its own, e.g. as the resolver for dns-01 propagation checks.
    /// `None` when it is not installed and peers are not required.
    pub fn start(test: &str) -> Option<ChallTestSrv> {
        let bin = peer_or_skip("pebble-challtestsrv", "pebble", test)?;
        let dir = tempfile::Builder::new().prefix("ck-challtestsrv-").tempdir().unwrap();
        let mut srv = Self::spawn(&bin, dir.path());
        srv._dir = Some(dir);
        Some(srv)
    }

    fn spawn(bin: &Path, dir: &Path) -> ChallTestSrv {
        let log = dir.join("challtestsrv.log");
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let dns_port = free_port();
            let mgmt_port = free_port();
            let mut command = Command::new(bin);
            // Every listener is named: the defaults bind all interfaces.
            command
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-management", &format!("127.0.0.1:{mgmt_port}")])
                .current_dir(dir);
            let mut guard = ChildGuard::spawn(command, log.clone());
            let srv_mgmt = format!("http://127.0.0.1:{mgmt_port}");
            // Setting the default address it already has is a harmless "are you up?".
            let ready = wait_while_running(&mut guard, || {
                post(&srv_mgmt, "set-default-ipv4", r#"{"ip":"127.0.0.1"}"#).is_ok()
            });
            if ready {
                return ChallTestSrv {
                    guard,
                    dns_port,
                    mgmt_port,
                    _dir: None,
                };
            }
            last_log = guard.log_text();
            drop(guard);
            if !last_log.contains("address already in use") {
                panic!("pebble-challtestsrv did not start:\n{}", tail(&last_log));
            }
        }
        panic!(
            "pebble-challtestsrv found its ports taken {START_ATTEMPTS} times:\n{}",
            tail(&last_log)
        );
    }

    /// Its DNS server (UDP and TCP).
    pub fn dns_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.dns_port))
    }

    /// Base URL of its plain-HTTP management API.
    pub fn mgmt_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.mgmt_port)
    }

    /// Adds a TXT value for `host` (added to earlier ones, as for an apex plus its wildcard).
    pub fn set_txt(&self, host: &str, value: &str) {
        self.call("set-txt", serde_json::json!({ "host": fqdn(host), "value": value }));
    }

    /// Removes every TXT value of `host`.
    pub fn clear_txt(&self, host: &str) {
        self.call("clear-txt", serde_json::json!({ "host": fqdn(host) }));
    }

    /// Makes every query for `host` answer SERVFAIL.
    pub fn set_servfail(&self, host: &str) {
        self.call("set-servfail", serde_json::json!({ "host": fqdn(host) }));
    }

    /// Undoes [`Self::set_servfail`].
    pub fn clear_servfail(&self, host: &str) {
        self.call("clear-servfail", serde_json::json!({ "host": fqdn(host) }));
    }

    /// Adds A records for `host` (instead of the default 127.0.0.1).
    pub fn add_a(&self, host: &str, addresses: &[&str]) {
        self.call(
            "add-a",
            serde_json::json!({ "host": fqdn(host), "addresses": addresses }),
        );
    }

    /// Makes `host` a CNAME for `target`.
    pub fn set_cname(&self, host: &str, target: &str) {
        self.call(
            "set-cname",
            serde_json::json!({ "host": fqdn(host), "target": fqdn(target) }),
        );
    }

    /// Removes the CNAME of `host`.
    pub fn clear_cname(&self, host: &str) {
        self.call("clear-cname", serde_json::json!({ "host": fqdn(host) }));
    }

    /// The DNS queries it received for `host`, as challtestsrv reports them (a JSON array of
    /// `{"Question": {"Name", "Qtype", "Qclass"}}`).
    pub fn dns_request_history(&self, host: &str) -> serde_json::Value {
        // Unlike the record endpoints, the history is keyed by the name without its final dot.
        let host = host.trim_end_matches('.');
        let body = post(
            &self.mgmt_url(),
            "dns-request-history",
            &serde_json::json!({ "host": host }).to_string(),
        )
        .unwrap_or_else(|e| panic!("challtestsrv dns-request-history: {e}"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("dns-request-history is not JSON ({e}): {body}"))
    }

    /// Its log, for assertion messages.
    pub fn log_text(&self) -> String {
        self.guard.log_text()
    }

    fn call(&self, endpoint: &str, body: serde_json::Value) {
        if let Err(e) = post(&self.mgmt_url(), endpoint, &body.to_string()) {
            panic!("challtestsrv /{endpoint} {body}: {e}\n{}", tail(&self.log_text()));
        }
    }
}

/// Checks a leaf-first PEM chain with `openssl verify` against `root_pem`, as an implementation
/// independent of the code under test. The certificates after the first are offered as
/// untrusted intermediates. `Err` carries openssl's output.
pub fn openssl_verify_chain(root_pem: &Path, chain_pem: &str) -> Result<(), String> {
    let blocks: Vec<&str> = chain_pem
        .split_inclusive("-----END CERTIFICATE-----")
        .filter(|block| block.contains("-----BEGIN CERTIFICATE-----"))
        .collect();
    let Some((leaf, rest)) = blocks.split_first() else {
        return Err(format!("no certificate in the chain PEM:\n{chain_pem}"));
    };
    let dir = tempfile::tempdir().unwrap();
    let leaf_path = dir.path().join("leaf.pem");
    std::fs::write(&leaf_path, format!("{}\n", leaf.trim())).unwrap();
    let mut command = Command::new("openssl");
    command.arg("verify").arg("-CAfile").arg(root_pem);
    if !rest.is_empty() {
        let untrusted = dir.path().join("untrusted.pem");
        let pem: String = rest.iter().map(|block| format!("{}\n", block.trim())).collect();
        std::fs::write(&untrusted, pem).unwrap();
        command.arg("-untrusted").arg(untrusted);
    }
    let out = command
        .arg(&leaf_path)
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    let text = output_text(&out);
    if out.status.success() && text.contains(": OK") {
        Ok(())
    } else {
        Err(text)
    }
}

/// Writes a CA and a non-CA leaf for `localhost`/127.0.0.1 into `dir` (Pebble's listener pair),
/// and returns the CA's PEM path. webpki refuses a self-signed CA certificate as a server's
/// end-entity certificate, so the listener cannot simply use one self-signed certificate.
/// The leaf is `tls.pem` with key `tls.key`; the SMTP sink uses the same pair.
pub(crate) fn make_listener_cert(dir: &Path) -> PathBuf {
    let ca_key = dir.join("tls-ca.key");
    let ca = dir.join("tls-ca.pem");
    let csr = dir.join("tls.csr");
    let ext = dir.join("tls-leaf.ext");
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n\
         subjectAltName=DNS:localhost,IP:127.0.0.1\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    )
    .unwrap();
    let p256 = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let mut ca_cmd = Command::new("openssl");
    ca_cmd
        .args(["req", "-x509", "-days", "7", "-subj", "/CN=ck-test-peers TLS CA"])
        .args(p256)
        .args([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])
        .arg("-keyout")
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca);
    run_openssl(ca_cmd);
    let mut csr_cmd = Command::new("openssl");
    csr_cmd
        .args(["req", "-new", "-subj", "/CN=localhost"])
        .args(p256)
        .arg("-keyout")
        .arg(dir.join("tls.key"))
        .arg("-out")
        .arg(&csr);
    run_openssl(csr_cmd);
    let mut sign_cmd = Command::new("openssl");
    sign_cmd
        .args(["x509", "-req", "-days", "7", "-set_serial", &random_serial()])
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(dir.join("tls.pem"));
    run_openssl(sign_cmd);
    ca
}

fn run_openssl(mut command: Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (apt-get install -y openssl): {e}"));
    assert!(out.status.success(), "{command:?} failed:\n{}", output_text(&out));
}

/// A positive 64-bit serial: clients may reject two listener certificates from one issuer name
/// with the same serial, and every fixture's CA has the same name.
fn random_serial() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    format!("0x{:016x}", mixed & 0x7fff_ffff_ffff_ffff)
}

fn config_json(
    dir: &Path,
    options: &PebbleOptions,
    listen_port: u16,
    mgmt_port: u16,
    http_port: u16,
    tls_port: u16,
) -> serde_json::Value {
    let mut pebble = serde_json::json!({
        "listenAddress": format!("127.0.0.1:{listen_port}"),
        "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
        "certificate": dir.join("tls.pem"),
        "privateKey": dir.join("tls.key"),
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": options.eab,
    });
    if options.eab {
        pebble["externalAccountMACKeys"] = EAB_KEYS
            .iter()
            .map(|(kid, key)| (kid.to_string(), key.to_string()))
            .collect();
    }
    if let Some(seconds) = options.validity_seconds {
        pebble["certificateValidityPeriod"] = seconds.into();
    }
    serde_json::json!({ "pebble": pebble })
}

/// Polls `ready` until it holds (true), the child exits or the start timeout passes (false).
fn wait_while_running(child: &mut ChildGuard, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if ready() {
            return true;
        }
        if !child.is_running() || Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// GET over HTTPS trusting only `ca`; the body on a 2xx answer.
fn curl_tls(ca: &Path, args: &[&str]) -> Result<String, String> {
    let mut command = curl();
    command.arg("--cacert").arg(ca).args(args);
    run_curl(command)
}

/// POST of a JSON body to a challtestsrv management endpoint; the body on a 2xx answer.
fn post(base: &str, endpoint: &str, body: &str) -> Result<String, String> {
    let mut command = curl();
    command.args(["-X", "POST", "--data-binary", body, &format!("{base}/{endpoint}")]);
    run_curl(command)
}

fn curl() -> Command {
    let mut command = Command::new("curl");
    // A proxy from the environment must never see loopback test traffic.
    command.args(["-fsS", "--noproxy", "*", "--max-time", "10"]);
    command
}

fn run_curl(mut command: Command) -> Result<String, String> {
    let out = command
        .output()
        .map_err(|e| format!("cannot run curl (apt-get install -y curl): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(output_text(&out))
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn fqdn(host: &str) -> String {
    if host.ends_with('.') {
        host.to_owned()
    } else {
        format!("{host}.")
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
