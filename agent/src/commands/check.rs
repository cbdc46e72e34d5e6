use anyhow::Result;
use drvault_repo::check::{check, ReadData};
use drvault_repo::replicas::{check_copies, ReplicaReport};

use crate::cli::{CheckArgs, Global};
use crate::context::Context;
use crate::exit::Exit;

pub fn run(ctx: &Context, g: &Global, a: &CheckArgs) -> Result<Exit> {
    let copies = if a.all_targets || a.no_key {
        let store = ctx.store(false)?;
        let report = ctx.rt.block_on(check_copies(&store, a.read_data))?;
        if !g.json {
            print_copies(&report);
        }
        Some(report)
    } else {
        None
    };
    let copies_exit = match &copies {
        Some(r) if r.has_damage() => Exit::Integrity,
        Some(r) if !r.is_clean() => Exit::Partial,
        _ => Exit::Ok,
    };
    if a.no_key {
        if g.json {
            outln!("{}", serde_json::json!({ "copies": copies }));
        }
        return Ok(copies_exit);
    }
    // check reads the index itself, after noting the maintenance lease.
    let repo = ctx.open_without_index(g)?;
    // After the passphrase prompt: Ctrl-C at the prompt ends the process at once.
    crate::stop::on_signals(&ctx.rt);
    let read = match (a.read_data, a.read_data_subset) {
        (true, _) => ReadData::All,
        (false, Some(p)) => ReadData::Subset(p),
        _ => ReadData::None,
    };
    let locked_until = match &a.locked_until {
        Some(t) => Some(crate::exit::option_value(
            "--locked-until",
            locked_until(t),
        )?),
        None => None,
    };
    let store = repo.store().clone();
    let mut report = ctx.rt.block_on(check(repo, read, &crate::stop::token()))?;
    if let Some(at_least) = locked_until {
        report.add(
            ctx.rt
                .block_on(drvault_repo::check::lock_findings(&store, at_least))?,
        );
    }
    if g.json && copies.is_some() {
        outln!(
            "{}",
            serde_json::json!({ "copies": copies, "check": report })
        );
    } else if g.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        for e in &report.errors {
            eprintln!("error: {e}");
        }
        outln!(
            "checked {} snapshots, {} trees, {} blobs in {} packs ({} packs read): {}",
            report.snapshots,
            report.trees,
            report.blobs,
            report.packs,
            report.packs_read,
            if report.errors.is_empty() {
                "no errors".to_string()
            } else {
                format!("{} errors", report.errors.len())
            }
        );
    }
    Ok(if !report.errors.is_empty() {
        Exit::Integrity
    } else {
        copies_exit
    })
}

/// Names at most this many objects per problem in text output (--json lists all).
const SHOWN: usize = 20;

fn print_copies(r: &ReplicaReport) {
    for t in &r.targets {
        if !t.reachable {
            eprintln!(
                "target {}: UNREACHABLE ({})",
                t.name,
                t.error.as_deref().unwrap_or("no answer")
            );
            continue;
        }
        outln!(
            "target {}: {} objects, {} missing, {} damaged, {} unreadable",
            t.name,
            t.objects,
            t.missing.len(),
            t.corrupt.len(),
            t.unreadable.len()
        );
        for (what, list) in [
            ("missing", &t.missing),
            ("damaged", &t.corrupt),
            ("unreadable", &t.unreadable),
        ] {
            for n in list.iter().take(SHOWN) {
                eprintln!("  {what} on {}: {n}", t.name);
            }
            if list.len() > SHOWN {
                eprintln!("  ... and {} more {what} on {}", list.len() - SHOWN, t.name);
            }
        }
    }
    for n in r.lost.iter().take(SHOWN) {
        eprintln!("error: no target holds an intact copy of {n}");
    }
    for n in &r.audit_conflicts {
        eprintln!(
            "error: {n} differs between targets: the audit log forked (two records under one \
             number); both are kept, see docs/OPERATIONS.md"
        );
    }
    let verdict = if r.is_clean() {
        "every target holds an intact copy of every object".to_string()
    } else if r.has_damage() {
        "damaged copies found: run `drvault repair`".to_string()
    } else {
        "some targets lack objects: run `drvault sync`".to_string()
    };
    outln!(
        "compared {} objects across {} targets{}: {verdict}",
        r.objects,
        r.targets.len(),
        if r.read_data {
            ", every copy read"
        } else {
            " (lists and sizes)"
        }
    );
}

/// `--locked-until`: a time, a date, or a duration from now ("30d").
fn locked_until(text: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(d) = crate::duration::parse(text) {
        return Ok(chrono::Utc::now() + chrono::Duration::from_std(d)?);
    }
    crate::timefmt::parse(text, crate::timefmt::DateMeans::StartOfDay)
}
