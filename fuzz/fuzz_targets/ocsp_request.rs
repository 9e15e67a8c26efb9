//! OCSP requests from anyone: parsing must never panic, and whatever parses must be answerable.
#![no_main]

use std::sync::OnceLock;

use ck_pki::{CaConfig, CaMaterial, LocalCa, OcspSigner, OcspStatus};
use libfuzzer_sys::fuzz_target;
use time::{Duration, OffsetDateTime};

fn signer() -> &'static OcspSigner {
    static SIGNER: OnceLock<OcspSigner> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let now = OffsetDateTime::now_utc();
        let material = CaMaterial::create(&CaConfig::default(), now).expect("a CA");
        let ca = LocalCa::load(&material).expect("the CA loads");
        ca.ocsp_signer(now, Duration::days(1)).expect("a responder")
    })
}

fuzz_target!(|data: &[u8]| {
    let signer = signer();
    if let Ok(query) = signer.parse_request(data) {
        let statuses = vec![OcspStatus::Unknown; query.certs.len()];
        let now = OffsetDateTime::now_utc();
        let _ = signer.respond(&query.certs, &statuses, query.nonce.as_ref(), now, now + Duration::hours(1));
    }
});
