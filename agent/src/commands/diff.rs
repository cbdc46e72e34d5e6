//! `drvault diff A B [PATH]`: what changed between two snapshots. Trees are content-addressed,
//! so a subtree with the same ID in both is the same and is not walked: comparing two snapshots
//! of a large, mostly unchanged tree reads only the trees on the paths that changed.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use drvault_repo::format::{Node, NodeKind};
use drvault_repo::{Id, Repository};
use serde::Serialize;

use crate::cli::{DiffArgs, Global};
use crate::context::Context;
use crate::exit::Exit;

use super::printable;

#[derive(Default, Serialize)]
struct Changes {
    added: Vec<String>,
    removed: Vec<String>,
    /// Content differs (or the entry became another kind).
    modified: Vec<String>,
    /// Same content, other owner, mode, times or extended attributes.
    metadata: Vec<String>,
    /// The bound on trees walked (a forged snapshot repeating one subtree everywhere).
    #[serde(skip)]
    expansion: drvault_repo::expansion::Expansion,
}

pub fn run(ctx: &Context, g: &Global, a: &DiffArgs) -> Result<Exit> {
    let repo = ctx.open(g)?;
    let snaps = ctx.rt.block_on(repo.snapshots())?;
    let pick = |id: &str| {
        let spec = super::restore::spec(Some(id.to_string()), None, &a.filter);
        drvault_restore::select_snapshot(&snaps, &spec).map(|(i, s)| (*i, s.tree))
    };
    let (from_id, from_tree) = pick(&a.from)?;
    let (to_id, to_tree) = pick(&a.to)?;
    let comps = a
        .path
        .as_deref()
        .map(crate::context::components)
        .unwrap_or_default();
    let base: String = comps.iter().map(|c| format!("/{}", printable(c))).collect();
    let old = super::dump::lookup(ctx, &repo, from_tree, &comps).ok();
    let new = super::dump::lookup(ctx, &repo, to_tree, &comps).ok();
    if old.is_none() && new.is_none() {
        anyhow::bail!("{base} is in neither snapshot");
    }
    let mut changes = Changes::default();
    compare(ctx, &repo, &base, old.as_ref(), new.as_ref(), &mut changes)
        .context("comparing the snapshots")?;
    if g.json {
        let mut v = serde_json::to_value(&changes)?;
        v["from"] = from_id.to_hex().into();
        v["to"] = to_id.to_hex().into();
        outln!("{v}");
    } else {
        for (mark, list) in [
            ("+", &changes.added),
            ("-", &changes.removed),
            ("M", &changes.modified),
            ("U", &changes.metadata),
        ] {
            for p in list {
                outln!("{mark}    {p}");
            }
        }
        outln!(
            "{} to {}: {} added, {} removed, {} modified, {} with other metadata",
            from_id.short(),
            to_id.short(),
            changes.added.len(),
            changes.removed.len(),
            changes.modified.len(),
            changes.metadata.len()
        );
    }
    Ok(Exit::Ok)
}

/// Compares two entries at `path` (either may be absent) and, for directories, what is below.
fn compare(
    ctx: &Context,
    repo: &Repository,
    path: &str,
    old: Option<&Node>,
    new: Option<&Node>,
    out: &mut Changes,
) -> Result<()> {
    let shown = if path.is_empty() { "/" } else { path };
    match (old, new) {
        (None, None) => {}
        (None, Some(n)) => {
            out.added.push(shown.to_string());
            every_below(ctx, repo, path, n, &mut out.added)?;
        }
        (Some(o), None) => {
            out.removed.push(shown.to_string());
            every_below(ctx, repo, path, o, &mut out.removed)?;
        }
        (Some(o), Some(n)) => {
            if o.kind != n.kind || (o.kind != NodeKind::Dir && content_differs(o, n)) {
                out.modified.push(shown.to_string());
            } else if metadata_differs(o, n) && !path.is_empty() {
                out.metadata.push(shown.to_string());
            }
            if o.kind == NodeKind::Dir && n.kind == NodeKind::Dir && o.subtree != n.subtree {
                let old_children = children(ctx, repo, o, &mut out.expansion)?;
                let mut new_children = children(ctx, repo, n, &mut out.expansion)?;
                for (name, oc) in &old_children {
                    let child = format!("{path}/{}", printable(name));
                    compare(ctx, repo, &child, Some(oc), new_children.get(name), out)?;
                    new_children.remove(name);
                }
                for (name, nc) in &new_children {
                    let child = format!("{path}/{}", printable(name));
                    compare(ctx, repo, &child, None, Some(nc), out)?;
                }
            }
        }
    }
    Ok(())
}

fn content_differs(o: &Node, n: &Node) -> bool {
    o.size != n.size || o.content != n.content || o.target != n.target || o.rdev != n.rdev
}

fn metadata_differs(o: &Node, n: &Node) -> bool {
    o.mode != n.mode
        || o.uid != n.uid
        || o.gid != n.gid
        || o.mtime_ns != n.mtime_ns
        || o.xattrs != n.xattrs
}

fn children(
    ctx: &Context,
    repo: &Repository,
    dir: &Node,
    expansion: &mut drvault_repo::expansion::Expansion,
) -> Result<BTreeMap<Vec<u8>, Node>> {
    let Some(tree) = dir.subtree else {
        return Ok(BTreeMap::new());
    };
    let t = ctx.rt.block_on(repo.load_tree(&tree))?;
    expansion.visit(&tree, drvault_repo::expansion::weight(&t))?;
    Ok(t.entries.into_iter().map(|n| (n.name.clone(), n)).collect())
}

/// Every path below a directory that only one snapshot has.
fn every_below(
    ctx: &Context,
    repo: &Repository,
    path: &str,
    node: &Node,
    into: &mut Vec<String>,
) -> Result<()> {
    let mut expansion = drvault_repo::expansion::Expansion::default();
    let mut stack: Vec<(String, Id)> = node
        .subtree
        .filter(|_| node.kind == NodeKind::Dir)
        .map(|t| (path.to_string(), t))
        .into_iter()
        .collect();
    while let Some((dir, tree)) = stack.pop() {
        let t = ctx.rt.block_on(repo.load_tree(&tree))?;
        expansion.visit(&tree, drvault_repo::expansion::weight(&t))?;
        for n in &t.entries {
            let p = format!("{dir}/{}", printable(&n.name));
            if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
                stack.push((p.clone(), sub));
            }
            into.push(p);
        }
    }
    Ok(())
}
