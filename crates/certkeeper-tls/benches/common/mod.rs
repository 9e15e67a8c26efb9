//! Shared benchmark fixtures: real certificates minted with rcgen, and whether this is a full
//! `cargo bench` run or the single quick pass `cargo test --benches` makes.

#![allow(dead_code, clippy::unwrap_used)]

use certkeeper_tls::LoadedCert;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SerialNumber};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// `cargo bench` passes `--bench`; without it the benches run as smoke tests and sizes shrink
/// so that `cargo test --all-targets` stays fast.
pub(crate) fn full_run() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// A CA that signs many leaves quickly.
pub(crate) struct Minter {
    ca: CertifiedIssuer<'static, KeyPair>,
    shared_key: KeyPair,
}

/// One minted leaf: DER chain and PKCS#8 key.
pub(crate) struct Minted {
    pub(crate) cert: CertificateDer<'static>,
    pub(crate) key: Vec<u8>,
}

impl Minted {
    pub(crate) fn loaded(&self) -> LoadedCert {
        LoadedCert::from_der(
            vec![self.cert.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone())),
        )
        .unwrap()
    }
}

impl Minter {
    pub(crate) fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "certkeeper-tls bench CA");
        Self {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
            shared_key: KeyPair::generate().unwrap(),
        }
    }

    pub(crate) fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// A leaf with its own key, as PEM certificate and PEM private key.
    pub(crate) fn leaf_pem(&self, serial: u64, names: &[String]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.to_vec()).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A leaf for `names`. With `own_key` false all leaves share one key pair: each is still
    /// a distinct, real certificate, only key generation (irrelevant to what is measured) is saved.
    pub(crate) fn leaf(&self, serial: u64, names: &[String], own_key: bool) -> Minted {
        let own;
        let key = if own_key {
            own = KeyPair::generate().unwrap();
            &own
        } else {
            &self.shared_key
        };
        let mut params = CertificateParams::new(names.to_vec()).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().cloned().unwrap_or_default());
        let cert = params.signed_by(key, &self.ca).unwrap();
        Minted {
            cert: cert.der().clone(),
            key: key.serialize_der(),
        }
    }
}
