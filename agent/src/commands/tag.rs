//! `drvault tag SNAPSHOT... --add T | --remove T | --set T`: a snapshot's tags are part of its
//! sealed object, whose name is the hash of its bytes, so a change writes a new snapshot object
//! (same tree, same time) and then deletes the old one — never the other way round, so a prune
//! running meanwhile sees the tree in use through one or the other.

use anyhow::Result;

use crate::cli::{Global, TagArgs};
use crate::context::Context;
use crate::exit::{usage, Exit};

pub fn run(ctx: &Context, g: &Global, a: &TagArgs) -> Result<Exit> {
    for t in a.add.iter().chain(&a.remove).chain(&a.set) {
        if t.contains(',') || t.chars().any(char::is_control) {
            usage!("tag {t:?}: a tag has no commas or control characters");
        }
    }
    let repo = ctx.open(g)?;
    let snaps = ctx.rt.block_on(repo.snapshots())?;
    let mut chosen = Vec::new();
    for s in &a.snapshots {
        let spec = super::restore::spec(Some(s.clone()), None, &Default::default());
        let (id, snap) = drvault_restore::select_snapshot(&snaps, &spec)?;
        if !chosen.iter().any(|(i, _)| i == id) {
            chosen.push((*id, snap.clone()));
        }
    }
    let mut changed = Vec::new();
    for (old_id, snap) in chosen {
        let mut tags = if a.set.is_empty() {
            snap.tags.clone()
        } else {
            a.set.iter().filter(|t| !t.is_empty()).cloned().collect()
        };
        for t in &a.add {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        tags.retain(|t| !a.remove.contains(t));
        if tags == snap.tags {
            continue;
        }
        let (new_id, new) = ctx
            .rt
            .block_on(drvault_repo::lifecycle::retag(&repo, &old_id, &snap, tags))?;
        changed.push(serde_json::json!({
            "old": old_id.to_hex(), "new": new_id.to_hex(), "tags": new.tags,
        }));
        if !g.json && !g.quiet {
            outln!(
                "snapshot {} is now {} (tags: {})",
                old_id.short(),
                new_id.short(),
                new.tags.join(",")
            );
        }
    }
    if g.json {
        outln!("{}", serde_json::Value::Array(changed));
    } else if changed.is_empty() && !g.quiet {
        outln!("no snapshot's tags changed");
    }
    Ok(Exit::Ok)
}
