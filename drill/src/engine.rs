//! One restore drill: select the snapshot from the surviving targets, restore it, verify every
//! byte, run the validation commands, and measure RTO and RPO against the objectives.

use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use drvault_repo::Repository;
use drvault_restore::{RestoreOptions, SnapshotSpec};
use serde::Serialize;

use crate::validate::{self, Redactor, Validation};

/// A drill plan, as the configuration's `[[drills]]` describes it (durations parsed).
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    /// Backed-up paths to restore (every snapshot path when empty).
    pub paths: Vec<String>,
    /// The plan names a backup job (whose paths must then be in `paths`).
    pub from_job: bool,
    /// Only snapshots of this host.
    pub host: Option<String>,
    /// "latest" (or none), or an RFC 3339 time: the newest snapshot at or before it.
    pub snapshot: Option<String>,
    /// Where to restore (default: a scratch directory, removed after the drill).
    pub restore_dir: Option<PathBuf>,
    /// Commands run against the restored data, each within `validate_timeout`.
    pub validate: Vec<String>,
    pub validate_timeout: Duration,
    /// Environment variables the validation commands get beyond the allowlist.
    pub validate_env: BTreeMap<String, String>,
    pub rto_objective: Duration,
    pub rpo_objective: Duration,
}

/// Opens the repository through every target except the named ones; the error is shown as the
/// drill's reason.
pub type OpenSurviving<'a> = &'a dyn Fn(&[String]) -> Result<Arc<Repository>, String>;

/// What a drill needs from the program that runs it: how to open the repository through the
/// targets that survive, where it may write, and what must never reach the evidence.
pub struct Surroundings<'a> {
    pub rt: &'a tokio::runtime::Runtime,
    pub open_surviving: OpenSurviving<'a>,
    /// The targets the drill reads from (already without the excluded ones).
    pub targets_used: Vec<String>,
    /// Scratch restores go below it (`<state dir>/drills`); so do the validations' outputs.
    pub scratch_root: PathBuf,
    /// The secrets the program can see: removed from every command output kept as evidence.
    pub redactor: Redactor,
}

/// Snapshots this far back count for the worst gap between successive snapshots.
const GAP_WINDOW: Duration = Duration::from_secs(90 * 86_400);

#[derive(Debug, Clone, Default, Serialize)]
pub struct Phases {
    pub open_seconds: f64,
    pub select_seconds: f64,
    pub restore_seconds: f64,
    pub validate_seconds: f64,
}

/// The evidence record of one drill (docs/SOC2.md): what the auditor gets.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DrillRecord {
    pub drill_id: String,
    pub plan: String,
    pub operator: String,
    pub host: String,
    pub started: String,
    pub finished: String,
    pub passed: bool,
    /// Why the drill failed (empty when it passed).
    pub reason: String,
    pub snapshot_id: Option<String>,
    pub snapshot_time: Option<String>,
    pub snapshot_host: Option<String>,
    pub paths: Vec<String>,
    pub targets_used: Vec<String>,
    pub targets_excluded: Vec<String>,
    pub rto_objective_seconds: f64,
    pub rpo_objective_seconds: f64,
    /// Drill start to data restored, verified and validated.
    pub rto_seconds: Option<f64>,
    /// Drill start minus the restored snapshot's time.
    pub rpo_seconds: Option<f64>,
    /// The longest time without a snapshot of this scope over the last 90 days (up to the drill).
    pub rpo_worst_gap_seconds: Option<f64>,
    pub files: u64,
    pub bytes: u64,
    pub throughput_mb_s: Option<f64>,
    pub verified_files: u64,
    pub phases: Phases,
    pub validations: Vec<Validation>,
    pub software_version: String,
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Runs the drill. Never fails on the drill's own problems: those make a failed record. The
/// repository handle it returns (when one could be opened) is where the record goes.
pub fn run(
    env: &Surroundings<'_>,
    plan: &Plan,
    excluded: &[String],
    keep: bool,
) -> (DrillRecord, Option<Arc<Repository>>) {
    let started_at = Instant::now();
    let started = chrono::Utc::now();
    let mut r = DrillRecord {
        drill_id: format!(
            "{}-{}",
            started.format("%Y%m%dT%H%M%SZ"),
            hex::encode(drvault_keyring::random_bytes::<4>().unwrap_or_default())
        ),
        plan: plan.name.clone(),
        operator: drvault_repo::host::actor(),
        host: drvault_repo::host::hostname(),
        started: started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        paths: plan.paths.clone(),
        targets_excluded: excluded.to_vec(),
        targets_used: env.targets_used.clone(),
        rto_objective_seconds: plan.rto_objective.as_secs_f64(),
        rpo_objective_seconds: plan.rpo_objective.as_secs_f64(),
        software_version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    };
    let repo = match drill(env, plan, excluded, keep, started, started_at, &mut r) {
        Ok(repo) => Some(repo),
        Err((e, repo)) => {
            r.passed = false;
            r.reason = e;
            repo
        }
    };
    r.finished = now_rfc3339();
    (r, repo)
}

