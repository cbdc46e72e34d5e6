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
mod key;
mod ls;
mod mount;
mod prune;
mod restore;

mod snapshots;
mod stats;
mod tag;
pub mod targets;

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
        Command::Migrate => key::migrate(ctx, g),
        Command::Audit(a) => audit::run(ctx, g, a),
        Command::Forget(a) => forget::run(ctx, g, a),
        Command::Prune(a) => prune::run(ctx, g, a),
        Command::Agent(_) => anyhow::bail!("the agent does not run itself as a job"),
        Command::Jobs(a) => jobs::run(g, a),
        Command::Completions { .. } | Command::Man { .. } => Ok(Exit::Ok),
    }
}

pub use crate::text::{human, plural, printable};
