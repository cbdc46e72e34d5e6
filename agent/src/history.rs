//! Job history: one row per run of an agent job, in `<state dir>/jobs.sqlite`.
//!
//! The catalog (`<state dir>/<repository id>/catalog.sqlite`) is a cache that drvault may
//! delete and rebuild from the repository; the history is not rebuildable, so it has a file
//! of its own (docs/DECISIONS.md). A run is written when it starts (`running`) and updated
//! when it ends, so a run cut short by a crash or power loss shows as `interrupted`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rusqlite::{params, Connection};
use serde::Serialize;

use crate::hook_run::{HookRun, Phase};

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS job_runs (
    id INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    kind TEXT NOT NULL,
    host TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    result TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    snapshot TEXT,
    snapshot_time REAL,
    files INTEGER NOT NULL DEFAULT 0,
    bytes_read INTEGER NOT NULL DEFAULT 0,
    bytes_added INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS job_runs_by_job ON job_runs (job, started);
CREATE TABLE IF NOT EXISTS job_hooks (
    run INTEGER NOT NULL REFERENCES job_runs (id),
    seq INTEGER NOT NULL,
    phase TEXT NOT NULL,
    command TEXT NOT NULL,
    exit_code INTEGER,
    timed_out INTEGER NOT NULL,
    seconds REAL NOT NULL,
    output TEXT NOT NULL,
    PRIMARY KEY (run, seq)
);
";

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    Running,
    Success,
    /// Completed, but some files could not be read (the snapshot lacks them).
    Partial,
    Failed,
    /// Stopped by a shutdown, or cut short by a crash.
    Interrupted,
}

impl RunResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Running => "running",
            RunResult::Success => "success",
            RunResult::Partial => "partial",
            RunResult::Failed => "failed",
            RunResult::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> RunResult {
        match s {
            "running" => RunResult::Running,
            "success" => RunResult::Success,
            "partial" => RunResult::Partial,
            "interrupted" => RunResult::Interrupted,
            _ => RunResult::Failed,
        }
    }
}

/// What a finished run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    pub snapshot: Option<String>,
    /// Unix seconds of the snapshot (the backup's start).
    pub snapshot_time: Option<f64>,
    pub files: u64,
    pub bytes_read: u64,
    pub bytes_added: u64,
    pub errors: u64,
}

impl Figures {
    /// A backup's figures, as the job history records them.
    pub fn of_backup(out: &drvault_backup::BackupOutcome) -> Self {
        let s = &out.snapshot.summary;
        Figures {
            snapshot: Some(out.id.to_hex()),
            snapshot_time: Some(out.snapshot.time_ns as f64 / 1e9),
            files: s.files_new + s.files_changed + s.files_unchanged,
            bytes_read: s.bytes_read,
            bytes_added: s.bytes_added,
            errors: s.errors,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub id: i64,
    pub job: String,
    pub kind: String,
    pub host: String,
    /// Unix seconds.
    pub started: f64,
    pub ended: Option<f64>,
    pub result: RunResult,
    pub message: String,
    /// Where the job's repository is (`--repo` or the configured targets' names); absent in
    /// runs recorded before drvault 0.7.
    pub repository: Option<String>,
    #[serde(flatten)]
    pub figures: Figures,
    /// The job's hooks that ran, in order (`before`, `after`, `on_failure`).
    pub hooks: Vec<HookRun>,
}

impl Run {
    pub fn duration(&self) -> Option<f64> {
        self.ended.map(|e| (e - self.started).max(0.0))
    }
}

pub struct History {
    conn: Connection,
    path: PathBuf,
}

pub fn now() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1e6
}

impl History {
    pub fn open(state_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(state_dir).with_context(|| {
            format!("cannot create the state directory {}", state_dir.display())
        })?;
        let path = state_dir.join("jobs.sqlite");
        let conn = Connection::open(&path)
            .and_then(|c| {
                c.busy_timeout(std::time::Duration::from_secs(30))?;
                c.execute_batch(SCHEMA)?;
                // Added in 0.7: which repository a run was for (`jobs --repo` shows its own).
                match c.execute("ALTER TABLE job_runs ADD COLUMN repository TEXT", []) {
                    Ok(_) => {}
                    Err(e) if e.to_string().contains("duplicate column") => {}
                    Err(e) => return Err(e),
                }
                Ok(c)
            })
            .with_context(|| format!("cannot open the job history {}", path.display()))?;
        Ok(History { conn, path })
    }

    fn context(&self) -> String {
        format!("job history {}", self.path.display())
    }

    /// Records the start of a run; returns its id.
    pub fn start(&self, job: &str, kind: &str, started: f64, repository: &str) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO job_runs (job, kind, host, started, result, repository)
                 VALUES (?1, ?2, ?3, ?4, 'running', ?5)",
                params![
                    job,
                    kind,
                    drvault_repo::host::hostname(),
                    started,
                    repository
                ],
            )
            .with_context(|| self.context())?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish(&self, id: i64, result: RunResult, message: &str, f: &Figures) -> Result<()> {
        self.conn
            .execute(
                "UPDATE job_runs SET ended = ?2, result = ?3, message = ?4, snapshot = ?5,
                 snapshot_time = ?6, files = ?7, bytes_read = ?8, bytes_added = ?9, errors = ?10
                 WHERE id = ?1",
                params![
                    id,
                    now(),
                    result.as_str(),
                    message,
                    f.snapshot,
                    f.snapshot_time,
                    f.files as i64,
                    f.bytes_read as i64,
                    f.bytes_added as i64,
                    f.errors as i64
                ],
            )
            .with_context(|| self.context())?;
        Ok(())
    }

