//! drvault's backup, as a library every front end calls (the `drvault backup` command, the
//! agent's jobs, a future server): it walks the sources, chunks and hashes what changed, seals
//! and packs the new blobs and uploads them, under the repository's session protocol
//! (docs/FORMAT.md §18), which no front end can skip or reorder:
//!
//! 1. [`drvault_repo::Repository::begin_backup`] makes the session durable, reads the prune
//!    marks, loads the index and drops the marked packs from it;
//! 2. the pipeline stores packs, then the index (`Pipeline::finish`);
//! 3. [`drvault_repo::Repository::commit_snapshot`] writes the snapshot only while the session
//!    is provably live;
//! 4. the session ends, whatever happened (the guard in [`run`]; a panic drops it, and the
//!    session's own `Drop` stops its heartbeat).
//!
//! Cancellation and progress are the caller's: a [`Cancel`] token checked at clean points
//! (between entries, between chunks) and a [`Progress`] sink; nothing here writes to a
//! terminal or reads a process-wide flag.

mod error;
mod metadata;
mod pipeline;
mod readers;
mod sparse;
mod stdin;
mod walk;

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub use drvault_repo::cancel::Cancel;
use drvault_repo::format::{Snapshot, Summary, SNAPSHOT_VERSION};
use drvault_repo::repository::Committed;
use drvault_repo::session::Session;
use drvault_repo::{Id, Repository};
use globset::{Glob, GlobSet, GlobSetBuilder};
use tokio::runtime::Runtime;

pub use error::{Error, Result};
pub use pipeline::Pipeline;
pub use stdin::{filename_components, StreamSource, SECRET_PREFIXES, SECRET_VARIABLES};
use walk::{WalkOptions, Walker};

/// What to back up.
pub enum Source {
    /// Files and directories, each stored under its absolute path.
    Paths {
        paths: Vec<PathBuf>,
        /// Glob patterns on full paths or on names.
        excludes: Vec<String>,
        /// Do not descend into other file systems.
        one_file_system: bool,
    },
    /// One stream stored as the file `filename` (relative to the snapshot's root).
    Stream {
        source: StreamSource,
        filename: String,
    },
}

/// The snapshot whose unchanged files are reused without reading them.
pub enum Parent {
    /// The newest snapshot of the same host with the same paths, if any.
    Latest,
    /// This one.
    Snapshot(Id),
}

pub struct BackupRequest {
    pub source: Source,
    pub tags: Vec<String>,
    pub parent: Parent,
    pub host: String,
}

/// Where a backup reports how far it got; called after each entry (throttling is the sink's).
pub trait Progress: Send {
    fn update(&mut self, summary: &Summary);
    /// The walk is over (a terminal line may be cleared).
    fn finish(&mut self) {}
}

/// What the caller controls while a backup runs.
#[derive(Default)]
pub struct Controls {
    pub cancel: Cancel,
    pub progress: Option<Box<dyn Progress>>,
}

/// A committed backup.
pub struct BackupOutcome {
    pub id: Id,
    pub snapshot: Snapshot,
    /// Objects each target missed (the write quorum holds them), by target name; `drvault
    /// sync` copies them once the target is back.
    pub owed: BTreeMap<String, u64>,
    /// Why the audit log did not take the commit (its sequencer was down), when it did not:
    /// the snapshot exists without its audit anchor.
    pub unrecorded: Option<String>,
}

