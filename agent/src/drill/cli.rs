//! The `drtest` command line: the same global options as `drvault`.

use clap::{Args, Parser, Subcommand};

use crate::cli::Global;

/// Restore drills: restore from the surviving targets, verify, validate, and record RTO/RPO
/// evidence in the audit log.
#[derive(Debug, Parser)]
#[command(name = "drtest", version)]
pub struct DrtestCli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: DrtestCommand,
}

#[derive(Debug, Subcommand)]
pub enum DrtestCommand {
    /// Run a drill plan from the config file; exit 0 only when it passes.
    Run(RunArgs),
    /// The drills recorded in the repository's audit log, oldest first.
    History,
    /// The auditor's report of a period: drills against objectives, backups, key operations,
    /// audit-log integrity (docs/SOC2.md maps each section to its criteria).
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A year (2026), quarter (2026-Q4) or month (2026-11).
    #[arg(long)]
    pub period: String,
    #[arg(long, value_enum, default_value = "md")]
    pub format: ReportFormat,
    /// Write the report here instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    Md,
    Html,
    Json,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The plan's name (`[[drills]] name`).
    #[arg(long)]
    pub plan: String,
    /// A target that counts as lost (repeatable); replaces the plan's exclude_targets.
    #[arg(long = "exclude-target", value_name = "NAME")]
    pub exclude_targets: Vec<String>,
    /// Keep the restored data instead of removing it after the drill.
    #[arg(long)]
    pub keep: bool,
}
