//! PEM bundles and chains from outside: what an ACME CA downloads (`inspect_received_chain`),
//! what EST and PKCS#12 export read back (`chain_der`, `pkcs12_from_pem`), TLS client
//! certificates (`leaf_names_and_serial`), and the bundles an agent deploys (`Bundle`: chain and
//! key PEM from the control plane). Each must answer or refuse, never panic.
#![no_main]

use ck_agent::{Bundle, SecretPem};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The bundle's chain and key arrive together: split at the first NUL, else use all for both.
    let (chain, key) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, data),
    };
    let chain = String::from_utf8_lossy(chain);
    let key = String::from_utf8_lossy(key);

    let _ = ck_pki::inspect_received_chain(&chain, key.as_bytes());
    if let Ok(ders) = ck_pki::chain_der(&chain) {
        for der in &ders {
            let _ = ck_pki::leaf_names_and_serial(der);
        }
    }
    let _ = ck_pki::pem_block_der(&chain, "CERTIFICATE");
    let _ = ck_pki::leaf_names_and_serial(data);
    let _ = ck_pki::pkcs12_from_pem(&chain, &key, "fuzz", "fuzz");

    if let Ok(bundle) = Bundle::from_pem(chain.into_owned(), SecretPem::new(key.into_owned())) {
        let _ = bundle.certs_der();
        let _ = bundle.intermediates_pem();
        let _ = bundle.leaf_pem();
    }
});
