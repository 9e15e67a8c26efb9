//! Shared test fixtures: a throwaway CA minted with rcgen, a TLS echo server on 127.0.0.1
//! backed by a `CertStore`, and clients (tokio-rustls and `openssl s_client`) that report which
//! certificate they were shown.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use certkeeper_tls::{CertStore, LoadedCert};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SerialNumber};
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::prelude::{FromDer, X509Certificate};

/// A test certificate authority.
pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate with its key, in every form the tests need.
#[derive(Clone)]
pub(crate) struct Leaf {
    pub(crate) serial: u64,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    pub(crate) der: CertificateDer<'static>,
}

impl Leaf {
    pub(crate) fn loaded(&self) -> LoadedCert {
        LoadedCert::from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes()).unwrap()
    }
}

impl Ca {
    pub(crate) fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "certkeeper-tls test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub(crate) fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A leaf valid from an hour ago for 90 days.
    pub(crate) fn leaf(&self, serial: u64, names: &[&str]) -> Leaf {
        let now = OffsetDateTime::now_utc();
        self.leaf_valid(
            serial,
            names,
            now - time::Duration::hours(1),
            now + time::Duration::days(90),
        )
    }

    pub(crate) fn leaf_valid(
        &self,
        serial: u64,
        names: &[&str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("leaf-{serial}"));
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            serial,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// Starts a TLS echo server on 127.0.0.1 whose certificates come from `store`.
pub(crate) async fn serve(store: Arc<CertStore>) -> SocketAddr {
    let config = ServerConfig::builder().with_no_client_auth().with_cert_resolver(store);
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tls.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A client that verifies the chain and the name against `ca`, never resumes (a resumed
/// session would hide a swap) and offers `alpn`.
pub(crate) fn verifying_client(ca: &Ca, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A client that accepts any certificate for any name but still checks the handshake
/// signature: for fallback tests, where the certificate deliberately does not match the name.
pub(crate) fn any_name_client() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyName(provider)))
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

#[derive(Debug)]
struct AnyName(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One full handshake; `sni: None` connects by IP address, so no server name is sent.
pub(crate) async fn connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    sni: Option<&str>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = match sni {
        Some(name) => ServerName::try_from(name.to_string()).map_err(std::io::Error::other)?,
        None => ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into()),
    };
    let tcp = TcpStream::connect(addr).await?;
    let connect = TlsConnector::from(config.clone()).connect(name, tcp);
    tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(std::io::Error::other)?
}

/// The leaf certificate the server presented.
pub(crate) fn peer_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// Handshakes and returns the serial of the leaf shown, or the handshake error.
pub(crate) async fn served_serial(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    sni: Option<&str>,
) -> std::io::Result<u64> {
    let stream = connect(addr, config, sni).await?;
    Ok(serial_of(&peer_leaf(&stream)))
}

pub(crate) fn serial_of(der: &[u8]) -> u64 {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    cert.raw_serial()
        .iter()
        .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte))
}

/// Sends a line over an established connection and checks it comes back.
pub(crate) async fn echo(stream: &mut TlsStream<TcpStream>, line: &[u8]) {
    stream.write_all(line).await.unwrap();
    let mut back = vec![0u8; line.len()];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(back, line);
}

/// What `openssl s_client` saw: the leaf's subject common name and serial, if a handshake happened.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct OpensslPeer {
    pub(crate) common_name: String,
    pub(crate) serial: u64,
}

/// Runs `openssl s_client` with stdin closed; `None` if no certificate was received.
pub(crate) async fn openssl_peer(addr: SocketAddr, sni: Option<&str>) -> Option<OpensslPeer> {
    let mut command = tokio::process::Command::new("openssl");
    command.arg("s_client").arg("-connect").arg(addr.to_string());
    match sni {
        Some(name) => command.args(["-servername", name]),
        None => command.arg("-noservername"),
    };
    command.stdin(std::process::Stdio::null());
    let output = tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let begin = stdout.find("-----BEGIN CERTIFICATE-----")?;
    let end = stdout[begin..].find("-----END CERTIFICATE-----")? + begin + "-----END CERTIFICATE-----".len();
    use rustls_pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(stdout[begin..end].as_bytes()).unwrap();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap()
        .to_string();
    // The subject line printed by s_client must agree with the certificate block.
    assert!(stdout.contains(&format!("CN = {common_name}")) || stdout.contains(&format!("CN={common_name}")));
    Some(OpensslPeer {
        common_name,
        serial: serial_of(&der),
    })
}
