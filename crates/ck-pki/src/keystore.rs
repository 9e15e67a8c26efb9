//! PKCS#12 keystores: a key and its chain under one alias (for Java, Windows, and anything that
//! wants a single password-protected file). Shared by the server's export and the agent's
//! `pkcs12` target.

use crate::PkiError;

/// What goes into a PKCS#12 file.
pub struct Pkcs12Contents<'a> {
    /// The certificates, leaf first, DER.
    pub chain_der: &'a [Vec<u8>],
    /// The private key, PKCS#8 DER.
    pub key_pkcs8_der: &'a [u8],
    /// The entry's alias (friendlyName).
    pub alias: &'a str,
    /// localKeyId, tying the key to its certificate (the leaf's fingerprint is a good one).
    pub key_id: Vec<u8>,
}

/// Encodes a PKCS#12 file protected by `password` (PBES2 with AES-256-CBC, HMAC-SHA256).
pub fn pkcs12(contents: &Pkcs12Contents<'_>, password: &str) -> Result<Vec<u8>, PkiError> {
    let error = |e: p12_keystore::error::Error| PkiError::Keystore(e.to_string());
    let key = p12_keystore::PrivateKey::from_der(contents.key_pkcs8_der).map_err(error)?;
    let certs = contents
        .chain_der
        .iter()
        .map(|der| p12_keystore::Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(error)?;
    let chain = p12_keystore::PrivateKeyChain::new(contents.key_id.clone(), key, certs);
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(contents.alias, p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
    store.writer(password).write().map_err(error)
}

/// [`pkcs12`] from PEM text: the chain (leaf first) and a PKCS#8 key; localKeyId is the
/// leaf's SHA-256.
pub fn pkcs12_from_pem(chain_pem: &str, key_pem: &str, password: &str, alias: &str) -> Result<Vec<u8>, PkiError> {
    let chain_der = crate::chain_der(chain_pem)?;
    let leaf = chain_der
        .first()
        .ok_or_else(|| PkiError::Keystore("the chain holds no certificate".to_owned()))?;
    // A parse error could quote key material: it is not passed on.
    let key = pem::parse(key_pem).map_err(|_| PkiError::Keystore("the key is not PEM".to_owned()))?;
    if key.tag() != "PRIVATE KEY" {
        return Err(PkiError::Keystore(format!("the key is {}, not PKCS#8", key.tag())));
    }
    let key_id = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf)
        .as_ref()
        .to_vec();
    pkcs12(
        &Pkcs12Contents {
            chain_der: &chain_der,
            key_pkcs8_der: key.contents(),
            alias,
            key_id,
        },
        password,
    )
}
