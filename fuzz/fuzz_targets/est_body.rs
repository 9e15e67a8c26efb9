//! EST request bodies and the CSRs inside: base64 decoding and CSR parsing must never panic.
#![no_main]

use ck_pki::{ParsedCsr, decode_est_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(der) = decode_est_body(data) {
        let _ = ParsedCsr::parse(&der);
    }
    let _ = ParsedCsr::parse(data);
});
