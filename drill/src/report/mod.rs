//! The auditor's report of a period (`drtest report`), built from the repository's audit log
//! (drills, key operations, disposals), its snapshots, its targets' object lock and, where the
//! caller has one, the agent's job history. Sections map to SOC 2 criteria in docs/SOC2.md.

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use drvault_repo::audit::{self, VerifyReport};
use drvault_repo::Repository;

mod chart;
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
    let entries: Vec<audit::AuditEntry> = audit::read_all(repo)
        .await?
        .into_values()
        .filter_map(|e| e.ok())
        .collect();
    let status = AuditStatus::of(&audit::verify(repo).await?);
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

/// One line per target for the "Immutability" section.
fn immutability_lines(r: &Report) -> Vec<String> {
    r.immutability
        .iter()
        .map(|t| {
            let name = t["name"].as_str().unwrap_or("?");
            match t["lock"].as_str() {
                Some(lock) => {
                    format!(
                    "{name}: object lock {lock}; the first lock ends {}; {} objects not locked{}",
                    t["lock_shortest"].as_str().unwrap_or("(no object is locked)"),
                    t["unlocked"].as_u64().unwrap_or(0),
                    t["error"]
                        .as_str()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                )
                }
                None => format!(
                    "{name}: no object lock (whoever holds this target's delete rights can \
                     destroy its copies)"
                ),
            }
        })
        .collect()
}

fn success_text(r: &Report) -> String {
    match r.backup_success_rate {
        Some(x) => format!(
            "{:.2} % ({} of {} scheduled backup runs succeeded, from the agent's job history on this host)",
            x * 100.0,
            r.backup_runs_succeeded,
            r.backup_runs
        ),
        None if r.job_history => "no scheduled backup ran in the period".to_string(),
        None => "not available: no agent job history on this host (write the report on the agent's host)".to_string(),
    }
}

fn checks_summary(r: &Report) -> String {
    let failed = r.checks.iter().filter(|c| c["result"] != "success").count();
    match (r.checks.len(), r.job_history) {
        (_, false) => "No agent job history on this host.".to_string(),
        (0, true) => "No scheduled check ran in the period.".to_string(),
        (n, true) => format!("{n} scheduled checks ran; {failed} did not succeed."),
    }
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub(crate) fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// A JSON list of names (targets) as "a, b".
fn names(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// A drill's measured time, or "—" when it was never measured (the drill stopped before).
fn measured(v: &Value) -> String {
    v.as_f64().map_or_else(|| "—".to_string(), human_secs)
}

pub(crate) fn human_secs(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1} min", s / 60.0)
    } else if s >= 0.1 || s == 0.0 {
        format!("{s:.1} s")
    } else {
        // A tenth of a second would round an objective of 5 ms to "0.0 s".
        format!("{:.0} ms", s * 1000.0)
    }
}

