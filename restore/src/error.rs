use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Repo(#[from] drvault_repo::Error),
    /// No snapshot matches the selection.
    #[error("no snapshot matches {0}")]
    NoSnapshot(String),
    /// A snapshot ID prefix matches several snapshots.
    #[error("snapshot prefix {0} is ambiguous; give more characters")]
    Ambiguous(String),
    /// Writing to the target failed.
    #[error("{}: {source}", drvault_repo::printable::path(path))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The target holds something a restore may not write through (a symlink, a non-directory).
    #[error(
        "refusing to restore through {}: it is not a plain directory",
        drvault_repo::printable::path(.0)
    )]
    UnsafeTarget(PathBuf),
    /// Something below the target changed under the restore (a directory swapped for a
    /// symlink, a file replaced): the restore stops there and writes nothing through it.
    #[error(
        "{} changed during the restore ({reason}); nothing was written through it or outside \
         the target. Find out what else modifies the target, then restore again",
        drvault_repo::printable::path(path)
    )]
    Changed { path: PathBuf, reason: String },
    /// Restored data differs from the snapshot.
    #[error(
        "verification failed for {}: {reason}",
        drvault_repo::printable::path(path)
    )]
    Verify { path: PathBuf, reason: String },
    /// Some files could not be restored (damaged or missing data on every target, or a failed
    /// `--verify`); everything else was. None of them is left under its name.
    #[error("{}", damaged_summary(.0))]
    Damaged(Box<crate::RestoreStats>),
    /// The includes match nothing in the snapshot.
    #[error("{what} matches nothing in snapshot {snapshot}, which holds {paths}; name a path as `drvault ls {snapshot}` shows it")]
    NothingSelected {
        what: String,
        snapshot: String,
        paths: String,
    },
    #[error("{0}")]
    Invalid(String),
}

fn damaged_summary(stats: &crate::RestoreStats) -> String {
    let n = stats.damaged.len();
    let first = stats
        .damaged
        .first()
        .map(|d| format!("{} ({})", d.path, d.reason))
        .unwrap_or_default();
    format!(
        "{n} {} could not be restored, and nothing was written under {} (first: {first}); \
         everything else was restored. Run `drvault check --read-data` to find the damaged \
         objects and `drvault repair` to replace them from an intact target",
        if n == 1 { "entry" } else { "entries" },
        if n == 1 { "its name" } else { "their names" },
    )
}

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A read failure that stops nothing else: the bytes are damaged or gone everywhere. Anything
/// else (every target unreachable, a local write error) stops the restore.
pub(crate) fn is_damage(e: &drvault_repo::Error) -> bool {
    matches!(
        e,
        drvault_repo::Error::Integrity { .. }
            | drvault_repo::Error::NotFound { .. }
            | drvault_repo::Error::Key(drvault_keyring::Error::UnknownEpoch(_))
    )
}
