//! The entries a restore writes: the snapshot's trees walked once, with the includes and
//! excludes applied, every directory before what it contains; and the regular files among them
//! as the later steps (fetching, verifying, the dry run) see them.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use drvault_repo::format::{Node, NodeKind};
use drvault_repo::{Id, Repository};
use tokio::runtime::Handle;

use crate::Result;

pub(crate) struct Entry {
    /// Path below the target, built from validated components.
    pub rel: PathBuf,
    pub node: Node,
}

impl Entry {
    /// The components joined by '/' (the bytes of `rel`, built from validated names): the key
    /// hard links refer to. Not stored twice: a million entries would hold it twice.
    pub fn key(&self) -> &[u8] {
        self.rel.as_os_str().as_bytes()
    }
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
        if comps.len() >= inc.len() && prefix_matches(inc, comps) {
            return Include::All;
        }
        if inc.len() > comps.len() && prefix_matches(inc, comps) {
            partial = true;
        }
    }
    if partial {
        Include::Partial
    } else {
        Include::No
    }
}

/// True when the first components of `inc` (as many as both have) match `comps`.
pub(crate) fn prefix_matches(inc: &[Vec<u8>], comps: &[Vec<u8>]) -> bool {
    inc.iter()
        .zip(comps)
        .all(|(p, name)| crate::pattern::matches(p, name))
}

/// True when an exclude pattern matches the entry at `comps`.
pub(crate) fn excluded(excludes: &[Vec<Vec<u8>>], comps: &[Vec<u8>]) -> bool {
    excludes.iter().any(|ex| match ex.as_slice() {
        [name] => comps
            .last()
            .is_some_and(|last| crate::pattern::matches(name, last)),
        path => path.len() == comps.len() && prefix_matches(path, comps),
    })
}

/// A path pattern: one shell pattern per component.
pub(crate) type Pattern = Vec<Vec<u8>>;

/// A directory whose listing no target holds intact: its entry, and why.
pub(crate) type LostDir = (usize, String);

/// Lists the entries to restore, every directory before what it contains.
pub(crate) fn collect(
    rt: &Handle,
    repo: &Repository,
    root: Id,
    (includes, excludes): (&[Pattern], &[Pattern]),
    matched: &mut [bool],
) -> Result<Collected> {
    let mut out = Vec::new();
    let mut complete = Vec::new();
    // Directories whose listing no target holds intact: (entry, why). They are not created (an
    // empty directory would look restored); the rest of the snapshot is.
    let mut lost = Vec::new();
    // (tree, its components, everything below is included, the directory's entry)
    let mut stack = vec![(root, Vec::<Vec<u8>>::new(), includes.is_empty(), None)];
    let mut expansion = drvault_repo::expansion::Expansion::default();
    while let Some((tree_id, base, all, dir)) = stack.pop() {
        let tree = match (rt.block_on(repo.load_tree(&tree_id)), dir) {
            (Ok(t), _) => t,
            (Err(e), Some(i)) if crate::error::is_damage(&e) => {
                lost.push((
                    i,
                    format!("its listing (tree {tree_id}) cannot be read: {e}"),
                ));
                continue;
            }
            (Err(e), _) => return Err(e.into()),
        };
        expansion.visit(&tree_id, drvault_repo::expansion::weight(&tree))?;
        if all {
            complete.push(base.clone());
        }
        for mut node in tree.entries {
            let mut comps = base.clone();
            comps.push(std::mem::take(&mut node.name));
            let inc = if all {
                Include::All
            } else {
                included(includes, &comps)
            };
            if excluded(excludes, &comps) {
                continue;
            }
            let subtree_all = match inc {
                Include::No => continue,
                Include::All => true,
                Include::Partial if node.kind == NodeKind::Dir => false,
                Include::Partial => continue,
            };
            for (k, inc) in includes.iter().enumerate() {
                if !matched[k] && inc.len() == comps.len() && prefix_matches(inc, &comps) {
                    matched[k] = true;
                }
            }
            let rel = join(&comps);
            if let Some(sub) = node.subtree {
                stack.push((sub, comps, subtree_all, Some(out.len())));
            }
            out.push(Entry { rel, node });
        }
    }
    Ok((out, lost, complete))
}

/// The entries to restore, the directories whose listing is lost, and the directories (by
/// components) restored in full.
pub(crate) type Collected = (Vec<Entry>, Vec<LostDir>, Vec<Vec<Vec<u8>>>);

/// Joins validated snapshot components into a relative path.
fn join(comps: &[Vec<u8>]) -> PathBuf {
    comps.iter().map(|c| OsStr::from_bytes(c)).collect()
}
