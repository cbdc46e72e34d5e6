use std::os::unix::ffi::OsStrExt;

use anyhow::{Context as _, Result};
use drvault_restore::{RestoreOptions, RestoreStats, SnapshotSpec};

use crate::cli::{Global, OverwriteArg, RestoreArgs, SnapshotFilter};
use crate::context::{components, Context};
use crate::exit::{usage, Exit};
use crate::timefmt::{self, DateMeans};

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
        trust_host: false,
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
    for ex in &a.excludes {
        if ex.is_relative() && ex.components().count() > 1 {
            usage!(
                "--exclude {}: a pattern is a name (`*.log`) or an absolute path \
                 (`/home/*/.cache`)",
                ex.display()
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
    let mut spec = spec(a.snapshot.clone(), at_ns, &a.filter);
    // "latest" and --at pass over doubtful snapshots; one named by ID needs --trust-host.
    spec.trust_host = a.trust_host;
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
        excludes: a.excludes.iter().map(|p| components(p)).collect(),
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
        delete: a.delete,
        dry_run: a.dry_run,
        progress: (!g.quiet && !g.json).then(progress_on_terminal).flatten(),
    };
    let started = std::time::Instant::now();
    let shown_progress = opts.progress.is_some();
    let (stats, damaged) = match drvault_restore::restore(ctx.rt.handle(), repo, (id, snap), &opts)
    {
        Ok(stats) => (stats, false),
        Err(drvault_restore::Error::Damaged(stats)) => (*stats, true),
        Err(e) => return Err(e.into()),
    };
    if shown_progress {
        eprint!("\r\x1b[2K");
    }
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
    } else if a.dry_run {
        for p in &stats.planned {
            outln!("would {:<7} {}", p.action, p.path);
        }
        outln!(
            "dry run of snapshot {} to {}: would write {} ({}), keep {}, delete {}; nothing was changed",
            id.short(),
            a.target.display(),
            super::plural(stats.files - stats.unchanged, "file"),
            super::human(stats.bytes),
            super::plural(stats.unchanged, "file"),
            super::plural(stats.deleted, "entry"),
        );
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
    if stats.deleted > 0 {
        outln!(
            "deleted {} the snapshot does not have (--delete)",
            super::plural(stats.deleted, "entry")
        );
    }
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

/// A one-line display of the bytes written, the rate and the time left, on stderr when it is a
/// terminal; redrawn at most four times a second.
fn progress_on_terminal() -> Option<drvault_restore::ProgressSink> {
    use std::io::{IsTerminal, Write};
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let started = std::time::Instant::now();
    let last = std::sync::Mutex::new(started);
    Some(drvault_restore::ProgressSink(std::sync::Arc::new(
        move |done: u64, total: u64| {
            let Ok(mut last) = last.lock() else { return };
            if last.elapsed() < std::time::Duration::from_millis(250) && done < total {
                return;
            }
            *last = std::time::Instant::now();
            let secs = started.elapsed().as_secs_f64().max(0.001);
            let rate = done as f64 / secs;
            let eta = if rate > 0.0 {
                let left = (total.saturating_sub(done) as f64 / rate) as u64;
                format!("{}:{:02}", left / 60, left % 60)
            } else {
                "-".to_string()
            };
            let percent = (done * 100).checked_div(total).unwrap_or(100);
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r\x1b[2K{} of {} ({percent}%), {}/s, ETA {eta}",
                super::human(done),
                super::human(total),
                super::human(rate as u64)
            );
            let _ = err.flush();
        },
    )))
}
