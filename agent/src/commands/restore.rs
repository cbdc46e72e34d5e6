use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context as _, Result};
use drvault_restore::{RestoreOptions, RestoreStats, SnapshotSpec};

use crate::cli::{Global, OverwriteArg, RestoreArgs, SnapshotFilter};
use crate::context::Context;
use crate::exit::{usage, Exit};
use crate::timefmt::{self, DateMeans};

/// A snapshot path as components ("/etc/ssh" and "etc/ssh" are the same).
pub fn components(p: &Path) -> Vec<Vec<u8>> {
    p.components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        })
        .collect()
}

/// The snapshot selection the filters and an optional ID or time describe.
pub fn spec(id: Option<String>, at_ns: Option<i64>, f: &SnapshotFilter) -> SnapshotSpec {
    SnapshotSpec {
        id,
        at_ns,
        host: f.host.clone(),
        tags: f.tags.clone(),
        paths: f
            .paths
            .iter()
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .collect(),
    }
}

pub fn run(ctx: &Context, g: &Global, a: &RestoreArgs) -> Result<Exit> {
    let at_ns = match &a.at {
        Some(t) => Some(
            timefmt::parse(t, DateMeans::EndOfDay)
                .map_err(|e| crate::exit::UsageError(format!("--at: {e}")))?
                .timestamp_nanos_opt()
                .context("--at is out of range")?,
        ),
        None => None,
    };
    if a.snapshot.is_none() && at_ns.is_none() {
        usage!("name a snapshot (an ID or \"latest\") or give --at TIME");
    }
    for inc in &a.includes {
        if inc.is_relative() {
            usage!(
                "--include {} is relative; snapshot paths are absolute, as `drvault ls` prints \
                 them (e.g. --include /{})",
                inc.display(),
                inc.display()
            );
        }
    }
    // Followed: root may name a symlink to the directory it means (the restore then works
    // beneath what it points to).
    if let Ok(m) = std::fs::metadata(&a.target) {
        if !m.is_dir() {
            usage!(
                "--target {} exists and is not a directory; name a directory to restore into (it \
                 is created when missing)",
                a.target.display()
            );
        }
    }
    let repo = ctx.open(g)?;
    let snaps = ctx.rt.block_on(repo.snapshots())?;
    let spec = spec(a.snapshot.clone(), at_ns, &a.filter);
    let (id, snap) = drvault_restore::select_snapshot(&snaps, &spec)?;
    if !g.quiet && !g.json {
        eprintln!(
            "restoring snapshot {} of {} (host {}) to {}",
            id.short(),
            timefmt::shown(snap.time_ns),
            snap.host,
            a.target.display()
        );
    }
    let opts = RestoreOptions {
        target: a.target.clone(),
        includes: a.includes.iter().map(|p| components(p)).collect(),
        verify: a.verify,
        parallel: std::env::var("DRVAULT_RESTORE_PARALLEL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4),
        overwrite: match a.overwrite {
            OverwriteArg::Always => drvault_restore::Overwrite::Always,
            OverwriteArg::IfChanged => drvault_restore::Overwrite::IfChanged,
            OverwriteArg::Never => drvault_restore::Overwrite::Never,
        },
    };
    let started = std::time::Instant::now();
    let (stats, damaged) = match drvault_restore::restore(ctx.rt.handle(), repo, (id, snap), &opts)
    {
        Ok(stats) => (stats, false),
        Err(drvault_restore::Error::Damaged(stats)) => (*stats, true),
        Err(e) => return Err(e.into()),
    };
    for w in &stats.warnings {
        tracing::warn!("{w}");
    }
    let secs = started.elapsed().as_secs_f64();
    if g.json {
        let mut v = serde_json::to_value(&stats)?;
        v["snapshot_id"] = id.to_hex().into();
        v["seconds"] = secs.into();
        v["complete"] = (!damaged).into();
        outln!("{v}");
    } else if !g.quiet {
        print_summary(&stats, id, a, secs);
    }
    if damaged {
        report_damage(&stats);
        return Ok(Exit::Integrity);
    }
    Ok(Exit::Ok)
}

fn print_summary(stats: &RestoreStats, id: &drvault_repo::Id, a: &RestoreArgs, secs: f64) {
    outln!(
        "restored snapshot {} to {}: {}, {}, {}, {}, {} other, {} in {secs:.2} s",
        id.short(),
        a.target.display(),
        super::plural(stats.files, "file"),
        super::plural(stats.dirs, "directory"),
        super::plural(stats.symlinks, "symlink"),
        super::plural(stats.hardlinks, "hard link"),
        stats.other,
        super::human(stats.bytes)
    );
    if stats.unchanged > 0 {
        outln!(
            "{} already in place kept (--overwrite {})",
            super::plural(stats.unchanged, "file"),
            match a.overwrite {
                OverwriteArg::Never => "never",
                _ => "if-changed: their content is the snapshot's",
            }
        );
    }
    if a.verify {
        outln!(
            "verified {} against the snapshot",
            super::plural(stats.verified_files, "file")
        );
    }
}

/// The damaged files, each with the byte ranges lost, on stderr (they are the error).
fn report_damage(stats: &RestoreStats) {
    let n = stats.damaged.len() as u64;
    eprintln!(
        "drvault: {} NOT restored (everything else was; nothing was written under these names, \
         and a file already there is as it was):",
        super::plural(n, "entry")
    );
    for d in &stats.damaged {
        let ranges: Vec<String> = d
            .ranges
            .iter()
            .map(|(s, e)| format!("bytes {s}..{e}"))
            .collect();
        let ranges = if ranges.is_empty() {
            String::new()
        } else {
            format!(" [{}]", ranges.join(", "))
        };
        eprintln!("  {}{ranges}: {}", d.path, d.reason);
    }
    eprintln!(
        "drvault: run `drvault check --read-data --all-targets` to find every damaged object, \
         `drvault repair` to replace damaged copies from intact targets, then restore these paths \
         again with --include (or from an older snapshot with --at)"
    );
}
