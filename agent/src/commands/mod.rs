//! One module per subcommand.

mod audit;
pub mod backup;
mod check;
mod diff;
mod docs;
mod dump;
mod find;
mod forget;
mod init;
mod jobs;
pub use jobs::same_location;
mod key;
mod ls;
mod mount;
mod prune;
mod restore;

pub use restore::components;
mod snapshots;
mod stats;
mod tag;
mod targets;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::config::Strictness;
use crate::context::Context;
use crate::exit::Exit;

pub fn run(cli: Cli) -> Result<Exit> {
    match &cli.command {
        // Documentation needs no repository, configuration or runtime.
        Command::Completions { shell } => return docs::completions(*shell),
        Command::Man { dir } => return docs::man(dir),
        // The job history is a local file.
        Command::Jobs(a) => return jobs::run(&cli.global, a),
        // The agent builds its contexts from the configuration it keeps across reloads.
        Command::Agent(a) => return crate::agent::run(&cli.global, a),
        _ => {}
    }
    // Only the command that uses a section needs it right: a typo in [[jobs]] must not block
    // a restore in an incident.
    let strict = match &cli.command {
        Command::Key(crate::cli::KeyCommand::Rotate(r)) if r.if_due => Strictness::All,
        _ => Strictness::Storage,
    };
    let ctx = Context::new(&cli.global, strict)?;
    dispatch(&ctx, &cli.global, &cli.command)
}

/// Runs one command with an existing context (the agent's jobs come through here too).
pub fn dispatch(ctx: &Context, g: &crate::cli::Global, command: &Command) -> Result<Exit> {
    match command {
        Command::Init(a) => init::run(ctx, g, a),
        Command::Backup(a) => backup::run(ctx, g, a),
        Command::Snapshots(a) => snapshots::run(ctx, g, a),
        Command::Ls(a) => ls::run(ctx, g, a),
        Command::Dump(a) => dump::run(ctx, g, a),
        Command::Mount(a) => mount::run(ctx, g, a),
        Command::Diff(a) => diff::run(ctx, g, a),
        Command::Find(a) => find::run(ctx, g, a),
        Command::Tag(a) => tag::run(ctx, g, a),
        Command::Stats(a) => stats::run(ctx, g, a),
        Command::Restore(a) => restore::run(ctx, g, a),
        Command::Check(a) => check::run(ctx, g, a),
        Command::Key(k) => key::run(ctx, g, k),
        Command::Targets => targets::run(ctx, g),
        Command::Sync => targets::sync(ctx, g),
        Command::Repair => targets::repair(ctx, g),
        Command::Audit(a) => audit::run(ctx, g, a),
        Command::Forget(a) => forget::run(ctx, g, a),
        Command::Prune(a) => prune::run(ctx, g, a),
        Command::Agent(_) => anyhow::bail!("the agent does not run itself as a job"),
        Command::Jobs(a) => jobs::run(g, a),
        Command::Completions { .. } | Command::Man { .. } => Ok(Exit::Ok),
    }
}

/// Bytes in a human unit.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// "1 snapshot", "2 snapshots"; "1 directory", "2 directories".
pub fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else if let Some(stem) = one.strip_suffix('y') {
        format!("{n} {stem}ies")
    } else if ["s", "x", "ch", "sh"].iter().any(|e| one.ends_with(e)) {
        format!("{n} {one}es")
    } else {
        format!("{n} {one}s")
    }
}

/// A name or path for display: lossy UTF-8 with control characters escaped.
pub fn printable(bytes: &[u8]) -> String {
    drvault_repo::printable::bytes(bytes)
}
