//! `[agent]` and `[[jobs]]`: what `drvault agent` runs, and when.
//!
//! ```toml
//! [agent]
//! metrics_listen = "127.0.0.1:9477"
//!
//! [[jobs]]
//! name = "etc"
//! kind = "backup"
//! paths = ["/etc"]
//! schedule = "0 0 * * * *"      # cron with an optional seconds field
//! randomized_delay = "5m"
//! rpo_objective = "2h"
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::cron::Schedule;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Where the Prometheus metrics endpoint listens (default: no endpoint).
    pub metrics_listen: Option<String>,
    /// Allow a non-loopback `metrics_listen` (the metrics name jobs, targets and sizes).
    #[serde(default)]
    pub allow_remote_metrics: bool,
}

impl AgentSection {
    pub fn metrics_address(&self) -> Result<Option<SocketAddr>> {
        let Some(text) = &self.metrics_listen else {
            return Ok(None);
        };
        let addr: SocketAddr = text.parse().with_context(|| {
            format!(
                "[agent] metrics_listen {text:?} is not an address:port such as \"127.0.0.1:9477\""
            )
        })?;
        if !addr.ip().is_loopback() && !self.allow_remote_metrics {
            bail!(
                "[agent] metrics_listen {addr} is not a loopback address; the metrics describe \
                 your backups, so set allow_remote_metrics = true if it is meant to be reachable"
            );
        }
        Ok(Some(addr))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Backup,
    Forget,
    Prune,
    Check,
    Sync,
    Rotate,
    Drill,
}

impl JobKind {
    /// Maintenance jobs read the whole repository as one consistent state (check, drills) or
    /// change what others read (forget, prune, sync, rotate): the agent runs them one at a time.
    /// Backups only add objects and run alongside anything.
    pub fn is_maintenance(self) -> bool {
        self != JobKind::Backup
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Forget => "forget",
            JobKind::Prune => "prune",
            JobKind::Check => "check",
            JobKind::Sync => "sync",
            JobKind::Rotate => "rotate",
            JobKind::Drill => "drill",
        }
    }
}

/// One `[[jobs]]` entry. The fields after `randomized_delay` belong to particular kinds; a
/// field given to a kind that does not use it is refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub name: String,
    pub kind: JobKind,
    pub schedule: String,
    /// Each run starts after a random delay up to this long (spreads a fleet's load).
    pub randomized_delay: Option<String>,
    // backup
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub one_file_system: bool,
    /// The age the newest snapshot may reach (reported as drvault_rpo_objective_seconds).
    pub rpo_objective: Option<String>,
    // backup and forget
    pub host: Option<String>,
    // forget
    pub keep_last: Option<usize>,
    pub keep_hourly: Option<usize>,
    pub keep_daily: Option<usize>,
    pub keep_weekly: Option<usize>,
    pub keep_monthly: Option<usize>,
    pub keep_yearly: Option<usize>,
    pub keep_within: Option<String>,
    #[serde(default)]
    pub keep_tags: Vec<String>,
    // prune
    pub grace: Option<String>,
    pub repack_threshold: Option<f64>,
    // check
    /// Percentage of packs to read and verify, e.g. 5.0.
    pub read_data_subset: Option<f64>,
    // drill
    pub plan: Option<String>,
    // backup from a stream
    /// Back up this command's standard output (program and arguments, no shell) as one file.
    #[serde(default)]
    pub stdin_command: Vec<String>,
    /// The file's path in the snapshot (default "stdin").
    pub stdin_filename: Option<String>,
    // hooks, for every kind
    /// Shell commands run before the job; the first that fails fails the job, which then
    /// does not run.
    #[serde(default)]
    pub before: Vec<String>,
    /// Shell commands run after the job, whatever its result.
    #[serde(default)]
    pub after: Vec<String>,
    /// Shell commands run when the job (or one of its hooks) did not succeed.
    #[serde(default)]
    pub on_failure: Vec<String>,
    /// The time each hook may take (default 10 minutes); it is killed after that.
    pub hook_timeout: Option<String>,
    /// Variables for the hooks and `stdin_command` (they do not get drvault's secrets).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

/// A validated job.
#[derive(Debug, Clone)]
pub struct Job {
    pub config: JobConfig,
    pub schedule: Schedule,
    pub randomized_delay: Duration,
    pub rpo_objective: Option<Duration>,
    pub hook_timeout: Duration,
}

