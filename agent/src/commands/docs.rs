//! Shell completions and man pages, generated from the clap definitions so they never drift.

use std::path::Path;

use anyhow::{Context as _, Result};
use clap::CommandFactory;

use crate::cli::Cli;
use crate::drill::cli::DrtestCli;
use crate::exit::Exit;

pub fn completions(shell: clap_complete::Shell) -> Result<Exit> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "drvault", &mut script);
    crate::output::write_bytes(&script);
    Ok(Exit::Ok)
}

/// drvault.1, drvault-<sub>.1 for each subcommand (and nested ones), and the same for drtest.
pub fn man(dir: &Path) -> Result<Exit> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for cmd in [
        Cli::command().name("drvault"),
        DrtestCli::command().name("drtest"),
    ] {
        write_pages(dir, cmd, None)?;
    }
    Ok(Exit::Ok)
}

fn write_pages(dir: &Path, cmd: clap::Command, parent: Option<&str>) -> Result<()> {
    let name = match parent {
        Some(p) => format!("{p}-{}", cmd.get_name()),
        None => cmd.get_name().to_string(),
    };
    let cmd = cmd.name(name.clone());
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(dir, sub.clone(), Some(&name))?;
    }
    Ok(())
}
