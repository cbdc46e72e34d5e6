//! `drvault prune`: delete the packs no snapshot uses, in two phases (docs/FORMAT.md §18).

use anyhow::Result;
use drvault_repo::prune::{prune, PruneOptions, PruneReport};

use super::human;
use crate::cli::{Global, PruneArgs};
use crate::context::Context;
use crate::exit::Exit;

pub fn run(ctx: &Context, g: &Global, a: &PruneArgs) -> Result<Exit> {
    let grace = crate::exit::option_value("--grace", crate::duration::parse(&a.grace))?;
    if !(0.0..=1.0).contains(&a.repack_threshold) {
        crate::exit::usage!(
            "--repack-threshold takes a fraction of a pack from 0 to 1, not {}",
            a.repack_threshold
        );
    }
    let repo = ctx.open(g)?;
    crate::stop::on_signals(&ctx.rt);
    let started = std::time::Instant::now();
    let opts = PruneOptions {
        grace,
        repack_threshold: a.repack_threshold,
        dry_run: a.dry_run,
        cancel: crate::stop::token(),
    };
    let r = ctx.rt.block_on(prune(&repo, &opts))?;
    let secs = started.elapsed().as_secs_f64();
    if g.json {
        let mut v = serde_json::to_value(&r)?;
        v["duration_s"] = serde_json::json!(secs);
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else if !g.quiet {
        print(&r, secs);
    }
    Ok(if r.lock_failures.is_empty() {
        Exit::Ok
    } else {
        Exit::Partial
    })
}

fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

fn print(r: &PruneReport, secs: f64) {
    let (mark, delete, free, keep) = if r.dry_run {
        ("would mark", "would delete", "would free", "would keep")
    } else {
        ("marked", "deleted", "freed", "kept")
    };
    outln!(
        "{} {} {}; the repository has {}{}",
        plural(r.snapshots, "snapshot"),
        if r.snapshots == 1 { "uses" } else { "use" },
        plural(r.used_blobs, "blob"),
        plural(r.packs, "pack"),
        if r.dry_run {
            " (dry run: nothing is changed)"
        } else {
            ""
        }
    );
    if r.packs_marked > 0 {
        let mut parts = Vec::new();
        if r.packs_repacked > 0 {
            parts.push(format!(
                "{} repacked first ({} of blobs still in use copied)",
                r.packs_repacked,
                human(r.bytes_repacked)
            ));
        }
        if r.packs_unindexed > 0 {
            parts.push(format!("{} left by interrupted backups", r.packs_unindexed));
        }
        let detail = if parts.is_empty() {
            String::new()
        } else {
            format!(", {}", parts.join(", "))
        };
        let this_mark = r
            .marks_pending
            .iter()
            .find(|m| Some(&m.name) == r.mark.as_ref() || (r.dry_run && m.name.is_empty()));
        let when =
            match this_mark {
                Some(m) if m.waiting_for.is_empty() => {
                    format!("; they are deleted by the first prune after {}", m.ripens)
                }
                Some(m) => format!(
                "; they are deleted by the first prune after {} once the {} running now {} ended",
                m.ripens,
                plural(m.waiting_for.len() as u64, "backup"),
                if m.waiting_for.len() == 1 { "has" } else { "have" }
            ),
                None => String::new(),
            };
        outln!(
            "{mark} {} ({}){detail}{when}",
            plural(r.packs_marked, "pack"),
            human(r.bytes_marked)
        );
    } else {
        outln!("nothing new to mark");
    }
    if !r.marks_swept.is_empty() {
        outln!(
            "{delete} {}, {free} {} ({} swept, {} index objects rewritten)",
            plural(r.packs_deleted, "pack"),
            human(r.bytes_freed),
            plural(r.marks_swept.len() as u64, "mark"),
            r.indexes_rewritten
        );
    }
    if r.locks_renewed > 0 || r.unlocked_versions > 0 {
        outln!(
            "renewed the lock of {} object versions; {} versions without a lock were left alone",
            r.locks_renewed,
            r.unlocked_versions
        );
    }
    for f in &r.lock_failures {
        eprintln!("locks not renewed on {f}: run prune again before half the retention is gone");
    }
    if r.sessions_removed > 0 {
        outln!(
            "removed {} session objects of backups that are over",
            r.sessions_removed
        );
    }
    if r.indexes_consolidated > 0 {
        outln!(
            "merged {} small index objects into full ones",
            r.indexes_consolidated
        );
    }
    if !r.kept_back.is_empty() {
        outln!(
            "{keep} {}: a backup that began before the mark referred to {} (no longer marked)",
            plural(r.kept_back.len() as u64, "marked pack"),
            if r.kept_back.len() == 1 { "it" } else { "them" }
        );
    }
    for m in r
        .marks_pending
        .iter()
        .filter(|m| !m.name.is_empty() && Some(&m.name) != r.mark.as_ref())
    {
        let short = m
            .name
            .rsplit('/')
            .next()
            .map_or("", |id| &id[..id.len().min(8)]);
        let waiting = if m.waiting_for.is_empty() {
            String::new()
        } else {
            format!("; waiting for {}", m.waiting_for.join(", "))
        };
        outln!(
            "pending mark {short}: {} ({}), created {}, ripe after {}{waiting}",
            plural(m.packs, "pack"),
            human(m.bytes),
            m.created,
            m.ripens
        );
    }
    outln!("took {secs:.1} s");
}
