//! The drvault agent: the `drvault` and `drtest` commands share everything here.

#[macro_use]
mod output;
mod agent;
mod alloc;
mod backup_progress;
mod cli;
mod commands;
mod config;
mod context;
mod cron;
mod drill;
mod duration;
mod exit;
mod history;
mod hook_run;
mod hooks;
mod password;
mod stop;
mod text;
mod timefmt;

/// `drvault`.
pub fn drvault_main() -> std::process::ExitCode {
    harden_process();
    let cli = parse_or_exit::<cli::Cli>();
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
    // The agent runs unattended: its start and every job's start and end are logged at the
    // default level (`-q` for errors only).
    let default_info = matches!(cli.command, cli::Command::Agent(_));
    init_logging(&cli.global, default_info);
    let json = cli.global.json;
    let code = match commands::run(cli) {
        Ok(code) => code.into(),
        Err(e) => report_error("drvault", &e, json).into(),
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
    let cli = parse_or_exit::<drill::cli::DrtestCli>();
    init_logging(&cli.global, false);
    let json = cli.global.json;
    match drill::run(cli) {
        Ok(code) => code.into(),
        Err(e) => report_error("drtest", &e, json).into(),
    }
}

/// Parses the command line; a usage error exits 2 (help and --version 0), and under --json
/// it is also a JSON object on stdout.
fn parse_or_exit<C: clap::Parser>() -> C {
    match C::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let is_error = !matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            );
            if is_error && std::env::args_os().any(|a| a == "--json") {
                let message = e.kind().as_str().map_or_else(
                    || e.to_string().lines().next().unwrap_or_default().to_string(),
                    |k| k.to_string(),
                );
                outln!("{}", json_error(&message, exit::Exit::Usage, "usage"));
            }
            e.exit()
        }
    }
}

/// Prints an error on stderr (and, under --json, as one JSON object on stdout); returns its
/// exit code.
fn report_error(program: &str, e: &anyhow::Error, json: bool) -> exit::Exit {
    let code = exit::classify(e);
    let message = format_error(e);
    eprintln!("{program}: {message}");
    if json {
        outln!("{}", json_error(&message, code, exit::kind(code)));
    }
    code
}

fn json_error(message: &str, code: exit::Exit, kind: &str) -> serde_json::Value {
    serde_json::json!({"error": {"message": message, "exit_code": code as u8, "kind": kind}})
}

/// The cause chain, each cause once: storage errors repeat their source's text in their own
/// message ("Generic S3 error: Error performing POST …: HTTP error: …" nests five deep), so a
/// cause whose text is already part of the message is left out.
fn format_error(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
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

fn init_logging(g: &cli::Global, default_info: bool) {
    let level = match (g.quiet, g.verbose) {
        (true, _) => "error",
        (false, 0) if default_info => "info",
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

#[cfg(test)]
mod tests {
    #[test]
    fn each_cause_is_printed_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("error sending request: connection timed out")]
        struct Inner;
        #[derive(Debug, thiserror::Error)]
        #[error("Generic S3 error: Error performing POST in 30.0s - {0}")]
        struct Outer(#[source] Inner);
        let e = anyhow::Error::from(Outer(Inner)).context("deleting locks/x on target s3");
        assert_eq!(
            super::format_error(&e),
            "deleting locks/x on target s3: Generic S3 error: Error performing POST in 30.0s - \
             error sending request: connection timed out"
        );
    }
}
