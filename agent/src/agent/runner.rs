//! Runs one job on the calling (plain) thread: the same code paths as the commands, each run
//! with a fresh context from the configuration the agent holds, recorded in the job history.

use anyhow::{Context as _, Result};
use clap::Parser;
use drvault_repo::sync::{survey, TargetStatus};

use super::history::{Figures, History, Run, RunResult};
use super::hooks::{self, Outcome, Phase};
use drvault_backup::{BackupRequest, Controls, Parent, Source, StreamSource};

use crate::cli::{Cli, Global};
use crate::config::{Config, Job, JobKind};
use crate::context::Context;
use crate::exit::Exit;

/// What the agent learns from one run.
pub struct Finished {
    pub run: Run,
    /// A fresh survey of the targets, when one was asked for and could be made.
    pub targets: Option<Vec<TargetStatus>>,
}

/// Runs `job` and records it in the history under `state_dir`.
pub fn run(g: &Global, config: &Config, job: &Job, survey_targets: bool) -> Finished {
    let name = &job.config.name;
    let kind = job.config.kind.as_str();
    let started = super::history::now();
    let history = History::open(&crate::context::state_dir(g));
    let ctx = Context::with_config(g, Some(config.clone()));
    let repository = ctx
        .as_ref()
        .map(|c| c.repo_location.clone())
        .unwrap_or_default();
    let id = match &history {
        Ok(h) => h
            .start(name, kind, started, &repository)
            .map_err(|e| tracing::error!("{e:#}"))
            .ok(),
        Err(e) => {
            tracing::error!("{e:#}; the run is not recorded");
            None
        }
    };
    tracing::info!(job = %name, kind, "job started");
    let scratch = crate::context::state_dir(g).join("hooks");
    let mut hook_runs = hooks::run(job, Phase::Before, None, &scratch);
    let (mut result, mut message, figures) =
        if let Some(failed) = hook_runs.iter().find(|h| !h.passed()) {
            let why = format!("{}; the job did not run", failed.failure());
            (RunResult::Failed, why, Figures::default())
        } else {
            match &ctx {
                Ok(ctx) => match execute(ctx, g, job) {
                    Ok(done) => done,
                    Err(e) if crate::stop::is_interrupted(&e) => {
                        (RunResult::Interrupted, format!("{e:#}"), Figures::default())
                    }
                    Err(e) => (RunResult::Failed, format!("{e:#}"), Figures::default()),
                },
                Err(e) => (RunResult::Failed, format!("{e:#}"), Figures::default()),
            }
        };
    // `after` releases what `before` took (a frozen database, a file-system snapshot): it runs
    // whatever happened, first. A failing one fails the run (the snapshot stays recorded).
    let outcome = Outcome {
        result,
        message: &message,
        snapshot: figures.snapshot.as_deref(),
    };
    let after = hooks::run(job, Phase::After, Some(&outcome), &scratch);
    if let Some(failed) = after.iter().find(|h| !h.passed()) {
        if matches!(result, RunResult::Success | RunResult::Partial) {
            result = RunResult::Failed;
        }
        message = [message.as_str(), &failed.failure()]
            .iter()
            .filter(|m| !m.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("; ");
    }
    hook_runs.extend(after);
    // A run the agent's shutdown interrupted did not fail: `after` tells it apart.
    if result == RunResult::Failed {
        let outcome = Outcome {
            result,
            message: &message,
            snapshot: figures.snapshot.as_deref(),
        };
        hook_runs.extend(hooks::run(job, Phase::OnFailure, Some(&outcome), &scratch));
    }
    let seconds = (super::history::now() - started).max(0.0);
    let snapshot = figures
        .snapshot
        .as_deref()
        .map(|s| format!(", snapshot {}", &s[..8.min(s.len())]))
        .unwrap_or_default();
    match result {
        RunResult::Success => tracing::info!(
            job = %name, kind, seconds, "job succeeded in {seconds:.1} s{snapshot}"
        ),
        RunResult::Partial => tracing::warn!(
            job = %name, kind, seconds, "job partly succeeded in {seconds:.1} s{snapshot}: {message}"
        ),
        _ => tracing::error!(
            job = %name, kind, seconds, result = ?result,
            "job did not succeed ({}) after {seconds:.1} s: {message}", result.as_str()
        ),
    }
    if let (Ok(h), Some(id)) = (&history, id) {
        if let Err(e) = h
            .finish(id, result, &message, &figures)
            .and_then(|()| h.record_hooks(id, &hook_runs))
        {
            tracing::error!("{e:#}");
        }
    }
    let targets = match (&ctx, survey_targets) {
        (Ok(ctx), true) => ctx
            .store(false)
            .map(|store| ctx.rt.block_on(survey(&store)).0)
            .map_err(|e| tracing::warn!("target survey failed: {e:#}"))
            .ok(),
        _ => None,
    };
    Finished {
        run: Run {
            id: id.unwrap_or_default(),
            job: name.clone(),
            kind: kind.to_string(),
            host: drvault_repo::host::hostname(),
            started,
            ended: Some(super::history::now()),
            result,
            message,
            repository: Some(repository),
            figures,
            hooks: hook_runs,
        },
        targets,
    }
}

fn execute(ctx: &Context, g: &Global, job: &Job) -> Result<(RunResult, String, Figures)> {
    let j = &job.config;
    if j.kind == JobKind::Backup {
        let source = if j.stdin_command.is_empty() {
            Source::Paths {
                paths: j.paths.iter().map(Into::into).collect(),
                excludes: j.exclude.clone(),
                one_file_system: j.one_file_system,
            }
        } else {
            Source::Stream {
                source: StreamSource::Command {
                    argv: j.stdin_command.iter().map(Into::into).collect(),
                    env: j.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                },
                filename: j.stdin_filename.clone().unwrap_or_else(|| "stdin".into()),
            }
        };
        let req = BackupRequest {
            source,
            tags: j.tags.clone(),
            parent: Parent::Latest,
            host: j.host.clone().unwrap_or_else(drvault_repo::host::hostname),
        };
        let mut controls = Controls {
            cancel: crate::stop::token(),
            progress: None,
        };
        let done = ctx.backup(g, &req, &mut controls)?;
        let figures = crate::commands::backup::outcome_figures(&done);
        let s = &done.snapshot.summary;
        let mut notes = Vec::new();
        if s.errors > 0 {
            notes.push(format!("{} entries could not be read", s.errors));
        }
        for (target, n) in &done.owed {
            notes.push(format!("target {target} missed {n} objects"));
        }
        let result = if s.errors > 0 {
            RunResult::Partial
        } else {
            RunResult::Success
        };
        return Ok((result, notes.join("; "), figures));
    }
    let exit = if j.kind == JobKind::Drill {
        let plan = j.plan.as_deref().unwrap_or_default();
        let cli = crate::drill::cli::DrtestCli::try_parse_from(["drtest", "run", "--plan", plan])
            .context("drill job arguments")?;
        crate::drill::dispatch(ctx, g, &cli.command)?
    } else {
        let cli = Cli::try_parse_from(arguments(job)).context("job arguments")?;
        crate::commands::dispatch(ctx, g, &cli.command)?
    };
    Ok(match exit {
        Exit::Ok => (RunResult::Success, String::new(), Figures::default()),
        Exit::Partial => (
            RunResult::Partial,
            "finished with warnings (see the log)".into(),
            Figures::default(),
        ),
        other => (
            RunResult::Failed,
            format!("exit code {}", other as u8),
            Figures::default(),
        ),
    })
}

/// The command line a (non-backup) job corresponds to.
fn arguments(job: &Job) -> Vec<String> {
    let j = &job.config;
    let mut a: Vec<String> = vec!["drvault".into()];
    let opt = |a: &mut Vec<String>, flag: &str, v: Option<String>| {
        if let Some(v) = v {
            a.push(flag.into());
            a.push(v);
        }
    };
    match j.kind {
        JobKind::Forget => {
            a.push("forget".into());
            opt(&mut a, "--keep-last", j.keep_last.map(|n| n.to_string()));
            opt(
                &mut a,
                "--keep-hourly",
                j.keep_hourly.map(|n| n.to_string()),
            );
            opt(&mut a, "--keep-daily", j.keep_daily.map(|n| n.to_string()));
            opt(
                &mut a,
                "--keep-weekly",
                j.keep_weekly.map(|n| n.to_string()),
            );
            opt(
                &mut a,
                "--keep-monthly",
                j.keep_monthly.map(|n| n.to_string()),
            );
            opt(
                &mut a,
                "--keep-yearly",
                j.keep_yearly.map(|n| n.to_string()),
            );
            opt(&mut a, "--keep-within", j.keep_within.clone());
            opt(&mut a, "--host", j.host.clone());
            for t in &j.keep_tags {
                opt(&mut a, "--keep-tag", Some(t.clone()));
            }
        }
        JobKind::Prune => {
            a.push("prune".into());
            opt(&mut a, "--grace", j.grace.clone());
            opt(
                &mut a,
                "--repack-threshold",
                j.repack_threshold.map(|t| t.to_string()),
            );
        }
        JobKind::Check => {
            a.push("check".into());
            opt(
                &mut a,
                "--read-data-subset",
                j.read_data_subset.map(|p| p.to_string()),
            );
        }
        JobKind::Sync => a.push("sync".into()),
        JobKind::Rotate => a.extend(["key", "rotate", "--if-due", "--reencrypt"].map(String::from)),
        JobKind::Backup | JobKind::Drill => {}
    }
    a
}
