use anyhow::{bail, Result};
use drvault_repo::format::{Node, NodeKind};

use crate::cli::{Global, LsArgs};
use crate::context::Context;
use crate::exit::Exit;
use crate::timefmt;

use super::printable;

pub fn run(ctx: &Context, g: &Global, a: &LsArgs) -> Result<Exit> {
    let repo = ctx.open(g)?;
    let snaps = ctx.rt.block_on(repo.snapshots())?;
    let spec = super::restore::spec(Some(a.snapshot.clone()), None, &a.filter);
    let (snap_id, snap) = drvault_restore::select_snapshot(&snaps, &spec)?;
    let prefix = a
        .path
        .as_deref()
        .map(crate::context::components)
        .unwrap_or_default();
    // Descend to the starting entry.
    let mut tree = snap.tree;
    let mut single: Option<Node> = None;
    for (depth, c) in prefix.iter().enumerate() {
        let t = ctx.rt.block_on(repo.load_tree(&tree))?;
        let so_far: String = prefix[..=depth]
            .iter()
            .map(|c| format!("/{}", printable(c)))
            .collect();
        match t.entries.into_iter().find(|n| n.name == *c) {
            Some(n) if n.kind == NodeKind::Dir => tree = n.subtree.unwrap_or(tree),
            Some(n) if depth + 1 == prefix.len() => single = Some(n),
            Some(_) => bail!(
                "{so_far} is not a directory in snapshot {}",
                snap_id.short()
            ),
            None => {
                let paths: Vec<String> = snap.paths.iter().map(|p| printable(p)).collect();
                bail!(
                    "{so_far} is not in snapshot {}, which holds {}; `drvault ls {} /` lists its top",
                    snap_id.short(),
                    paths.join(", "),
                    snap_id.short()
                )
            }
        }
    }
    let base: String = prefix
        .iter()
        .map(|c| format!("/{}", printable(c)))
        .collect();
    let mut listing = Listing::new(g.json, snap_id);
    if let Some(n) = single {
        // `ls SNAP /etc/hosts`: the file itself.
        listing.entry(&base, &n);
        listing.finish();
        return Ok(Exit::Ok);
    }
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
            listing.entry(&format!("{dir}/{}", printable(&n.name)), n);
        }
    }
    listing.finish();
    Ok(Exit::Ok)
}

/// Text lines as the walk goes, or one JSON document written as it goes (a snapshot of a
/// million files is not held in memory twice).
struct Listing {
    /// `Some(entries so far)` under --json.
    json: Option<u64>,
}

impl Listing {
    fn new(json: bool, snapshot: &drvault_repo::Id) -> Self {
        if json {
            out!("{{\"snapshot_id\":\"{}\",\"entries\":[", snapshot.to_hex());
        }
        Listing {
            json: json.then_some(0),
        }
    }

    fn entry(&mut self, path: &str, n: &Node) {
        let kind_name = format!("{:?}", n.kind).to_lowercase();
        if let Some(count) = &mut self.json {
            let mut v = serde_json::json!({"path": path, "kind": kind_name, "size": n.size,
                "mode": format!("{:o}", n.mode), "uid": n.uid, "gid": n.gid,
                "mtime": timefmt::rfc3339(n.mtime_ns)});
            if matches!(n.kind, NodeKind::Symlink | NodeKind::Hardlink) {
                v["target"] = printable(&n.target).into();
            }
            let sep = if *count == 0 { "" } else { "," };
            *count += 1;
            out!("{sep}\n{v}");
            return;
        }
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
            "{kind} {:04o} {:>6} {:>6} {:>12} {}  {path}{extra}",
            n.mode,
            n.uid,
            n.gid,
            n.size,
            timefmt::shown(n.mtime_ns)
        );
    }

    fn finish(self) {
        if self.json.is_some() {
            outln!("\n]}}");
        }
    }
}
