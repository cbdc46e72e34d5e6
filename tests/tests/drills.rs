//! `drtest`: failover restore drills on a repository stored on two targets, with the primary
//! counted as lost, and the evidence they leave in the audit log.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use drvault_tests::{drtest_bin, drvault_bin, noise, PASSWORD};
use serde_json::Value;

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Self {
        Site {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Two local targets and the given drill plans.
    fn configure(&self, drills: &str) {
        let text = format!(
            "[[targets]]\nname = \"primary\"\nurl = \"file://{}\"\n[[targets]]\nname = \"secondary\"\nurl = \"file://{}\"\n{drills}",
            self.path("primary").display(),
            self.path("secondary").display()
        );
        fs::write(self.path("drvault.toml"), text).unwrap();
    }

    fn run(&self, program: &Path, args: &[&str]) -> Output {
        Command::new(program)
            .arg("--config")
            .arg(self.path("drvault.toml"))
            .arg("--state-dir")
            .arg(self.path("state"))
            .args(args)
            .env("DRVAULT_PASSWORD", PASSWORD)
            .env_remove("DRVAULT_REPO")
            .env_remove("DRVAULT_CONFIG")
            .output()
            .unwrap()
    }

    fn drvault(&self, args: &[&str]) -> Output {
        self.run(&drvault_bin(), args)
    }

    fn drtest(&self, args: &[&str]) -> Output {
        self.run(&drtest_bin(), args)
    }

    fn drill(&self, args: &[&str]) -> (Option<i32>, Value) {
        let mut all = vec!["--json", "run"];
        all.extend_from_slice(args);
        let out = self.drtest(&all);
        let v = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), v)
    }

    fn history(&self) -> Vec<Value> {
        let out = self.drtest(&["--json", "history"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

fn seconds_between(a: &str, b: &str) -> f64 {
    let a = chrono_like(a);
    let b = chrono_like(b);
    (b - a) as f64 / 1000.0
}

/// Milliseconds since the epoch of an RFC 3339 UTC time with milliseconds ("...T..:..:..mmmZ").
fn chrono_like(t: &str) -> i64 {
    let out = Command::new("date")
        .args(["-u", "-d", t, "+%s%3N"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn backed_up_site(plans: &str) -> (Site, PathBuf) {
    let site = Site::new();
    site.configure(plans);
    assert!(site
        .drvault(&["init", "--kdf-memory-kib", "64"])
        .status
        .success());
    let data = site.path("data");
    fs::create_dir_all(data.join("db")).unwrap();
    fs::write(data.join("db/base.bin"), noise(5 << 20, 3)).unwrap();
    fs::write(data.join("db/checksums"), "ok\n").unwrap();
    let out = site.drvault(&["backup", data.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (site, data)
}

fn plan(name: &str, data: &Path, extra: &str) -> String {
    format!(
        "[[drills]]\nname = \"{name}\"\npaths = [\"{}\"]\nexclude_targets = [\"primary\"]\nrto_objective = \"30m\"\nrpo_objective = \"24h\"\n{extra}\n",
        data.display()
    )
}

#[test]
fn a_drill_without_the_primary_restores_from_the_secondary_and_passes() {
    let site = Site::new();
    let data = site.path("data");
    let rel = data.strip_prefix("/").unwrap().display().to_string();
    site.configure(&plan(
        "quarterly",
        &data,
        &format!(
            "validate = [\"cmp {{restore_dir}}/{rel}/db/base.bin {}/db/base.bin\", \"grep -q ok {{restore_dir}}/{rel}/db/checksums\"]\nvalidate_timeout = \"1m\"",
            data.display()
        ),
    ));
    assert!(site
        .drvault(&["init", "--kdf-memory-kib", "64"])
        .status
        .success());
    fs::create_dir_all(data.join("db")).unwrap();
    fs::write(data.join("db/base.bin"), noise(5 << 20, 3)).unwrap();
    fs::write(data.join("db/checksums"), "ok\n").unwrap();
    assert!(site
        .drvault(&["backup", data.to_str().unwrap()])
        .status
        .success());
    // The primary region is gone for good: the drill must not need it.
    fs::remove_dir_all(site.path("primary")).unwrap();

    let (code, d) = site.drill(&["--plan", "quarterly"]);
    assert_eq!(code, Some(0), "{d}");
    assert_eq!(d["passed"], true);
    assert_eq!(d["targets_used"], serde_json::json!(["secondary"]));
    assert_eq!(d["targets_excluded"], serde_json::json!(["primary"]));
    assert_eq!(d["files"], 2);
    assert_eq!(d["bytes"], (5 << 20) + 3);
    assert_eq!(d["validations"].as_array().unwrap().len(), 2);
    for field in [
        "drill_id",
        "rto_seconds",
        "rpo_seconds",
        "snapshot_id",
        "snapshot_time",
        "reason",
    ] {
        assert!(d.get(field).is_some(), "the record has {field}");
    }
    // RPO is the drill's start minus the snapshot's time.
    let expected = seconds_between(
        d["snapshot_time"].as_str().unwrap(),
        d["started"].as_str().unwrap(),
    );
    assert!(
        (d["rpo_seconds"].as_f64().unwrap() - expected).abs() < 0.002,
        "{d}"
    );
    assert!(d["rto_seconds"].as_f64().unwrap() > 0.0);
    // The scratch directory is gone afterwards.
    assert!(fs::read_dir(site.path("state/drills"))
        .unwrap()
        .next()
        .is_none());

    // The evidence is in the repository's audit log, and the chain verifies.
    let h = site.history();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["drill_id"], d["drill_id"]);
    let out = site.drvault(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An exported segment carries the hashes that tie it to the chain.
    let day = &d["started"].as_str().unwrap()[..10];
    let out = site.drvault(&["audit", "export", "--since", day]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seg: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seg["entries"].as_array().unwrap().len(), 3);
    assert_eq!(seg["entries"][0]["action"], "repository.init");
    assert_eq!(seg["entries"][1]["action"], "snapshot.commit");
    assert_eq!(seg["entries"][2]["details"]["drill_id"], d["drill_id"]);
    assert_eq!(seg["anchor_after"], seg["head"]);
    assert_eq!(seg["anchor_before"].as_str().unwrap(), "0".repeat(64));
    assert!(!site
        .drvault(&["audit", "export", "--since", "yesterday"])
        .status
        .success());

    // The evidence went to both targets although the drill counted the primary as lost. A
    // record changed on one target (a byte of the sealed entry) is caught by comparing the
    // copies; changed on both, by the chain.
    let tamper = |target: &str| {
        let entry = site.path(target).join("audit").join(format!("{:020}", 1));
        let mut bytes = fs::read(&entry).unwrap();
        bytes[30] ^= 0x20;
        fs::write(&entry, bytes).unwrap();
    };
    tamper("secondary");
    let out = site.drvault(&["check", "--all-targets"]);
    assert_eq!(out.status.code(), Some(drvault_tests::code::INTEGRITY));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("audit/00000000000000000001"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tamper("primary");
    let out = site.drvault(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(drvault_tests::code::INTEGRITY));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("entry 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn objectives_set_too_tight_fail_the_drill_and_the_failure_is_evidence() {
    let (site, data) = backed_up_site("");
    site.configure(&format!(
        "{}{}",
        plan("tight-rpo", &data, "").replace("rpo_objective = \"24h\"", "rpo_objective = \"1ms\""),
        plan("tight-rto", &data, "").replace("rto_objective = \"30m\"", "rto_objective = \"1ms\"")
    ));
    let (code, d) = site.drill(&["--plan", "tight-rpo"]);
    assert_ne!(code, Some(0));
    assert_eq!(d["passed"], false);
    assert!(d["reason"].as_str().unwrap().contains("RPO"), "{d}");
    let (code, d) = site.drill(&["--plan", "tight-rto"]);
    assert_ne!(code, Some(0));
    assert!(d["reason"].as_str().unwrap().contains("RTO"), "{d}");
    let h = site.history();
    assert_eq!(h.len(), 2);
    assert!(h.iter().all(|d| d["passed"] == false));
}

#[test]
fn a_hanging_validation_is_killed_at_its_timeout_and_fails_the_drill() {
    let (site, data) = backed_up_site("");
    site.configure(&plan(
        "hang",
        &data,
        "validate = [\"sleep 60\"]\nvalidate_timeout = \"1s\"",
    ));
    let (code, d) = site.drill(&["--plan", "hang"]);
    assert_ne!(code, Some(0));
    let reason = d["reason"].as_str().unwrap();
    assert!(
        reason.contains("killed") && reason.contains("sleep 60"),
        "{reason}"
    );
    assert_eq!(d["validations"][0]["timed_out"], true);
    assert!(
        d["validations"][0]["seconds"].as_f64().unwrap() < 30.0,
        "killed, not waited for"
    );
}

#[test]
fn a_drill_that_cannot_restore_is_recorded_as_failed_with_the_reason() {
    let (site, data) = backed_up_site("");
    site.configure(&plan("nothing-left", &data, "").replace(
        "exclude_targets = [\"primary\"]",
        "exclude_targets = [\"primary\", \"secondary\"]",
    ));
    let (code, d) = site.drill(&["--plan", "nothing-left"]);
    assert_ne!(code, Some(0));
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("excludes every target"),
        "{d}"
    );
    // The command line overrides the scenario: excluding only the secondary works.
    let (code, d) = site.drill(&["--plan", "nothing-left", "--exclude-target", "secondary"]);
    assert_eq!(code, Some(0), "{d}");
    assert_eq!(d["targets_used"], serde_json::json!(["primary"]));
    let h = site.history();
    assert_eq!(
        h.iter()
            .map(|d| d["passed"].as_bool().unwrap())
            .collect::<Vec<_>>(),
        vec![false, true]
    );
    // Unknown plans and unknown targets are refused before anything runs.
    let out = site.drtest(&["run", "--plan", "no-such-plan"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no-such-plan"));
    let out = site.drtest(&[
        "--json",
        "run",
        "--plan",
        "nothing-left",
        "--exclude-target",
        "mars",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("mars"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_report_lists_the_drills_and_renders_in_a_real_browser() {
    let (site, data) = backed_up_site("");
    site.configure(&format!(
        "{}{}",
        plan("quarterly", &data, ""),
        plan("tight", &data, "").replace("rpo_objective = \"24h\"", "rpo_objective = \"1ms\"")
    ));
    let (_, passed) = site.drill(&["--plan", "quarterly"]);
    let (_, failed) = site.drill(&["--plan", "tight"]);
    let year = passed["started"].as_str().unwrap()[..4].to_string();

    let out = site.drtest(&["report", "--period", &year, "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["drills"].as_array().unwrap().len(), 2);
    assert_eq!(r["drills_passed"], 1);
    assert_eq!(r["audit_log"]["intact"], true);
    // Local targets have no object lock, and the report says what that means.
    let immutability = r["immutability"].as_array().unwrap();
    assert_eq!(immutability.len(), 2, "{r}");
    assert!(immutability.iter().all(|t| t["lock"].is_null()));
    let md = String::from_utf8(site.drtest(&["report", "--period", &year]).stdout).unwrap();
    assert!(
        md.contains("| quarterly | PASS |") && md.contains("| tight | FAIL |"),
        "{md}"
    );
    assert!(
        md.contains("## Immutability") && md.contains("no object lock"),
        "{md}"
    );
    // A period without drills has none.
    let r: Value = serde_json::from_slice(
        &site
            .drtest(&["report", "--period", "1999-Q1", "--format", "json"])
            .stdout,
    )
    .unwrap();
    assert!(r["drills"].as_array().unwrap().is_empty());
    let bad = site.drtest(&["report", "--period", "2026-Q5"]);
    assert_eq!(bad.status.code(), Some(drvault_tests::code::USAGE));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--period"));

    let html = site.path("report.html");
    let out = site.drtest(&[
        "report",
        "--period",
        &year,
        "--format",
        "html",
        "--output",
        html.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Rendered by Chromium (scripts/test installs it): the DOM after layout holds both drills
    // and the two charts, and a screenshot is taken (tests/target/report.png to look at).
    let chromium = std::env::var("DRVAULT_TEST_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let url = format!("file://{}", html.display());
    let dom = Command::new(&chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", &url])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {chromium} ({e}): run the tests through scripts/test, which installs it"));
    let dom = String::from_utf8_lossy(&dom.stdout);
    for id in [&passed["drill_id"], &failed["drill_id"]] {
        assert!(
            dom.contains(id.as_str().unwrap()),
            "the rendered report shows drill {id}"
        );
    }
    assert_eq!(dom.matches("<svg").count(), 2, "an RTO and an RPO chart");
    assert!(dom.contains("2 drills, 1 passed."));
    let shot = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("report.png");
    fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let _ = fs::remove_file(&shot);
    let out = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,1000",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
}

#[test]
fn validation_commands_never_see_or_record_the_repository_secrets() {
    let site = Site::new();
    let data = site.path("data");
    let pw_copy = site.path("pw-copy.txt");
    fs::write(&pw_copy, PASSWORD).unwrap();
    site.configure(&plan(
        "leaky",
        &data,
        &format!(
            "validate = [\"echo leaked:$DRVAULT_PASSWORD:$AWS_SECRET_ACCESS_KEY:$CREDENTIALS_DIRECTORY\", \"env\", \"cat {}\", \"test -d \\\"$DRVAULT_RESTORE_DIR\\\" && test -n \\\"$DRVAULT_SNAPSHOT_ID\\\" && test \\\"$SITE_NAME\\\" = east\"]\nvalidate_env = {{ SITE_NAME = \"east\" }}",
            pw_copy.display()
        ),
    ));
    assert!(site
        .drvault(&["init", "--kdf-memory-kib", "64"])
        .status
        .success());
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), b"x").unwrap();
    assert!(site
        .drvault(&["backup", data.to_str().unwrap()])
        .status
        .success());
    let creds = site.path("creds");
    fs::create_dir_all(&creds).unwrap();
    let out = Command::new(drtest_bin())
        .arg("--config")
        .arg(site.path("drvault.toml"))
        .arg("--state-dir")
        .arg(site.path("state"))
        .args(["--json", "run", "--plan", "leaky"])
        .env("DRVAULT_PASSWORD", PASSWORD)
        .env("AWS_SECRET_ACCESS_KEY", "aws-secret-value-42")
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env_remove("DRVAULT_REPO")
        .env_remove("DRVAULT_CONFIG")
        .output()
        .unwrap();
    let record = String::from_utf8_lossy(&out.stdout).into_owned();
    let d: Value = serde_json::from_str(&record).unwrap();
    assert_eq!(d["passed"], true, "{}", d["reason"]);
    let outputs: Vec<&str> = d["validations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["output"].as_str().unwrap())
        .collect();
    // No record in the messages: on failure it would print the secrets it is about.
    assert!(
        outputs[0].trim() == "leaked:::",
        "a validation command saw a secret"
    );
    assert!(
        outputs[2].contains("[redacted]"),
        "a printed secret was recorded"
    );
    let mut everything = record.clone();
    everything.push_str(&String::from_utf8_lossy(&out.stderr));
    everything.push_str(&String::from_utf8_lossy(
        &site.drtest(&["report", "--period", "2026"]).stdout,
    ));
    for f in drvault_tests::files_below(&site.path("primary")) {
        everything.push_str(&String::from_utf8_lossy(&fs::read(f).unwrap()));
    }
    for secret in [PASSWORD, "aws-secret-value-42", creds.to_str().unwrap()] {
        assert!(
            !everything.contains(secret),
            "{secret:?} reached the evidence"
        );
    }
}

#[test]
fn the_report_shows_unmeasured_drills_as_such_and_lists_what_was_disposed_of() {
    let (site, data) = backed_up_site("");
    site.configure(&format!(
        "{}{}",
        plan("quarterly", &data, ""),
        plan("nothing-left", &data, "").replace(
            "exclude_targets = [\"primary\"]",
            "exclude_targets = [\"primary\", \"secondary\"]"
        )
    ));
    let (code, _) = site.drill(&["--plan", "quarterly"]);
    assert_eq!(code, Some(0));
    let (code, failed) = site.drill(&["--plan", "nothing-left"]);
    assert_ne!(code, Some(0));
    assert!(failed["rto_seconds"].is_null() && failed["rpo_seconds"].is_null());
    // Dispose of something: a second snapshot, forgotten, and its data pruned.
    fs::write(data.join("db/extra.bin"), noise(3 << 20, 9)).unwrap();
    assert!(site
        .drvault(&["backup", data.to_str().unwrap()])
        .status
        .success());
    let newest = site.drvault(&["--json", "snapshots"]);
    let snaps: Value = serde_json::from_slice(&newest.stdout).unwrap();
    let id = snaps.as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(site.drvault(&["forget", &id]).status.success());
    let out = site.drvault(&["prune", "--grace", "0s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let year = failed["started"].as_str().unwrap()[..4].to_string();
    // The global --json means JSON.
    let out = site.drtest(&["--json", "report", "--period", &year]);
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let disposals = r["disposals"].as_array().unwrap();
    let actions: Vec<&str> = disposals
        .iter()
        .map(|d| d["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"snapshots.forget"), "{disposals:?}");
    assert!(actions.contains(&"data.prune"), "{disposals:?}");
    assert!(disposals.iter().all(|d| d["seq"].as_u64().is_some()));
    assert!(r["key_operations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["action"] == "repository.init"));

    let md = String::from_utf8(site.drtest(&["report", "--period", &year]).stdout).unwrap();
    let row = md.lines().find(|l| l.contains("| nothing-left |")).unwrap();
    assert!(row.contains("| — / 30.0 min | — / 24.0 h |"), "{row}");
    assert!(!row.contains("0.0 s"), "{row}");
    assert!(md.contains("## Secure disposal"), "{md}");
    assert!(
        md.contains(&format!("1 snapshot forgotten: {}", &id[..8])),
        "{md}"
    );
    assert!(!md.contains("No key operations"), "init is one: {md}");
    let html = String::from_utf8(
        site.drtest(&["report", "--period", &year, "--format", "html"])
            .stdout,
    )
    .unwrap();
    assert!(
        html.contains("100 %"),
        "charts are drawn against the objective"
    );
    assert!(
        html.contains("not measured"),
        "an unmeasured drill is a dash with its reason"
    );
}
