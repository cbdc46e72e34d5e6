//! What a restore is asked to do, and what it reports.

use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Restore only these snapshot paths (components) and what lies below them.
    pub includes: Vec<Vec<Vec<u8>>>,
    /// Leave out entries (and what is below them) matching these: a one-component pattern
    /// matches an entry's name anywhere, a longer one the path from the snapshot's root.
    pub excludes: Vec<Vec<Vec<u8>>>,
    pub verify: bool,
    /// Ranged reads in flight.
    pub parallel: usize,
    /// What to do with a regular file already at an entry's name.
    pub overwrite: Overwrite,
    /// Remove what the target holds beyond the snapshot in the directories restored in full.
    pub delete: bool,
    /// Change nothing: list what the restore would do in [`RestoreStats::planned`].
    pub dry_run: bool,
    /// Told the bytes written so far and the bytes to write, as file contents are written.
    pub progress: Option<ProgressSink>,
}

/// A callback `(bytes written, bytes to write)` for a progress display.
#[derive(Clone)]
pub struct ProgressSink(pub Arc<dyn Fn(u64, u64) + Send + Sync>);

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressSink")
    }
}

/// restic's meanings: replace it; replace it unless its content already is the snapshot's
/// (checked chunk by chunk against the blob IDs, so a rerun of an interrupted restore skips what
/// is done); leave it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overwrite {
    #[default]
    Always,
    IfChanged,
    Never,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub other: u64,
    pub bytes: u64,
    /// Entries not restored (device nodes are never created from a snapshot).
    pub skipped: u64,
    /// Files already there and left as they were (`--overwrite if-changed` or `never`); their
    /// metadata is still the snapshot's.
    pub unchanged: u64,
    pub warnings: Vec<String>,
    pub verified_files: u64,
    /// Files (and hard links to them) that could not be restored: none of them is left under
    /// its name. Empty on success; a restore with damage returns [`crate::Error::Damaged`].
    pub damaged: Vec<DamagedFile>,
    /// Entries `--delete` removed from the target (a directory with what it held); with
    /// `dry_run`, would remove.
    pub deleted: u64,
    /// With `dry_run`: what would be done, path by path.
    pub planned: Vec<Planned>,
}

/// One change a dry run found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Planned {
    /// "restore" (nothing there), "replace" (something else there), "keep" (already the
    /// snapshot's, or left by `--overwrite never`) or "delete" (not in the snapshot).
    pub action: &'static str,
    pub path: String,
}

/// A file the restore could not write intact (the blobs of these byte ranges are damaged or
/// missing on every target, or re-reading it disagreed with the snapshot).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DamagedFile {
    /// The full path it would have had.
    pub path: String,
    /// Byte ranges `[start, end)` of the file that could not be restored (empty when the
    /// whole entry is lost, as for a hard link whose source is damaged).
    pub ranges: Vec<(u64, u64)>,
    pub reason: String,
}
