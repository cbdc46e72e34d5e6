//! `drtest`: failover restore drills with RTO/RPO evidence in the audit log.

pub mod cli;

use anyhow::{Context as _, Result};
use drvault_drill::report;
use drvault_drill::validate::Redactor;
use drvault_drill::{DrillRecord, Plan, Surroundings};

use crate::context::Context;
use crate::exit::Exit;
use cli::{DrtestCli, DrtestCommand};

pub fn run(cli: DrtestCli) -> Result<Exit> {
    let ctx = Context::new(&cli.global, crate::config::Strictness::All)?;
    dispatch(&ctx, &cli.global, &cli.command)
}

/// A drill that ran, and where its evidence went.
pub struct DrillDone {
    pub record: DrillRecord,
    /// The audit log entry's sequence number, or why the evidence could not be recorded.
    pub recorded: Result<u64, drvault_repo::Error>,
}

/// Runs the drill plan `plan` (`exclude_targets` replaces the plan's own when not empty) and
/// records its evidence in the audit log: what `drtest run` and the agent's drill jobs do.
pub fn run_drill(
    ctx: &Context,
    g: &crate::cli::Global,
    plan: &str,
    exclude_targets: &[String],
    keep: bool,
) -> Result<DrillDone> {
    let plan = ctx
        .drill_plans()
        .iter()
        .find(|p| p.name == plan)
        .cloned()
        .with_context(|| format!("no drill plan named {plan:?} in the config file ([[drills]])"))?;
    let excluded = if exclude_targets.is_empty() {
        plan.exclude_targets.clone()
    } else {
        exclude_targets.to_vec()
    };
    let targets_used = {
        let names = ctx.target_names();
        if names.is_empty() {
            // A single --repo location: name it, so the evidence says where data came from.
            vec![ctx.repo_location.clone()]
        } else {
            names
                .into_iter()
                .filter(|t| !excluded.contains(t))
                .collect()
        }
    };
    let open_surviving = |excluded: &[String]| {
        ctx.store_without(excluded)
            .and_then(|store| ctx.open_with(g, store))
            .map_err(|e| format!("{e:#}"))
    };
    let env = Surroundings {
        rt: &ctx.rt,
        open_surviving: &open_surviving,
        targets_used,
        scratch_root: ctx.state_dir.join("drills"),
        redactor: secrets_to_redact(ctx, g),
    };
    let (record, _) = drvault_drill::run(&env, &library_plan(&plan)?, &excluded, keep);
    // The record goes into the audit log (repository and catalog) once, whole, through every
    // target: an excluded target is excluded from the drill's reads, not from its evidence
    // (appending through the surviving targets only forked the log).
    let opened = ctx.open(g);
    if let Err(e) = &opened {
        tracing::warn!("cannot open the repository to record the drill: {e:#}");
    }
    let recorded = match opened.ok() {
        Some(repo) => ctx.rt.block_on(drvault_drill::record(&repo, &record)),
        None => Err(drvault_repo::Error::Invalid(
            "no target can be opened".into(),
        )),
    };
    Ok(DrillDone { record, recorded })
}

/// The library's plan for a configured one (durations parsed; the configuration was validated).
fn library_plan(p: &crate::config::DrillPlan) -> Result<Plan> {
    let duration = |what: &str, text: &str| {
        crate::duration::parse(text).with_context(|| format!("drill {}: {what}", p.name))
    };
    Ok(Plan {
        name: p.name.clone(),
        paths: p.paths.clone(),
        from_job: p.job.is_some(),
        host: p.host.clone(),
        snapshot: p.snapshot.clone(),
        restore_dir: p.restore_dir.clone(),
        validate: p.validate.clone(),
        validate_timeout: match &p.validate_timeout {
            Some(t) => duration("validate_timeout", t)?,
            None => std::time::Duration::from_secs(600),
        },
        validate_env: p.validate_env.clone(),
        rto_objective: duration("rto_objective", &p.rto_objective)?,
        rpo_objective: duration("rpo_objective", &p.rpo_objective)?,
    })
}

/// The secrets drvault itself can see, none of which may reach a drill's evidence: the
/// passphrase (from wherever it came, without prompting), every systemd credential, secret
/// options of the configured targets, and environment variables with secret-looking names.
fn secrets_to_redact(ctx: &Context, g: &crate::cli::Global) -> Redactor {
    let mut r = Redactor::default();
    if let Some(f) = &g.password_file {
        if let Ok(bytes) = std::fs::read(f) {
            r.add(&bytes);
        }
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if let Ok(bytes) = std::fs::read(entry.path()) {
                r.add(&bytes);
            }
        }
    }
    for (name, value) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name == "DRVAULT_PASSWORD" || crate::config::is_secret(&name) {
            use std::os::unix::ffi::OsStrExt;
            r.add(value.as_bytes());
        }
    }
    for value in ctx.secret_options() {
        r.add(value.as_bytes());
    }
    r
}

