//! Encryption at rest for the secret columns of the control plane's database (server-held private
//! keys, ACME account keys, EAB HMACs, DNS credentials), under a key-encryption key (KEK) kept
//! outside the database, in a 0600 file or the environment.
//!
//! A stored value is `ckenc:v2:<kek_id>:<base64url-nopad(salt[16] || nonce[12] || ciphertext || tag)>`.
//!
//! * Each value gets its own AES-256-GCM data key, HKDF-SHA256(ikm = KEK, salt = random 16 bytes,
//!   info = `certkeeper secret v1`). A data key therefore encrypts exactly one message, so the
//!   random 96-bit nonce never meets GCM's birthday bound however many values one KEK protects.
//! * The AAD binds the value to where it is stored: `ckenc:v2|<table.column>|<row id>`, e.g.
//!   `ckenc:v2|issuers.root_key_pem|local`. A ciphertext copied into another column, or into
//!   another row of the same column (another issuer's CA key, another version's private key),
//!   fails authentication instead of decrypting as the wrong secret.
//! * Format v1 (`ckenc:v1:…`, AAD = the column name alone) is still read, so that databases
//!   written before v2 open; the store rewraps every v1 value to v2 at the next start.
//! * `kek_id` is 16 hex chars of SHA-256(`certkeeper-kek-id:` || KEK). It tells which KEK to use
//!   after a rotation and names the missing one in errors, without revealing the key.
//!
//! Rotation: make a new KEK current, keep the old one as decrypt-only, and [`SecretCipher::rewrap`]
//! every row; rows written before encryption existed (plaintext) are encrypted by the same pass.
//!
//! `zeroize` is not a workspace dependency, so key and text buffers are wiped on drop by a
//! best-effort overwrite.

#![warn(missing_docs)]

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{digest, hkdf, rand};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::{DecodeSliceError, Engine};

const PREFIX: &str = "ckenc:";
const PREFIX_V1: &str = "ckenc:v1:";
const PREFIX_V2: &str = "ckenc:v2:";
const HKDF_INFO: &[u8] = b"certkeeper secret v1";
const SALT_LEN: usize = 16;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
const EXPECTED_FORM: &str = "expected the standard base64 of exactly 32 bytes (44 characters ending in `=`)";

/// Why a secret or a KEK could not be used. Messages never contain plaintext or key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// The system RNG failed; nothing can be encrypted safely.
    #[error("the system random number generator failed: check the host's entropy source")]
    Random,
    /// `(origin, reason)`: a KEK text (from the env or a file) is not 32 bytes of standard base64.
    #[error("{0} is not a valid KEK ({1}): {EXPECTED_FORM}, e.g. as written by `Kek::to_text`")]
    InvalidKek(String, String),
    /// A value without the `ckenc:` prefix was given to `decrypt` or `rewrap`.
    #[error("the value is not an encrypted secret (no `{PREFIX}` prefix) where one is expected")]
    NotEncrypted,
    /// `(version)`: a newer format than this build understands.
    #[error("the secret uses format {0:?}, which this version of certkeeper cannot read: upgrade certkeeper")]
    UnsupportedVersion(String),
    /// `(reason)`: the value has the prefix but is cut short or corrupted.
    #[error("the encrypted secret is malformed ({0}): the stored value was truncated or corrupted")]
    Malformed(&'static str),
    /// `(id, current id)`: encrypted under a KEK that is not loaded.
    #[error(
        "the secret was encrypted with KEK id {0}, which is not loaded (current KEK id {1}): the KEK file/env \
         must be the one this database was encrypted with; restore it, or load it as a decrypt-only KEK"
    )]
    UnknownKek(String, String),
    /// `(context)`: GCM tag mismatch, i.e. tampered, corrupted, or read with another context.
    #[error("the secret for {0:?} failed authentication: it was modified, or moved from another column or row")]
    Authentication(String),
    /// `(context)`: decrypted, but not UTF-8 text.
    #[error("the secret for {0:?} decrypted to bytes that are not UTF-8 text")]
    NotUtf8(String),
    /// aws-lc-rs refused an operation that cannot fail with valid lengths.
    #[error("an AES-256-GCM or HKDF operation failed inside aws-lc-rs")]
    Crypto,
    /// `(action, path, error)`: I/O on a KEK file failed.
    #[error("cannot {0} KEK file {1}: {2}")]
    Io(&'static str, String, #[source] io::Error),
    /// `(path, mode)`: the KEK file can be read by group or others.
    #[error("KEK file {0} has mode {1:o}, readable beyond its owner: run `chmod 600 {0}`")]
    KekFilePermissions(String, u32),
    /// `(path)`: `write_kek_file` without `replace` found a file already there.
    #[error("KEK file {0} already exists: refusing to overwrite the key this database may be encrypted with")]
    KekFileExists(String),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Overwrites a buffer before it is freed. `black_box` keeps the compiler from eliding the write;
/// this is best effort (copies made by moves or reallocation are not reached).
fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(buf);
}

