//! `drvault targets` and `drvault sync`: they need no passphrase, since object names are hashes
//! of their bytes and every copy can be checked without keys.

use anyhow::Result;
use drvault_repo::store::Store;
use drvault_repo::sync::{record_survey, survey};

use crate::cli::Global;
use crate::context::Context;
use crate::exit::Exit;

pub fn run(ctx: &Context, g: &Global) -> Result<Exit> {
    let store = ctx.store(false)?;
    let (statuses, names) = ctx.rt.block_on(survey(&store));
    remember(ctx, &store, &names);
    if g.json {
        outln!("{}", serde_json::to_string_pretty(&statuses)?);
    } else {
        outln!(
            "{:<12} {:<9} {:>9} {:>9} {:>10} {:>6}  location",
            "target",
            "reachable",
            "latency",
            "objects",
            "bytes",
            "owes"
        );
        for s in &statuses {
            outln!(
                "{:<12} {:<9} {:>7.1}ms {:>9} {:>10} {:>6}  {}{}",
                s.name,
                if s.reachable { "yes" } else { "NO" },
                s.latency_ms,
                s.objects,
                super::human(s.bytes),
                s.owes,
                s.location,
                s.error
                    .as_ref()
                    .map(|e| format!("  ({e})"))
                    .unwrap_or_default()
            );
            if let Some(lock) = &s.lock {
                outln!(
                    "{:<12} object lock {lock}; the first lock ends {}{}",
                    "",
                    s.lock_shortest
                        .as_deref()
                        .unwrap_or("(no object is locked)"),
                    if s.unlocked > 0 {
                        format!("; {} objects are not locked", s.unlocked)
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    let degraded = statuses
        .iter()
        .any(|s| !s.reachable || s.owes > 0 || s.unlocked > 0);
    Ok(if degraded { Exit::Partial } else { Exit::Ok })
}

pub fn sync(ctx: &Context, g: &Global) -> Result<Exit> {
    let report = ctx.sync_targets()?;
    if g.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for (t, n) in &report.per_target {
            outln!("{t}: {n} objects copied");
        }
        for f in &report.failed {
            eprintln!("not healed: {f}");
        }
        outln!(
            "copied {} objects ({})",
            report.copied,
            super::human(report.bytes)
        );
    }
    Ok(if report.failed.is_empty() {
        Exit::Ok
    } else {
        Exit::Failure
    })
}

pub fn repair(ctx: &Context, g: &Global) -> Result<Exit> {
    let store = ctx.store(false)?;
    let (before, report) = ctx.rt.block_on(drvault_repo::replicas::repair(&store))?;
    let (_, names) = ctx.rt.block_on(survey(&store));
    remember(ctx, &store, &names);
    if g.json {
        outln!(
            "{}",
            serde_json::json!({ "found": before, "repaired": report })
        );
    } else {
        for (t, names) in &report.replaced {
            for n in names {
                outln!("{t}: replaced damaged copy of {n}");
            }
        }
        for (t, n) in &report.copied {
            outln!("{t}: {n} missing objects copied");
        }
        for f in &report.failed {
            eprintln!("not repaired: {f}");
        }
        let replaced: usize = report.replaced.values().map(Vec::len).sum();
        outln!(
            "read {} objects on {} targets: {replaced} damaged copies replaced, {} missing copies added, {} failed",
            before.objects,
            before.targets.len(),
            report.copied.values().sum::<u64>(),
            report.failed.len()
        );
    }
    Ok(if report.failed.is_empty() {
        Exit::Ok
    } else {
        Exit::Integrity
    })
}

/// Keeps the catalog's record of owed objects in step with what the listings found.
pub(crate) fn remember(
    ctx: &Context,
    store: &Store,
    names: &[Option<std::collections::BTreeSet<String>>],
) {
    if let Err(e) = ctx.rt.block_on(record_survey(store, &ctx.state_dir, names)) {
        tracing::info!("owed objects not recorded in the catalog: {e}");
    }
}
