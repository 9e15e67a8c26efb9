//! The manual: how certkeeper-tls chooses, swaps and reloads certificates.
//!
//! This module contains no code; it is documentation, in the manner of `rustls::manual`.
//!
//! # The model
//!
//! rustls asks a [`ResolvesServerCert`](rustls::server::ResolvesServerCert) for a certificate
//! once per handshake, after reading the ClientHello. [`CertStore`](crate::CertStore) answers
//! from an immutable *snapshot*: the certificates by id, an index from DNS names to
//! certificates, the [`Fallback`](crate::Fallback) and the tls-alpn-01 hook. The index is two
//! hash maps (exact names, and wildcards keyed by their parent domain), so an answer costs
//! at most two hash probes whether the store holds ten certificates or a hundred thousand.
//!
//! A certificate enters the store only as a [`LoadedCert`](crate::LoadedCert), which checks:
//!
//! 1. the chain is not empty and every certificate is valid X.509 DER;
//! 2. the chain is leaf first (the first certificate was issued by the second, if any);
//! 3. the private key is a type rustls can sign with (ECDSA, RSA, Ed25519) and its public key
//!    is the leaf's (rustls' `CertifiedKey::keys_match`);
//! 4. the leaf is valid now (neither expired nor not yet valid).
//!
//! The names a certificate serves are its DNS subject alternative names, lowercased and in
//! A-label (punycode) form. The subject common name is ignored, as browsers and webpki ignore
//! it. Names no client could match (partial wildcards such as `w*.example.com`) are dropped.
//!
//! # SNI rules and ties
//!
//! For the server name a client sends:
//!
//! 1. The name is put in canonical form: lowercase, trailing dot removed, U-labels converted
//!    to A-labels (`Bücher.example.` becomes `xn--bcher-kva.example`). A name that is already
//!    canonical, which is what rustls passes, is used as is without allocating.
//! 2. A certificate naming it exactly wins.
//! 3. Otherwise a certificate naming the wildcard one label up wins: `*.example.com` covers
//!    `a.example.com`, but neither `example.com` nor `b.a.example.com`. An exact name always
//!    beats a wildcard, whatever the certificates' ages.
//! 4. Otherwise, and when the client sent no server name at all, the [`Fallback`](crate::Fallback)
//!    decides: `Refuse` (the default) aborts the handshake, `Certificate(id)` serves the
//!    certificate stored under `id` (and refuses if there is none).
//!
//! When several certificates claim the same name (exact or wildcard), the one whose
//! `not_after` is latest wins; if that ties too, the one with the lexicographically smallest
//! id wins. The rule is applied when a snapshot is built, so the choice never depends on
//! insertion order or hash order, and a renewed certificate stored under a new id takes over
//! from the old one without the old one having to be removed first.
//!
//! # Hot swap guarantees
//!
//! * **Readers never wait.** A handshake loads the current snapshot through `arc_swap`, which
//!   takes no lock a writer could hold.
//! * **Writers are atomic.** A change builds a complete new snapshot and publishes it in one
//!   pointer swap; a handshake sees the state before the change or after it, never a mix.
//!   Writers are serialized by a mutex so that no change is lost. A change costs O(total names)
//!   to rebuild the index, which is why [`CertStore::insert_many`](crate::CertStore::insert_many)
//!   exists for bulk loads.
//! * **Nothing in flight is disturbed.** rustls keeps the `Arc<CertifiedKey>` it was given for
//!   the whole handshake; an established connection no longer refers to the store at all. A
//!   swap therefore never fails a handshake and never affects an open connection; only
//!   handshakes that start after the swap get the new certificate.
//! * **Refusals change nothing.** A pair that fails the checks never becomes a `LoadedCert`;
//!   [`CertStore::update`](crate::CertStore::update) additionally refuses a certificate that
//!   no longer covers the required names (by default, the names of the certificate it would
//!   replace). In every refused case the old certificate keeps being served.
//! * **Session resumption** resumes the session, not the certificate choice: a client resuming a
//!   session established before a swap is not shown the new certificate until it performs a
//!   full handshake.
//!
//! # Files and atomic renames
//!
//! [`watch_files`](crate::watch_files) loads a certificate/key pair from PEM files, stores it
//! under an id and reloads it when the files change. It watches the *directories* containing
//! the files, because the safe way to replace a file is to write a temporary file in the same
//! directory and `rename(2)` it over the old one. The rename gives the path a new inode, so a
//! watch on the old file would never fire. Directory watches also see Kubernetes secret volumes,
//! which swap a `..data` symlink.
//!
//! Replacing the certificate and the key takes two renames; between them the pair does not
//! match. The watcher waits until the directories have been quiet for about 150 ms before it
//! reloads, so the usual writer (two renames in quick succession) causes one reload. If a
//! reload does find a bad pair, the old certificate stays, a warning is logged and
//! [`FileEvent::Rejected`](crate::FileEvent::Rejected) is sent; the next change triggers
//! another attempt. To be safe against slow writers, rename the key first and the certificate
//! last, or write both into one file.
//!
//! # Autocert
//!
//! With the `acme` feature, [`AutoCert`](crate::autocert::AutoCert) obtains certificates from an
//! ACME CA (RFC 8555) and keeps them valid in a `CertStore`:
//!
//! * **Groups.** Each [`CertGroup`](crate::autocert::CertGroup) is one certificate: its names,
//!   key type and ACME settings (directory, contact, EAB, CA bundle, challenge, dns-01
//!   provider). It is stored under the group's name. Groups with the same directory share one
//!   ACME account, kept in the cache directory.
//! * **Start.** A valid cached certificate is published at once. A failing CA never keeps the
//!   server from serving what it has; missing certificates are obtained in the background.
//! * **Renewal** happens at `renew_at_fraction` of the lifetime (2/3 by default), or inside the
//!   CA's ARI window (RFC 9773) when it offers one.
//! * **Failures** write `<group>.failed` in the cache directory. No new attempt is made for
//!   `failure_cooldown` (1 h), across restarts too, so a crash loop cannot hammer the CA;
//!   [`force_renew`](crate::autocert::AutoCert::force_renew) bypasses it.
//! * **Events.** [`subscribe`](crate::autocert::AutoCert::subscribe) yields `LoadedFromCache`,
//!   `Issued` (with `renewal`) and `Failed`.
//! * **Challenges.** tls-alpn-01 is answered by the server's own resolver: put
//!   [`ACME_TLS_ALPN`](crate::autocert::ACME_TLS_ALPN) in `ServerConfig::alpn_protocols` and use
//!   [`AutoCert::resolver`](crate::autocert::AutoCert::resolver). http-01 needs port 80:
//!   [`serve_http01`](crate::autocert::AutoCert::serve_http01) is a ready-made handler, and
//!   [`http01_answer`](crate::autocert::AutoCert::http01_answer) lets an existing HTTP server
//!   answer instead. dns-01 uses the group's `dns01` provider.
//! * **On demand** ([`OnDemand`](crate::autocert::OnDemand), off by default). A handshake for
//!   a name no group covers asks `ask(name)`, and within `per_minute` the name becomes a new
//!   group. That first handshake fails; later ones get the certificate. `ask` runs inside the
//!   handshake, so keep it fast. Anyone can send any SNI name, so a permissive `ask` lets
//!   strangers spend your CA rate limits.
//!
//! The cache directory is created with mode 0700; keys and the account are written 0600,
//! atomically (temporary file, fsync, rename).
