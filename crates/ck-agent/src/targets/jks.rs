//! Java KeyStore: key and chain under one alias; the store password also protects the key.

use super::{Target, key_file, read_password};
use crate::{Bundle, Common, DeployError, JksTarget, PlannedFile};

impl Target for JksTarget {
    fn common(&self) -> Common<'_> {
        JksTarget::common(self)
    }

    fn plan(&self, bundle: &Bundle) -> Result<Vec<PlannedFile>, DeployError> {
        let common = JksTarget::common(self);
        let password = read_password(&self.password_file)?;
        let keystore_error = |e: jks::KeyStoreError| DeployError::Keystore { reason: e.to_string() };
        let entry = jks::PrivateKeyEntry {
            creation_time: std::time::SystemTime::now(),
            private_key: bundle.key_pkcs8_der()?,
            certificate_chain: bundle
                .certs_der()?
                .into_iter()
                .map(|content| jks::Certificate {
                    cert_type: "X.509".into(),
                    content,
                })
                .collect(),
        };
        let mut store = jks::KeyStore::new();
        let alias = self.alias.as_deref().unwrap_or("certkeeper");
        store
            .set_private_key_entry(alias, entry, password.as_bytes())
            .map_err(keystore_error)?;
        let mut bytes = Vec::new();
        store.store(&mut bytes, password.as_bytes()).map_err(keystore_error)?;
        Ok(vec![key_file(&self.path, bytes, &common)])
    }
}
