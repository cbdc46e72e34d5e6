//! The drvault agent: the `drvault` and `drtest` commands share everything here.

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
    let cli = cli::Cli::parse();
    // Before the runtime starts any thread. Restore is left alone: it allocates a fresh buffer
    // per blob, and a fixed threshold made it 40 % slower (page faults on every new mapping).
    if matches!(
        cli.command,
        cli::Command::Backup(_) | cli::Command::Check(_) | cli::Command::Key(_)
    ) {
        alloc::tune();
    }
    init_logging(cli.global.verbose, cli.global.quiet);
    match commands::run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            let code = exit::classify(&e);
            eprintln!("drvault: {e:#}");
            code.into()
        }
    }
}

/// `drtest`: restore drills with RTO/RPO evidence.
pub fn drtest_main() -> std::process::ExitCode {
    let cli = drill::cli::DrtestCli::parse();
    init_logging(cli.global.verbose, cli.global.quiet);
    match drill::run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            let code = exit::classify(&e);
            eprintln!("drtest: {e:#}");
            code.into()
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DRVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