fn wipe_string(text: &mut String) {
    wipe(&mut std::mem::take(text).into_bytes());
}

/// The text form of a KEK; wiped on drop and never `Debug`-printed.
pub struct KekText(String);

impl KekText {
    /// The base64 text followed by a newline, as written to the KEK file.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Drop for KekText {
    fn drop(&mut self) {
        wipe_string(&mut self.0);
    }
}

/// A 32-byte key-encryption key. Never printed; wiped on drop.
#[derive(Clone)]
pub struct Kek {
    bytes: [u8; KEY_LEN],
    id: String,
}

impl Kek {
    fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"certkeeper-kek-id:");
        ctx.update(&bytes);
        let id = hex(&ctx.finish().as_ref()[..8]);
        Kek { bytes, id }
    }

    /// A new random KEK from the aws-lc-rs RNG.
    pub fn generate() -> Result<Kek, SecretsError> {
        let mut bytes = [0u8; KEY_LEN];
        rand::fill(&mut bytes).map_err(|_| SecretsError::Random)?;
        Ok(Kek::from_bytes(bytes))
    }

    /// Parses the file/env form; surrounding whitespace is ignored.
    pub fn from_text(text: &str) -> Result<Kek, SecretsError> {
        Kek::parse(text, "KEK text")
    }

    fn parse(text: &str, origin: &str) -> Result<Kek, SecretsError> {
        let invalid = |reason: &str| SecretsError::InvalidKek(origin.to_string(), reason.to_string());
        let mut buf = [0u8; KEY_LEN];
        let result = match STANDARD.decode_slice(text.trim(), &mut buf) {
            Ok(KEY_LEN) => Ok(Kek::from_bytes(buf)),
            Ok(n) => Err(invalid(&format!("it decodes to {n} bytes"))),
            Err(DecodeSliceError::OutputSliceTooSmall) => Err(invalid("it decodes to more than 32 bytes")),
            Err(_) => Err(invalid("it is not standard base64")),
        };
        wipe(&mut buf);
        result
    }

    /// The file/env form: standard base64 plus a newline.
    pub fn to_text(&self) -> KekText {
        KekText(format!("{}\n", STANDARD.encode(self.bytes)))
    }

    /// The public id stored in every ciphertext made with this KEK.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Kek {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek(<redacted>, id={})", self.id)
    }
}

#[derive(Debug, Clone)]
struct Keys {
    current: Kek,
    decrypt_only: Vec<Kek>,
}

/// Encrypts with the current KEK; decrypts with it or any decrypt-only KEK. Clones share the keys.
#[derive(Debug, Clone)]
pub struct SecretCipher {
    keys: Arc<Keys>,
}

/// Whether `stored` is in the `ckenc:` format (any version), as opposed to legacy plaintext.
pub fn is_encrypted(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// The formats `decrypt` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// AAD: the column.
    V1,
    /// AAD: the column and the row.
    V2,
}

