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

/// EXIT STATUS, ENVIRONMENT and FILES, the same on every page (README.md "Exit codes").
fn common_sections(page: &str) -> String {
    let exit = [
        ("0", "Success."),
        ("1", "A failure not listed below (I/O, storage unreachable, bad configuration)."),
        ("2", "Usage error: a bad option or argument, or a snapshot, --at or --include that matches nothing."),
        ("3", "Completed, but some entries could not be read, or some copies are missing."),
        ("10", "No repository at the given location."),
        ("11", "The repository is locked: another process holds the maintenance lease."),
        ("12", "Wrong passphrase, key file or recovery key."),
        ("20", "Integrity failure: damaged, missing or forged repository data; files a restore could not restore (each named)."),
        ("21", "Not permitted with these keys or storage credentials."),
        ("130", "Interrupted."),
    ];
    let env = [
        ("DRVAULT_REPO", "Repository path or URL (as --repo)."),
        (
            "DRVAULT_PASSWORD",
            "The passphrase (prefer --password-file or a systemd credential).",
        ),
        ("DRVAULT_CONFIG", "Configuration file (as --config)."),
        (
            "DRVAULT_STATE_DIR",
            "Local state: catalog cache, job history (as --state-dir).",
        ),
        (
            "DRVAULT_LOG",
            "Log filter, e.g. info or drvault_restore=debug.",
        ),
        ("DRVAULT_LOG_FORMAT", "text or json (as --log-format)."),
        (
            "CREDENTIALS_DIRECTORY",
            "systemd credentials: drvault-password is read from here.",
        ),
    ];
    let files = [
        (
            "/etc/drvault/drvault.toml",
            "Configuration for root; $XDG_CONFIG_HOME/drvault/drvault.toml for other users.",
        ),
        (
            "/var/lib/drvault/repo",
            "The embedded default repository for root; $XDG_DATA_HOME/drvault/repo for others.",
        ),
        (
            "/var/lib/drvault",
            "State for root (catalog, job history); $XDG_STATE_HOME/drvault for others.",
        ),
    ];
    let mut roff = String::from(".SH \"EXIT STATUS\"\n");
    for (code, what) in exit {
        roff.push_str(&format!(".TP\n\\fB{code}\\fR\n{}\n", escape(what)));
    }
    roff.push_str(".SH ENVIRONMENT\n");
    for (var, what) in env {
        roff.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", escape(var), escape(what)));
    }
    roff.push_str(".SH FILES\n");
    for (file, what) in files {
        roff.push_str(&format!(
            ".TP\n\\fI{}\\fR\n{}\n",
            escape(file),
            escape(what)
        ));
    }
    if page != "drvault" {
        roff.push_str(".SH \"SEE ALSO\"\n\\fBdrvault\\fR(1)\n");
    }
    roff
}

/// Text for roff: backslashes and hyphens escaped, no line starting with a control character.
fn escape(text: &str) -> String {
    let t = text.replace('\\', "\\\\").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

fn write_pages(dir: &Path, cmd: clap::Command, parent: Option<&str>) -> Result<()> {
    let name = match parent {
        Some(p) => format!("{p}-{}", cmd.get_name()),
        None => cmd.get_name().to_string(),
    };
    // No `help` subcommand in the pages: it would be listed as a page that is not written.
    let cmd = cmd.name(name.clone()).disable_help_subcommand(true);
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    page.extend_from_slice(common_sections(&name).as_bytes());
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(dir, sub.clone(), Some(&name))?;
    }
    Ok(())
}
