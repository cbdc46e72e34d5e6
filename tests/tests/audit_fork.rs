//! The audit log stays one chain (issue "Restores that work under pressure", item 14): drills
//! that count different targets as lost, two writers appending at once, and `repair` never
//! destroys an entry.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use drvault_tests::failpoints::start_paused;
use drvault_tests::{code, drtest_bin, drvault_bin, files_below, noise, PASSWORD};

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Self {
        let site = Site {
            dir: tempfile::tempdir().unwrap(),
        };
        let data = site.path("data");
        fs::create_dir_all(&data).unwrap();
        fs::write(data.join("f"), noise(100_000, 1)).unwrap();
        let text = format!(
            "[[targets]]\nname = \"a\"\nurl = \"file://{}\"\n[[targets]]\nname = \"b\"\nurl = \"file://{}\"\n\
             [[drills]]\nname = \"q\"\npaths = [\"{}\"]\nrto_objective = \"30m\"\nrpo_objective = \"24h\"\n",
            site.path("a").display(),
            site.path("b").display(),
            data.display()
        );
        fs::write(site.path("drvault.toml"), text).unwrap();
        assert!(site
            .drvault(&["init", "--kdf-memory-kib", "64"])
            .status
            .success());
        let out = site.drvault(&["backup", data.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        site
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.arg("--config")
            .arg(self.path("drvault.toml"))
            .arg("--state-dir")
            .arg(self.path("state"))
            .args(args)
            .env("DRVAULT_PASSWORD", PASSWORD)
            .env_remove("DRVAULT_REPO")
            .env_remove("DRVAULT_CONFIG");
        c
    }

    fn drvault(&self, args: &[&str]) -> Output {
        self.command(&drvault_bin(), args).output().unwrap()
    }

    /// The audit entries each target holds: object name → bytes.
    fn entries_on(&self, target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = self.path(target).join("audit");
        if !dir.exists() {
            return Vec::new();
        }
        let mut out: Vec<(String, Vec<u8>)> = files_below(&dir)
            .into_iter()
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    fs::read(&p).unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn assert_one_chain(&self, entries: usize) {
        let out = self.drvault(&["--json", "audit", "verify"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["entries"], entries as u64, "{v}");
        assert_eq!(
            self.entries_on("a"),
            self.entries_on("b"),
            "both targets hold one log"
        );
        let out = self.drvault(&["check", "--all-targets"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn drills_that_lose_different_targets_write_one_chain_to_both() {
    let site = Site::new();
    for lost in ["a", "b", "a"] {
        let out = site
            .command(
                &drtest_bin(),
                &["run", "--plan", "q", "--exclude-target", lost],
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let drills = site.entries_on("a").len();
    assert!(drills >= 3, "{drills}");
    site.assert_one_chain(drills);
}

#[test]
fn two_writers_appending_at_once_get_two_numbers() {
    let site = Site::new();
    let before = site.entries_on("a").len();
    // The first writer has its entry on the sequencer and is held before the copies.
    let paused = start_paused(
        site.command(&drvault_bin(), &["key", "rotate"]),
        &site.path("fp"),
        "audit.after-sequencer",
    );
    let out = site.drvault(&["key", "rotate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = paused.resume_within(Duration::from_secs(120)).unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    site.assert_one_chain(before + 2);
}

#[test]
fn repair_keeps_both_copies_of_an_entry_that_differs_between_targets() {
    let site = Site::new();
    // A log forked by an older drvault: each target alone got a different next entry.
    for target in ["a", "b"] {
        let out = Command::new(drvault_bin())
            .arg("--repo")
            .arg(site.path(target))
            .arg("--state-dir")
            .arg(site.path(&format!("state-{target}")))
            .args(["key", "rotate"])
            .env("DRVAULT_PASSWORD", PASSWORD)
            .env_remove("DRVAULT_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (a, b) = (site.entries_on("a"), site.entries_on("b"));
    assert_eq!(a.len(), b.len());
    assert_ne!(a, b, "forked");
    let out = site.drvault(&["repair"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        format!("{stdout}{stderr}").contains("evidence is never overwritten"),
        "{stdout}{stderr}"
    );
    assert_eq!(site.entries_on("a"), a, "nothing of a's log destroyed");
    assert_eq!(site.entries_on("b"), b, "nothing of b's log destroyed");
    let out = site.drvault(&["check", "--all-targets"]);
    assert_eq!(out.status.code(), Some(code::INTEGRITY));
}

#[test]
fn a_planted_entry_breaks_the_chain_visibly_but_does_not_stop_later_records() {
    let site = Site::new();
    let n = site.entries_on("a").len() as u64;
    // A target plants garbage under the next number on both targets.
    for t in ["a", "b"] {
        let dir = site.path(t).join("audit");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("{:020}", n + 1)), b"not an entry").unwrap();
    }
    let out = site.drvault(&["key", "rotate"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("not recorded"),
        "the rotation is recorded: {stderr}"
    );
    let names: Vec<String> = site.entries_on("a").into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&format!("{:020}", n + 2)), "{names:?}");
    let out = site.drvault(&["--json", "audit", "verify"]);
    assert_eq!(out.status.code(), Some(code::INTEGRITY));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["first_broken"][0], n + 1, "{v}");
}
