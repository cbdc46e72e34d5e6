//! `drvault forget`: apply a retention policy to the snapshots.

use anyhow::Result;
use drvault_repo::lifecycle::{forget_by_policy, forget_snapshots, ForgetOptions};
use drvault_repo::retention::Policy;

use crate::cli::{ForgetArgs, Global};
use crate::context::Context;
use crate::exit::{usage, Exit};

pub fn run(ctx: &Context, g: &Global, a: &ForgetArgs) -> Result<Exit> {
    if !a.snapshots.is_empty() {
        return forget_named(ctx, g, a);
    }
    let policy = Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: crate::exit::option_value(
            "--keep-within",
            a.keep_within
                .as_deref()
                .map(crate::duration::parse)
                .transpose(),
        )?,
        tags: a.keep_tags.clone(),
    };
    if policy.is_empty() {
        usage!(
            "no --keep-* rule and no snapshot ID given: that would remove every snapshot; say \
             what to keep (e.g. --keep-daily 7) or name the snapshots to remove"
        );
    }
    let repo = ctx.open(g)?;
    let snaps = ctx.rt.block_on(repo.snapshots())?;
    let filter = super::restore::spec(None, None, &a.filter);
    let selected: Vec<(drvault_repo::Id, drvault_repo::format::Snapshot)> = snaps
        .into_iter()
        .filter(|(_, s)| filter.admits(s))
        .collect();
    if selected.is_empty() {
        tracing::warn!("no snapshot passes --host, --tag and --path: the policy removes nothing");
    }
    for tag in &a.keep_tags {
        if !selected.iter().any(|(_, s)| s.tags.contains(tag)) {
            tracing::warn!("--keep-tag {tag}: no snapshot has this tag, so it keeps nothing");
        }
    }
    let opts = ForgetOptions {
        policy,
        allow_empty: a.allow_empty,
        dry_run: a.dry_run,
    };
    let report = ctx.rt.block_on(forget_by_policy(&repo, &selected, &opts))?;
    if !a.allow_empty && !report.emptied.is_empty() {
        usage!(
            "this policy keeps no snapshot of {}; nothing was removed. Keep at least one \
             (e.g. --keep-last 1), or add --allow-empty if removing them all is the intent",
            report.emptied.join("; ")
        );
    }
    let (decisions, removed) = (&report.decisions, &report.removed);
    if g.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "dry_run": a.dry_run, "decisions": decisions })
            )?
        );
    } else {
        let mut group = "";
        for d in decisions {
            if d.group != group {
                group = &d.group;
                outln!("{group}:");
            }
            outln!(
                "  {} {}  {}  {}",
                if d.keep { "keep  " } else { "remove" },
                &d.id[..8],
                crate::timefmt::shown_rfc3339(&d.time),
                d.reasons.join(", ")
            );
        }
        outln!(
            "{} {}, kept {}",
            if a.dry_run { "would remove" } else { "removed" },
            super::plural(removed.len() as u64, "snapshot"),
            decisions.len() - removed.len()
        );
    }
    Ok(Exit::Ok)
}

/// `forget ID...`: exactly the named snapshots (each a full ID or a unique prefix), all
/// resolved before any is removed.
fn forget_named(ctx: &Context, g: &Global, a: &ForgetArgs) -> Result<Exit> {
    let rules = a.keep_last.is_some()
        || a.keep_hourly.is_some()
        || a.keep_daily.is_some()
        || a.keep_weekly.is_some()
        || a.keep_monthly.is_some()
        || a.keep_yearly.is_some()
        || a.keep_within.is_some()
        || !a.keep_tags.is_empty();
    if rules {
        usage!("give either snapshot IDs or --keep-* rules, not both");
    }
    let repo = ctx.open(g)?;
    let snaps = ctx.rt.block_on(repo.snapshots())?;
    let mut named: Vec<drvault_repo::Id> = Vec::new();
    for prefix in &a.snapshots {
        let spec = super::restore::spec(Some(prefix.clone()), None, &a.filter);
        if prefix.trim() == "latest" {
            usage!("forget takes snapshot IDs, not \"latest\"; name the snapshot by its ID");
        }
        let (id, _) = drvault_restore::select_snapshot(&snaps, &spec)?;
        if !named.contains(id) {
            named.push(*id);
        }
    }
    if !a.dry_run {
        let doomed: Vec<_> = snaps
            .iter()
            .filter(|(id, _)| named.contains(id))
            .cloned()
            .collect();
        ctx.rt
            .block_on(forget_snapshots(&repo, &doomed, snaps.len() - named.len()))?;
    }
    if g.json {
        outln!(
            "{}",
            serde_json::json!({
                "dry_run": a.dry_run,
                "removed": named.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
            })
        );
    } else {
        for id in &named {
            outln!(
                "{} {}",
                if a.dry_run { "would remove" } else { "removed" },
                id.short()
            );
        }
        outln!(
            "{} {}, kept {}",
            if a.dry_run { "would remove" } else { "removed" },
            super::plural(named.len() as u64, "snapshot"),
            snaps.len() - named.len()
        );
    }
    Ok(Exit::Ok)
}