/// Runs one backup on the calling thread, which must not be inside the runtime. On
/// `Err(Error::Repo(KeyringChanged))` nothing was written: open the repository again and call
/// again. Whatever happens, the session this starts is ended.
///
/// `controls` is borrowed so that a caller retrying after a rotation passes the same ones: the
/// progress sink is taken only once the session exists.
pub fn run(
    rt: &Runtime,
    repo: Arc<Repository>,
    req: &BackupRequest,
    controls: &mut Controls,
) -> Result<BackupOutcome> {
    // The request is checked before anything is written: an empty snapshot of a path that is
    // not there (an unmounted volume, a typo) would become "latest" and count for --keep-last.
    let prepared = prepare(&req.source)?;
    let parent = match req.parent {
        Parent::Snapshot(id) => Some(id),
        // A host key reads no snapshot: every file is read and chunked again (deduplication
        // against the index still stores nothing twice).
        Parent::Latest if repo.opened_by_host().is_some() => None,
        Parent::Latest => {
            let snaps = rt.block_on(repo.snapshots())?;
            let want = prepared.snapshot_paths();
            snaps
                .iter()
                .rev()
                // A doubtful snapshot (a host key's, naming this host) is never a parent: its
                // tree would lend unchanged files content nobody vouches for.
                .find(|(_, s)| s.host == req.host && s.paths == want && s.untrusted.is_none())
                .map(|(id, _)| *id)
        }
    };
    let session = rt.block_on(repo.begin_backup())?;
    let guard = SessionGuard {
        rt,
        repo: &repo,
        session: Some(session),
    };
    let work = Work {
        rt,
        repo: repo.clone(),
        session: guard.session(),
        tags: req.tags.clone(),
        parent,
        host: req.host.clone(),
    };
    let stored = match (prepared, &req.source) {
        (Prepared::Paths { paths, opts }, _) => walk_and_commit(work, paths, opts, controls),
        (Prepared::Stream { components }, Source::Stream { source, .. }) => {
            stdin::run(work, components, source, controls.cancel.clone())
        }
        (Prepared::Stream { .. }, Source::Paths { .. }) => {
            Err(Error::Internal("a stream request without a stream".into()))
        }
    };
    guard.end();
    let committed = stored?;
    let owed = rt.block_on(repo.remember_owed());
    Ok(BackupOutcome {
        id: committed.id,
        snapshot: committed.snapshot,
        owed,
        unrecorded: committed.unrecorded,
    })
}

/// Ends the backup session when the backup returns or unwinds: heartbeats stop and the
/// announcement is removed, so a failed backup never holds prune for the staleness bound.
struct SessionGuard<'a> {
    rt: &'a Runtime,
    repo: &'a Repository,
    session: Option<Session>,
}

impl SessionGuard<'_> {
    fn session(&self) -> &Session {
        // Always present until `end` or `drop` takes it.
        self.session.as_ref().unwrap_or_else(|| unreachable!())
    }

    fn end(mut self) {
        if let Some(s) = self.session.take() {
            self.rt.block_on(s.end(self.repo.store()));
        }
    }
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        // Reached only on unwinding (`end` took the session otherwise). On the plain thread a
        // backup runs on, the session is ended here, so a panicking job (which the agent
        // survives) does not hold prune for the staleness bound; inside a runtime, the
        // session's own Drop ends it in the background.
        if let Some(s) = self.session.take() {
            if tokio::runtime::Handle::try_current().is_err() {
                self.rt.block_on(s.end(self.repo.store()));
            }
        }
    }
}

/// What a backup shares between its stages once its session exists.
struct Work<'a> {
    rt: &'a Runtime,
    repo: Arc<Repository>,
    session: &'a Session,
    tags: Vec<String>,
    parent: Option<Id>,
    host: String,
}

impl Work<'_> {
    /// Writes the snapshot (the session is confirmed live first) and records its commit in
    /// the audit log.
    fn commit(
        &self,
        paths: Vec<Vec<u8>>,
        tree: Id,
        summary: Summary,
        time_ns: i64,
    ) -> Result<Committed> {
        let snapshot = Snapshot {
            version: SNAPSHOT_VERSION,
            time_ns,
            host: self.host.clone(),
            username: std::env::var("USER").unwrap_or_default(),
            paths,
            tags: self.tags.clone(),
            parent: self.parent,
            tree,
            summary,
            program_version: env!("CARGO_PKG_VERSION").to_string(),
            audit: None,
            writer: None,
            untrusted: None,
            stored_as: Vec::new(),
        };
        Ok(self
            .rt
            .block_on(self.repo.commit_snapshot(self.session, &snapshot))?)
    }
}

