//! A job's hooks: shell commands run before it (`before`), after it whatever happened
//! (`after`, first), and when it failed (`on_failure`; not when the agent's shutdown
//! interrupted it). Enough to freeze a database or take a file-system snapshot before a backup
//! and release it after, and to tell someone when a job fails.
//!
//! Each runs as `sh -c COMMAND` in its own process group, within the job's `hook_timeout`, with
//! the environment drill validations get (a short allowlist, no passphrase, no storage
//! credentials) plus the job's `env` and `DRVAULT_JOB`, `DRVAULT_JOB_KIND`, `DRVAULT_HOOK`; the
//! hooks after the job also get `DRVAULT_JOB_RESULT`, `DRVAULT_JOB_MESSAGE` and, when a snapshot
//! was made, `DRVAULT_SNAPSHOT_ID`. Output (4 KiB) and exit status are kept in the job history.

use crate::config::Job;
use crate::history::RunResult;
pub use crate::hook_run::{HookRun, Phase};
use drvault_drill::validate::{run_shell, Redactor};

/// How the job went, for the hooks that run after it.
pub struct Outcome<'a> {
    pub result: RunResult,
    pub message: &'a str,
    pub snapshot: Option<&'a str>,
}

/// Runs the job's hooks of `phase` in order. `before` hooks stop at the first failure (the job
/// then does not run); the others all run.
/// `scratch` is a directory of drvault's own (under the state directory) for their output.
pub fn run(
    job: &Job,
    phase: Phase,
    outcome: Option<&Outcome<'_>>,
    scratch: &std::path::Path,
) -> Vec<HookRun> {
    let j = &job.config;
    let commands = match phase {
        Phase::Before => &j.before,
        Phase::After => &j.after,
        Phase::OnFailure => &j.on_failure,
    };
    let mut vars: Vec<(String, String)> =
        j.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.push(("DRVAULT_JOB".into(), j.name.clone()));
    vars.push(("DRVAULT_JOB_KIND".into(), j.kind.as_str().into()));
    vars.push(("DRVAULT_HOOK".into(), phase.as_str().into()));
    if let Some(o) = outcome {
        vars.push(("DRVAULT_JOB_RESULT".into(), o.result.as_str().into()));
        vars.push(("DRVAULT_JOB_MESSAGE".into(), o.message.into()));
        if let Some(s) = o.snapshot {
            vars.push(("DRVAULT_SNAPSHOT_ID".into(), s.into()));
        }
    }
    if !commands.is_empty() {
        let _ = std::fs::create_dir_all(scratch);
    }
    // Hooks get no secret, but one may still print a passphrase it reads from a file it can
    // reach: the passphrase drvault holds is redacted from what is kept.
    let mut redactor = Redactor::default();
    if let Ok(p) = std::env::var("DRVAULT_PASSWORD") {
        redactor.add(p.as_bytes());
    }
    let mut runs = Vec::new();
    for command in commands {
        let run = run_shell(command, &vars, job.hook_timeout, scratch, &redactor);
        let hook = HookRun { phase, run };
        let passed = hook.passed();
        if passed {
            tracing::info!(job = %j.name, "{} hook `{}` succeeded", phase.as_str(), hook.run.command);
        } else {
            tracing::error!(job = %j.name, "{}", hook.failure());
        }
        runs.push(hook);
        if !passed && phase == Phase::Before {
            break;
        }
    }
    runs
}
