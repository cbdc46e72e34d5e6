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