/// Splits a stored value into its format, KEK id and payload.
fn parse_stored(stored: &str) -> Result<(Format, &str, &str), SecretsError> {
    let Some(rest) = stored.strip_prefix(PREFIX) else {
        return Err(SecretsError::NotEncrypted);
    };
    let (format, rest) = if let Some(rest) = stored.strip_prefix(PREFIX_V2) {
        (Format::V2, rest)
    } else if let Some(rest) = stored.strip_prefix(PREFIX_V1) {
        (Format::V1, rest)
    } else {
        let version = rest.split(':').next().unwrap_or_default().chars().take(16).collect();
        return Err(SecretsError::UnsupportedVersion(version));
    };
    match rest.split_once(':') {
        Some((id, payload)) if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) => Ok((format, id, payload)),
        _ => Err(SecretsError::Malformed("no 16-hex-digit KEK id")),
    }
}

/// The associated data of a value of `context` (`table.column`) in row `row`: the column
/// never holds `|`, and the row comes last, so no two places share it.
fn associated_data(format: Format, context: &str, row: &str) -> String {
    match format {
        Format::V1 => context.to_owned(),
        Format::V2 => format!("ckenc:v2|{context}|{row}"),
    }
}

fn data_key(kek: &Kek, salt: &[u8]) -> Result<LessSafeKey, SecretsError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&kek.bytes);
    let okm = prk
        .expand(&[HKDF_INFO], &AES_256_GCM)
        .map_err(|_| SecretsError::Crypto)?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

impl SecretCipher {
    /// A cipher that encrypts under `current`.
    pub fn new(current: Kek) -> Self {
        SecretCipher {
            keys: Arc::new(Keys {
                current,
                decrypt_only: Vec::new(),
            }),
        }
    }

    /// Adds a KEK used only to decrypt (the previous one during a rotation, or the next one on a
    /// replica that has not switched yet).
    pub fn with_decrypt_only(mut self, kek: Kek) -> Self {
        let keys = Arc::make_mut(&mut self.keys);
        if kek.id != keys.current.id && keys.decrypt_only.iter().all(|k| k.id != kek.id) {
            keys.decrypt_only.push(kek);
        }
        self
    }

    /// The id of the KEK new values are encrypted with.
    pub fn current_id(&self) -> &str {
        &self.keys.current.id
    }

    /// Encrypts `plaintext` for the column named by `context` (`table.column`) in the row whose
    /// key is `row`: it decrypts only there.
    pub fn encrypt(&self, plaintext: &str, context: &str, row: &str) -> Result<String, SecretsError> {
        self.encrypt_as(Format::V2, plaintext, context, row)
    }

    fn encrypt_as(&self, format: Format, plaintext: &str, context: &str, row: &str) -> Result<String, SecretsError> {
        let kek = &self.keys.current;
        let mut head = [0u8; SALT_LEN + NONCE_LEN];
        rand::fill(&mut head).map_err(|_| SecretsError::Random)?;
        let (salt, nonce) = head.split_at(SALT_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretsError::Crypto)?;
        let mut body = plaintext.as_bytes().to_vec();
        let aad = associated_data(format, context, row);
        let sealed = data_key(kek, salt)?.seal_in_place_append_tag(nonce, Aad::from(aad.as_bytes()), &mut body);
        if sealed.is_err() {
            wipe(&mut body);
            return Err(SecretsError::Crypto);
        }
        let mut payload = head.to_vec();
        payload.extend_from_slice(&body);
        let prefix = match format {
            Format::V1 => PREFIX_V1,
            Format::V2 => PREFIX_V2,
        };
        Ok(format!("{prefix}{}:{}", kek.id, URL_SAFE_NO_PAD.encode(payload)))
    }

