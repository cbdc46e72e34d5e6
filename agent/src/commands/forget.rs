//! `drvault forget`: apply a retention policy to the snapshots.

use anyhow::Result;
use drvault_repo::audit;
use drvault_repo::format::paths;
use drvault_repo::retention::{apply, Candidate, Policy};

use crate::cli::{ForgetArgs, Global};
use crate::context::Context;
use crate::exit::Exit;

pub fn run(ctx: &Context, g: &Global, a: &ForgetArgs) -> Result<Exit> {
    let policy = Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: a
            .keep_within
            .as_deref()
            .map(crate::duration::parse)
            .transpose()?,
        tags: a.keep_tags.clone(),
    };
    if policy.is_empty() {
        anyhow::bail!("no --keep-* rule given: that would remove every snapshot; say what to keep");
    }
    let repo = ctx.open(g)?;
    let snaps = ctx.rt.block_on(repo.snapshots())?;
    let candidates: Vec<Candidate> = snaps
        .iter()
        .filter(|(_, s)| a.host.as_ref().is_none_or(|h| &s.host == h))
        .map(|(id, s)| Candidate {
            id: id.to_hex(),
            time: chrono::DateTime::from_timestamp_nanos(s.time_ns),
            group: format!(
                "{} {}",
                s.host,
                s.paths
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            tags: s.tags.clone(),
        })
        .collect();
    let decisions = apply(&policy, &candidates);
    let removed: Vec<&str> = decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.id.as_str())
        .collect();
    if !a.dry_run && !removed.is_empty() {
        ctx.rt
            .block_on(drvault_repo::failpoint::hit("forget.before-delete"));
        for id in &removed {
            ctx.rt
                .block_on(repo.store().delete(&format!("{}{id}", paths::SNAPSHOTS)))?;
        }
        let details = serde_json::json!({
            "removed": removed.iter().map(|id| &id[..8]).collect::<Vec<_>>(),
            "kept": decisions.len() - removed.len(),
        });
        if let Err(e) = ctx
            .rt
            .block_on(audit::append(&repo, "snapshots.forget", details, "ok"))
        {
            tracing::warn!("forget was not recorded in the audit log: {e}");
        }
    }
    if g.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "dry_run": a.dry_run, "decisions": decisions })
            )?
        );
    } else {
        let mut group = "";
        for d in &decisions {
            if d.group != group {
                group = &d.group;
                outln!("{group}:");
            }
            outln!(
                "  {} {}  {}  {}",
                if d.keep { "keep  " } else { "remove" },
                &d.id[..8],
                &d.time,
                d.reasons.join(", ")
            );
        }
        outln!(
            "{} {} snapshots, kept {}",
            if a.dry_run { "would remove" } else { "removed" },
            removed.len(),
            decisions.len() - removed.len()
        );
    }
    Ok(Exit::Ok)
}
