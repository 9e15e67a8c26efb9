//! The agent's private keys: made here, kept here (0600 files in a 0700 directory), never sent.
//!
//! A key file is named by the SHA-256 of its public key (SubjectPublicKeyInfo DER), so the key
//! of an issued certificate is found from the certificate alone — after a crash, a restart or a
//! renewal whose CSR was sent by an earlier run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ck_domain::{KeyType, SubjectAltName};
use ck_pki::ServerKey;

use crate::bundle::{SecretPem, sha256_hex};
use crate::fsops;
use crate::runtime::AgentError;

/// The keys of one agent.
#[derive(Clone, Debug)]
pub struct KeyStore {
    dir: PathBuf,
}

/// A key with the CSR that carries the certificate's names.
pub struct NewKey {
    /// The key's file name stem: SHA-256 of the public key.
    pub id: String,
    /// The CSR, PEM.
    pub csr_pem: String,
}

impl KeyStore {
    /// The store in `dir` (created 0700 when missing).
    pub fn open(dir: &Path) -> Result<Self, AgentError> {
        std::fs::create_dir_all(dir).map_err(|e| AgentError::io("create the key directory", dir, e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| AgentError::io("restrict the key directory", dir, e))?;
        Ok(Self { dir: dir.to_owned() })
    }

    /// The directory of one certificate's keys. The id comes from the server: it is checked
    /// before it names anything on disk, so a hostile or confused server cannot make the agent
    /// write or read a key outside its key directory (`../`, `/etc/…`).
    fn certificate_dir(&self, certificate_id: &str) -> Result<PathBuf, AgentError> {
        check_certificate_id(certificate_id)?;
        Ok(self.dir.join(certificate_id))
    }

    fn path(&self, certificate_id: &str, key_id: &str) -> Result<PathBuf, AgentError> {
        Ok(self.certificate_dir(certificate_id)?.join(format!("{key_id}.key")))
    }

    /// Makes a key (or, with `reuse`, takes the key of `current_leaf_pem`) and a CSR for
    /// `names`. A new key is on disk, durably, before this returns: the CSR is sent only after.
    /// Blocking (RSA keys take seconds).
    pub fn key_for_csr(
        &self,
        certificate_id: &str,
        key_type: KeyType,
        names: &[SubjectAltName],
        reuse_of: Option<&str>,
    ) -> Result<NewKey, AgentError> {
        let reused = match reuse_of {
            Some(leaf_pem) => self.key_of(certificate_id, leaf_pem)?,
            None => None,
        };
        let key = match reused {
            Some(pem) => ServerKey::reuse(pem.expose(), names),
            None => ServerKey::generate(key_type, names),
        }
        .map_err(|e| AgentError::Key(e.to_string()))?;
        let id = sha256_hex(&key.public_key_der);
        let dir = self.certificate_dir(certificate_id)?;
        std::fs::create_dir_all(&dir).map_err(|e| AgentError::io("create the key directory", &dir, e))?;
        let path = self.path(certificate_id, &id)?;
        if !path.exists() {
            // Temp file, fsync, rename: a crash leaves the whole key or none under its name.
            let temp = fsops::temp_path(&path);
            fsops::write_durable(&temp, key.private_key.expose().as_bytes(), 0o600, (None, None))
                .and_then(|()| fsops::rename(&temp, &path))
                .and_then(|()| fsops::sync_dir(&dir))
                .map_err(|e| AgentError::Key(e.to_string()))?;
        }
        Ok(NewKey {
            id,
            csr_pem: key.csr_pem,
        })
    }

    /// The key whose public key is in `leaf_pem` (the first certificate of a chain), if this
    /// agent made it.
    pub fn key_of(&self, certificate_id: &str, leaf_pem: &str) -> Result<Option<SecretPem>, AgentError> {
        let id = leaf_key_id(leaf_pem)?;
        let path = self.path(certificate_id, &id)?;
        match std::fs::read_to_string(&path) {
            Ok(pem) => Ok(Some(SecretPem::new(pem))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AgentError::io("read the key", &path, e)),
        }
    }

    /// Removes the certificate's keys older than the one in `leaf_pem` (deployed everywhere):
    /// they can serve nothing any more. Newer keys (a CSR in flight) stay.
    pub fn prune_older_than(&self, certificate_id: &str, leaf_pem: &str) -> Result<usize, AgentError> {
        let keep = self.path(certificate_id, &leaf_key_id(leaf_pem)?)?;
        let Ok(kept) = std::fs::metadata(&keep).and_then(|m| m.modified()) else {
            return Ok(0);
        };
        let dir = self.certificate_dir(certificate_id)?;
        let mut removed = 0;
        let entries = std::fs::read_dir(&dir).map_err(|e| AgentError::io("list the key directory", &dir, e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let older = entry.metadata().and_then(|m| m.modified()).is_ok_and(|m| m < kept);
            if path != keep && older && path.extension().is_some_and(|e| e == "key") {
                std::fs::remove_file(&path).map_err(|e| AgentError::io("remove an old key", &path, e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Longest certificate id accepted (the server's are UUIDs: 36 characters).
const MAX_CERTIFICATE_ID_LEN: usize = 64;

/// A certificate id as the server makes them (a UUID): ASCII letters, digits and `-`, 1 to 64
/// characters. Anything else (`..`, `/`, NUL, an absolute path) is refused before it reaches
/// a path.
pub(crate) fn check_certificate_id(id: &str) -> Result<(), AgentError> {
    let well_formed = !id.is_empty()
        && id.len() <= MAX_CERTIFICATE_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if well_formed {
        Ok(())
    } else {
        Err(AgentError::InvalidCertificateId(
            id.chars().take(MAX_CERTIFICATE_ID_LEN).collect(),
        ))
    }
}

/// The SHA-256 of the leaf's SubjectPublicKeyInfo.
fn leaf_key_id(chain_pem: &str) -> Result<String, AgentError> {
    let block = pem::parse_many(chain_pem)
        .ok()
        .and_then(|blocks| blocks.into_iter().find(|b| b.tag() == "CERTIFICATE"))
        .ok_or_else(|| AgentError::Key("the bundle holds no certificate".to_owned()))?;
    let (_, leaf) = x509_parser::parse_x509_certificate(block.contents())
        .map_err(|e| AgentError::Key(format!("the bundle's leaf does not parse: {e}")))?;
    Ok(sha256_hex(leaf.tbs_certificate.subject_pki.raw))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A certificate for the key stored under `key_id` (as the CA would issue it).
    fn leaf_for(store: &KeyStore, key_id: &str) -> String {
        let pem = std::fs::read_to_string(store.path("c1", key_id).unwrap()).unwrap();
        let key = rcgen::KeyPair::from_pem(&pem).unwrap();
        let params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn keys_stay_private_are_found_from_their_certificate_and_are_reused_or_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(&dir.path().join("keys")).unwrap();
        let names = ["a.test".parse::<SubjectAltName>().unwrap()];
        let first = store.key_for_csr("c1", KeyType::EcdsaP256, &names, None).unwrap();
        assert!(first.csr_pem.contains("CERTIFICATE REQUEST"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("keys")), 0o700);
        assert_eq!(mode(&store.path("c1", &first.id).unwrap()), 0o600);
        let leaf = leaf_for(&store, &first.id);
        assert!(store.key_of("c1", &leaf).unwrap().is_some());
        assert!(
            store.key_of("other", &leaf).unwrap().is_none(),
            "keys are per certificate"
        );

        let reused = store
            .key_for_csr("c1", KeyType::EcdsaP256, &names, Some(&leaf))
            .unwrap();
        assert_eq!(reused.id, first.id, "reuse keeps the key");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let fresh = store.key_for_csr("c1", KeyType::Ed25519, &names, None).unwrap();
        assert_ne!(fresh.id, first.id);
        assert_eq!(
            store.prune_older_than("c1", &leaf).unwrap(),
            0,
            "the newer key is in flight"
        );
        let fresh_leaf = leaf_for(&store, &fresh.id);
        assert_eq!(store.prune_older_than("c1", &fresh_leaf).unwrap(), 1);
        assert!(store.key_of("c1", &leaf).unwrap().is_none());
        assert!(store.key_of("c1", &fresh_leaf).unwrap().is_some());
    }

    #[test]
    fn server_supplied_id_cannot_escape_key_dir() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let store = KeyStore::open(&keys).unwrap();
        let names = ["a.test".parse::<SubjectAltName>().unwrap()];
        let leaf = {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
            params.self_signed(&key).unwrap().pem()
        };
        let outside = dir.path().join("outside");
        let hostile = [
            "../outside".to_owned(),
            "..".to_owned(),
            outside.display().to_string(),
            "a/b".to_owned(),
            "c1\0".to_owned(),
            "c1\n".to_owned(),
            ".".to_owned(),
            String::new(),
            "a".repeat(65),
        ];
        for id in &hostile {
            let made = store.key_for_csr(id, KeyType::EcdsaP256, &names, None);
            assert!(
                matches!(made, Err(AgentError::InvalidCertificateId(_))),
                "{id:?}: {:?}",
                made.map(|k| k.id)
            );
            assert!(
                matches!(store.key_of(id, &leaf), Err(AgentError::InvalidCertificateId(_))),
                "{id:?}"
            );
            assert!(
                matches!(
                    store.prune_older_than(id, &leaf),
                    Err(AgentError::InvalidCertificateId(_))
                ),
                "{id:?}"
            );
        }
        assert!(!outside.exists(), "nothing was created outside the key directory");
        assert_eq!(std::fs::read_dir(&keys).unwrap().count(), 0, "nor inside it");
        // The server's real ids (UUIDs) work.
        let uuid = "0b6c4a52-7d1e-4a0f-9c55-2f7f3e2a9b10";
        store.key_for_csr(uuid, KeyType::EcdsaP256, &names, None).unwrap();
        assert!(keys.join(uuid).is_dir());
    }
}