/// A request checked and resolved before the session starts.
enum Prepared {
    Paths {
        paths: Vec<PathBuf>,
        opts: WalkOptions,
    },
    Stream {
        components: Vec<Vec<u8>>,
    },
}

impl Prepared {
    /// The paths the snapshot will record, as [`Snapshot::paths`] holds them.
    fn snapshot_paths(&self) -> Vec<Vec<u8>> {
        match self {
            Prepared::Paths { paths, .. } => paths
                .iter()
                .map(|p| p.as_os_str().as_bytes().to_vec())
                .collect(),
            Prepared::Stream { components } => {
                let mut p = Vec::new();
                for c in components {
                    p.push(b'/');
                    p.extend_from_slice(c);
                }
                vec![p]
            }
        }
    }
}

/// Checks a request without touching the repository (the paths exist, the patterns parse, the
/// stream's file name stays inside the snapshot): for a front end that wants to refuse a bad
/// request before it creates or opens anything. [`run`] checks again.
pub fn check_request(source: &Source) -> Result<()> {
    prepare(source).map(|_| ())
}

fn prepare(source: &Source) -> Result<Prepared> {
    match source {
        Source::Stream { filename, source } => {
            if let StreamSource::Command { argv, .. } = source {
                if argv.is_empty() {
                    return Err(Error::Usage(
                        "--stdin-from-command needs a command after `--`".into(),
                    ));
                }
            }
            Ok(Prepared::Stream {
                components: filename_components(filename)?,
            })
        }
        Source::Paths {
            paths: given,
            excludes,
            one_file_system,
        } => {
            let mut paths = Vec::new();
            for p in given {
                if let Err(e) = std::fs::symlink_metadata(p) {
                    return Err(Error::Request(format!(
                        "cannot back up {}: {e}; no snapshot was made (is the volume mounted, \
                         the path spelt right?)",
                        drvault_repo::printable::path(p)
                    )));
                }
                let abs = std::path::absolute(p).map_err(|e| {
                    Error::Request(format!(
                        "cannot resolve {}: {e}",
                        drvault_repo::printable::path(p)
                    ))
                })?;
                paths.push(normalize(&abs));
            }
            paths.sort();
            paths.dedup();
            Ok(Prepared::Paths {
                paths,
                opts: WalkOptions {
                    excludes: exclude_set(excludes)?,
                    one_file_system: *one_file_system,
                },
            })
        }
    }
}

fn exclude_set(patterns: &[String]) -> Result<GlobSet> {
    let mut globs = GlobSetBuilder::new();
    for e in patterns {
        let glob = Glob::new(e)
            .map_err(|err| Error::Usage(format!("invalid exclude pattern {e:?}: {err}")))?;
        globs.add(glob);
    }
    globs
        .build()
        .map_err(|err| Error::Usage(format!("invalid exclude patterns: {err}")))
}

fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// The file-tree backup: walk, store, commit.
fn walk_and_commit(
    work: Work<'_>,
    paths: Vec<PathBuf>,
    opts: WalkOptions,
    controls: &mut Controls,
) -> Result<Committed> {
    let started = Instant::now();
    let time_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let parent_root = match work.parent {
        Some(id) => {
            let snaps = work.rt.block_on(work.repo.snapshots())?;
            snaps
                .into_iter()
                .find(|(s, _)| *s == id)
                .map(|(_, s)| s.tree)
        }
        None => None,
    };
    let workers = workers();
    let pipeline = Pipeline::start(
        work.repo.clone(),
        work.rt.handle().clone(),
        workers,
        controls.cancel.clone(),
    )?;
    let mut walker = Walker::new(
        pipeline,
        work.repo.chunker(),
        work.rt.handle().clone(),
        opts,
        workers,
        controls.progress.take(),
    )?;
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
    let recorded = paths
        .iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect();
    work.commit(recorded, tree, summary, time_ns)
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

#[cfg(test)]
mod tests;