/// Why a drill failed (its record's reason), and the repository when it had been opened.
type DrillError = (String, Option<Arc<Repository>>);

fn drill(
    env: &Surroundings<'_>,
    plan: &Plan,
    excluded: &[String],
    keep: bool,
    started: chrono::DateTime<chrono::Utc>,
    started_at: Instant,
    r: &mut DrillRecord,
) -> std::result::Result<Arc<Repository>, DrillError> {
    if plan.from_job && plan.paths.is_empty() {
        return Err((
            "the plan's job has no paths; give the plan paths".to_string(),
            None,
        ));
    }
    // Open through the surviving targets only: this is the failover scenario.
    let phase = Instant::now();
    let repo = (env.open_surviving)(excluded).map_err(|e| {
        (
            format!("cannot open the repository from the surviving targets: {e}"),
            None,
        )
    })?;
    r.phases.open_seconds = phase.elapsed().as_secs_f64();
    let fail = |e: String| (e, Some(repo.clone()));

    let phase = Instant::now();
    let snaps = env
        .rt
        .block_on(repo.snapshots())
        .map_err(|e| fail(e.to_string()))?;
    let wanted: Vec<Vec<u8>> = plan
        .paths
        .iter()
        .map(|p| {
            std::path::absolute(p)
                .map(|a| a.as_os_str().as_bytes().to_vec())
                .unwrap_or_else(|_| p.as_bytes().to_vec())
        })
        .collect();
    let in_scope: Vec<_> = snaps
        .iter()
        .filter(|(_, s)| wanted.iter().all(|w| s.paths.contains(w)))
        .filter(|(_, s)| plan.host.as_ref().is_none_or(|h| &s.host == h))
        .cloned()
        .collect();
    let at_ns = match plan.snapshot.as_deref() {
        None | Some("latest") => None,
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| {
                    fail(format!(
                        "snapshot {t:?} is neither \"latest\" nor an RFC 3339 time: {e}"
                    ))
                })?
                .timestamp_nanos_opt()
                .unwrap_or(i64::MAX),
        ),
    };
    let spec = SnapshotSpec {
        id: None,
        at_ns,
        host: plan.host.clone(),
        ..Default::default()
    };
    let (id, snap) = drvault_restore::select_snapshot(&in_scope, &spec)
        .map(|(i, s)| (*i, s.clone()))
        .map_err(|e| {
            fail(format!(
                "no snapshot of {:?} on the surviving targets: {e}",
                plan.paths
            ))
        })?;
    let snap_time = chrono::DateTime::from_timestamp_nanos(snap.time_ns);
    r.snapshot_id = Some(id.to_hex());
    r.snapshot_time = Some(snap_time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    r.snapshot_host = Some(snap.host.clone());
    r.rpo_seconds = Some((started - snap_time).num_milliseconds() as f64 / 1000.0);
    r.rpo_worst_gap_seconds = worst_gap(&in_scope, started);
    r.phases.select_seconds = phase.elapsed().as_secs_f64();

    // Restore into the scratch directory, verifying every byte against the snapshot.
    let phase = Instant::now();
    let scratch_root = env.scratch_root.clone();
    let target = plan
        .restore_dir
        .clone()
        .unwrap_or_else(|| scratch_root.join(&r.drill_id));
    let target = std::path::absolute(&target).unwrap_or(target);
    std::fs::create_dir_all(&target)
        .map_err(|e| fail(format!("cannot create {}: {e}", target.display())))?;
    let includes = wanted.iter().map(|w| components(w)).collect();
    let opts = RestoreOptions {
        target: target.clone(),
        includes,
        excludes: Vec::new(),
        verify: true,
        parallel: 4,
        overwrite: drvault_restore::Overwrite::Always,
        delete: false,
        dry_run: false,
        progress: None,
    };
    let restored = drvault_restore::restore(env.rt.handle(), repo.clone(), (&id, &snap), &opts);
    r.phases.restore_seconds = phase.elapsed().as_secs_f64();
    let outcome = restored.map_err(|e| e.to_string()).and_then(|stats| {
        r.files = stats.files;
        r.bytes = stats.bytes;
        r.verified_files = stats.verified_files;
        if r.phases.restore_seconds > 0.0 {
            r.throughput_mb_s = Some(stats.bytes as f64 / r.phases.restore_seconds / 1e6);
        }
        // Validation commands, each within the plan's limit.
        let phase = Instant::now();
        let limit = plan.validate_timeout;
        let redactor = &env.redactor;
        let snapshot_id = id.to_hex();
        let vars = validate::Environment {
            restore_dir: &target,
            snapshot_id: &snapshot_id,
            drill_id: &r.drill_id,
            plan: &plan.validate_env,
        };
        for cmd in &plan.validate {
            let v = validate::run(cmd, &vars, limit, &scratch_root, redactor);
            let failed = (!v.passed()).then(|| {
                if v.timed_out {
                    format!(
                        "validation `{}` was killed after its {} s limit",
                        v.command,
                        limit.as_secs()
                    )
                } else {
                    match v.exit_code {
                        Some(code) => {
                            format!("validation `{}` failed (exit code {code})", v.command)
                        }
                        None => format!("validation `{}` was ended by a signal", v.command),
                    }
                }
            });
            r.validations.push(v);
            if let Some(why) = failed {
                r.phases.validate_seconds = phase.elapsed().as_secs_f64();
                return Err(why);
            }
        }
        r.phases.validate_seconds = phase.elapsed().as_secs_f64();
        Ok(())
    });
    r.rto_seconds = Some(started_at.elapsed().as_secs_f64());
    if !keep && plan.restore_dir.is_none() {
        let _ = std::fs::remove_dir_all(&target);
    }
    outcome.map_err(fail)?;

    // Objectives.
    let rto = r.rto_seconds.unwrap_or(f64::MAX);
    let rpo = r.rpo_seconds.unwrap_or(f64::MAX);
    let mut misses = Vec::new();
    if rto > r.rto_objective_seconds {
        misses.push(format!(
            "RTO {rto:.1} s exceeds the objective of {} s",
            r.rto_objective_seconds
        ));
    }
    if rpo > r.rpo_objective_seconds {
        misses.push(format!(
            "RPO {rpo:.1} s exceeds the objective of {} s",
            r.rpo_objective_seconds
        ));
    }
    r.passed = misses.is_empty();
    r.reason = misses.join("; ");
    Ok(repo)
}

/// The longest time without a snapshot in the window before the drill, the wait since the
/// newest snapshot included.
fn worst_gap(
    snaps: &[(drvault_repo::Id, drvault_repo::format::Snapshot)],
    now: chrono::DateTime<chrono::Utc>,
) -> Option<f64> {
    let since = now.timestamp_nanos_opt()? - GAP_WINDOW.as_nanos() as i64;
    let mut times: Vec<i64> = snaps
        .iter()
        .map(|(_, s)| s.time_ns)
        .filter(|t| *t >= since)
        .collect();
    times.sort_unstable();
    times.push(now.timestamp_nanos_opt()?);
    let gaps = times.windows(2).map(|w| (w[1] - w[0]) as f64 / 1e9);
    gaps.fold(None, |m: Option<f64>, g| Some(m.map_or(g, |m| m.max(g))))
}

/// The components of a snapshot path ("/srv/db" → ["srv", "db"]).
fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b"." && *c != b"..")
        .map(<[u8]>::to_vec)
        .collect()
}
