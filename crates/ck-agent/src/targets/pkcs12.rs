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
        let contents = ck_pki::Pkcs12Contents {
            chain_der: &bundle.certs_der()?,
            key_pkcs8_der: &bundle.key_pkcs8_der()?,
            alias: self.alias.as_deref().unwrap_or("certkeeper"),
            // The leaf fingerprint ties the key to its certificate, as localKeyId is meant to.
            key_id: hex::decode(&bundle.fingerprint).unwrap_or_default(),
        };
        let bytes =
            ck_pki::pkcs12(&contents, &password).map_err(|e| DeployError::Keystore { reason: e.to_string() })?;
        Ok(vec![key_file(&self.path, bytes, &common)])
    }
}
