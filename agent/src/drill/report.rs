//! `drtest report`: the auditor's report of a period, built from the repository's audit log
//! (drills, key operations) and its snapshots. Sections map to SOC 2 criteria in docs/SOC2.md.

use std::fmt::Write as _;

use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
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
pub fn parse_period(text: &str) -> Result<Period> {
    let bad = || {
        format!("period {text:?}: write a year (2026), a quarter (2026-Q4) or a month (2026-11)")
    };
    let (year, rest) = text
        .split_once('-')
        .map_or((text, None), |(y, r)| (y, Some(r)));
    let year: i32 = year.parse().with_context(bad)?;
    let (m0, months) = match rest {
        None => (1, 12),
        Some(q) if q.starts_with(['Q', 'q']) => {
            let q: u32 = q[1..].parse().with_context(bad)?;
            if !(1..=4).contains(&q) {
                bail!(bad());
            }
            ((q - 1) * 3 + 1, 3)
        }
        Some(m) => {
            let m: u32 = m.parse().with_context(bad)?;
            if !(1..=12).contains(&m) {
                bail!(bad());
            }
            (m, 1)
        }
    };
    let start = NaiveDate::from_ymd_opt(year, m0, 1).with_context(bad)?;
    let end_month = m0 + months;
    let end = if end_month > 12 {
        NaiveDate::from_ymd_opt(year + 1, end_month - 12, 1)
    } else {
        NaiveDate::from_ymd_opt(year, end_month, 1)
    }
    .with_context(bad)?;
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

/// Builds the report from the audit log's entries and the snapshot times.
pub fn build(
    period: Period,
    repository: String,
    entries: &[drvault_repo::audit::AuditEntry],
    snapshot_times_ns: &[i64],
    audit_log: AuditStatus,
    job_runs: Option<&[crate::agent::history::Run]>,
) -> Report {
    use crate::agent::history::{success_rate, RunResult};
    let in_range = |t: f64| {
        let t = (t * 1e9) as i64;
        t >= period.start.timestamp_nanos_opt().unwrap_or(0)
            && t < period.end.timestamp_nanos_opt().unwrap_or(i64::MAX)
    };
    let runs: Vec<&crate::agent::history::Run> = job_runs
        .unwrap_or_default()
        .iter()
        .filter(|r| in_range(r.started) && r.result != RunResult::Running)
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
        .filter(|e| e.action.starts_with("key.") && in_period(&period, &e.time))
        .map(|e| serde_json::json!({ "time": e.time, "action": e.action, "actor": e.actor, "result": e.result, "details": e.details }))
        .collect();
    let (s, t) = (
        period.start.timestamp_nanos_opt().unwrap_or(0),
        period.end.timestamp_nanos_opt().unwrap_or(i64::MAX),
    );
    Report {
        drills_passed: drills.iter().filter(|d| d["passed"] == true).count(),
        drills,
        key_operations,
        snapshots_in_period: snapshot_times_ns
            .iter()
            .filter(|n| **n >= s && **n < t)
            .count(),
        backup_success_rate: success_rate(backups.iter().copied()),
        backup_runs: backups.len() as u64,
        backup_runs_succeeded: backups
            .iter()
            .filter(|r| r.result == RunResult::Success)
            .count() as u64,
        checks,
        job_history: job_runs.is_some(),
        generated: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        repository,
        period,
        audit_log,
    }
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

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn num(v: &Value) -> f64 {
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

fn human_secs(s: f64) -> String {
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
            human_secs(num(&d["rto_seconds"])),
            human_secs(num(&d["rto_objective_seconds"])),
            human_secs(num(&d["rpo_seconds"])),
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
        "{} snapshots were taken in the period.",
        r.snapshots_in_period
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

/// One chart: achieved value per drill (points, red when over) against the objective (line).
/// A drill within this objective that failed for another reason (validation, the other
/// objective) is drawn orange, so no failed drill looks green.
fn chart(r: &Report, title: &str, achieved: &str, objective: &str) -> String {
    let (w, h, pad) = (560.0, 220.0, 44.0);
    let points: Vec<(f64, f64)> = r
        .drills
        .iter()
        .map(|d| (num(&d[achieved]), num(&d[objective])))
        .collect();
    let passed: Vec<bool> = r.drills.iter().map(|d| d["passed"] == true).collect();
    let max = points
        .iter()
        .flat_map(|(a, o)| [*a, *o])
        .fold(1e-9, f64::max)
        * 1.15;
    let n = points.len().max(1) as f64;
    let x = |i: usize| pad + (w - 2.0 * pad) * (i as f64 + 0.5) / n;
    let y = |v: f64| h - pad - (h - 2.0 * pad) * (v / max);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{t}\">\
         <text x=\"{pad}\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{t}</text>\
         <line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#444\"/>\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{b}\" stroke=\"#444\"/>\
         <text x=\"4\" y=\"{top}\" font-size=\"10\">{mx}</text><text x=\"4\" y=\"{b}\" font-size=\"10\">0</text>",
        t = esc(title),
        b = h - pad,
        r = w - pad,
        top = pad + 4.0,
        mx = esc(&human_secs(max)),
    );
    for (i, (a, o)) in points.iter().enumerate() {
        let over = a > o;
        let _ = write!(
            svg,
            "<line x1=\"{x0}\" y1=\"{yo}\" x2=\"{x1}\" y2=\"{yo}\" stroke=\"#888\" stroke-dasharray=\"4 3\"><title>objective {os}</title></line>\
             <circle cx=\"{cx}\" cy=\"{cy}\" r=\"6\" fill=\"{c}\"><title>drill {n}: {as_}{failed}</title></circle>\
             <text x=\"{cx}\" y=\"{ly}\" font-size=\"10\" text-anchor=\"middle\">{n}</text>",
            x0 = x(i) - 18.0,
            x1 = x(i) + 18.0,
            yo = y(*o),
            cx = x(i),
            cy = y(*a),
            c = match (over, passed[i]) {
                (true, _) => "#c0392b",
                (false, false) => "#e67e22",
                (false, true) => "#27ae60",
            },
            n = i + 1,
            ly = h - pad + 14.0,
            os = esc(&human_secs(*o)),
            as_ = esc(&human_secs(*a)),
            failed = if passed[i] { "" } else { " (drill failed)" },
        );
    }
    svg.push_str("</svg>");
    svg
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
                rto = human_secs(num(&d["rto_seconds"])),
                rtoo = human_secs(num(&d["rto_objective_seconds"])),
                rpo = human_secs(num(&d["rpo_seconds"])),
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
<h2>Backups <small>(A1.2)</small></h2><p>{snaps} snapshots were taken in the period. Backup success rate: {rate}.</p>\
<h2>Integrity checks <small>(CC7.1, PI1.4)</small></h2><p>{checks}</p><ul>{check_items}</ul>\
<h2>Key management <small>(CC6.1, C1.1)</small></h2><ul>{keys}</ul>\
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
        rto_chart = chart(r, "RTO per drill against its objective", "rto_seconds", "rto_objective_seconds"),
        rpo_chart = chart(r, "RPO per drill against its objective", "rpo_seconds", "rpo_objective_seconds"),
        rows = md_rows,
        snaps = r.snapshots_in_period,
        rate = esc(&success_text(r)),
        checks = esc(&checks_summary(r)),
        check_items = r.checks.iter().map(|c| format!("<li>{} job <code>{}</code>: {} {}</li>",
            esc(c["time"].as_str().unwrap_or("")), esc(c["job"].as_str().unwrap_or("")),
            esc(c["result"].as_str().unwrap_or("")), esc(c["message"].as_str().unwrap_or("")))).collect::<String>(),
        keys = if keys.is_empty() { "<li>No key operations in the period.</li>".to_string() } else { keys },
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
