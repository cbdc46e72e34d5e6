//! The drvault agent: the `drvault` and `drtest` commands share everything here.

#[macro_use]
mod output;
mod agent;
mod alloc;
mod backup;
mod cli;
mod commands;
mod config;
mod context;
mod drill;
mod duration;
mod exit;
mod password;
mod stop;

use clap::Parser;

/// `drvault`.
pub fn drvault_main() -> std::process::ExitCode {
    harden_process();
    let cli = cli::Cli::parse();
    // Before the runtime starts any thread. Restore is left alone: it allocates a fresh buffer
    // per blob, and a fixed threshold made it 40 % slower (page faults on every new mapping).
    if matches!(
        cli.command,
        cli::Command::Backup(_)
            | cli::Command::Check(_)
            | cli::Command::Key(_)
            | cli::Command::Prune(_)
            | cli::Command::Agent(_)
    ) {
        alloc::tune();
    }
    init_logging(&cli.global);
    let code = match commands::run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            let code = exit::classify(&e);
            eprintln!("drvault: {e:#}");
            code.into()
        }
    };
    // For benches/fleet.sh: how many storage requests this run made.
    if std::env::var_os("DRVAULT_REQUEST_STATS").is_some() {
        eprintln!(
            "drvault: requests: {}",
            drvault_repo::target::requests_made()
        );
    }
    code
}

/// `drtest`: restore drills with RTO/RPO evidence.
pub fn drtest_main() -> std::process::ExitCode {
    harden_process();
    let cli = drill::cli::DrtestCli::parse();
    init_logging(&cli.global);
    match drill::run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            let code = exit::classify(&e);
            eprintln!("drtest: {e:#}");
            code.into()
        }
    }
}

/// The process holds the passphrase and data keys: no core dump may write them to disk and no
/// other process of the same user may read its memory (`PR_SET_DUMPABLE` 0, `RLIMIT_CORE` 0).
/// The walk holds a descriptor per directory level and per file waiting for a reader: the soft
/// limit on descriptors goes up to the hard one.
fn harden_process() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let _ = setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    );
    let files = getrlimit(Resource::Nofile);
    if files.maximum != files.current {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: files.maximum,
                maximum: files.maximum,
            },
        );
    }
}

fn init_logging(g: &cli::Global) {
    let level = match (g.quiet, g.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DRVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match g.log_format {
        cli::LogFormat::Json => builder.json().flatten_event(true).init(),
        cli::LogFormat::Text => {
            use std::io::IsTerminal;
            // Under systemd the journal stamps each line itself, and escape codes are noise
            // wherever stderr is not a terminal.
            let journal = std::env::var_os("JOURNAL_STREAM").is_some();
            let builder = builder.with_ansi(std::io::stderr().is_terminal());
            if journal {
                builder.without_time().init()
            } else {
                builder.init()
            }
        }
    }
}