impl JobConfig {
    /// The fields this entry sets that only some kinds use, with those kinds.
    fn kind_fields(&self) -> Vec<(&'static str, &'static [JobKind])> {
        use JobKind::*;
        let mut set = Vec::new();
        let mut field = |name, present: bool, kinds: &'static [JobKind]| {
            if present {
                set.push((name, kinds));
            }
        };
        field("paths", !self.paths.is_empty(), &[Backup]);
        field("exclude", !self.exclude.is_empty(), &[Backup]);
        field("tags", !self.tags.is_empty(), &[Backup]);
        field("one_file_system", self.one_file_system, &[Backup]);
        field("rpo_objective", self.rpo_objective.is_some(), &[Backup]);
        field("host", self.host.is_some(), &[Backup, Forget]);
        field("keep_last", self.keep_last.is_some(), &[Forget]);
        field("keep_hourly", self.keep_hourly.is_some(), &[Forget]);
        field("keep_daily", self.keep_daily.is_some(), &[Forget]);
        field("keep_weekly", self.keep_weekly.is_some(), &[Forget]);
        field("keep_monthly", self.keep_monthly.is_some(), &[Forget]);
        field("keep_yearly", self.keep_yearly.is_some(), &[Forget]);
        field("keep_within", self.keep_within.is_some(), &[Forget]);
        field("keep_tags", !self.keep_tags.is_empty(), &[Forget]);
        field("grace", self.grace.is_some(), &[Prune]);
        field(
            "repack_threshold",
            self.repack_threshold.is_some(),
            &[Prune],
        );
        field(
            "read_data_subset",
            self.read_data_subset.is_some(),
            &[Check],
        );
        field("plan", self.plan.is_some(), &[Drill]);
        field("stdin_command", !self.stdin_command.is_empty(), &[Backup]);
        field("stdin_filename", self.stdin_filename.is_some(), &[Backup]);
        set
    }

    pub fn validate(&self, drill_plans: &[String]) -> Result<Job> {
        let name = &self.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!("job name {name:?} must be non-empty letters, digits, '-', '_' or '.'");
        }
        let kind = self.kind.as_str();
        for (field, kinds) in self.kind_fields() {
            if !kinds.contains(&self.kind) {
                bail!("job {name}: `{field}` does not apply to a {kind} job");
            }
        }
        let schedule: Schedule = self
            .schedule
            .parse()
            .with_context(|| format!("job {name}"))?;
        let duration = |field: &str, v: &Option<String>| -> Result<Option<Duration>> {
            v.as_deref()
                .map(crate::duration::parse)
                .transpose()
                .with_context(|| format!("job {name}: {field}"))
        };
        let randomized_delay =
            duration("randomized_delay", &self.randomized_delay)?.unwrap_or_default();
        let rpo_objective = duration("rpo_objective", &self.rpo_objective)?;
        duration("keep_within", &self.keep_within)?;
        duration("grace", &self.grace)?;
        let hook_timeout =
            duration("hook_timeout", &self.hook_timeout)?.unwrap_or(DEFAULT_HOOK_TIMEOUT);
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                bail!("job {name}: env name {key:?} is not a variable name");
            }
        }
        if self.stdin_filename.is_some() && self.stdin_command.is_empty() {
            bail!(
                "job {name}: `stdin_filename` names the file of `stdin_command`, which is not set"
            );
        }
        if let Some(f) = &self.stdin_filename {
            drvault_backup::filename_components(f).with_context(|| format!("job {name}"))?;
        }
        match self.kind {
            JobKind::Backup if self.paths.is_empty() && self.stdin_command.is_empty() => {
                bail!("job {name}: a backup job needs `paths` or `stdin_command`")
            }
            JobKind::Backup if !self.paths.is_empty() && !self.stdin_command.is_empty() => {
                bail!(
                    "job {name}: a backup job takes `paths` or `stdin_command`, not both (make \
                     two jobs)"
                )
            }
            JobKind::Forget
                if self.keep_last.is_none()
                    && self.keep_hourly.is_none()
                    && self.keep_daily.is_none()
                    && self.keep_weekly.is_none()
                    && self.keep_monthly.is_none()
                    && self.keep_yearly.is_none()
                    && self.keep_within.is_none()
                    && self.keep_tags.is_empty() =>
            {
                bail!("job {name}: a forget job needs at least one keep_* rule (without one it would remove every snapshot)")
            }
            JobKind::Drill => match &self.plan {
                None => {
                    bail!("job {name}: a drill job needs `plan`, the name of a [[drills]] entry")
                }
                Some(p) if !drill_plans.contains(p) => {
                    bail!("job {name}: plan {p:?} is not a [[drills]] entry")
                }
                Some(_) => {}
            },
            _ => {}
        }
        if let Some(p) = self.read_data_subset {
            if !(p > 0.0 && p <= 100.0) {
                bail!(
                    "job {name}: read_data_subset {p} must be a percentage above 0 and at most 100"
                );
            }
        }
        if let Some(t) = self.repack_threshold {
            if !(0.0..=1.0).contains(&t) {
                bail!("job {name}: repack_threshold {t} must be between 0 and 1");
            }
        }
        Ok(Job {
            config: self.clone(),
            schedule,
            randomized_delay,
            rpo_objective,
            hook_timeout,
        })
    }
}

/// Validates every job; names must be unique.
pub fn validate_jobs(jobs: &[JobConfig], drill_plans: &[String]) -> Result<Vec<Job>> {
    let mut out: Vec<Job> = Vec::new();
    for j in jobs {
        if out.iter().any(|o| o.config.name == j.name) {
            bail!("two jobs are named {:?}; job names must be unique", j.name);
        }
        out.push(j.validate(drill_plans)?);
    }
    Ok(out)
}

/// The time a hook may take when the job does not say (`hook_timeout`).
pub const DEFAULT_HOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);
