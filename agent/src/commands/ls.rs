use anyhow::{bail, Result};
use drvault_repo::format::NodeKind;

use crate::cli::{Global, LsArgs};
use crate::context::Context;
use crate::exit::Exit;

use super::printable;

pub fn run(ctx: &Context, g: &Global, a: &LsArgs) -> Result<Exit> {
    let repo = ctx.open(g)?;
    let snaps = ctx.rt.block_on(repo.snapshots())?;
    let spec = drvault_restore::SnapshotSpec {
        id: Some(a.snapshot.clone()),
        ..Default::default()
    };
    let (_, snap) = drvault_restore::select_snapshot(&snaps, &spec)?;
    let prefix = a
        .path
        .as_deref()
        .map(super::restore::components)
        .unwrap_or_default();
    // Descend to the starting directory.
    let mut tree = snap.tree;
    for c in &prefix {
        let t = ctx.rt.block_on(repo.load_tree(&tree))?;
        match t.entries.into_iter().find(|n| n.name == *c) {
            Some(n) if n.kind == NodeKind::Dir => tree = n.subtree.unwrap_or(tree),
            _ => bail!("{} is not a directory in this snapshot", printable(c)),
        }
    }
    let base: String = prefix
        .iter()
        .map(|c| format!("/{}", printable(c)))
        .collect();
    let mut stack = vec![(tree, base)];
    let mut expansion = drvault_repo::expansion::Expansion::default();
    while let Some((id, dir)) = stack.pop() {
        if crate::output::closed() {
            break;
        }
        let t = ctx.rt.block_on(repo.load_tree(&id))?;
        expansion.visit(&id, drvault_repo::expansion::weight(&t))?;
        for n in t.entries.iter().rev() {
            if let Some(sub) = n.subtree {
                stack.push((sub, format!("{dir}/{}", printable(&n.name))));
            }
        }
        for n in &t.entries {
            let path = format!("{dir}/{}", printable(&n.name));
            if g.json {
                outln!(
                    "{}",
                    serde_json::json!({"path": path, "kind": format!("{:?}", n.kind).to_lowercase(), "size": n.size,
                        "mode": format!("{:o}", n.mode), "uid": n.uid, "gid": n.gid,
                        "mtime": chrono::DateTime::from_timestamp_nanos(n.mtime_ns).to_rfc3339()})
                );
            } else {
                let kind = match n.kind {
                    NodeKind::Dir => 'd',
                    NodeKind::Symlink => 'l',
                    NodeKind::Hardlink => 'h',
                    NodeKind::Fifo => 'p',
                    NodeKind::CharDevice => 'c',
                    NodeKind::BlockDevice => 'b',
                    NodeKind::Socket => 's',
                    NodeKind::File => '-',
                };
                let extra = match n.kind {
                    NodeKind::Symlink => format!(" -> {}", printable(&n.target)),
                    NodeKind::Hardlink => format!(" => /{}", printable(&n.target)),
                    _ => String::new(),
                };
                outln!(
                    "{kind} {:04o} {:>6} {:>6} {:>12}  {path}{extra}",
                    n.mode,
                    n.uid,
                    n.gid,
                    n.size
                );
            }
        }
    }
    Ok(Exit::Ok)
}
