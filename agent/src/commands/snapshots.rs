use anyhow::Result;

use crate::cli::Global;
use crate::context::Context;
use crate::exit::Exit;

use super::printable;

pub fn run(ctx: &Context, g: &Global, a: &crate::cli::SnapshotsArgs) -> Result<Exit> {
    let repo = ctx.open(g)?;
    let spec = super::restore::spec(None, None, &a.filter);
    let snaps: Vec<_> = ctx
        .rt
        .block_on(repo.snapshots())?
        .into_iter()
        .filter(|(_, s)| spec.admits(s))
        .collect();
    if g.json {
        let list: Vec<_> = snaps
            .iter()
            .map(|(id, s)| {
                serde_json::json!({
                    "id": id.to_hex(),
                    "short_id": id.short(),
                    "time": crate::timefmt::rfc3339(s.time_ns),
                    "host": s.host,
                    "username": s.username,
                    "paths": s.paths.iter().map(|p| printable(p)).collect::<Vec<_>>(),
                    "tags": s.tags,
                    "parent": s.parent.map(|p| p.to_hex()),
                    "tree": s.tree.to_hex(),
                    "summary": s.summary,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(Exit::Ok);
    }
    outln!(
        "{:<10} {:<26} {:<16} {:<16} paths",
        "id",
        "time (UTC)",
        "host",
        "tags"
    );
    for (id, s) in &snaps {
        let t = crate::timefmt::shown(s.time_ns);
        let paths: Vec<String> = s.paths.iter().map(|p| printable(p)).collect();
        outln!(
            "{:<10} {:<26} {:<16} {:<16} {}",
            id.short(),
            t,
            s.host,
            s.tags.join(","),
            paths.join(" ")
        );
    }
    outln!("{}", super::plural(snaps.len() as u64, "snapshot"));
    Ok(Exit::Ok)
}
