//! `drvault jobs`: the agent's job history and success rates (a SOC 2 KPI: the backup success
//! rate over a period).

use std::collections::BTreeMap;

use anyhow::Result;

use crate::cli::{Global, JobsArgs};
use crate::exit::Exit;
use crate::history::{success_rate, History, Run};

pub fn run(g: &Global, a: &JobsArgs) -> Result<Exit> {
    let state_dir = crate::context::state_dir(g);
    let since = match &a.since {
        Some(d) => {
            let since = crate::exit::option_value("--since", crate::duration::parse(d))?;
            crate::history::now() - since.as_secs_f64()
        }
        None => 0.0,
    };
    let history = History::open(&state_dir)?;
    // With --repo, that repository's runs only (the history is per host, not per repository).
    let scope = g.repo.as_deref().map(crate::context::same_location);
    let runs: Vec<Run> = history
        .runs(since)?
        .into_iter()
        .filter(|r| a.job.as_ref().is_none_or(|j| &r.job == j))
        .filter(|r| {
            scope.as_ref().is_none_or(|s| {
                r.repository
                    .as_deref()
                    .map(crate::context::same_location)
                    .as_ref()
                    == Some(s)
            })
        })
        .collect();
    let mut by_job: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for r in &runs {
        by_job.entry(r.job.as_str()).or_default().push(r);
    }
    let backup_rate = success_rate(runs.iter().filter(|r| r.kind == "backup"));
    if g.json {
        let jobs: BTreeMap<&str, serde_json::Value> = by_job
            .iter()
            .map(|(name, rs)| {
                (
                    *name,
                    serde_json::json!({
                        "runs": rs.len(),
                        "success_rate": success_rate(rs.iter().copied()),
                        "last_success": rs.iter().rev().find(|r| r.result == crate::history::RunResult::Success).and_then(|r| r.ended),
                    }),
                )
            })
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "since": since,
                "runs": runs,
                "jobs": jobs,
                "backup_success_rate": backup_rate,
            }))?
        );
        return Ok(Exit::Ok);
    }
    if runs.is_empty() {
        outln!(
            "no job runs recorded in {}",
            state_dir.join("jobs.sqlite").display()
        );
        return Ok(Exit::Ok);
    }
    outln!(
        "{:<20} {:<12} {:<8} {:<25} {:>9}  {:<11} detail",
        "job",
        "result",
        "kind",
        "started (UTC)",
        "seconds",
        "snapshot"
    );
    for r in &runs {
        let started = crate::timefmt::shown((r.started * 1e9) as i64);
        outln!(
            "{:<20} {:<12} {:<8} {:<25} {:>9}  {:<11} {}",
            r.job,
            serde_json::to_value(r.result)?.as_str().unwrap_or_default(),
            r.kind,
            started,
            r.duration()
                .map(|d| format!("{d:.1}"))
                .unwrap_or_else(|| "-".into()),
            r.figures
                .snapshot
                .as_deref()
                .map(|s| &s[..s.len().min(8)])
                .unwrap_or("-"),
            r.message
        );
    }
    outln!();
    for (name, rs) in &by_job {
        let rate = success_rate(rs.iter().copied());
        outln!(
            "{name}: {} runs, success rate {}",
            rs.len(),
            rate.map(|r| format!("{:.2}%", r * 100.0))
                .unwrap_or_else(|| "-".into())
        );
    }
    if let Some(r) = backup_rate {
        outln!("backup success rate: {:.2}%", r * 100.0);
    }
    Ok(Exit::Ok)
}
