//! SCEP PKIOperation messages: the CMS SignedData parser, and (behind a valid signature) the
//! EnvelopedData parser and decryption, must never panic. Inputs starting with an even byte go
//! to the parser as they are; the others are wrapped, as the enveloped content, in a PKCSReq
//! correctly signed with a fixed key, so the fuzzer reaches what a signature check guards.
#![no_main]

use std::sync::OnceLock;

use ck_domain::KeyType;
use ck_pki::{CaConfig, CaMaterial, FailInfo, LocalCa, ParsedCsr, ScepRa, csr_challenge_password, generate_key};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    ra: ScepRa,
    requester: rcgen::KeyPair,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let now = time::OffsetDateTime::now_utc();
        let material = CaMaterial::create(&CaConfig::default(), now).expect("CA");
        let ca = LocalCa::load(&material).expect("CA");
        Fixture {
            ra: ca.scep_ra(now, time::Duration::days(7)).expect("RA"),
            requester: generate_key(KeyType::Rsa2048).expect("key"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let message = match data.split_first() {
        Some((first, rest)) if first % 2 == 1 => {
            match ck_pki::signed_pkcs_req(&fixture.requester, rest.to_vec(), "fuzz") {
                Ok(message) => message,
                Err(_) => return,
            }
        }
        _ => data.to_vec(),
    };
    if let Ok(request) = fixture.ra.parse(&message) {
        if let Ok(csr) = &request.csr_der {
            let _ = ParsedCsr::parse(csr);
            let _ = csr_challenge_password(csr);
        }
        let _ = fixture.ra.failure(&request.header, FailInfo::BadRequest);
    }
});
