//! The house rules a newcomer relies on (docs/ARCHITECTURE.md): no import cycles between a
//! crate's modules, and no source file much over 600 lines.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const CRATES: [&str; 6] = ["keyring", "repo", "backup", "restore", "drill", "agent"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let root = workspace();
    let out = Command::new("python3")
        .arg(root.join("scripts/module-cycles"))
        .args(CRATES.iter().map(|c| root.join(c).join("src")))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    // Every crate was read (a wrong path would find no modules and no cycles).
    for c in CRATES {
        let line = report
            .lines()
            .find(|l| l.contains(&format!("{c}/src: no cycles among")))
            .unwrap_or_else(|| panic!("{c} not checked:\n{report}"));
        let modules: usize = line
            .split_whitespace()
            .nth_back(1)
            .unwrap()
            .parse()
            .unwrap();
        assert!(modules >= 4, "{line}");
    }
}

#[test]
fn no_source_file_is_much_over_600_lines() {
    let mut long = Vec::new();
    let mut stack: Vec<PathBuf> = CRATES
        .iter()
        .map(|c| workspace().join(c))
        .chain([workspace().join("tests"), workspace().join("benches")])
        .collect();
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && p.file_name().unwrap() != "target" {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                seen += 1;
                let lines = std::fs::read_to_string(&p).unwrap().lines().count();
                if lines > 650 {
                    long.push(format!("{} ({lines} lines)", p.display()));
                }
            }
        }
    }
    assert!(seen > 100, "only {seen} files read");
    assert!(long.is_empty(), "split these: {long:?}");
}
