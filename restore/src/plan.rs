//! The restore: walk the snapshot's trees, create entries, write contents, link, apply metadata.
//!
//! Order matters for safety: directories and files first, hard links next, symlinks last, so
//! nothing is ever written through a symlink the snapshot supplied.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use drvault_repo::format::{validate_name, Node, NodeKind};
use drvault_repo::{Id, Repository};
use tokio::runtime::Handle;

use crate::error::io;
use crate::fsops::{self, join};
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Restore only these snapshot paths (components) and what lies below them.
    pub includes: Vec<Vec<Vec<u8>>>,
    pub verify: bool,
    /// Ranged reads in flight.
    pub parallel: usize,
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
    pub warnings: Vec<String>,
    pub verified_files: u64,
}

struct Entry {
    /// Path below the target, built from validated components.
    path: PathBuf,
    /// Components joined by '/': the key hard links refer to.
    key: Vec<u8>,
    node: Node,
}

enum Include {
    All,
    /// An ancestor of an included path: the directory itself, and only the matching children.
    Partial,
    No,
}

fn included(includes: &[Vec<Vec<u8>>], comps: &[Vec<u8>]) -> Include {
    if includes.is_empty() {
        return Include::All;
    }
    let mut partial = false;
    for inc in includes {
        if comps.len() >= inc.len() && comps[..inc.len()] == inc[..] {
            return Include::All;
        }
        if inc.len() > comps.len() && inc[..comps.len()] == comps[..] {
            partial = true;
        }
    }
    if partial {
        Include::Partial
    } else {
        Include::No
    }
}

/// Lists the entries to restore, every directory before what it contains.
fn collect(
    rt: &Handle,
    repo: &Repository,
    root: Id,
    target: &Path,
    includes: &[Vec<Vec<u8>>],
) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    // (tree, its components, everything below is included)
    let mut stack = vec![(root, Vec::<Vec<u8>>::new(), includes.is_empty())];
    while let Some((tree_id, base, all)) = stack.pop() {
        let tree = rt.block_on(repo.load_tree(&tree_id))?;
        for mut node in tree.entries {
            let mut comps = base.clone();
            comps.push(std::mem::take(&mut node.name));
            let inc = if all {
                Include::All
            } else {
                included(includes, &comps)
            };
            let subtree_all = match inc {
                Include::No => continue,
                Include::All => true,
                Include::Partial if node.kind == NodeKind::Dir => false,
                Include::Partial => continue,
            };
            let path = join(target, &comps);
            let key = comps.join(&b'/');
            if let Some(sub) = node.subtree {
                stack.push((sub, comps, subtree_all));
            }
            out.push(Entry { path, key, node });
        }
    }
    Ok(out)
}

