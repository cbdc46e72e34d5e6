use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context as _, Result};
use drvault_restore::{RestoreOptions, SnapshotSpec};

use crate::cli::{Global, RestoreArgs};
use crate::context::Context;
use crate::exit::Exit;

/// A snapshot path as components ("/etc/ssh" and "etc/ssh" are the same).
pub fn components(p: &Path) -> Vec<Vec<u8>> {
    p.components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        })
        .collect()
}

pub fn run(ctx: &Context, g: &Global, a: &RestoreArgs) -> Result<Exit> {
    let at_ns = match &a.at {
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .with_context(|| {
                    format!("--at {t:?} is not an RFC 3339 time such as 2026-11-24T03:00:00Z")
                })?
                .timestamp_nanos_opt()
                .context("--at is out of range")?,
        ),
        None => None,
    };
    if a.snapshot.is_none() && at_ns.is_none() {
        anyhow::bail!("name a snapshot (an ID or \"latest\") or give --at TIME");
    }
    let repo = ctx.open(g)?;
    let snaps = ctx.rt.block_on(repo.snapshots())?;
    let spec = SnapshotSpec {
        id: a.snapshot.clone(),
        at_ns,
        host: a.host.clone(),
    };
    let (id, snap) = drvault_restore::select_snapshot(&snaps, &spec)?;
    let opts = RestoreOptions {
        target: a.target.clone(),
        includes: a.includes.iter().map(|p| components(p)).collect(),
        verify: a.verify,
        parallel: std::env::var("DRVAULT_RESTORE_PARALLEL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4),
    };
    let started = std::time::Instant::now();
    let stats = drvault_restore::restore(ctx.rt.handle(), repo, snap.tree, &opts)?;
    for w in &stats.warnings {
        tracing::warn!("{w}");
    }
    let secs = started.elapsed().as_secs_f64();
    if g.json {
        let mut v = serde_json::to_value(&stats)?;
        v["snapshot_id"] = id.to_hex().into();
        v["seconds"] = secs.into();
        outln!("{v}");
    } else if !g.quiet {
        outln!(
            "restored snapshot {} to {}: {} files, {} directories, {} symlinks, {} hard links, {} other, {} in {secs:.2} s",
            id.short(),
            a.target.display(),
            stats.files,
            stats.dirs,
            stats.symlinks,
            stats.hardlinks,
            stats.other,
            super::human(stats.bytes)
        );
        if a.verify {
            outln!(
                "verified {} files against the snapshot",
                stats.verified_files
            );
        }
    }
    Ok(Exit::Ok)
}
