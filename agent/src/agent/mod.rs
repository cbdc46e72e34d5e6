//! `drvault agent`: the host agent systemd runs (`Type=notify`). It schedules the configured
//! jobs, serves metrics, reloads its configuration on SIGHUP and stops at a clean point on
//! SIGTERM. docs/OPERATIONS.md describes running it.

mod clock;
mod metrics;
mod notify;
mod runner;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use chrono::{DateTime, Local};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::cli::{AgentArgs, Global};
use crate::config::{Config, Job};
use crate::context::Context;
use crate::exit::Exit;
use notify::Notifier;

/// Targets are surveyed (a listing of each) after a job at most this often.
const SURVEY_EVERY: Duration = Duration::from_secs(60);

struct Slot {
    job: Job,
    next: Option<DateTime<Local>>,
    running: bool,
}

/// A uniformly random delay in `[0, max]`.
fn random_delay(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let r = drvault_keyring::random_bytes::<8>()
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    let ms = max.as_millis().min(u128::from(u64::MAX)) as u64;
    Duration::from_millis(r % (ms + 1))
}

fn plan_next(job: &Job, after: DateTime<Local>) -> Option<DateTime<Local>> {
    let fire = job.schedule.next_after(&after)?;
    let delay = chrono::Duration::from_std(random_delay(job.randomized_delay)).ok()?;
    Some(fire + delay)
}

fn config_path(g: &Global) -> Result<PathBuf> {
    crate::config::locate(g.config.as_deref(), crate::context::is_root()).context(
        "drvault agent needs a configuration file with [[jobs]]: pass --config FILE, set \
         DRVAULT_CONFIG, or create /etc/drvault/drvault.toml (docs/OPERATIONS.md has an example)",
    )
}

/// Loads and validates the configuration: the jobs, and the metrics address.
fn load(path: &Path) -> Result<(Config, Vec<Job>)> {
    let config = Config::load(path)?;
    let jobs = config.jobs()?;
    Ok((config, jobs))
}

pub fn run(g: &Global, a: &AgentArgs) -> Result<Exit> {
    let path = config_path(g)?;
    let (config, jobs) = load(&path)?;
    let clock = clock::Clock::from_env();
    if a.print_schedule {
        let now = clock.now();
        for j in &jobs {
            let mut t = now;
            let mut times = Vec::new();
            for _ in 0..3 {
                match j.schedule.next_after(&t) {
                    Some(n) => {
                        times.push(n.to_rfc3339());
                        t = n;
                    }
                    None => break,
                }
            }
            outln!(
                "{} ({}): {}",
                j.config.name,
                j.config.kind.as_str(),
                if times.is_empty() {
                    "never runs".to_string()
                } else {
                    times.join(", ")
                }
            );
        }
        return Ok(Exit::Ok);
    }
    let notifier = Notifier::from_env();
    notifier.status("opening the repository");
    let ctx = Context::with_config(g, Some(config.clone()))?;
    // Fail at start (and let systemd say so) rather than at the first job: wrong passphrase,
    // no repository, unreachable storage.
    ctx.open(g)?;
    let history = crate::history::History::open(&ctx.state_dir)?;
    let abandoned = history.close_abandoned()?;
    if abandoned > 0 {
        tracing::warn!("{abandoned} job runs were cut short when the agent last stopped (recorded as interrupted)");
    }
    let state: metrics::Shared = Arc::new(Mutex::new(metrics::State {
        up_since: crate::history::now(),
        ..Default::default()
    }));
    let now = clock.now();
    let mut slots = BTreeMap::new();
    for job in jobs {
        let last = history.last_run(&job.config.name)?;
        slots.insert(job.config.name.clone(), new_slot(job, last.as_ref(), now));
    }
    seed_metrics(&state, &slots, &history)?;
    drop(history);
    let agent = Agent {
        g: g.clone(),
        path,
        config,
        slots,
        state,
        notifier,
        last_survey: None,
        clock,
    };
    ctx.rt.block_on(agent.main_loop())
}

/// A slot for a job: its next run, or now when a scheduled run was missed while the agent was
/// not running (once, however many were missed).
fn new_slot(job: Job, last: Option<&crate::history::Run>, now: DateTime<Local>) -> Slot {
    let missed = last
        .and_then(|r| DateTime::from_timestamp(r.started as i64, 0))
        .map(|t| t.with_timezone(&Local))
        .and_then(|t| job.schedule.next_after(&t))
        .filter(|due| *due <= now);
    let next = match missed {
        Some(due) => {
            tracing::info!(
                "job {}: the run due at {} was missed (the agent was not running); running it now",
                job.config.name,
                due.to_rfc3339()
            );
            Some(now)
        }
        None => plan_next(&job, now),
    };
    Slot {
        job,
        next,
        running: false,
    }
}

