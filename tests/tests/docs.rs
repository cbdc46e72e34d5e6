//! Shell completions and man pages come from the clap definitions.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::process::Command;

use drvault_tests::drvault_bin;

#[test]
fn completions_and_man_pages_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(drvault_bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        for word in ["drvault", "reencrypt", "forget", "--all-targets"] {
            assert!(text.contains(word), "{shell} completions mention {word}");
        }
    }
    assert!(!Command::new(drvault_bin())
        .args(["completions", "tcsh"])
        .output()
        .unwrap()
        .status
        .success());

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(drvault_bin())
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "drvault.1",
        "drvault-backup.1",
        "drvault-key-rotate.1",
        "drtest.1",
        "drtest-run.1",
        "drtest-report.1",
    ] {
        let text = fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|_| panic!("{page} is written"));
        assert!(text.contains(".TH"), "{page} is a man page");
    }
    assert!(fs::read_to_string(dir.path().join("drvault-key-rotate.1"))
        .unwrap()
        .contains("if\\-due"));
    // Every page documents the exit codes, environment and files, and names no page that is
    // not written.
    for entry in fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let text = fs::read_to_string(&path).unwrap();
        for section in [".SH \"EXIT STATUS\"", ".SH ENVIRONMENT", ".SH FILES"] {
            assert!(text.contains(section), "{} has {section}", path.display());
        }
        assert!(text.contains("DRVAULT_REPO") && text.contains("\\fB20\\fR"));
        for (i, _) in text.match_indices("(1)") {
            let start = text[..i]
                .rfind(|c: char| c.is_whitespace())
                .map_or(0, |p| p + 1);
            let name = text[start..i]
                .replace("\\fB", "")
                .replace("\\fR", "")
                .replace("\\-", "-");
            if name.starts_with("drvault") || name.starts_with("drtest") {
                assert!(
                    dir.path().join(format!("{name}.1")).exists(),
                    "{} refers to {name}(1), which is not written",
                    path.display()
                );
            }
        }
    }
    // A directory that cannot be created is an error with the path.
    let file = dir.path().join("a-file");
    fs::write(&file, "x").unwrap();
    let out = Command::new(drvault_bin())
        .args(["man", "--dir"])
        .arg(file.join("sub"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("a-file"));
}

#[test]
fn every_subcommand_shows_global_options_under_their_heading_and_restics_short_flags() {
    for sub in [
        "backup",
        "restore",
        "snapshots",
        "ls",
        "check",
        "forget",
        "key",
        "prune",
    ] {
        let out = Command::new(drvault_bin())
            .args([sub, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        let global = help
            .find("Global options:")
            .unwrap_or_else(|| panic!("{sub}: {help}"));
        assert!(help[global..].contains("-r, --repo"), "{sub}: {help}");
        assert!(!help[..global].contains("--password-file"), "{sub}: {help}");
    }
    let help = |sub: &str| {
        String::from_utf8(
            Command::new(drvault_bin())
                .args([sub, "--help"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
    };
    assert!(help("backup").contains("-e, --exclude"));
    assert!(help("restore").contains("-t, --target"));
}
