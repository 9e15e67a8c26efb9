//! File system steps of a deployment: confinement to allowed roots, durable atomic writes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::DeployError;

/// Suffix of the previous version kept next to each replaced file, for rollback.
pub(crate) const PREV_SUFFIX: &str = ".certkeeper-prev";

/// Resolves `path` (its parent canonicalized, symlinks followed) and checks it lies inside one
/// of `roots`. The file itself must not be a symlink: the rename would replace the link.
pub(crate) fn confine(path: &Path, roots: &[PathBuf]) -> Result<PathBuf, DeployError> {
    let outside = || DeployError::OutsideAllowedRoots {
        path: path.to_path_buf(),
    };
    let lexically_plain = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !lexically_plain {
        return Err(outside());
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(outside());
    };
    let parent = parent
        .canonicalize()
        .map_err(DeployError::io("resolve the directory of", path))?;
    let inside = roots
        .iter()
        .filter_map(|root| root.canonicalize().ok())
        .any(|root| parent.starts_with(root));
    if !inside {
        return Err(outside());
    }
    let resolved = parent.join(name);
    if std::fs::symlink_metadata(&resolved).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(DeployError::SymlinkRefused {
            path: path.to_path_buf(),
        });
    }
    Ok(resolved)
}

/// `<dir>/<name><suffix>` next to `path`.
pub(crate) fn sibling(path: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{prefix}{name}{suffix}"))
}

/// The temporary file a new version is written to before the rename.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    sibling(path, ".", ".certkeeper-tmp")
}

/// Where the previous version is kept.
pub(crate) fn prev_path(path: &Path) -> PathBuf {
    sibling(path, "", PREV_SUFFIX)
}

/// Writes `contents` to `path` with `mode` (and owner), durably, never visible half-written
/// under a name anyone reads: the caller renames it into place.
pub(crate) fn write_durable(
    path: &Path,
    contents: &[u8],
    mode: u32,
    owner: (Option<u32>, Option<u32>),
) -> Result<(), DeployError> {
    // A stale file could have looser permissions; created anew, it starts at 0600.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(DeployError::io("remove stale", path)(e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(DeployError::io("create", path))?;
    file.write_all(contents).map_err(DeployError::io("write", path))?;
    if owner.0.is_some() || owner.1.is_some() {
        std::os::unix::fs::fchown(&file, owner.0, owner.1).map_err(DeployError::io("chown", path))?;
    }
    // Set explicitly: the umask must not decide a certificate's mode.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(DeployError::io("chmod", path))?;
    file.sync_all().map_err(DeployError::io("fsync", path))
}

/// Makes renames and links in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), DeployError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(DeployError::io("fsync directory", dir))
}

pub(crate) fn rename(from: &Path, to: &Path) -> Result<(), DeployError> {
    std::fs::rename(from, to).map_err(DeployError::io("rename into", to))
}

/// Removes `path` if it exists.
pub(crate) fn remove_if_exists(path: &Path) -> Result<(), DeployError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DeployError::io("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Resolves a user or group given by name or numeric id through `/etc/passwd` or `/etc/group`.
pub(crate) fn resolve_id(spec: Option<&str>, database: &str) -> Result<Option<u32>, DeployError> {
    let Some(spec) = spec else { return Ok(None) };
    if let Ok(id) = spec.parse::<u32>() {
        return Ok(Some(id));
    }
    let text = std::fs::read_to_string(database).map_err(DeployError::io("read", database))?;
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id = fields.nth(1)?.parse::<u32>().ok()?;
            (name == spec).then_some(id)
        })
        .next()
        .map(Some)
        .ok_or_else(|| DeployError::InvalidConfig {
            reason: format!("`{spec}` is not in {database}"),
        })
}
