//! Runs one job on the calling (plain) thread: the same code paths as the commands, each run
//! with a fresh context from the configuration the agent holds, recorded in the job history.

use std::panic::{catch_unwind, AssertUnwindSafe};

use anyhow::Result;
use drvault_repo::sync::{survey, TargetStatus};

use crate::history::{Figures, History, Run, RunResult};
use crate::hooks::{self, Outcome, Phase};
use drvault_backup::{BackupRequest, Cancel, Controls, Parent, Source, StreamSource};
use drvault_repo::check::{check, ReadData};
use drvault_repo::lifecycle::{forget_by_policy, ForgetOptions};
use drvault_repo::prune::PruneOptions;
use drvault_repo::retention::Policy;

use crate::cli::Global;
use crate::config::{Config, Job, JobKind};
use crate::context::Context;

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
    let started = crate::history::now();
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
                // A bug in one job fails that run, recorded; the agent and its other jobs go on.
                Ok(ctx) => match catch_unwind(AssertUnwindSafe(|| execute(ctx, g, job))) {
                    Ok(Ok(done)) => done,
                    Ok(Err(e)) if crate::stop::is_interrupted(&e) => {
                        (RunResult::Interrupted, format!("{e:#}"), Figures::default())
                    }
                    Ok(Err(e)) => (RunResult::Failed, format!("{e:#}"), Figures::default()),
                    Err(panic) => (RunResult::Failed, panicked(&*panic), Figures::default()),
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
    let seconds = (crate::history::now() - started).max(0.0);
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
            ended: Some(crate::history::now()),
            result,
            message,
            repository: Some(repository),
            figures,
            hooks: hook_runs,
        },
        targets,
    }
}

/// What a run that panicked records: a bug, named as one.
pub fn panicked(panic: &(dyn std::any::Any + Send)) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!("internal error: the job panicked ({what}); this is a bug in drvault, please report it")
}

impl Finished {
    /// A run whose thread panicked outside the job itself (the history could not record it).
    pub fn after_panic(job: &Job, panic: &(dyn std::any::Any + Send)) -> Self {
        let now = crate::history::now();
        Finished {
            run: Run {
                id: 0,
                job: job.config.name.clone(),
                kind: job.config.kind.as_str().to_string(),
                host: drvault_repo::host::hostname(),
                started: now,
                ended: Some(now),
                result: RunResult::Failed,
                message: panicked(panic),
                repository: None,
                figures: Figures::default(),
                hooks: Vec::new(),
            },
            targets: None,
        }
    }
}

fn execute(ctx: &Context, g: &Global, job: &Job) -> Result<(RunResult, String, Figures)> {
    drvault_repo::failpoint::hit_blocking("job.execute");
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
        let done = ctx.backup(g, &req, &mut controls, None)?;
        let figures = Figures::of_backup(&done);
        let s = &done.snapshot.summary;
        let mut notes = Vec::new();
        if s.errors > 0 {
            notes.push(format!("{} entries could not be read", s.errors));
        }
        for (target, n) in &done.owed {
            notes.push(format!("target {target} missed {n} objects"));
        }
        if let Some(why) = &done.unrecorded {
            notes.push(format!("the audit log did not record the commit ({why})"));
        }
        let result = if s.errors > 0 || done.unrecorded.is_some() {
            RunResult::Partial
        } else {
            RunResult::Success
        };
        return Ok((result, notes.join("; "), figures));
    }
    let cancel = crate::stop::token();
    let (result, message) = match j.kind {
        JobKind::Backup => unreachable!("handled above"),
        JobKind::Forget => forget(ctx, g, j)?,
        JobKind::Prune => {
            let repo = ctx.open(g)?;
            let opts = PruneOptions {
                grace: crate::duration::parse(j.grace.as_deref().unwrap_or("1h"))?,
                repack_threshold: j.repack_threshold.unwrap_or(0.2),
                dry_run: false,
                cancel,
            };
            let r = ctx.rt.block_on(drvault_repo::prune::prune(&repo, &opts))?;
            let message = format!(
                "marked {} packs, deleted {} packs ({} bytes freed), {} marks pending",
                r.packs_marked,
                r.packs_deleted,
                r.bytes_freed,
                r.marks_pending.len()
            );
            (RunResult::Success, message)
        }
        JobKind::Check => {
            let repo = ctx.open_without_index(g)?;
            let read = j.read_data_subset.map_or(ReadData::None, ReadData::Subset);
            let r = ctx.rt.block_on(check(repo, read, &cancel))?;
            for w in &r.warnings {
                tracing::warn!("check: {w}");
            }
            for e in &r.errors {
                tracing::error!("check: {e}");
            }
            match r.errors.first() {
                Some(first) => (
                    RunResult::Failed,
                    format!("{} errors, the first: {first}", r.errors.len()),
                ),
                None => (
                    RunResult::Success,
                    format!(
                        "{} snapshots, {} blobs in {} packs ({} read): no errors",
                        r.snapshots, r.blobs, r.packs, r.packs_read
                    ),
                ),
            }
        }
        JobKind::Sync => {
            let r = ctx.sync_targets()?;
            match r.failed.first() {
                Some(first) => (
                    RunResult::Failed,
                    format!("{} objects not healed, the first: {first}", r.failed.len()),
                ),
                None => (RunResult::Success, format!("{} objects copied", r.copied)),
            }
        }
        JobKind::Rotate => rotate(ctx, g, &cancel)?,
        JobKind::Drill => {
            let plan = j.plan.as_deref().unwrap_or_default();
            let done = crate::drill::run_drill(ctx, g, plan, &[], false)?;
            match (&done.record.passed, &done.recorded) {
                (true, Ok(seq)) => (
                    RunResult::Success,
                    format!("passed; evidence in audit entry {seq}"),
                ),
                (true, Err(e)) => (
                    RunResult::Failed,
                    format!("passed, but its evidence could not be recorded: {e}"),
                ),
                (false, _) => (RunResult::Failed, format!("failed: {}", done.record.reason)),
            }
        }
    };
    Ok((result, message, Figures::default()))
}