    /// Decrypts a value written by [`encrypt`](Self::encrypt) for the same `context` and `row`
    /// (or a v1 value of the same `context`, which was bound to no row). Plaintext is refused.
    pub fn decrypt(&self, stored: &str, context: &str, row: &str) -> Result<String, SecretsError> {
        let (format, id, payload) = parse_stored(stored)?;
        let keys = &self.keys;
        let kek = std::iter::once(&keys.current)
            .chain(&keys.decrypt_only)
            .find(|k| k.id == id)
            .ok_or_else(|| SecretsError::UnknownKek(id.to_string(), keys.current.id.clone()))?;
        let mut payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| SecretsError::Malformed("bad base64"))?;
        if payload.len() < SALT_LEN + NONCE_LEN + TAG_LEN {
            return Err(SecretsError::Malformed("too short"));
        }
        let mut body = payload.split_off(SALT_LEN + NONCE_LEN);
        let (salt, nonce) = payload.split_at(SALT_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretsError::Crypto)?;
        let aad = associated_data(format, context, row);
        let opened = data_key(kek, salt)?.open_in_place(nonce, Aad::from(aad.as_bytes()), &mut body);
        let Ok(len) = opened.map(|plain| plain.len()) else {
            wipe(&mut body);
            return Err(SecretsError::Authentication(context.to_string()));
        };
        body.truncate(len);
        String::from_utf8(body).map_err(|err| {
            wipe(&mut err.into_bytes());
            SecretsError::NotUtf8(context.to_string())
        })
    }

    /// True when `stored` is plaintext, in format v1, or encrypted under a KEK other than the
    /// current one.
    pub fn needs_rewrap(&self, stored: &str) -> bool {
        !matches!(parse_stored(stored), Ok((Format::V2, id, _)) if id == self.keys.current.id)
    }

    /// The prefix of every value in the current format under the current KEK: a value that
    /// starts otherwise [`needs_rewrap`](Self::needs_rewrap).
    pub fn current_prefix(&self) -> String {
        format!("{PREFIX_V2}{}:", self.keys.current.id)
    }

    /// The value re-encrypted (format v2, current KEK, bound to `row`) when
    /// [`needs_rewrap`](Self::needs_rewrap), else `None`. Plaintext is refused
    /// ([`SecretsError::NotEncrypted`]): whether a plain value may be encrypted (a database from
    /// before encryption at rest) is the store's decision, made with [`encrypt`](Self::encrypt).
    pub fn rewrap(&self, stored: &str, context: &str, row: &str) -> Result<Option<String>, SecretsError> {
        if !self.needs_rewrap(stored) {
            return Ok(None);
        }
        let mut plain = self.decrypt(stored, context, row)?;
        let result = self.encrypt(&plain, context, row);
        wipe_string(&mut plain);
        result.map(Some)
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SecretsError {
    let path = path.display().to_string();
    move |source| SecretsError::Io(action, path, source)
}

/// Reads an existing KEK file, refusing one readable by group or others.
pub fn read_kek_file(path: &Path) -> Result<Kek, SecretsError> {
    let mut file = File::open(path).map_err(io_err("open", path))?;
    // Checked on the open handle, so the file read is the file whose mode was checked.
    let mode = file.metadata().map_err(io_err("inspect", path))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(SecretsError::KekFilePermissions(
            path.display().to_string(),
            mode & 0o777,
        ));
    }
    let mut text = KekText(String::with_capacity(128));
    file.read_to_string(&mut text.0).map_err(io_err("read", path))?;
    Kek::parse(text.as_str(), &format!("KEK file {}", path.display()))
}

/// Writes `kek` atomically with mode 0600: a crash leaves the old file or the new one, never a
/// partial key. Without `replace`, an existing file is an error, even one created concurrently.
pub fn write_kek_file(path: &Path, kek: &Kek, replace: bool) -> Result<(), SecretsError> {
    // A unique temporary name: with a shared `<path>.tmp`, two processes creating the KEK at once
    // could each install the other's half-written file.
    let mut suffix = [0u8; 4];
    rand::fill(&mut suffix).map_err(|_| SecretsError::Random)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", hex(&suffix)));
    let tmp = Path::new(&tmp);
    let placed = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(tmp)?;
        file.write_all(kek.to_text().as_str().as_bytes())?;
        file.sync_all()?;
        // A hard link, unlike rename, fails if the target exists: no check-then-write race.
        if replace {
            fs::rename(tmp, path)
        } else {
            fs::hard_link(tmp, path)
        }
    })();
    let _ = fs::remove_file(tmp);
    match placed {
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            return Err(SecretsError::KekFileExists(path.display().to_string()));
        }
        other => other.map_err(io_err("write", path))?,
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync the directory of", path))
}

