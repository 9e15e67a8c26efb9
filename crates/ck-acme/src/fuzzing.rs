//! Entry points for the fuzz targets (`fuzz/fuzz_targets/acme_answer.rs`): the parsers that
//! read what an ACME CA sends, reached without a network. Not an API: hidden from the docs,
//! and nothing in the workspace calls it.

/// Feeds one CA answer to every parser that reads it: a problem document and an ARI
/// `renewalInfo` (JSON, through instant-acme's types and our conversion), the directory's
/// `newNonce`, a PEM chain (alternate chains and the preferred-chain choice), `Link` and
/// `Retry-After` header values, and the DER leaf an ARI certificate id is made from. Each must
/// answer or refuse, never panic.
pub fn ca_answer(data: &[u8]) {
    if let Ok(problem) = serde_json::from_slice::<instant_acme::Problem>(data) {
        let document = crate::ProblemDocument::from_acme(&problem);
        let _ = document.short_type().len();
        let _ = serde_json::to_string(&document);
    }
    if let Ok(info) = serde_json::from_slice::<instant_acme::RenewalInfo>(data) {
        let _ = info.suggested_window.end - info.suggested_window.start;
    }
    if let Ok(directory) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = directory.get("newNonce").and_then(|v| v.as_str());
    }
    let text = String::from_utf8_lossy(data);
    let _ = crate::chains::chain_matches(&text, "ISRG Root X1");
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::LINK, value);
        let _ = crate::http::alternate_links(&headers);
    }
    let _ = crate::http::parse_retry_after(&text);
    let _ = instant_acme::CertificateIdentifier::try_from(&rustls_pki_types::CertificateDer::from(data));
}
