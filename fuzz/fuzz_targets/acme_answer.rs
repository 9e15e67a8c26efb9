//! What an ACME CA answers (it may be hostile or broken): problem documents, ARI
//! `renewalInfo`, the directory, alternate chains, `Link` and `Retry-After` headers, and the
//! leaf an ARI id is made from. Parsing must answer or refuse, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ck_acme::fuzzing::ca_answer(data);
});
