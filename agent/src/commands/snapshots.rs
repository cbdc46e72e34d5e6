use anyhow::Result;

use crate::cli::Global;
use crate::context::Context;
use crate::exit::Exit;

use super::printable;

pub fn run(ctx: &Context, g: &Global, a: &crate::cli::SnapshotsArgs) -> Result<Exit> {
    let repo = ctx.open(g)?;
    let spec = super::restore::spec(None, None, &a.filter);
    // A host key cannot read the repository's snapshots: it lists what this machine wrote
    // with it, from the local catalog.
    let listed = if let Some(host) = repo.opened_by_host() {
        eprintln!(
            "host key of {}: the snapshots this machine wrote, from its local catalog; the \
             repository's snapshots are listed with a passphrase, key file or recovery key",
            printable(host.as_bytes())
        );
        ctx.rt.block_on(repo.own_snapshots())?
    } else {
        ctx.rt.block_on(repo.snapshots())?
    };
    let snaps: Vec<_> = listed.into_iter().filter(|(_, s)| spec.admits(s)).collect();
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
                    "written_by_host_key": s.writer.as_ref().map(|w| w.host.clone()),
                    "objects": s.stored_as.iter().map(drvault_repo::format::paths::snapshot).collect::<Vec<_>>(),
                    "untrusted": s.untrusted,
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
    let mut doubtful = Vec::new();
    for (id, s) in &snaps {
        let t = crate::timefmt::shown(s.time_ns);
        let paths: Vec<String> = s.paths.iter().map(|p| printable(p)).collect();
        let mut shown_id = id.short();
        if let Some(why) = &s.untrusted {
            shown_id.push('!');
            doubtful.push(format!("{}: {}", id.short(), printable(why.as_bytes())));
        }
        outln!(
            "{:<10} {:<26} {:<16} {:<16} {}",
            shown_id,
            t,
            // What a host key wrote is shown, never interpreted (no terminal escapes).
            printable(s.host.as_bytes()),
            printable(s.tags.join(",").as_bytes()),
            paths.join(" ")
        );
    }
    outln!("{}", super::plural(snaps.len() as u64, "snapshot"));
    if !doubtful.is_empty() {
        outln!(
            "! not to be trusted: forged or written with another host's key (restore refuses them without --trust-host):\n  {}",
            doubtful.join("\n  ")
        );
        return Ok(Exit::Integrity);
    }
    Ok(Exit::Ok)
}