pub fn markdown(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Disaster-recovery evidence, {}\n", r.period.name);
    let _ = writeln!(
        o,
        "Repository `{}`. Period {} to {} (UTC). Generated {} by drtest {}.\n",
        r.repository,
        r.period.start.date_naive(),
        r.period.end.date_naive(),
        r.generated,
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(o, "## Restore drills (A1.3, CC7.5)\n");
    let _ = writeln!(
        o,
        "{} drills, {} passed.\n",
        r.drills.len(),
        r.drills_passed
    );
    let _ = writeln!(o, "| started | plan | result | RTO achieved / objective | RPO achieved / objective | snapshot | targets used | excluded | reason |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
    for d in &r.drills {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} / {} | {} / {} | {} | {} | {} | {} |",
            d["started"].as_str().unwrap_or(""),
            d["plan"].as_str().unwrap_or(""),
            if d["passed"] == true { "PASS" } else { "FAIL" },
            measured(&d["rto_seconds"]),
            human_secs(num(&d["rto_objective_seconds"])),
            measured(&d["rpo_seconds"]),
            human_secs(num(&d["rpo_objective_seconds"])),
            d["snapshot_id"]
                .as_str()
                .map(|s| &s[..8.min(s.len())])
                .unwrap_or("-"),
            names(&d["targets_used"]),
            names(&d["targets_excluded"]),
            d["reason"].as_str().unwrap_or("").replace('|', "/"),
        );
    }
    let _ = writeln!(o, "\n## Backups (A1.2)\n");
    let _ = writeln!(
        o,
        "{} taken in the period.",
        plural(r.snapshots_in_period as u64, "snapshot")
    );
    let _ = writeln!(o, "Backup success rate: {}.\n", success_text(r));
    let _ = writeln!(o, "## Integrity checks (CC7.1, PI1.4)\n");
    let _ = writeln!(o, "{}", checks_summary(r));
    for c in &r.checks {
        let _ = writeln!(
            o,
            "- {} job `{}`: {}{}",
            c["time"].as_str().unwrap_or(""),
            c["job"].as_str().unwrap_or(""),
            c["result"].as_str().unwrap_or(""),
            c["message"]
                .as_str()
                .filter(|m| !m.is_empty())
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "## Key management (CC6.1, C1.1)\n");
    if r.key_operations.is_empty() {
        let _ = writeln!(o, "No key operations in the period.\n");
    }
    for k in &r.key_operations {
        let _ = writeln!(
            o,
            "- {} `{}` by {}: {}",
            k["time"].as_str().unwrap_or(""),
            k["action"].as_str().unwrap_or(""),
            k["actor"].as_str().unwrap_or(""),
            k["result"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(o, "\n## Secure disposal (C1.2)\n");
    if r.disposals.is_empty() {
        let _ = writeln!(o, "Nothing was disposed of in the period.");
    }
    for d in &r.disposals {
        let _ = writeln!(
            o,
            "- {} audit entry {}, `{}` by {}: {}",
            d["time"].as_str().unwrap_or(""),
            d["seq"],
            d["action"].as_str().unwrap_or(""),
            d["actor"].as_str().unwrap_or(""),
            d["what"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(o, "\n## Immutability (A1.2, CC6.1)\n");
    for line in immutability_lines(r) {
        let _ = writeln!(o, "- {line}");
    }
    let _ = writeln!(o, "\n## Audit log integrity (CC7.2, PI1.5)\n");
    let _ = writeln!(
        o,
        "{}: {} entries, head `{}`.{}",
        if r.audit_log.intact {
            "Intact"
        } else {
            "BROKEN"
        },
        r.audit_log.entries,
        r.audit_log.head.as_deref().unwrap_or("-"),
        r.audit_log
            .problem
            .as_ref()
            .map(|p| format!(" {p}"))
            .unwrap_or_default()
    );
    o
}

pub fn html(r: &Report) -> String {
    let md_rows: String = r
        .drills
        .iter()
        .enumerate()
        .map(|(i, d)| {
            format!(
                "<tr class=\"{cls}\"><td>{n}</td><td>{started}</td><td>{plan}</td><td>{res}</td><td>{rto} / {rtoo}</td><td>{rpo} / {rpoo}</td><td><code>{snap}</code></td><td>{used}</td><td>{excl}</td><td>{reason}</td><td><code>{id}</code></td></tr>",
                cls = if d["passed"] == true { "pass" } else { "fail" },
                n = i + 1,
                started = esc(d["started"].as_str().unwrap_or("")),
                plan = esc(d["plan"].as_str().unwrap_or("")),
                res = if d["passed"] == true { "PASS" } else { "FAIL" },
                rto = measured(&d["rto_seconds"]),
                rtoo = human_secs(num(&d["rto_objective_seconds"])),
                rpo = measured(&d["rpo_seconds"]),
                rpoo = human_secs(num(&d["rpo_objective_seconds"])),
                snap = esc(d["snapshot_id"].as_str().map(|s| &s[..8.min(s.len())]).unwrap_or("-")),
                used = esc(&names(&d["targets_used"])),
                excl = esc(&names(&d["targets_excluded"])),
                reason = esc(d["reason"].as_str().unwrap_or("")),
                id = esc(d["drill_id"].as_str().unwrap_or("")),
            )
        })
        .collect();
    let keys: String = r
        .key_operations
        .iter()
        .map(|k| {
            format!(
                "<li>{} <code>{}</code> by {}: {}</li>",
                esc(k["time"].as_str().unwrap_or("")),
                esc(k["action"].as_str().unwrap_or("")),
                esc(k["actor"].as_str().unwrap_or("")),
                esc(k["result"].as_str().unwrap_or(""))
            )
        })
        .collect();
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>DR evidence {period}</title>\
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;font-size:13px}}\
td,th{{border:1px solid #ccc;padding:4px 6px}}tr.fail td{{background:#fdecea}}tr.pass td:nth-child(4){{color:#1e7d32;font-weight:bold}}\
tr.fail td:nth-child(4){{color:#b71c1c;font-weight:bold}}.charts{{display:flex;gap:1em;flex-wrap:wrap}}</style></head><body>\
<h1>Disaster-recovery evidence, {period}</h1>\
<p>Repository <code>{repo}</code>. Period {start} to {end} (UTC). Generated {generated} by drtest {version}.</p>\
<h2>Restore drills <small>(A1.3, CC7.5)</small></h2><p id=\"summary\">{n} drills, {passed} passed.</p>\
<div class=\"charts\">{rto_chart}{rpo_chart}</div>\
<table><thead><tr><th>#</th><th>started</th><th>plan</th><th>result</th><th>RTO achieved / objective</th><th>RPO achieved / objective</th>\
<th>snapshot</th><th>targets used</th><th>excluded</th><th>reason</th><th>drill id</th></tr></thead><tbody>{rows}</tbody></table>\
<h2>Backups <small>(A1.2)</small></h2><p>{snaps} taken in the period. Backup success rate: {rate}.</p>\
<h2>Integrity checks <small>(CC7.1, PI1.4)</small></h2><p>{checks}</p><ul>{check_items}</ul>\
<h2>Key management <small>(CC6.1, C1.1)</small></h2><ul>{keys}</ul>\
<h2>Secure disposal <small>(C1.2)</small></h2><ul id=\"disposal\">{disposal}</ul>\
<h2>Immutability <small>(A1.2, CC6.1)</small></h2><ul id=\"immutability\">{immutability}</ul>\
<h2>Audit log integrity <small>(CC7.2, PI1.5)</small></h2><p>{intact}: {entries} entries, head <code>{head}</code>.</p>\
</body></html>\n",
        period = esc(&r.period.name),
        repo = esc(&r.repository),
        start = r.period.start.date_naive(),
        end = r.period.end.date_naive(),
        generated = esc(&r.generated),
        version = env!("CARGO_PKG_VERSION"),
        n = r.drills.len(),
        passed = r.drills_passed,
        rto_chart = chart::svg(&r.drills, "RTO per drill, as a share of its objective", "rto_seconds", "rto_objective_seconds"),
        rpo_chart = chart::svg(&r.drills, "RPO per drill, as a share of its objective", "rpo_seconds", "rpo_objective_seconds"),
        rows = md_rows,
        snaps = plural(r.snapshots_in_period as u64, "snapshot"),
        rate = esc(&success_text(r)),
        checks = esc(&checks_summary(r)),
        check_items = r.checks.iter().map(|c| format!("<li>{} job <code>{}</code>: {} {}</li>",
            esc(c["time"].as_str().unwrap_or("")), esc(c["job"].as_str().unwrap_or("")),
            esc(c["result"].as_str().unwrap_or("")), esc(c["message"].as_str().unwrap_or("")))).collect::<String>(),
        keys = if keys.is_empty() { "<li>No key operations in the period.</li>".to_string() } else { keys },
        disposal = if r.disposals.is_empty() {
            "<li>Nothing was disposed of in the period.</li>".to_string()
        } else {
            r.disposals.iter().map(|d| format!("<li>{} audit entry {}, <code>{}</code> by {}: {}</li>",
                esc(d["time"].as_str().unwrap_or("")), d["seq"], esc(d["action"].as_str().unwrap_or("")),
                esc(d["actor"].as_str().unwrap_or("")), esc(d["what"].as_str().unwrap_or("")))).collect()
        },
        immutability = immutability_lines(r)
            .iter()
            .map(|l| format!("<li>{}</li>", esc(l)))
            .collect::<String>(),
        intact = if r.audit_log.intact { "Intact" } else { "BROKEN" },
        entries = r.audit_log.entries,
        head = esc(r.audit_log.head.as_deref().unwrap_or("-")),
    )
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