/// Restores the tree `root` into `opts.target`.
pub fn restore(
    rt: &Handle,
    repo: Arc<Repository>,
    root: Id,
    opts: &RestoreOptions,
) -> Result<RestoreStats> {
    let mut stats = RestoreStats::default();
    std::fs::create_dir_all(&opts.target).map_err(io(&opts.target))?;
    let target = opts.target.canonicalize().map_err(io(&opts.target))?;
    crate::hwm("start");
    let entries = collect(rt, &repo, root, &target, &opts.includes)?;
    crate::hwm("collected");
    let as_root = rustix::process::geteuid().is_root();

    let mut files: Vec<(PathBuf, Vec<Id>)> = Vec::new();
    // Paths of files that hard links in this restore point to.
    let link_sources: std::collections::HashSet<&[u8]> = entries
        .iter()
        .filter(|e| e.node.kind == NodeKind::Hardlink)
        .map(|e| e.node.target.as_slice())
        .collect();
    let mut restored_files: HashMap<Vec<u8>, PathBuf> = HashMap::new();
    let mut later: Vec<&Entry> = Vec::new();
    // Directories first (sequentially: parents before children), then every file and FIFO
    // created in parallel: each is a few path-walking system calls.
    let mut to_create: Vec<&Entry> = Vec::new();
    for e in &entries {
        let path = &e.path;
        match e.node.kind {
            NodeKind::Dir => {
                fsops::mkdir(path)?;
                stats.dirs += 1;
            }
            NodeKind::File => {
                if link_sources.contains(e.key.as_slice()) {
                    restored_files.insert(e.key.clone(), path.clone());
                }
                files.push((path.clone(), e.node.content.clone()));
                stats.files += 1;
                to_create.push(e);
            }
            NodeKind::Fifo => {
                stats.other += 1;
                to_create.push(e);
            }
            NodeKind::Symlink | NodeKind::Hardlink => later.push(e),
            NodeKind::CharDevice | NodeKind::BlockDevice | NodeKind::Socket => {
                stats.skipped += 1;
                stats.warnings.push(format!(
                    "{}: device node or socket not restored",
                    path.display()
                ));
            }
        }
    }
    drvault_repo::failpoint::hit_blocking("restore.after-dirs");
    for_each_parallel(&to_create, |e| {
        if e.node.kind == NodeKind::Fifo {
            fsops::mkfifo(&e.path)?;
        } else {
            fsops::clear(&e.path)?;
            let f = fsops::open_write(&e.path, true)?;
            f.set_len(e.node.size).map_err(io(&e.path))?;
        }
        Ok(Vec::new())
    })?;
    let parallel = opts.parallel;
    crate::hwm("created");
    drvault_repo::failpoint::hit_blocking("restore.before-contents");
    stats.bytes = crate::fetch::write_contents(rt, repo.clone(), &files, parallel)?;
    crate::hwm("written");

    for e in &later {
        let path = &e.path;
        fsops::clear(path)?;
        match e.node.kind {
            NodeKind::Hardlink => {
                let source_comps: Vec<&[u8]> = e.node.target.split(|&b| b == b'/').collect();
                if source_comps.iter().any(|c| validate_name(c).is_err()) {
                    return Err(Error::Repo(drvault_repo::Error::Integrity {
                        object: format!("hard link {}", path.display()),
                        reason: "link source is not a path inside the snapshot".into(),
                    }));
                }
                match restored_files.get(&e.node.target) {
                    Some(src) => {
                        std::fs::hard_link(src, path).map_err(io(path))?;
                        stats.hardlinks += 1;
                    }
                    None => stats.warnings.push(format!(
                        "{}: hard link to {} not restored (its source is not part of this restore)",
                        path.display(),
                        String::from_utf8_lossy(&e.node.target)
                    )),
                }
            }
            _ => {
                let t: &std::ffi::OsStr =
                    std::os::unix::ffi::OsStrExt::from_bytes(e.node.target.as_slice());
                std::os::unix::fs::symlink(t, path).map_err(io(path))?;
                stats.symlinks += 1;
            }
        }
    }

    // Metadata: everything but directories, then directories deepest first (their mtimes and
    // read-only modes must come after everything inside them is written).
    let with_metadata: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            !matches!(
                e.node.kind,
                NodeKind::Dir
                    | NodeKind::Hardlink
                    | NodeKind::CharDevice
                    | NodeKind::BlockDevice
                    | NodeKind::Socket
            )
        })
        .collect();
    drvault_repo::failpoint::hit_blocking("restore.before-metadata");
    let warnings = for_each_parallel(&with_metadata, |e| {
        fsops::apply_metadata(&e.path, &e.node, as_root, e.node.kind == NodeKind::Symlink)
    })?;
    stats.warnings.extend(warnings);
    if opts.verify {
        stats.verified_files = crate::verify::verify_files(&repo, &files)?;
    }
    drvault_repo::failpoint::hit_blocking("restore.before-dir-metadata");
    for e in entries
        .iter()
        .rev()
        .filter(|e| e.node.kind == NodeKind::Dir)
    {
        let path = &e.path;
        let w = fsops::apply_metadata(path, &e.node, as_root, false)?;
        stats.warnings.extend(w);
    }
    Ok(stats)
}

/// Runs `f` over `items` on one thread per core; returns the warnings, or the first error.
fn for_each_parallel<T: Sync>(
    items: &[T],
    f: impl Fn(&T) -> Result<Vec<String>> + Sync,
) -> Result<Vec<String>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<Vec<String>> {
                    let mut warnings = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return Ok(warnings);
                        };
                        warnings.extend(f(item)?);
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            all.extend(
                w.join()
                    .map_err(|_| Error::Invalid("restore worker panicked".into()))??,
            );
        }
        Ok(all)
    })
}
