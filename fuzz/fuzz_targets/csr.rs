//! CSRs from anyone (`POST /api/v1/certificates`, agents, EST, SCEP), PEM or DER: parsing,
//! the signature and key checks (RSA size and exponent, curves) and the names must never
//! panic; a CSR that parses yields names the domain rules can resolve or refuse.
#![no_main]

use ck_domain::{IssuanceRequest, NamePolicy};
use ck_pki::ParsedCsr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(csr) = ParsedCsr::parse(data) {
        let _ = IssuanceRequest::resolve(None, &[], Some(&csr.names), &NamePolicy::default());
        // What was accepted once is read again at renewal, without the signature check.
        assert!(ParsedCsr::parse_stored(csr.pem.as_bytes()).is_ok(), "a stored CSR must parse again");
    }
    let _ = ParsedCsr::parse_stored(data);
});
