//! The deployment sequence shared by all targets, and crash recovery.
//!
//! Order: plan → confine every path → check every program exists → skip if unchanged → pre-hook →
//! write temp files → journal → link previous versions → rename → validate (rollback on failure)
//! → drop journal → reload → live update → verify → record state → post-hook.
//!
//! Any failure between the journal and its removal (validation, a rename, a command that cannot
//! be spawned) restores the previous files before the error is returned; a crash in that window
//! is settled by [`recover`] the same way.
//!
//! The state file records a fingerprint only after reload and verification succeeded, so a failed
//! reload or verification is retried by the next deployment of the same bundle (whose file step
//! is then a no-op).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bundle::{Bundle, sha256_hex};
use crate::command::Command;
use crate::config::TargetConfig;
use crate::error::DeployError;
use crate::fsops;
use crate::journal::{self, Journal, JournalFile, State};
use crate::verify::fetch_served_leaf_fingerprint;

/// Test hook: after this many renames the process stops (sleeps forever) so that a test can
/// `kill -9` it in the middle of a deployment. Unset in production.
const STALL_ENV: &str = "CERTKEEPER_AGENT_TEST_STALL_AFTER_RENAMES";

/// What a deployment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployReport {
    /// Whether the bundle was new for this target (false: nothing was done).
    pub changed: bool,
    /// Every file of the target (resolved paths).
    pub files: Vec<PathBuf>,
    /// The files whose content actually changed.
    pub written: Vec<PathBuf>,
    /// `Some(true)` when the endpoint was checked and serves the bundle; `None` when not checked.
    pub verified: Option<bool>,
    /// The bundle's leaf fingerprint.
    pub fingerprint: String,
}

/// What [`recover`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// No interrupted deployment.
    Clean,
    /// An interrupted deployment of `fingerprint` was rolled back; `restored` lists the files
    /// put back to (or removed to restore) their previous state.
    RolledBack {
        fingerprint: String,
        restored: Vec<PathBuf>,
    },
}

struct Resolved {
    path: PathBuf,
    contents: Vec<u8>,
    mode: u32,
}

fn check_name(name: &str) -> Result<(), DeployError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(DeployError::InvalidConfig {
            reason: format!("target name `{name}` must be letters, digits, '-', '_' or '.'"),
        })
    }
}

fn run_step(
    command: &Command,
    timeout: Duration,
    error: fn(String, String, String) -> DeployError,
) -> Result<(), DeployError> {
    let output = command.run(timeout)?;
    if output.success() {
        Ok(())
    } else {
        tracing::warn!(command = %command.display(), status = %output.status_text(), "command failed");
        Err(error(command.display(), output.status_text(), output.stderr))
    }
}

fn dir_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

