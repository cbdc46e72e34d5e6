//! The auditor's report of a period (`drtest report`), built from the repository's audit log
//! (drills, key operations, disposals), its snapshots, its targets' object lock and, where the
//! caller has one, the agent's job history. Sections map to SOC 2 criteria in docs/SOC2.md.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use drvault_repo::audit;
use drvault_repo::audit_verify::VerifyReport;
use drvault_repo::Repository;

mod chart;
mod render;

pub use render::{html, markdown};
use serde::Serialize;
use serde_json::Value;

/// A reporting period: [start, end).
#[derive(Debug, Clone, Serialize)]
pub struct Period {
    pub name: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Parses "2026", "2026-Q4" or "2026-11".
pub fn parse_period(text: &str) -> Result<Period, String> {
    let bad = || {
        format!("period {text:?}: write a year (2026), a quarter (2026-Q4) or a month (2026-11)")
    };
    let (year, rest) = text
        .split_once('-')
        .map_or((text, None), |(y, r)| (y, Some(r)));
    let year: i32 = year.parse().map_err(|_| bad())?;
    let (m0, months) = match rest {
        None => (1, 12),
        Some(q) if q.starts_with(['Q', 'q']) => {
            let q: u32 = q[1..].parse().map_err(|_| bad())?;
            if !(1..=4).contains(&q) {
                return Err(bad());
            }
            ((q - 1) * 3 + 1, 3)
        }
        Some(m) => {
            let m: u32 = m.parse().map_err(|_| bad())?;
            if !(1..=12).contains(&m) {
                return Err(bad());
            }
            (m, 1)
        }
    };
    let start = NaiveDate::from_ymd_opt(year, m0, 1).ok_or_else(bad)?;
    let end_month = m0 + months;
    let end = if end_month > 12 {
        NaiveDate::from_ymd_opt(year + 1, end_month - 12, 1)
    } else {
        NaiveDate::from_ymd_opt(year, end_month, 1)
    }
    .ok_or_else(bad)?;
    let at = |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default());
    Ok(Period {
        name: text.to_string(),
        start: at(start),
        end: at(end),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub period: Period,
    pub generated: String,
    pub repository: String,
    pub drills: Vec<Value>,
    pub drills_passed: usize,
    pub key_operations: Vec<Value>,
    /// Secure disposal: snapshots forgotten, data prune deleted, key epochs retired (their
    /// keys destroyed) and master keys replaced, each with its audit entry.
    pub disposals: Vec<Value>,
    pub snapshots_in_period: usize,
    /// From the agent's job history on the host that writes the report (None without one).
    pub backup_success_rate: Option<f64>,
    pub backup_runs: u64,
    pub backup_runs_succeeded: u64,
    /// The check jobs of the period: time, job, result, message.
    pub checks: Vec<Value>,
    /// Whether a job history was found (it lives on the agent's host).
    pub job_history: bool,
    pub audit_log: AuditStatus,
    /// Per target: its object lock (`lock`, `lock_shortest`, `unlocked`) as `targets` reports
    /// it, or none.
    pub immutability: Vec<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditStatus {
    pub intact: bool,
    pub entries: u64,
    pub head: Option<String>,
    pub problem: Option<String>,
}

fn in_period(p: &Period, time: &str) -> bool {
    DateTime::parse_from_rfc3339(time).is_ok_and(|t| t >= p.start && t < p.end)
}

/// What an audit entry disposed of, in words, when it disposed of anything.
fn disposal(e: &audit::AuditEntry) -> Option<String> {
    let d = &e.details;
    let count = |k: &str| d[k].as_u64().unwrap_or(0);
    match e.action.as_str() {
        "snapshots.forget" => {
            let removed: Vec<&str> = d["removed"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            (!removed.is_empty()).then(|| {
                format!(
                    "{} forgotten: {}",
                    plural(removed.len() as u64, "snapshot"),
                    removed.join(", ")
                )
            })
        }
        "data.prune" => (count("packs_deleted") > 0).then(|| {
            format!(
                "{} deleted ({} bytes freed) of data no snapshot uses",
                plural(count("packs_deleted"), "pack"),
                count("bytes_freed")
            )
        }),
        "key.reencrypt" => {
            let retired: Vec<String> = d["retired"]
                .as_array()?
                .iter()
                .map(|v| v.to_string())
                .collect();
            (!retired.is_empty()).then(|| {
                format!(
                    "key epochs {} retired: their keys destroyed",
                    retired.join(", ")
                )
            })
        }
        "key.rotate_master" => Some(format!(
            "master key replaced; the old one opens nothing; {} other key slots removed",
            count("other_slots_removed")
        )),
        "key.remove" => Some(format!(
            "key slot {} removed",
            d["slot"].as_str().unwrap_or("?")
        )),
        _ => None,
    }
}

/// One run of an agent job, as the report needs it (the agent's job history keeps more).
#[derive(Debug, Clone)]
pub struct JobRun {
    pub job: String,
    /// The job's kind: `backup`, `check`, ...
    pub kind: String,
    /// Unix seconds.
    pub started: f64,
    /// How it ended (`success`, `partial`, `failed`, `interrupted`), or `running`.
    pub result: String,
    pub message: String,
}

impl JobRun {
    fn finished(&self) -> bool {
        self.result != "running"
    }
}

/// The share of finished runs that succeeded, if any finished.
fn success_rate(runs: &[&JobRun]) -> Option<f64> {
    let ok = runs.iter().filter(|r| r.result == "success").count();
    (!runs.is_empty()).then(|| ok as f64 / runs.len() as f64)
}

fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

impl AuditStatus {
    /// The log's state from `audit verify`'s report, with its first problem in words.
    pub fn of(verified: &VerifyReport) -> Self {
        AuditStatus {
            intact: verified.is_intact(),
            entries: verified.entries,
            head: verified.head.clone(),
            problem: verified
                .first_broken
                .as_ref()
                .map(|(seq, why)| format!("broken at entry {seq}: {why}"))
                .or_else(|| {
                    verified
                        .catalog_mismatches
                        .first()
                        .map(|(seq, why)| format!("entry {seq}: {why}"))
                })
                .or_else(|| {
                    verified.anchors.broken_anchors.first().map(|b| {
                        format!(
                            "cut or rewritten: snapshot {} names entry {}: {}",
                            b.snapshot, b.seq, b.reason
                        )
                    })
                })
                .or_else(|| {
                    let k = verified.anchors.keyring_anchor.as_ref()?;
                    let why = k.broken.as_ref()?;
                    Some(format!(
                        "cut or rewritten: the keyring names entry {}: {why}",
                        k.seq
                    ))
                })
                .or_else(|| {
                    verified.anchors.missing_snapshots.first().map(|m| {
                        format!(
                            "snapshot recorded by entry {} ({}, {}) is missing",
                            m.commit, m.host, m.time
                        )
                    })
                }),
        }
    }
}

/// Reads what the report is made of from the repository (its audit log, verified; its
/// snapshots' times; its targets' object lock) and builds it. `job_runs` are the agent's runs of
/// this repository, when the caller's host has a job history.
pub async fn compile(
    repo: &Repository,
    period: Period,
    repository: String,
    job_runs: Option<&[JobRun]>,
) -> drvault_repo::Result<Report> {
    let entries: Vec<audit::AuditEntry> = repo
        .audit()
        .read_all()
        .await?
        .into_values()
        .filter_map(|e| e.ok())
        .collect();
    let status = AuditStatus::of(&drvault_repo::audit_verify::verify(repo).await?);
    // Each target's object lock, as `drvault targets` surveys it.
    let (statuses, _) = drvault_repo::sync::survey(repo.store()).await;
    let immutability: Vec<Value> = statuses
        .iter()
        .map(|s| serde_json::to_value(s).unwrap_or_default())
        .collect();
    let times: Vec<i64> = repo
        .snapshots()
        .await?
        .iter()
        .map(|(_, s)| s.time_ns)
        .collect();
    Ok(build(
        period,
        repository,
        &entries,
        &times,
        status,
        job_runs,
        immutability,
    ))
}

/// Builds the report from the audit log's entries and the snapshot times.
pub fn build(
    period: Period,
    repository: String,
    entries: &[audit::AuditEntry],
    snapshot_times_ns: &[i64],
    audit_log: AuditStatus,
    job_runs: Option<&[JobRun]>,
    immutability: Vec<Value>,
) -> Report {
    let in_range = |t: f64| {
        let t = (t * 1e9) as i64;
        t >= period.start.timestamp_nanos_opt().unwrap_or(0)
            && t < period.end.timestamp_nanos_opt().unwrap_or(i64::MAX)
    };
    let runs: Vec<&JobRun> = job_runs
        .unwrap_or_default()
        .iter()
        .filter(|r| in_range(r.started) && r.finished())
        .collect();
    let backups: Vec<_> = runs
        .iter()
        .copied()
        .filter(|r| r.kind == "backup")
        .collect();
    let checks = runs
        .iter()
        .filter(|r| r.kind == "check")
        .map(|r| {
            serde_json::json!({
                "time": DateTime::from_timestamp(r.started as i64, 0).map(|t| t.to_rfc3339()),
                "job": r.job, "result": r.result, "message": r.message,
            })
        })
        .collect();
    let drills: Vec<Value> = entries
        .iter()
        .filter(|e| e.action == "drill.run")
        .filter(|e| {
            e.details["started"]
                .as_str()
                .is_some_and(|t| in_period(&period, t))
        })
        .map(|e| e.details.clone())
        .collect();
    let key_operations = entries
        .iter()
        .filter(|e| {
            (e.action.starts_with("key.") || e.action == "repository.init")
                && in_period(&period, &e.time)
        })
        .map(|e| serde_json::json!({ "seq": e.seq, "time": e.time, "action": e.action, "actor": e.actor, "result": e.result, "details": e.details }))
        .collect();
    let disposals = entries
        .iter()
        .filter(|e| in_period(&period, &e.time) && e.result == "ok")
        .filter_map(|e| disposal(e).map(|what| serde_json::json!({ "seq": e.seq, "time": e.time, "action": e.action, "actor": e.actor, "what": what })))
        .collect();
    let (s, t) = (
        period.start.timestamp_nanos_opt().unwrap_or(0),
        period.end.timestamp_nanos_opt().unwrap_or(i64::MAX),
    );
    Report {
        drills_passed: drills.iter().filter(|d| d["passed"] == true).count(),
        drills,
        key_operations,
        disposals,
        snapshots_in_period: snapshot_times_ns
            .iter()
            .filter(|n| **n >= s && **n < t)
            .count(),
        backup_success_rate: success_rate(&backups),
        backup_runs: backups.len() as u64,
        backup_runs_succeeded: backups.iter().filter(|r| r.result == "success").count() as u64,
        checks,
        job_history: job_runs.is_some(),
        generated: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        repository,
        period,
        audit_log,
        immutability,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::Datelike;

    #[test]
    fn periods_parse_and_bad_ones_are_refused() {
        let q = parse_period("2026-Q4").unwrap();
        assert_eq!(q.start.to_rfc3339(), "2026-10-01T00:00:00+00:00");
        assert_eq!(q.end.to_rfc3339(), "2027-01-01T00:00:00+00:00");
        assert_eq!(parse_period("2026-02").unwrap().end.month(), 3);
        assert_eq!(parse_period("2026").unwrap().end.year(), 2027);
        for bad in ["", "2026-Q5", "2026-13", "Q4", "2026-Qx", "twenty"] {
            assert!(parse_period(bad).is_err(), "{bad}");
        }
    }
}
