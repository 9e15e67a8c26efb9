//! Shared test support: a throwaway PKI (root, intermediate, leaves) and small helpers.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ck_agent::{Bundle, SecretPem};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A root CA and an intermediate that signs leaves.
pub(crate) struct Pki {
    pub(crate) root_pem: String,
    intermediate: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub(crate) fn new() -> Self {
        let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = CertifiedIssuer::self_signed(root_params, KeyPair::generate().unwrap()).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let intermediate = CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), &root).unwrap();
        Self {
            root_pem: root.pem(),
            intermediate,
        }
    }

    /// A fresh key and leaf for `name`, chained with the intermediate.
    pub(crate) fn leaf(&self, name: &str) -> Bundle {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &self.intermediate)
            .unwrap();
        let chain = format!("{}{}", cert.pem(), self.intermediate.pem());
        Bundle::from_pem(chain, SecretPem::new(key.serialize_pem())).unwrap()
    }
}

/// The fingerprint (sha256 hex, lowercase) of the leaf `openssl s_client` sees, via the openssl CLI.
pub(crate) fn s_client_fingerprint(port: u16, sni: &str) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", sni])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .unwrap_or_else(|| panic!("no certificate in s_client output: {text}"));
    let end = text.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    let der = pem::parse(&text[start..end]).unwrap().into_contents();
    sha256_hex(&der)
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

pub(crate) fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A path to an executable shell script in `dir` that runs `body`.
pub(crate) fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Parses a target from YAML, as the agent's config file would hold it.
pub(crate) fn target(yaml: &str) -> ck_agent::TargetConfig {
    yaml_serde::from_str(yaml).unwrap()
}
