//! PKCS#12 keystore: key and chain under one alias, password from a file read at deploy time.

use super::{Target, key_file, read_password};
use crate::{Bundle, Common, DeployError, Pkcs12Target, PlannedFile};

impl Target for Pkcs12Target {
    fn common(&self) -> Common<'_> {
        Pkcs12Target::common(self)
    }

    fn plan(&self, bundle: &Bundle) -> Result<Vec<PlannedFile>, DeployError> {
        let common = Pkcs12Target::common(self);
        let password = read_password(&self.password_file)?;
        let keystore_error = |e: p12_keystore::error::Error| DeployError::Keystore { reason: e.to_string() };
        let key = p12_keystore::PrivateKey::from_der(&bundle.key_pkcs8_der()?).map_err(keystore_error)?;
        let certs = bundle
            .certs_der()?
            .iter()
            .map(|der| p12_keystore::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(keystore_error)?;
        // The leaf fingerprint ties the key to its certificate, as localKeyId is meant to.
        let key_id = hex::decode(&bundle.fingerprint).unwrap_or_default();
        let chain = p12_keystore::PrivateKeyChain::new(key_id, key, certs);
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry(
            self.alias.as_deref().unwrap_or("certkeeper"),
            p12_keystore::KeyStoreEntry::PrivateKeyChain(chain),
        );
        let bytes = store.writer(&password).write().map_err(keystore_error)?;
        Ok(vec![key_file(&self.path, bytes, &common)])
    }
}
