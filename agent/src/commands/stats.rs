//! `drvault stats [SNAPSHOT]`: how big a snapshot is restored and what it occupies stored
//! (its distinct blobs after deduplication, compression and encryption), or the repository's
//! totals.

use anyhow::Result;
use drvault_repo::format::NodeKind;
use drvault_repo::{Id, IdSet};
use serde::Serialize;

use crate::cli::{Global, StatsArgs};
use crate::context::Context;
use crate::exit::Exit;

#[derive(Debug, Default, Serialize)]
struct Stats {
    snapshots: u64,
    files: u64,
    dirs: u64,
    /// What a restore writes (regular files' content).
    restore_bytes: u64,
    /// Distinct data and tree blobs.
    blobs: u64,
    /// Their size before compression and encryption.
    raw_bytes: u64,
    /// Their size as stored (compressed, sealed), without pack headers.
    stored_bytes: u64,
    packs: u64,
}

pub fn run(ctx: &Context, g: &Global, a: &StatsArgs) -> Result<Exit> {
    let repo = ctx.open(g)?;
    let snaps = ctx.rt.block_on(repo.snapshots())?;
    let mut s = Stats::default();
    let locations = repo.index_entries();
    match &a.snapshot {
        None => {
            s.snapshots = snaps.len() as u64;
            let mut packs = IdSet::default();
            let mut seen = IdSet::default();
            for l in &locations {
                if seen.insert(l.entry.id) {
                    s.blobs += 1;
                    s.raw_bytes += u64::from(l.entry.raw_length);
                    s.stored_bytes += u64::from(l.entry.length);
                }
                packs.insert(l.pack);
            }
            s.packs = packs.len() as u64;
        }
        Some(id) => {
            let spec = super::restore::spec(Some(id.clone()), None, &a.filter);
            let (_, snap) = drvault_restore::select_snapshot(&snaps, &spec)?;
            s.snapshots = 1;
            let by_id: std::collections::HashMap<Id, &drvault_repo::repository::Location> =
                locations.iter().map(|l| (l.entry.id, l)).collect();
            let mut blobs = IdSet::default();
            let mut packs = IdSet::default();
            let mut count = |id: &Id, blobs: &mut IdSet, s: &mut Stats| {
                if blobs.insert(*id) {
                    if let Some(l) = by_id.get(id) {
                        s.blobs += 1;
                        s.raw_bytes += u64::from(l.entry.raw_length);
                        s.stored_bytes += u64::from(l.entry.length);
                        packs.insert(l.pack);
                    }
                }
            };
            let mut expansion = drvault_repo::expansion::Expansion::default();
            let mut stack = vec![snap.tree];
            while let Some(tree) = stack.pop() {
                count(&tree, &mut blobs, &mut s);
                let t = ctx.rt.block_on(repo.load_tree(&tree))?;
                expansion.visit(&tree, drvault_repo::expansion::weight(&t))?;
                for n in &t.entries {
                    match n.kind {
                        NodeKind::File => {
                            s.files += 1;
                            s.restore_bytes += n.size;
                            for c in &n.content {
                                count(c, &mut blobs, &mut s);
                            }
                        }
                        NodeKind::Dir => s.dirs += 1,
                        _ => {}
                    }
                    if let Some(sub) = n.subtree {
                        stack.push(sub);
                    }
                }
            }
            s.packs = packs.len() as u64;
        }
    }
    if g.json {
        outln!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        if a.snapshot.is_some() {
            outln!(
                "restore size: {} in {} and {}",
                super::human(s.restore_bytes),
                super::plural(s.files, "file"),
                super::plural(s.dirs, "directory")
            );
        } else {
            outln!("{}", super::plural(s.snapshots, "snapshot"));
        }
        let ratio = if s.stored_bytes > 0 {
            s.raw_bytes as f64 / s.stored_bytes as f64
        } else {
            1.0
        };
        outln!(
            "stored: {} in {} ({} before compression, {ratio:.2}×) across {}",
            super::human(s.stored_bytes),
            super::plural(s.blobs, "distinct blob"),
            super::human(s.raw_bytes),
            super::plural(s.packs, "pack")
        );
    }
    Ok(Exit::Ok)
}