/// Reads the KEK file, or creates it with a new KEK if absent; the flag says whether it was created.
pub fn load_or_create_kek_file(path: &Path) -> Result<(Kek, bool), SecretsError> {
    match fs::symlink_metadata(path) {
        Ok(_) => return read_kek_file(path).map(|kek| (kek, false)),
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(io_err("inspect", path)(err)),
        Err(_) => {}
    }
    let kek = Kek::generate()?;
    match write_kek_file(path, &kek, false) {
        Ok(()) => Ok((kek, true)),
        // Another process created it first: use theirs.
        Err(SecretsError::KekFileExists(_)) => read_kek_file(path).map(|kek| (kek, false)),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COL: &str = "issuers.root_key_pem";
    const ROW: &str = "local";

    fn cipher() -> SecretCipher {
        SecretCipher::new(Kek::generate().unwrap())
    }

    #[test]
    fn round_trip_and_fresh_salt_nonce() {
        let c = cipher();
        let a = c.encrypt("-----BEGIN PRIVATE KEY-----", COL, ROW).unwrap();
        let b = c.encrypt("-----BEGIN PRIVATE KEY-----", COL, ROW).unwrap();
        assert!(a.starts_with(&format!("ckenc:v2:{}:", c.current_id())));
        assert!(a.starts_with(&c.current_prefix()));
        assert_ne!(a, b);
        assert_eq!(c.decrypt(&a, COL, ROW).unwrap(), "-----BEGIN PRIVATE KEY-----");
        assert_eq!(c.decrypt(&c.encrypt("", COL, ROW).unwrap(), COL, ROW).unwrap(), "");
        assert!(is_encrypted(&a) && !is_encrypted("plain"));
    }

    #[test]
    fn tampering_and_wrong_context_fail() {
        let c = cipher();
        let stored = c.encrypt("secret", COL, ROW).unwrap();
        let (head, payload) = stored.rsplit_once(':').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(payload).unwrap();
        for i in [0, SALT_LEN, raw.len() - 1] {
            raw[i] ^= 1;
            let flipped = format!("{head}:{}", URL_SAFE_NO_PAD.encode(&raw));
            assert!(matches!(
                c.decrypt(&flipped, COL, ROW),
                Err(SecretsError::Authentication(_))
            ));
            raw[i] ^= 1;
        }
        assert!(matches!(
            c.decrypt(&stored, "acme_accounts.key_pem", ROW),
            Err(SecretsError::Authentication(_))
        ));
        assert!(matches!(c.decrypt("plain", COL, ROW), Err(SecretsError::NotEncrypted)));
        assert!(matches!(c.rewrap("plain", COL, ROW), Err(SecretsError::NotEncrypted)));
        assert!(matches!(
            c.decrypt("ckenc:v9:x", COL, ROW),
            Err(SecretsError::UnsupportedVersion(_))
        ));
    }

    #[test]
    fn unknown_kek_names_the_id() {
        let other = cipher();
        let stored = other.encrypt("secret", COL, ROW).unwrap();
        let err = cipher().decrypt(&stored, COL, ROW).unwrap_err();
        assert!(err.to_string().contains(other.current_id()), "{err}");
    }

    #[test]
    fn rotation_moves_values_to_the_current_kek() {
        let old = Kek::generate().unwrap();
        let stored = SecretCipher::new(old.clone()).encrypt("hmac", COL, ROW).unwrap();
        let c = SecretCipher::new(Kek::generate().unwrap()).with_decrypt_only(old);
        assert_eq!(c.decrypt(&stored, COL, ROW).unwrap(), "hmac");
        assert!(c.needs_rewrap(&stored));
        let new = c.rewrap(&stored, COL, ROW).unwrap().unwrap();
        assert!(!c.needs_rewrap(&new) && new.contains(c.current_id()));
        assert_eq!(c.decrypt(&new, COL, ROW).unwrap(), "hmac");
        assert_eq!(c.rewrap(&new, COL, ROW).unwrap(), None);
    }

    #[test]
    fn sealed_secret_is_bound_to_its_row() {
        let c = cipher();
        let stored = c.encrypt("ca key of local", COL, "local").unwrap();
        assert!(matches!(
            c.decrypt(&stored, COL, "other"),
            Err(SecretsError::Authentication(_))
        ));
        // Row ids cannot be shifted into the column name.
        assert!(c.decrypt(&stored, "issuers.root_key_pem|local", "").is_err());
    }

    #[test]
    fn v1_values_still_open_and_are_rewrapped_to_v2() {
        let c = cipher();
        let v1 = c.encrypt_as(Format::V1, "old secret", COL, "").unwrap();
        assert!(v1.starts_with("ckenc:v1:"));
        // v1 was bound to the column only: any row reads it, until the rewrap binds it.
        assert_eq!(c.decrypt(&v1, COL, ROW).unwrap(), "old secret");
        assert!(c.needs_rewrap(&v1), "same KEK, older format");
        let v2 = c.rewrap(&v1, COL, ROW).unwrap().unwrap();
        assert!(v2.starts_with(&c.current_prefix()));
        assert_eq!(c.decrypt(&v2, COL, ROW).unwrap(), "old secret");
        assert!(c.decrypt(&v2, COL, "other").is_err());
    }

    #[test]
    fn kek_file_created_0600_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let (kek, created) = load_or_create_kek_file(&path).unwrap();
        assert!(created);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (again, created) = load_or_create_kek_file(&path).unwrap();
        assert!(!created && again.bytes == kek.bytes);
        assert_eq!(read_kek_file(&path).unwrap().id(), kek.id());
        assert!(matches!(
            write_kek_file(&path, &kek, false),
            Err(SecretsError::KekFileExists(_))
        ));
        write_kek_file(&path, &Kek::generate().unwrap(), true).unwrap();
        assert_ne!(read_kek_file(&path).unwrap().id(), kek.id());
    }

    #[test]
    fn world_readable_kek_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        fs::write(&path, Kek::generate().unwrap().to_text().as_str()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_kek_file(&path).unwrap_err();
        assert!(
            err.to_string().contains(&format!("chmod 600 {}", path.display())),
            "{err}"
        );
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let kek = Kek::generate().unwrap();
        let text = kek.to_text().as_str().trim().to_string();
        let c = SecretCipher::new(kek.clone()).with_decrypt_only(Kek::generate().unwrap());
        assert_eq!(format!("{kek:?}"), format!("Kek(<redacted>, id={})", kek.id()));
        // Neither the base64 form nor the byte-array form of the key may appear.
        let raw = format!("{:?}", kek.bytes);
        for shown in [format!("{kek:?}"), format!("{c:?}")] {
            assert!(
                !shown.contains(&text) && !shown.contains(raw.trim_matches(['[', ']'])),
                "{shown}"
            );
        }
    }

    #[test]
    fn from_text_parses_and_rejects_wrong_lengths() {
        let kek = Kek::generate().unwrap();
        let parsed = Kek::from_text(&format!("  {}  ", kek.to_text().as_str())).unwrap();
        assert_eq!(parsed.id(), kek.id());
        for bad in [
            STANDARD.encode([7u8; 16]),
            STANDARD.encode([7u8; 33]),
            "not base64!".into(),
            String::new(),
        ] {
            let err = Kek::from_text(&bad).unwrap_err().to_string();
            assert!(err.contains("exactly 32 bytes"), "{err}");
        }
    }
}