fn seed_metrics(
    state: &metrics::Shared,
    slots: &BTreeMap<String, Slot>,
    history: &crate::history::History,
) -> Result<()> {
    let runs = history.runs(0.0)?;
    let mut s = state
        .lock()
        .map_err(|_| anyhow::anyhow!("metrics lock poisoned"))?;
    s.jobs.retain(|name, _| slots.contains_key(name));
    for (name, slot) in slots {
        let j = s.jobs.entry(name.clone()).or_default();
        j.kind = slot.job.config.kind.as_str().to_string();
        j.rpo_objective = slot.job.rpo_objective.map(|d| d.as_secs_f64());
        if j.last_run.is_none() {
            for r in runs.iter().filter(|r| &r.job == name) {
                j.record(r);
            }
            // Counters count this agent's runs only.
            j.runs.clear();
        }
    }
    Ok(())
}

/// The scheduler's decision at `now` (the clock is the caller's, so it can be tested without
/// waiting): the names of the jobs to start, each marked running, in name order. Every due slot
/// gets its next time planned. A slot due while its previous run still goes is skipped (jobs
/// never overlap with themselves); a maintenance job due while another maintenance job runs
/// stays due and starts when that one ends (maintenance takes the repository's lease anyway).
fn take_due(slots: &mut BTreeMap<String, Slot>, now: DateTime<Local>) -> Vec<String> {
    let mut maintenance_running = slots
        .values()
        .any(|s| s.running && s.job.config.kind.is_maintenance());
    let mut start = Vec::new();
    for (name, slot) in slots.iter_mut() {
        let Some(due) = slot.next.filter(|t| *t <= now) else {
            continue;
        };
        let maintenance = slot.job.config.kind.is_maintenance();
        if maintenance && maintenance_running && !slot.running {
            continue;
        }
        slot.next = plan_next(&slot.job, now);
        if slot.running {
            tracing::warn!(
                "job {name}: the run due at {} is skipped, since the previous run is still going",
                due.to_rfc3339()
            );
            continue;
        }
        slot.running = true;
        maintenance_running |= maintenance;
        start.push(name.clone());
    }
    start
}

struct Agent {
    g: Global,
    path: PathBuf,
    config: Config,
    slots: BTreeMap<String, Slot>,
    state: metrics::Shared,
    notifier: Notifier,
    last_survey: Option<std::time::Instant>,
    clock: clock::Clock,
}

impl Agent {
    async fn main_loop(mut self) -> Result<Exit> {
        let mut metrics_task = match self.config.agent.metrics_address()? {
            Some(addr) => Some((addr, metrics::serve(addr, self.state.clone()).await?)),
            None => None,
        };
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<runner::Finished>();
        let watchdog_every = self
            .notifier
            .watchdog_interval()
            .unwrap_or(Duration::from_secs(3600));
        let mut watchdog = tokio::time::interval(watchdog_every);
        let mut stopping = false;
        self.notifier.send("READY=1");
        tracing::info!(
            "agent started with {} jobs from {}",
            self.slots.len(),
            self.path.display()
        );
        loop {
            if !stopping {
                self.start_due_jobs(&done_tx);
            }
            if stopping && self.running().is_empty() {
                break;
            }
            self.notifier.status(&self.status_line(stopping));
            let next = self
                .slots
                .values()
                .filter(|s| !s.running && !self.waits_for_maintenance(s))
                .filter_map(|s| s.next)
                .min();
            let sleep = self.clock.sleep_until(next);
            tokio::select! {
                _ = tokio::time::sleep(sleep), if !stopping => {}
                Some(done) = done_rx.recv() => self.finished(done),
                _ = term.recv() => stopping = self.stop(stopping, "SIGTERM"),
                _ = int.recv() => stopping = self.stop(stopping, "SIGINT"),
                _ = hup.recv() => {
                    if !stopping {
                        self.reload(&mut metrics_task).await;
                    }
                }
                _ = watchdog.tick() => {
                    if self.notifier.watchdog_interval().is_some() {
                        self.notifier.send("WATCHDOG=1");
                    }
                }
            }
        }
        if let Some((_, task)) = metrics_task {
            task.abort();
        }
        tracing::info!("agent stopped");
        Ok(Exit::Ok)
    }

    fn stop(&self, already: bool, signal: &str) -> bool {
        if already {
            tracing::warn!("{signal}: still waiting for running jobs to reach a clean point");
        } else {
            tracing::info!("{signal}: stopping; running backups stop at a clean point");
            crate::stop::request();
            self.notifier.send("STOPPING=1");
        }
        true
    }

    fn maintenance_running(&self) -> bool {
        self.slots
            .values()
            .any(|s| s.running && s.job.config.kind.is_maintenance())
    }

    /// A maintenance job waits while another maintenance job runs (it starts when that one ends).
    fn waits_for_maintenance(&self, slot: &Slot) -> bool {
        slot.job.config.kind.is_maintenance() && self.maintenance_running()
    }

