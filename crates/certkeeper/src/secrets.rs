//! The key-encryption key (KEK) of the database's secret columns: where it comes from, and its
//! rotation.
//!
//! The KEK is read from `CERTKEEPER_KEK` (base64, for secret managers that inject variables),
//! else from a file (`--kek-file`, default `<data-dir>/kek`, generated with mode 0600 on first
//! start). It never sits in the database it protects, so a stolen database file or backup
//! holds only ciphertext.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ck_secrets::{Kek, SecretCipher};
use ck_store::{DatabaseUrl, Store};

/// The environment variable that may carry the KEK itself.
pub const KEK_ENV: &str = "CERTKEEPER_KEK";

/// Where the KEK comes from.
#[derive(Debug, Clone)]
pub enum KekSource {
    /// A 0600 file (created when absent).
    File(PathBuf),
    /// The `CERTKEEPER_KEK` variable.
    Env,
}

/// The file a rotation writes the new KEK to before the database is re-encrypted; a start
/// that finds it also decrypts with it (a rotation interrupted after its commit).
fn next_path(path: &Path) -> PathBuf {
    path.with_extension("next")
}

/// The cipher for the store: the current KEK, plus a pending rotation's new one.
pub fn load_cipher(source: &KekSource) -> anyhow::Result<SecretCipher> {
    match source {
        KekSource::Env => {
            let text = std::env::var(KEK_ENV).with_context(|| format!("{KEK_ENV} is not set"))?;
            let kek = Kek::from_text(&text).map_err(|e| anyhow::anyhow!("{KEK_ENV}: {e}"))?;
            Ok(SecretCipher::new(kek))
        }
        KekSource::File(path) => {
            let (kek, created) = ck_secrets::load_or_create_kek_file(path)?;
            if created {
                tracing::info!(path = %path.display(), "generated the key-encryption key (mode 0600): back it up apart from the database");
            }
            let mut cipher = SecretCipher::new(kek);
            let next = next_path(path);
            if next.exists() {
                cipher = cipher.with_decrypt_only(ck_secrets::read_kek_file(&next)?);
                tracing::warn!(path = %next.display(), "an interrupted KEK rotation left a new key: run `certkeeper secrets rotate-kek` again");
            }
            Ok(cipher)
        }
    }
}

/// Opens the store and encrypts what is not yet under the current KEK (plain values of
/// databases from before encryption, values of an interrupted rotation).
pub async fn open_store(database: &DatabaseUrl, kek: &KekSource) -> anyhow::Result<Store> {
    let store = connect(database, load_cipher(kek)?).await?;
    let rewrapped = store
        .rewrap_secrets()
        .await
        .context("cannot encrypt the secret columns: is this the key-encryption key of this database?")?;
    if rewrapped > 0 {
        tracing::info!(
            values = rewrapped,
            "encrypted secret values under the current key-encryption key"
        );
    }
    Ok(store)
}

async fn connect(database: &DatabaseUrl, cipher: SecretCipher) -> anyhow::Result<Store> {
    Store::connect(database, cipher)
        .await
        .with_context(|| format!("cannot open the database {database}"))
}

/// `certkeeper secrets rotate-kek`: a new KEK, every secret re-encrypted under it in one
/// transaction, then the new KEK file moved into place and the old one kept beside it as
/// `kek.retired-<id>` (needed for older database backups; archive it offline or delete it).
pub async fn rotate(database: &DatabaseUrl, kek: &KekSource, json: bool) -> anyhow::Result<()> {
    let KekSource::File(path) = kek else {
        anyhow::bail!(
            "the KEK comes from {KEK_ENV}: rotation writes files, so run it with --kek-file pointing at a copy of \
             the current key, then put the new file's content into {KEK_ENV}"
        );
    };
    let old = ck_secrets::read_kek_file(path)
        .with_context(|| format!("no key-encryption key at {}: nothing to rotate", path.display()))?;
    let next = next_path(path);
    // A rotation interrupted after its commit left the new key: use it, do not make another.
    let new = if next.exists() {
        ck_secrets::read_kek_file(&next)?
    } else {
        let new = Kek::generate()?;
        ck_secrets::write_kek_file(&next, &new, false)?;
        new
    };
    let store = connect(database, SecretCipher::new(new.clone()).with_decrypt_only(old.clone())).await?;
    let rewrapped = store
        .rewrap_secrets()
        .await
        .context("re-encrypting the secret columns failed; nothing changed")?;
    store.close().await;
    let retired = path.with_extension(format!("retired-{}", old.id()));
    std::fs::rename(path, &retired).with_context(|| format!("cannot move {} aside", path.display()))?;
    std::fs::rename(&next, path).with_context(|| format!("cannot move {} into place", next.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"rewrapped": rewrapped, "kek_id": new.id(), "retired_kek_id": old.id(), "retired_file": retired})
        );
    } else {
        println!(
            "re-encrypted {rewrapped} secret values under the new key-encryption key {} ({}).",
            new.id(),
            path.display()
        );
        println!(
            "The old key is kept as {}: older database backups need it. Archive it offline or delete it.",
            retired.display()
        );
        println!("Start the server (every node) with the new key file.");
    }
    Ok(())
}
