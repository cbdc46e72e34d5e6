//! The report as people read it: Markdown for the auditor's file, HTML with the charts.

use std::fmt::Write as _;

use serde_json::Value;

use super::{chart, plural, Report};

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