    fn running(&self) -> Vec<&str> {
        self.slots
            .iter()
            .filter(|(_, s)| s.running)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    fn status_line(&self, stopping: bool) -> String {
        let running = self.running();
        if stopping {
            return format!("stopping; waiting for {}", running.join(", "));
        }
        let next = self
            .slots
            .iter()
            .filter(|(_, s)| !s.running)
            .filter_map(|(n, s)| s.next.map(|t| (t, n)))
            .min();
        let next = next
            .map(|(t, n)| format!("next: {n} at {}", t.format("%Y-%m-%d %H:%M:%S")))
            .unwrap_or_else(|| "no job scheduled".into());
        if running.is_empty() {
            format!("idle; {next}")
        } else {
            format!("running {}; {next}", running.join(", "))
        }
    }

    fn start_due_jobs(&mut self, done_tx: &mpsc::UnboundedSender<runner::Finished>) {
        let survey = self.last_survey.is_none_or(|t| t.elapsed() >= SURVEY_EVERY);
        let mut surveyed = false;
        for name in take_due(&mut self.slots, self.clock.now()) {
            let Some(slot) = self.slots.get_mut(&name) else {
                continue;
            };
            if let Ok(mut s) = self.state.lock() {
                s.jobs.entry(name.clone()).or_default().running = true;
            }
            let (g, config, job, tx) = (
                self.g.clone(),
                self.config.clone(),
                slot.job.clone(),
                done_tx.clone(),
            );
            let survey_this = survey && !surveyed;
            surveyed |= survey_this;
            // Jobs are blocking work (they drive their own runtime): a plain thread each.
            let spawned = std::thread::Builder::new()
                .name(format!("job-{name}"))
                .spawn(move || {
                    // The slot is freed whatever happens: a run that never reported would
                    // stay "running" (and hold every maintenance job) until a restart.
                    let finished = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        runner::run(&g, &config, &job, survey_this)
                    }))
                    .unwrap_or_else(|p| runner::Finished::after_panic(&job, p.as_ref()));
                    let _ = tx.send(finished);
                });
            if let Err(e) = spawned {
                tracing::error!("job {name}: cannot start a thread: {e}");
                slot.running = false;
            }
        }
        if surveyed {
            self.last_survey = Some(std::time::Instant::now());
        }
    }

    fn finished(&mut self, done: runner::Finished) {
        if let Some(slot) = self.slots.get_mut(&done.run.job) {
            slot.running = false;
        }
        if let Ok(mut s) = self.state.lock() {
            let j = s.jobs.entry(done.run.job.clone()).or_default();
            j.running = false;
            j.record(&done.run);
            if let Some(t) = done.targets {
                s.targets = t;
            }
        }
    }

    /// SIGHUP: read the configuration again; a bad one is refused and the old one kept.
    async fn reload(
        &mut self,
        metrics_task: &mut Option<(std::net::SocketAddr, tokio::task::JoinHandle<()>)>,
    ) {
        self.notifier.reloading();
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&path)).await;
        let (config, jobs) = match loaded {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::error!(
                    "SIGHUP: the configuration in {} is refused ({e:#}); the previous one stays in force",
                    self.path.display()
                );
                self.notifier.send("READY=1");
                return;
            }
            Err(e) => {
                tracing::error!(
                    "SIGHUP: reload failed ({e}); the previous configuration stays in force"
                );
                self.notifier.send("READY=1");
                return;
            }
        };
        // A new metrics address is bound before anything changes, so a failure refuses the
        // whole configuration.
        let want = config.agent.metrics_address().ok().flatten();
        let current = metrics_task.as_ref().map(|(a, _)| *a);
        if want != current {
            let new_task = match want {
                Some(addr) => match metrics::serve(addr, self.state.clone()).await {
                    Ok(t) => Some((addr, t)),
                    Err(e) => {
                        tracing::error!("SIGHUP: {e:#}; the previous configuration stays in force");
                        self.notifier.send("READY=1");
                        return;
                    }
                },
                None => None,
            };
            if let Some((_, old)) = std::mem::replace(metrics_task, new_task) {
                old.abort();
            }
        }
        let now = self.clock.now();
        let mut slots = BTreeMap::new();
        for job in jobs {
            let name = job.config.name.clone();
            let slot = match self.slots.remove(&name) {
                // Same schedule: keep the planned time (and its random delay).
                Some(old) if old.job.config.schedule == job.config.schedule => Slot { job, ..old },
                Some(old) => Slot {
                    next: plan_next(&job, now),
                    job,
                    running: old.running,
                },
                None => Slot {
                    next: plan_next(&job, now),
                    job,
                    running: false,
                },
            };
            slots.insert(name, slot);
        }
        for (name, old) in std::mem::take(&mut self.slots) {
            if old.running {
                tracing::warn!(
                    "job {name} was removed from the configuration; its running run continues"
                );
                slots.insert(name, Slot { next: None, ..old });
            }
        }
        self.slots = slots;
        self.config = config;
        if let Ok(mut s) = self.state.lock() {
            let names: Vec<String> = self.slots.keys().cloned().collect();
            s.jobs.retain(|n, _| names.contains(n));
            for (name, slot) in &self.slots {
                let j = s.jobs.entry(name.clone()).or_default();
                j.kind = slot.job.config.kind.as_str().to_string();
                j.rpo_objective = slot.job.rpo_objective.map(|d| d.as_secs_f64());
            }
        }
        tracing::info!(
            "SIGHUP: configuration reloaded from {} ({} jobs)",
            self.path.display(),
            self.slots.len()
        );
        self.notifier.send("READY=1");
    }
}

#[cfg(test)]
mod tests;