fn maybe_stall(renames: usize) {
    let limit = std::env::var(STALL_ENV).ok().and_then(|v| v.parse::<usize>().ok());
    if limit == Some(renames) {
        eprintln!("certkeeper-agent-test: stalled after {renames} renames");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// Deploys `bundle` to `config` when its fingerprint differs from what is deployed.
///
/// Nothing is written unless every path lies inside `allowed_roots` and every configured program
/// exists. A validation failure restores the previous files before returning
/// [`DeployError::ValidationFailed`]. Blocking: call it from `spawn_blocking` in async code.
pub fn deploy(
    config: &TargetConfig,
    bundle: &Bundle,
    allowed_roots: &[PathBuf],
    state_dir: &Path,
) -> Result<DeployReport, DeployError> {
    let target = config.target();
    let common = target.common();
    let Prepared {
        files,
        validate,
        reload,
        owner,
    } = prepare(config, bundle, allowed_roots)?;
    let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    let mut report = DeployReport {
        changed: false,
        files: paths.clone(),
        written: Vec::new(),
        verified: None,
        fingerprint: bundle.fingerprint.clone(),
    };

    let _lock = lock_target(state_dir, common.name)?;
    let state = journal::read_state(state_dir, common.name)?;
    if state.fingerprint.as_deref() == Some(bundle.fingerprint.as_str()) && paths.iter().all(|p| p.exists()) {
        tracing::debug!(target_name = common.name, "certificate unchanged; nothing to deploy");
        return Ok(report);
    }
    report.changed = true;
    if journal::read_journal(state_dir, common.name)?.is_some() {
        // An interrupted deployment must be settled first, or its rollback data would be lost.
        recover_locked(common.name, state_dir)?;
    }

    if let Some(hook) = common.pre_hook {
        run_step(hook, common.timeout, |command, status, stderr| {
            DeployError::PreHookFailed {
                command,
                status,
                stderr,
            }
        })?;
    }

    // Files already holding the wanted bytes and mode are left alone: rewriting them would make a
    // stale previous version and blur what a rollback must restore.
    let mut changes = Vec::new();
    for file in &files {
        let current = std::fs::symlink_metadata(&file.path).ok();
        let same = current.as_ref().is_some_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.permissions().mode() & 0o7777 == file.mode
                && std::fs::read(&file.path).is_ok_and(|bytes| bytes == file.contents)
        });
        if !same {
            changes.push((file, current.is_some()));
        }
    }
    for (written, (file, _)) in changes.iter().enumerate() {
        if let Err(error) = fsops::write_durable(&fsops::temp_path(&file.path), &file.contents, file.mode, owner) {
            // Nothing live was touched yet; only the temp files need to go.
            for (file, _) in &changes[..=written] {
                let _ = fsops::remove_if_exists(&fsops::temp_path(&file.path));
            }
            return Err(error);
        }
    }
    let journal = Journal {
        status: "deploying".into(),
        fingerprint: bundle.fingerprint.clone(),
        files: changes
            .iter()
            .map(|(file, had_previous)| JournalFile {
                path: file.path.clone(),
                new_sha256: sha256_hex(&file.contents),
                had_previous: *had_previous,
            })
            .collect(),
    };
    journal::write_journal(state_dir, common.name, &journal)?;
    if let Err(error) = replace_and_validate(&changes, validate.as_ref(), common.timeout) {
        // Whatever failed (validation, a rename, a spawn), the target goes back to the old files
        // now rather than at the next start. If even that fails, the journal stays for `recover`.
        journal::rollback(&journal)?;
        journal::remove_journal(state_dir, common.name)?;
        tracing::warn!(target_name = common.name, %error, "deployment failed; previous files restored");
        return Err(error);
    }
    report.written = changes.iter().map(|(file, _)| file.path.clone()).collect();
    journal::remove_journal(state_dir, common.name)?;

    if let Some(command) = &reload {
        run_step(command, common.timeout, |command, status, stderr| {
            DeployError::ReloadFailed {
                command,
                status,
                stderr,
            }
        })?;
    }
    target.live_update(bundle)?;
    if let Some(endpoint) = common.verify {
        verify_endpoint(
            &endpoint.address,
            &endpoint.sni,
            Duration::from_secs(endpoint.timeout_seconds),
            bundle,
        )?;
        report.verified = Some(true);
    }
    journal::write_state(
        state_dir,
        common.name,
        &State {
            fingerprint: Some(bundle.fingerprint.clone()),
        },
    )?;
    tracing::info!(target_name = common.name, fingerprint = %bundle.fingerprint, "deployed");

    if let Some(hook) = common.post_hook {
        run_step(hook, common.timeout, |command, status, stderr| {
            DeployError::PostHookFailed {
                command,
                status,
                stderr,
            }
        })?;
    }
    Ok(report)
}

/// Links the previous versions, renames the new files into place, and runs the validation.
fn replace_and_validate(
    changes: &[(&Resolved, bool)],
    validate: Option<&Command>,
    timeout: Duration,
) -> Result<(), DeployError> {
    // Every previous version is linked before the first rename, so a crash between renames never
    // pairs a replaced file with a stale `.certkeeper-prev` (see `journal`).
    for (file, had_previous) in changes {
        if *had_previous {
            let prev = fsops::prev_path(&file.path);
            fsops::remove_if_exists(&prev)?;
            // A hard link keeps the old bytes without a moment where the live name is missing.
            std::fs::hard_link(&file.path, &prev).map_err(DeployError::io("link previous version to", &prev))?;
        }
    }
    for (file, _) in changes {
        fsops::sync_dir(dir_of(&file.path))?;
    }
    for (renamed, (file, _)) in changes.iter().enumerate() {
        maybe_stall(renamed);
        fsops::rename(&fsops::temp_path(&file.path), &file.path)?;
        fsops::sync_dir(dir_of(&file.path))?;
    }
    maybe_stall(changes.len());
    if let Some(command) = validate {
        let output = command.run(timeout)?;
        if !output.success() {
            return Err(DeployError::ValidationFailed {
                command: command.display(),
                status: output.status_text(),
                stderr: output.stderr,
            });
        }
    }
    Ok(())
}