/// A forget job: the job's policy over the snapshots of its host (all hosts without one).
fn forget(ctx: &Context, g: &Global, j: &crate::config::JobConfig) -> Result<(RunResult, String)> {
    let policy = Policy {
        last: j.keep_last,
        hourly: j.keep_hourly,
        daily: j.keep_daily,
        weekly: j.keep_weekly,
        monthly: j.keep_monthly,
        yearly: j.keep_yearly,
        within: j
            .keep_within
            .as_deref()
            .map(crate::duration::parse)
            .transpose()?,
        tags: j.keep_tags.clone(),
    };
    let repo = ctx.open(g)?;
    let selected: Vec<_> = ctx
        .rt
        .block_on(repo.snapshots())?
        .into_iter()
        .filter(|(_, s)| j.host.as_ref().is_none_or(|h| s.host == *h))
        .collect();
    let opts = ForgetOptions {
        policy,
        allow_empty: false,
        dry_run: false,
    };
    let r = ctx.rt.block_on(forget_by_policy(&repo, &selected, &opts))?;
    if !r.emptied.is_empty() {
        return Ok((
            RunResult::Failed,
            format!(
                "the policy keeps no snapshot of {}; nothing was removed",
                r.emptied.join("; ")
            ),
        ));
    }
    Ok((
        RunResult::Success,
        format!(
            "removed {} snapshots, kept {}",
            r.removed.len(),
            r.decisions.len() - r.removed.len()
        ),
    ))
}

/// A rotation job: a new data-key epoch when the policy says one is due, then re-encryption of
/// what older epochs sealed (which also finishes an earlier, interrupted one).
fn rotate(ctx: &Context, g: &Global, cancel: &Cancel) -> Result<(RunResult, String)> {
    let repo = ctx.open(g)?;
    let c = ctx.rt.block_on(drvault_repo::keys::rotation_due(
        &repo,
        &ctx.rotation,
        chrono::Utc::now().timestamp(),
    ))?;
    if !c.due {
        return Ok((
            RunResult::Success,
            format!(
                "not due: epoch {} is {} days old and seals {} blobs",
                c.epoch, c.age_days, c.blobs
            ),
        ));
    }
    let epoch = ctx.rt.block_on(drvault_repo::keys::rotate_epoch(&repo))?;
    // Opened again to seal under the new epoch.
    let repo = ctx.open(g)?;
    let r = ctx
        .rt
        .block_on(drvault_repo::keys::reencrypt(&repo, &|_| {}, cancel))?;
    let message = format!(
        "epoch {epoch} is active; rewrote {} packs, retired epochs {:?}",
        r.packs_rewritten, r.retired
    );
    if r.not_retired.is_empty() {
        Ok((RunResult::Success, message))
    } else {
        Ok((
            RunResult::Partial,
            format!("{message}; not retired: {}", r.not_retired.join("; ")),
        ))
    }
}