    /// Records the hooks that ran for run `id`.
    pub fn record_hooks(&self, id: i64, hooks: &[HookRun]) -> Result<()> {
        for (seq, h) in hooks.iter().enumerate() {
            self.conn
                .execute(
                    "INSERT OR REPLACE INTO job_hooks
                     (run, seq, phase, command, exit_code, timed_out, seconds, output)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        id,
                        seq as i64,
                        h.phase.as_str(),
                        h.run.command,
                        h.run.exit_code,
                        h.run.timed_out,
                        h.run.seconds,
                        h.run.output
                    ],
                )
                .with_context(|| self.context())?;
        }
        Ok(())
    }

    fn hooks_of(&self, run: i64) -> Result<Vec<HookRun>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT phase, command, exit_code, timed_out, seconds, output FROM job_hooks
                 WHERE run = ?1 ORDER BY seq",
            )
            .with_context(|| self.context())?;
        let rows = stmt
            .query_map(params![run], |r| {
                Ok(HookRun {
                    phase: Phase::parse(&r.get::<_, String>(0)?).unwrap_or(Phase::After),
                    run: drvault_drill::validate::Validation {
                        command: r.get(1)?,
                        exit_code: r.get(2)?,
                        timed_out: r.get(3)?,
                        seconds: r.get(4)?,
                        output: r.get(5)?,
                    },
                })
            })
            .with_context(|| self.context())?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .with_context(|| self.context())
    }

    /// Marks runs left `running` by an agent that did not end them (crash, power loss).
    pub fn close_abandoned(&self) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE job_runs SET result = 'interrupted',
                 message = 'the agent stopped (crash or power loss) before the run ended'
                 WHERE result = 'running'",
                [],
            )
            .with_context(|| self.context())
    }

    /// Runs started at or after `since` (Unix seconds), oldest first.
    pub fn runs(&self, since: f64) -> Result<Vec<Run>> {
        self.select("WHERE started >= ?1 ORDER BY started, id", params![since])
    }

    /// The newest run of a job.
    pub fn last_run(&self, job: &str) -> Result<Option<Run>> {
        Ok(self
            .select(
                "WHERE job = ?1 ORDER BY started DESC, id DESC LIMIT 1",
                params![job],
            )?
            .pop())
    }

    fn select(&self, tail: &str, args: impl rusqlite::Params) -> Result<Vec<Run>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT id, job, kind, host, started, ended, result, message, snapshot, snapshot_time,
                 files, bytes_read, bytes_added, errors, repository FROM job_runs {tail}"
            ))
            .with_context(|| self.context())?;
        let rows = stmt
            .query_map(args, |r| {
                Ok(Run {
                    id: r.get(0)?,
                    job: r.get(1)?,
                    kind: r.get(2)?,
                    host: r.get(3)?,
                    started: r.get(4)?,
                    ended: r.get(5)?,
                    result: RunResult::parse(&r.get::<_, String>(6)?),
                    message: r.get(7)?,
                    repository: r.get(14)?,
                    figures: Figures {
                        snapshot: r.get(8)?,
                        snapshot_time: r.get(9)?,
                        files: r.get::<_, i64>(10)?.max(0) as u64,
                        bytes_read: r.get::<_, i64>(11)?.max(0) as u64,
                        bytes_added: r.get::<_, i64>(12)?.max(0) as u64,
                        errors: r.get::<_, i64>(13)?.max(0) as u64,
                    },
                    hooks: Vec::new(),
                })
            })
            .with_context(|| self.context())?;
        let mut runs = rows
            .collect::<rusqlite::Result<Vec<_>>>()
            .with_context(|| self.context())?;
        for run in &mut runs {
            run.hooks = self.hooks_of(run.id)?;
        }
        Ok(runs)
    }
}

/// Success rate of finished runs: successes / (successes + partial + failed + interrupted).
/// `None` when nothing finished.
pub fn success_rate<'a>(runs: impl IntoIterator<Item = &'a Run>) -> Option<f64> {
    let (mut ok, mut all) = (0u64, 0u64);
    for r in runs {
        if r.result == RunResult::Running {
            continue;
        }
        all += 1;
        if r.result == RunResult::Success {
            ok += 1;
        }
    }
    (all > 0).then(|| ok as f64 / all as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_recorded_updated_and_abandoned_ones_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = History::open(dir.path()).expect("open");
        let a = h.start("etc", "backup", 100.0, "/repo").expect("start");
        let figures = Figures {
            snapshot: Some("ab".into()),
            snapshot_time: Some(100.0),
            files: 3,
            bytes_read: 10,
            bytes_added: 5,
            errors: 0,
        };
        h.finish(a, RunResult::Success, "", &figures)
            .expect("finish");
        h.start("etc", "backup", 200.0, "/repo").expect("start");
        drop(h);
        let h = History::open(dir.path()).expect("reopen");
        assert_eq!(h.close_abandoned().expect("close"), 1);
        let runs = h.runs(0.0).expect("runs");
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].result, RunResult::Success);
        assert_eq!(runs[0].figures.files, 3);
        assert_eq!(runs[1].result, RunResult::Interrupted);
        assert_eq!(
            h.last_run("etc").expect("last").map(|r| r.started),
            Some(200.0)
        );
        assert!(h.last_run("other").expect("none").is_none());
        assert_eq!(success_rate(&runs), Some(0.5));
        assert_eq!(h.runs(150.0).expect("since").len(), 1);
    }
}