/// What a deployment will do, checked before anything is written.
struct Prepared {
    files: Vec<Resolved>,
    validate: Option<Command>,
    reload: Option<Command>,
    owner: (Option<u32>, Option<u32>),
}

/// Plans the files, confines every path to the allowed roots, and checks that every program and
/// owner exists.
fn prepare(config: &TargetConfig, bundle: &Bundle, allowed_roots: &[PathBuf]) -> Result<Prepared, DeployError> {
    let target = config.target();
    let common = target.common();
    check_name(common.name)?;
    let planned = target.plan(bundle)?;
    let mut files = Vec::with_capacity(planned.len());
    for file in planned {
        let path = fsops::confine(&file.path, allowed_roots)?;
        if files.iter().any(|f: &Resolved| f.path == path) {
            return Err(DeployError::InvalidConfig {
                reason: format!("{} is configured twice", path.display()),
            });
        }
        files.push(Resolved {
            path,
            contents: file.contents,
            mode: file.mode,
        });
    }
    let validate = target.validate_command();
    let reload = target.reload_command();
    for command in [common.pre_hook, validate.as_ref(), reload.as_ref(), common.post_hook]
        .into_iter()
        .flatten()
    {
        command.resolve_program()?;
    }
    let owner = (
        fsops::resolve_id(common.owner, "/etc/passwd")?,
        fsops::resolve_id(common.group, "/etc/group")?,
    );
    Ok(Prepared {
        files,
        validate,
        reload,
        owner,
    })
}

/// Checks a target's configuration as [`deploy`] would, without writing anything: its name,
/// every path inside `allowed_roots`, every program and owner existing, password files readable.
/// `sample` is any valid bundle (keystores are built from it to find unreadable password files).
pub fn preflight(config: &TargetConfig, sample: &Bundle, allowed_roots: &[PathBuf]) -> Result<(), DeployError> {
    prepare(config, sample, allowed_roots).map(|_| ())
}

/// The fingerprint last deployed to the target named `name` (and verified, when configured).
pub fn deployed_fingerprint(state_dir: &Path, name: &str) -> Result<Option<String>, DeployError> {
    check_name(name)?;
    Ok(journal::read_state(state_dir, name)?.fingerprint)
}

/// Retries until `address` serves the bundle's leaf for `sni`, or `timeout` passes.
fn verify_endpoint(address: &str, sni: &str, timeout: Duration, bundle: &Bundle) -> Result<(), DeployError> {
    let deadline = Instant::now() + timeout;
    loop {
        let served = match fetch_served_leaf_fingerprint(address, sni, Duration::from_secs(2)) {
            Ok(fingerprint) if fingerprint == bundle.fingerprint => return Ok(()),
            Ok(fingerprint) => fingerprint,
            Err(reason) => format!("nothing ({reason})"),
        };
        if Instant::now() >= deadline {
            return Err(DeployError::VerifyFailed {
                expected: bundle.fingerprint.clone(),
                served,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Settles a deployment interrupted by a crash: if `config`'s journal exists in `state_dir`, the
/// target is rolled back to its previous files (never forward: the new files were not validated).
/// Call it for every target when the agent starts.
pub fn recover(config: &TargetConfig, state_dir: &Path) -> Result<Recovery, DeployError> {
    let name = config.target().common().name;
    check_name(name)?;
    let _lock = lock_target(state_dir, name)?;
    recover_locked(name, state_dir)
}

fn recover_locked(name: &str, state_dir: &Path) -> Result<Recovery, DeployError> {
    let Some(journal) = journal::read_journal(state_dir, name)? else {
        return Ok(Recovery::Clean);
    };
    let restored = journal::rollback(&journal)?;
    journal::remove_journal(state_dir, name)?;
    tracing::warn!(target_name = name, fingerprint = %journal.fingerprint, "rolled back an interrupted deployment");
    Ok(Recovery::RolledBack {
        fingerprint: journal.fingerprint,
        restored,
    })
}

/// Serializes deployments and recoveries of one target across threads and processes. The kernel
/// drops the lock when the holder dies, so a killed agent never leaves it stuck.
fn lock_target(state_dir: &Path, name: &str) -> Result<std::fs::File, DeployError> {
    std::fs::create_dir_all(state_dir).map_err(DeployError::io("create state directory", state_dir))?;
    let path = state_dir.join(format!("{name}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(DeployError::io("open lock file", &path))?;
    file.lock().map_err(DeployError::io("lock", &path))?;
    Ok(file)
}
