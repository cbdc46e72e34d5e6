//! `drvault backup`.

mod metadata;
mod pipeline;
mod progress;
mod readers;
mod sparse;
mod stdin;
mod walk;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use drvault_repo::format::{Snapshot, Summary, SNAPSHOT_VERSION};
use drvault_repo::{Id, Repository};
use globset::{Glob, GlobSetBuilder};
use tokio::runtime::Runtime;

pub use pipeline::Pipeline;
pub use stdin::{filename_components, run as run_stream, StreamRequest, StreamSource};
use walk::{WalkOptions, Walker};

pub struct BackupRequest {
    pub paths: Vec<PathBuf>,
    pub tags: Vec<String>,
    pub excludes: Vec<String>,
    pub one_file_system: bool,
    pub parent: Option<Id>,
    pub host: String,
}

pub struct BackupOutcome {
    pub id: Id,
    pub snapshot: Snapshot,
}

/// Runs a backup on the calling thread (which must not be inside the runtime).
/// `session` is the one [`Repository::begin_backup`] started; the snapshot is committed under it.
pub fn run(
    rt: &Runtime,
    repo: Arc<Repository>,
    session: &drvault_repo::lease::Session,
    req: BackupRequest,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let time_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let mut paths = Vec::new();
    for p in &req.paths {
        let abs =
            std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))?;
        paths.push(normalize(&abs));
    }
    paths.sort();
    paths.dedup();
    let mut globs = GlobSetBuilder::new();
    for e in &req.excludes {
        globs.add(Glob::new(e).with_context(|| format!("invalid exclude pattern {e:?}"))?);
    }
    let opts = WalkOptions {
        excludes: globs.build()?,
        one_file_system: req.one_file_system,
    };
    let parent_root = match req.parent {
        Some(id) => {
            let snaps = rt.block_on(repo.snapshots())?;
            snaps
                .into_iter()
                .find(|(s, _)| *s == id)
                .map(|(_, s)| s.tree)
        }
        None => None,
    };
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let pipeline = Pipeline::start(repo.clone(), rt.handle().clone(), workers)?;
    let mut walker = Walker::new(pipeline, repo.chunker(), rt.handle().clone(), opts, workers)?;
    let walked = walker.run(&paths, parent_root);
    let (pipeline, mut summary) = walker.into_pipeline()?;
    summary.blobs_added = pipeline.blobs_added();
    // Commit order: packs, then index (inside finish), then the snapshot. When the walk failed,
    // finish still drains the stages and reports a storage failure in preference to its echo.
    let tree = match walked {
        Ok(tree) => tree,
        Err(e) => return Err(pipeline.finish().err().unwrap_or(e)),
    };
    summary.bytes_added = pipeline.finish()?;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    let snapshot = Snapshot {
        version: SNAPSHOT_VERSION,
        time_ns,
        host: req.host,
        username: std::env::var("USER").unwrap_or_default(),
        paths: paths
            .iter()
            .map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
            .collect(),
        tags: req.tags,
        parent: req.parent,
        tree,
        summary: Summary { ..summary },
        program_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let id = rt.block_on(repo.commit_snapshot(session, &snapshot))?;
    Ok(BackupOutcome { id, snapshot })
}

/// Removes "." and ".." lexically (the walk never follows symlinks, so this is what the user meant).
fn normalize(p: &std::path::Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            std::path::Component::Normal(s) => out.push(s),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}
