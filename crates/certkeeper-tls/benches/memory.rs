//! Memory per loaded certificate: resident set size before and after loading distinct real
//! certificates (each with its own P-256 key) into one `CertStore`. Prints its figures; not a
//! criterion benchmark.
//!
//! The PEM inputs are created before the first measurement and kept alive until after the
//! last, so the difference is what the store and its `LoadedCert`s hold: parsed chains, signing
//! keys, names and the name index.

#![allow(clippy::unwrap_used)]

mod common;

use certkeeper_tls::{CertStore, LoadedCert};
use common::{Minter, full_run};

/// Resident set size in bytes, from /proc/self/statm (the second field, in pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn main() {
    let count = if full_run() { 10_000 } else { 200 };
    let mut args = std::env::args().skip_while(|arg| arg != "--mint").skip(1);
    if let Some(path) = args.next() {
        mint(count, &path);
        return;
    }
    // Minting in a child process keeps this heap free of the minting's freed garbage, which
    // the loading would otherwise reuse and so hide from the RSS figures.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.pem");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    if full_run() {
        child.arg("--bench");
    }
    let status = child.arg("--mint").arg(&path).status().unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&path).unwrap();
    let pems: Vec<(&[u8], &[u8])> = text
        .split("\n=====\n")
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (cert, _) = pair.split_once("-----BEGIN PRIVATE KEY-----").unwrap();
            (cert.as_bytes(), &pair.as_bytes()[cert.len()..])
        })
        .collect();
    assert_eq!(pems.len(), count);
    let der_bytes: usize = pems.iter().map(|(c, _)| c.len() * 3 / 4).sum();

    let store = CertStore::new();
    let before = rss_bytes();
    let loaded: Vec<(String, LoadedCert)> = pems
        .iter()
        .enumerate()
        .map(|(i, (cert, key))| (format!("cert-{i}"), LoadedCert::from_pem(cert, key).unwrap()))
        .collect();
    let after_load = rss_bytes();
    store.insert_many(loaded).unwrap();
    let after_insert = rss_bytes();

    let per_cert = |bytes: u64| bytes as f64 / count as f64;
    println!("certificates loaded:           {count}");
    println!(
        "approx. certificate DER size:  {:.0} bytes each",
        der_bytes as f64 / count as f64
    );
    println!(
        "RSS growth, LoadedCert only:   {:.0} bytes per certificate",
        per_cert(after_load.saturating_sub(before))
    );
    println!(
        "RSS growth, in the CertStore:  {:.0} bytes per certificate (total {:.1} MiB)",
        per_cert(after_insert.saturating_sub(before)),
        after_insert.saturating_sub(before) as f64 / (1024.0 * 1024.0)
    );
    assert_eq!(store.len(), count);
}

/// Writes `count` distinct certificate/key pairs (each with its own P-256 key) to `path`.
fn mint(count: usize, path: &str) {
    let minter = Minter::new();
    let mut out = String::new();
    for i in 0..count {
        let (cert_pem, key_pem) = minter.leaf_pem(i as u64 + 1, &[format!("host{i}.example.test")]);
        out.push_str(&cert_pem);
        out.push_str(&key_pem);
        out.push_str("\n=====\n");
    }
    std::fs::write(path, out).unwrap();
}
