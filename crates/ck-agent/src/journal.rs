//! Per-target state and the deployment journal, both small JSON files in the state directory.
//!
//! The journal is written before the first file is replaced and removed once validation passed:
//! while it exists, the target may be mixed, and [`rollback`] brings it back to the old files.
//! Rolling back (rather than forward) is the choice because the new files were never validated.
//!
//! A file counts as replaced when its content hashes to the journal's new hash; only then is its
//! `.certkeeper-prev` used. All previous versions are linked before the first rename, so a
//! replaced file always has its fresh previous version, and a stale `.certkeeper-prev` from an
//! older deployment is never restored over a file this deployment did not reach.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bundle::sha256_hex;
use crate::error::DeployError;
use crate::fsops;

/// What is deployed to a target, as far as the agent knows.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) fingerprint: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Journal {
    /// "deploying": the only state a journal has; kept explicit for humans reading the file.
    pub(crate) status: String,
    pub(crate) fingerprint: String,
    pub(crate) files: Vec<JournalFile>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct JournalFile {
    pub(crate) path: PathBuf,
    pub(crate) new_sha256: String,
    pub(crate) had_previous: bool,
}

fn state_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(format!("{name}.state.json"))
}

fn journal_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(format!("{name}.journal.json"))
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), DeployError> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| DeployError::io("encode", path)(e.into()))?;
    let temp = fsops::temp_path(path);
    fsops::write_durable(&temp, &text, 0o600, (None, None))?;
    fsops::rename(&temp, path)?;
    fsops::sync_dir(path.parent().unwrap_or(Path::new("/")))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, DeployError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| DeployError::io("decode", path)(e.into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DeployError::io("read", path)(e)),
    }
}

pub(crate) fn read_state(state_dir: &Path, name: &str) -> Result<State, DeployError> {
    Ok(read_json(&state_path(state_dir, name))?.unwrap_or_default())
}

pub(crate) fn write_state(state_dir: &Path, name: &str, state: &State) -> Result<(), DeployError> {
    write_json(&state_path(state_dir, name), state)
}

pub(crate) fn read_journal(state_dir: &Path, name: &str) -> Result<Option<Journal>, DeployError> {
    read_json(&journal_path(state_dir, name))
}

pub(crate) fn write_journal(state_dir: &Path, name: &str, journal: &Journal) -> Result<(), DeployError> {
    write_json(&journal_path(state_dir, name), journal)
}

pub(crate) fn remove_journal(state_dir: &Path, name: &str) -> Result<(), DeployError> {
    let path = journal_path(state_dir, name);
    fsops::remove_if_exists(&path)?;
    fsops::sync_dir(state_dir)
}

/// Restores every file of `journal` that was replaced, removes files it created, and removes
/// leftover temporary files. Returns the restored or removed paths. Idempotent.
pub(crate) fn rollback(journal: &Journal) -> Result<Vec<PathBuf>, DeployError> {
    let mut touched = Vec::new();
    for file in &journal.files {
        let replaced = match std::fs::read(&file.path) {
            Ok(bytes) => sha256_hex(&bytes) == file.new_sha256,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(DeployError::io("read", &file.path)(e)),
        };
        if replaced {
            if file.had_previous {
                fsops::rename(&fsops::prev_path(&file.path), &file.path)?;
            } else {
                fsops::remove_if_exists(&file.path)?;
            }
            touched.push(file.path.clone());
        }
        fsops::remove_if_exists(&fsops::temp_path(&file.path))?;
        fsops::sync_dir(file.path.parent().unwrap_or(Path::new("/")))?;
    }
    Ok(touched)
}
