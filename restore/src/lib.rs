//! The restore engine: snapshot selection by time, partial restore, parallel fetch, metadata,
//! verification. A restore never writes outside its target, whatever the snapshot says.

mod collect;
mod dry_run;
mod error;
mod extras;
mod fetch;
mod files;
mod fsops;
pub mod mount;
mod options;
mod parallel;
pub mod pattern;
mod plan;
mod select;
mod verify;

pub use error::Error;
pub use options::{DamagedFile, Overwrite, Planned, ProgressSink, RestoreOptions, RestoreStats};
pub use plan::restore;
pub use select::{select_snapshot, SnapshotSpec};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Logs the process's peak and current memory at a phase boundary (`DRVAULT_LOG=drvault_restore=debug`).
pub(crate) fn hwm(what: &str) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let l: Vec<&str> = s
        .lines()
        .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
        .collect();
    tracing::debug!("{what}: {l:?}");
}
