//! The restore: walk the snapshot's trees, create entries, write contents, link, apply metadata.
//!
//! Order matters for safety: directories and files first, hard links next, symlinks last, so
//! nothing is ever written through a symlink the snapshot supplied.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use drvault_repo::format::{validate_name, Node, NodeKind};
use drvault_repo::{printable, Id, Repository};
use tokio::runtime::Handle;

use crate::fsops::{FileId, MetaKind, Target};
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
    rel: PathBuf,
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
    includes: &[Vec<Vec<u8>>],
) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    // (tree, its components, everything below is included)
    let mut stack = vec![(root, Vec::<Vec<u8>>::new(), includes.is_empty())];
    let mut expansion = drvault_repo::expansion::Expansion::default();
    while let Some((tree_id, base, all)) = stack.pop() {
        let tree = rt.block_on(repo.load_tree(&tree_id))?;
        expansion.visit(&tree_id, drvault_repo::expansion::weight(&tree))?;
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
            let rel = join(&comps);
            let key = comps.join(&b'/');
            if let Some(sub) = node.subtree {
                stack.push((sub, comps, subtree_all));
            }
            out.push(Entry { rel, key, node });
        }
    }
    Ok(out)
}

/// Joins validated snapshot components into a relative path.
fn join(comps: &[Vec<u8>]) -> PathBuf {
    comps.iter().map(|c| OsStr::from_bytes(c)).collect()
}

/// A regular file of the restore: where it is, what it is, what it holds.
pub(crate) struct RestoredFile {
    pub rel: PathBuf,
    pub id: FileId,
    pub content: Vec<Id>,
}

/// Restores the tree `root` into `opts.target`.
pub fn restore(
    rt: &Handle,
    repo: Arc<Repository>,
    root: Id,
    opts: &RestoreOptions,
) -> Result<RestoreStats> {
    let mut stats = RestoreStats::default();
    let target = Arc::new(Target::open(&opts.target)?);
    crate::hwm("start");
    let entries = collect(rt, &repo, root, &opts.includes)?;
    crate::hwm("collected");
    let as_root = rustix::process::geteuid().is_root();
    let shown = |e: &Entry| printable::path(&target.display(&e.rel));
    // What each entry is once created: checked again at every later open.
    let ids: Vec<OnceLock<FileId>> = entries.iter().map(|_| OnceLock::new()).collect();

    // Paths of files that hard links in this restore point to.
    let link_sources: HashSet<&[u8]> = entries
        .iter()
        .filter(|e| e.node.kind == NodeKind::Hardlink)
        .map(|e| e.node.target.as_slice())
        .collect();
    let mut link_source_entry: HashMap<&[u8], usize> = HashMap::new();
    let mut later: Vec<usize> = Vec::new();
    // Directories first (sequentially: parents before children), then every file and FIFO
    // created in parallel: each is a few system calls.
    let mut to_create: Vec<usize> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        match e.node.kind {
            NodeKind::Dir => {
                let _ = ids[i].set(target.mkdir(&e.rel)?);
                stats.dirs += 1;
            }
            NodeKind::File => {
                if link_sources.contains(e.key.as_slice()) {
                    link_source_entry.insert(e.key.as_slice(), i);
                }
                stats.files += 1;
                to_create.push(i);
            }
            NodeKind::Fifo => {
                stats.other += 1;
                to_create.push(i);
            }
            NodeKind::Symlink | NodeKind::Hardlink => later.push(i),
            NodeKind::CharDevice | NodeKind::BlockDevice | NodeKind::Socket => {
                stats.skipped += 1;
                stats
                    .warnings
                    .push(format!("{}: device node or socket not restored", shown(e)));
            }
        }
    }
    drvault_repo::failpoint::hit_blocking("restore.after-dirs");
    for_each_parallel(&to_create, |&i| {
        let e = &entries[i];
        let id = if e.node.kind == NodeKind::Fifo {
            target.mkfifo(&e.rel)?
        } else {
            target.create_file(&e.rel, e.node.size)?
        };
        let _ = ids[i].set(id);
        Ok(Vec::new())
    })?;
    let created = |i: usize| {
        ids[i]
            .get()
            .copied()
            .ok_or_else(|| Error::Invalid(format!("{} was not created", shown(&entries[i]))))
    };
    let mut files: Vec<RestoredFile> = Vec::with_capacity(stats.files as usize);
    for &i in &to_create {
        if entries[i].node.kind == NodeKind::File {
            files.push(RestoredFile {
                rel: entries[i].rel.clone(),
                id: created(i)?,
                content: entries[i].node.content.clone(),
            });
        }
    }
    crate::hwm("created");
    drvault_repo::failpoint::hit_blocking("restore.before-contents");
    stats.bytes =
        crate::fetch::write_contents(rt, repo.clone(), target.clone(), &files, opts.parallel)?;
    crate::hwm("written");

    for &i in &later {
        let e = &entries[i];
        match e.node.kind {
            NodeKind::Hardlink => {
                let source_comps: Vec<&[u8]> = e.node.target.split(|&b| b == b'/').collect();
                if source_comps.iter().any(|c| validate_name(c).is_err()) {
                    return Err(Error::Repo(drvault_repo::Error::Integrity {
                        object: format!("hard link {}", shown(e)),
                        reason: "link source is not a path inside the snapshot".into(),
                    }));
                }
                match link_source_entry.get(e.node.target.as_slice()) {
                    Some(&src) => {
                        target.hard_link(&entries[src].rel, created(src)?, &e.rel)?;
                        stats.hardlinks += 1;
                    }
                    None => stats.warnings.push(format!(
                        "{}: hard link to {} not restored (its source is not part of this restore)",
                        shown(e),
                        printable::bytes(&e.node.target)
                    )),
                }
            }
            _ => {
                let _ = ids[i].set(target.symlink(&e.rel, &e.node.target)?);
                stats.symlinks += 1;
            }
        }
    }

    // Metadata: everything but directories, then directories deepest first (their mtimes and
    // read-only modes must come after everything inside them is written).
    let with_metadata: Vec<usize> = (0..entries.len())
        .filter(|&i| {
            matches!(
                entries[i].node.kind,
                NodeKind::File | NodeKind::Fifo | NodeKind::Symlink
            )
        })
        .collect();
    drvault_repo::failpoint::hit_blocking("restore.before-metadata");
    let warnings = for_each_parallel(&with_metadata, |&i| {
        let e = &entries[i];
        let kind = if e.node.kind == NodeKind::Symlink {
            MetaKind::Symlink
        } else {
            MetaKind::Other
        };
        target.apply_metadata(&e.rel, created(i)?, &e.node, kind, as_root)
    })?;
    stats.warnings.extend(warnings);
    if opts.verify {
        stats.verified_files = crate::verify::verify_files(&repo, &target, &files)?;
    }
    drvault_repo::failpoint::hit_blocking("restore.before-dir-metadata");
    for (i, e) in entries.iter().enumerate().rev() {
        if e.node.kind == NodeKind::Dir {
            let w = target.apply_metadata(&e.rel, created(i)?, &e.node, MetaKind::Dir, as_root)?;
            stats.warnings.extend(w);
        }
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