/// Runs one `drtest` command with an existing context.
pub fn dispatch(ctx: &Context, g: &crate::cli::Global, command: &DrtestCommand) -> Result<Exit> {
    match command {
        DrtestCommand::Run(a) => {
            let drill = run_drill(ctx, g, &a.plan, &a.exclude_targets, a.keep)?;
            let (record, recorded) = (&drill.record, &drill.recorded);
            let evidence = serde_json::to_value(record)?;
            if let Err(e) = recorded {
                eprintln!(
                    "drtest: the drill's evidence could not be written to the audit log: {e}"
                );
            }
            if g.json {
                outln!("{}", serde_json::to_string_pretty(&evidence)?);
            } else if !g.quiet {
                print_record(record);
            }
            Ok(match (record.passed, recorded.is_ok()) {
                (true, true) => Exit::Ok,
                _ => Exit::Failure,
            })
        }
        DrtestCommand::Report(a) => {
            let period = crate::exit::option_value(
                "--period",
                report::parse_period(&a.period).map_err(anyhow::Error::msg),
            )?;
            let repo = ctx.open(g)?;
            // The agent's job history, when this host has one (the report is usually written
            // there): runs of this repository, and older ones, which did not record theirs.
            let history = ctx.state_dir.join("jobs.sqlite");
            let here = crate::context::same_location(&ctx.repo_location);
            let runs = if history.exists() {
                let all = crate::history::History::open(&ctx.state_dir)?.runs(0.0)?;
                Some(
                    all.into_iter()
                        .filter(|r| {
                            r.repository
                                .as_deref()
                                .is_none_or(|l| crate::context::same_location(l) == here)
                        })
                        .map(|r| report::JobRun {
                            job: r.job,
                            kind: r.kind,
                            started: r.started,
                            result: r.result.as_str().to_string(),
                            message: r.message,
                        })
                        .collect::<Vec<_>>(),
                )
            } else {
                None
            };
            let r = ctx.rt.block_on(report::compile(
                &repo,
                period,
                ctx.repo_location.clone(),
                runs.as_deref(),
            ))?;
            // The global --json means JSON, whatever --format says.
            let format = if g.json {
                cli::ReportFormat::Json
            } else {
                a.format
            };
            let text = match format {
                cli::ReportFormat::Md => report::markdown(&r),
                cli::ReportFormat::Html => report::html(&r),
                cli::ReportFormat::Json => serde_json::to_string_pretty(&r)? + "\n",
            };
            match &a.output {
                Some(path) => std::fs::write(path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => out!("{text}"),
            }
            Ok(if r.audit_log.intact {
                Exit::Ok
            } else {
                Exit::Integrity
            })
        }
        DrtestCommand::History => {
            let repo = ctx.open(g)?;
            let entries = ctx.rt.block_on(repo.audit().read_all())?;
            let drills: Vec<serde_json::Value> = entries
                .into_values()
                .filter_map(|e| e.ok())
                .filter(|e| e.action == "drill.run")
                .map(|e| {
                    let mut d = e.details.clone();
                    d["audit_seq"] = e.seq.into();
                    d
                })
                .collect();
            if g.json {
                outln!("{}", serde_json::to_string_pretty(&drills)?);
            } else {
                for d in &drills {
                    outln!(
                        "{}  {:<12} {:<6} RTO {:>8} s (obj {:>6})  RPO {:>8} s (obj {:>6})  {}",
                        d["started"].as_str().unwrap_or(""),
                        d["plan"].as_str().unwrap_or(""),
                        if d["passed"] == true { "PASS" } else { "FAIL" },
                        fmt_secs(&d["rto_seconds"]),
                        d["rto_objective_seconds"],
                        fmt_secs(&d["rpo_seconds"]),
                        d["rpo_objective_seconds"],
                        d["reason"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(Exit::Ok)
        }
    }
}

fn fmt_secs(v: &serde_json::Value) -> String {
    v.as_f64()
        .map(|s| format!("{s:.1}"))
        .unwrap_or_else(|| "-".into())
}

fn print_record(r: &DrillRecord) {
    outln!(
        "drill {} (plan {}): {}",
        r.drill_id,
        r.plan,
        if r.passed { "PASSED" } else { "FAILED" }
    );
    if !r.reason.is_empty() {
        outln!("  reason: {}", r.reason);
    }
    if let (Some(id), Some(t)) = (&r.snapshot_id, &r.snapshot_time) {
        outln!("  snapshot {} of {t}", &id[..8.min(id.len())]);
    }
    outln!(
        "  targets used {:?}, excluded {:?}",
        r.targets_used,
        r.targets_excluded
    );
    if let Some(rto) = r.rto_seconds {
        outln!("  RTO {rto:.1} s (objective {} s)", r.rto_objective_seconds);
    }
    if let Some(rpo) = r.rpo_seconds {
        outln!("  RPO {rpo:.1} s (objective {} s)", r.rpo_objective_seconds);
    }
    outln!(
        "  {} files, {} bytes restored and verified",
        r.files,
        r.bytes
    );
    for v in &r.validations {
        outln!(
            "  validation `{}`: {}",
            v.command,
            if v.passed() { "ok" } else { "FAILED" }
        );
    }
}
