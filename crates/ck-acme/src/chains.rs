//! Alternate certificate chains (RFC 8555 §7.4.2) and the preferred-chain choice.
//!
//! A CA may offer one certificate under several chains (say, to an older and a newer root),
//! announced as `Link: rel="alternate"` on the download. instant-acme fetches only the default
//! chain and signs requests with a key it does not expose, so the alternates are fetched here:
//! a POST-as-GET (RFC 8555 §6.3) signed ES256 with the account key from the stored credentials.
//! This is the only JWS certkeeper builds by hand; everything else goes through instant-acme.

use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Method, Request, header};
use instant_acme::BodyWrapper;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::AcmeFailure;
use crate::http::AcmeHttpClient;

/// The account's signing key and URL (the JWS `kid`).
pub(crate) struct AccountSigner {
    key: EcdsaKeyPair,
    kid: String,
}

impl AccountSigner {
    /// Reads instant-acme's serialised credentials (`id`, `key_pkcs8` as base64url PKCS#8).
    pub(crate) fn from_credentials(credentials_json: &str) -> Option<Arc<Self>> {
        let value: serde_json::Value = serde_json::from_str(credentials_json).ok()?;
        let kid = value.get("id")?.as_str()?.to_owned();
        let der = URL_SAFE_NO_PAD.decode(value.get("key_pkcs8")?.as_str()?).ok()?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).ok()?;
        Some(Arc::new(Self { key, kid }))
    }

    fn jws(&self, nonce: &str, url: &str) -> Result<Vec<u8>, AcmeFailure> {
        let protected = serde_json::json!({ "alg": "ES256", "kid": self.kid, "nonce": nonce, "url": url });
        let protected = URL_SAFE_NO_PAD.encode(protected.to_string());
        // POST-as-GET: the payload is the empty string.
        let signature = self
            .key
            .sign(&SystemRandom::new(), format!("{protected}.").as_bytes())
            .map_err(|_| AcmeFailure::local("signing the chain request failed", true))?;
        let body = serde_json::json!({
            "protected": protected,
            "payload": "",
            "signature": URL_SAFE_NO_PAD.encode(signature.as_ref()),
        });
        Ok(body.to_string().into_bytes())
    }
}

impl std::fmt::Debug for AccountSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Downloads the chain at `url` (an alternate of the default one).
pub(crate) async fn fetch_chain(
    http: &AcmeHttpClient,
    signer: &AccountSigner,
    directory_url: &str,
    url: &str,
) -> Result<String, AcmeFailure> {
    let fail = |what: &str, e: String| AcmeFailure::local(format!("downloading an alternate chain: {what}: {e}"), true);
    let request = Request::builder()
        .method(Method::GET)
        .uri(directory_url)
        .body(BodyWrapper::<Bytes>::default())
        .map_err(|e| fail("request", e.to_string()))?;
    let (_, body) = http.send(request).await.map_err(|e| fail("directory", e))?;
    let directory: serde_json::Value = serde_json::from_slice(&body).map_err(|e| fail("directory", e.to_string()))?;
    let new_nonce = directory
        .get("newNonce")
        .and_then(|v| v.as_str())
        .ok_or_else(|| fail("directory", "no newNonce".to_owned()))?
        .to_owned();
    // A CA may reject a nonce (badNonce): ask for a fresh one and try again.
    for _ in 0..10 {
        let request = Request::builder()
            .method(Method::HEAD)
            .uri(&new_nonce)
            .body(BodyWrapper::<Bytes>::default())
            .map_err(|e| fail("request", e.to_string()))?;
        let (parts, _) = http.send(request).await.map_err(|e| fail("nonce", e))?;
        let nonce = parts
            .headers
            .get("replay-nonce")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| fail("nonce", "no Replay-Nonce header".to_owned()))?
            .to_owned();
        let request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(header::CONTENT_TYPE, "application/jose+json")
            .header(header::ACCEPT, "application/pem-certificate-chain")
            .body(BodyWrapper::from(signer.jws(&nonce, url)?))
            .map_err(|e| fail("request", e.to_string()))?;
        let (parts, body) = http.send(request).await.map_err(|e| fail("download", e))?;
        let text = String::from_utf8_lossy(&body).into_owned();
        if parts.status.is_success() {
            return Ok(text);
        }
        if !text.contains("badNonce") {
            return Err(fail("download", format!("HTTP {}: {text}", parts.status)));
        }
    }
    Err(fail("download", "the CA rejected ten nonces in a row".to_owned()))
}

/// Whether `chain_pem` leads to the CA named `preferred` (common name): the issuer of its last
/// certificate (the root it chains to) or the subject of any certificate after the leaf.
pub(crate) fn chain_matches(chain_pem: &str, preferred: &str) -> bool {
    let Ok(blocks) = pem_blocks(chain_pem) else {
        return false;
    };
    let common_names = |der: &[u8]| -> Vec<String> {
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            return Vec::new();
        };
        let cn = |name: &x509_parser::x509::X509Name<'_>| {
            name.iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
                .collect::<Vec<_>>()
        };
        let mut names = cn(cert.subject());
        names.extend(cn(cert.issuer()));
        names
    };
    blocks
        .iter()
        .skip(1)
        .chain(blocks.last())
        .any(|der| common_names(der).iter().any(|cn| cn == preferred))
}

fn pem_blocks(chain_pem: &str) -> Result<Vec<Vec<u8>>, ()> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .map(|cert| cert.map(|c| c.to_vec()).map_err(|_| ()))
        .collect()
}
