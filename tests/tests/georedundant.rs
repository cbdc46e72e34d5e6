//! One repository on three targets: SeaweedFS and moto (two S3 "regions" on loopback) and a
//! local directory. Regions die, stall and serve damaged bytes; backups keep to the write quorum,
//! restores fall back per object, and sync and repair heal the targets.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use drvault_repo::target::Target;
use drvault_tests::geo::{assert_same_tree, Geo};
use drvault_tests::s3::{S3Server, ACCESS_KEY, SECRET_KEY};
use drvault_tests::{drvault_bin, noise, restored, PASSWORD};
use serde_json::Value;

fn make_source(dir: &Path, mib: usize) {
    fs::create_dir_all(dir.join("sub")).unwrap();
    for i in 0..mib / 8 {
        fs::write(
            dir.join(format!("sub/big-{i}")),
            noise(8 << 20, i as u64 + 1),
        )
        .unwrap();
    }
    for i in 0..50 {
        fs::write(
            dir.join(format!("small-{i}.txt")),
            format!("small file {i}\n"),
        )
        .unwrap();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn status_of<'a>(targets: &'a Value, name: &str) -> &'a Value {
    targets
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap()
}

/// Waits for a child with a bound, so a hang fails the test instead of stalling CI.
fn wait_bounded(mut child: std::process::Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("drvault did not finish within {limit:?}: a dead or stalled target hung it");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_region_killed_mid_upload_leaves_a_quorum_backup_that_sync_heals() {
    let mut geo = Geo::new(true);
    geo.configure(
        "write_quorum = 2\nrequest_timeout = \"10s\"\nmax_retries = 1",
        true,
    );
    geo.init();
    let src = geo.path("src");
    make_source(&src, 64);

    let child = geo
        .cmd()
        .args(["backup", "--json", src.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill "us" as soon as its first pack has landed: the rest of the backup is still to come.
    let watcher = geo.server("us").target("prod");
    let rt = runtime();
    let deadline = Instant::now() + Duration::from_secs(120);
    while rt
        .block_on(watcher.list("data/"))
        .map(|l| l.is_empty())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "no pack reached us");
        std::thread::sleep(Duration::from_millis(20));
    }
    geo.server("us").kill();
    let out = wait_bounded(child, Duration::from_secs(300));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the backup must complete on the quorum: {stderr}"
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let owed_by_us = summary["owed"]["us"].as_u64().unwrap_or(0);
    assert!(owed_by_us > 0, "us missed objects after it died: {summary}");
    assert!(stderr.contains("target us missed"), "{stderr}");

    // With us gone: reported unreachable; the others are complete.
    let (code, targets) = geo.json(&["targets", "--json"]);
    assert_eq!(code, Some(3), "a degraded target set exits 3");
    assert_eq!(status_of(&targets, "us")["reachable"], false);
    assert_eq!(status_of(&targets, "eu")["owes"], 0);
    assert_eq!(status_of(&targets, "local")["owes"], 0);

    // us comes back with what it had: it owes what it missed, found by listing alone.
    geo.server("us").restart();
    let (_, targets) = geo.json(&["targets", "--json"]);
    let owes = status_of(&targets, "us")["owes"].as_u64().unwrap();
    // A write cut off by the kill may still have landed before the server died: the backup's
    // record is an upper bound, the listing the truth.
    assert!(
        owes > 0 && owes <= owed_by_us,
        "listing finds what us owes ({owes}, recorded {owed_by_us})"
    );

    let (code, report) = geo.json(&["sync", "--json"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["per_target"]["us"].as_u64().unwrap(), owes);
    let (code, targets) = geo.json(&["targets", "--json"]);
    assert_eq!(code, Some(0), "{targets}");
    assert!(targets.as_array().unwrap().iter().all(|t| t["owes"] == 0));
    // A second sync has nothing to do: it is safe to run again.
    let (_, again) = geo.json(&["sync", "--json"]);
    assert_eq!(again["copied"], 0);

    let out = geo.run(&["check", "--all-targets", "--read-data"]);
    assert!(
        out.status.success(),
        "check --all-targets: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The healed region alone restores the snapshot.
    geo.server("eu").kill();
    geo.configure(
        "write_quorum = 1\nread_order = [\"us\"]\nrequest_timeout = \"5s\"\nmax_retries = 0",
        false,
    );
    geo.restore_and_compare(&src, "restore-from-us");
}

#[test]
fn restores_fall_back_past_a_dead_or_damaged_preferred_target_and_repair_fixes_it() {
    let mut geo = Geo::new(false);
    geo.configure(
        "read_order = [\"us\", \"eu\", \"local\"]\nrequest_timeout = \"5s\"\nmax_retries = 1",
        true,
    );
    geo.init();
    let src = geo.path("src");
    make_source(&src, 40);
    geo.ok(&["backup", src.to_str().unwrap()]);

    // The preferred region is down.
    geo.server("us").kill();
    let stderr = geo.restore_and_compare(&src, "restore-us-down");
    assert!(
        stderr.contains("target us"),
        "the failing target is named: {stderr}"
    );
    geo.server("us").restart();

    // Bytes flipped in several packs on the preferred region.
    let us: Target = geo.server("us").target("prod");
    let rt = runtime();
    let mut packs = rt.block_on(us.list("data/")).unwrap();
    packs.sort_by_key(|p| std::cmp::Reverse(p.size));
    assert!(
        packs.len() >= 3 && packs[2].size > 1 << 20,
        "the backup made several data packs"
    );
    let damaged: Vec<String> = packs.iter().take(3).map(|p| p.name.clone()).collect();
    for name in &damaged {
        let mut bytes = rt.block_on(us.get(name)).unwrap().to_vec();
        let at = bytes.len() / 3;
        bytes[at] ^= 0x55;
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        rt.block_on(us.delete(name)).unwrap();
        rt.block_on(us.put_new(name, Bytes::from(bytes), false))
            .unwrap();
    }
    let stderr = geo.restore_and_compare(&src, "restore-us-damaged");
    assert!(
        stderr.contains("target us") && stderr.contains("integrity"),
        "damage is reported: {stderr}"
    );

    // A verifier without the passphrase finds exactly the damaged copies.
    let out = geo
        .cmd()
        .env_remove("DRVAULT_PASSWORD")
        .args(["check", "--no-key", "--read-data", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(drvault_tests::code::INTEGRITY),
        "damage found: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut corrupt: Vec<String> = status_of(&report["copies"]["targets"], "us")["corrupt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    corrupt.sort();
    let mut want = damaged.clone();
    want.sort();
    assert_eq!(corrupt, want);
    assert!(report["copies"]["lost"].as_array().unwrap().is_empty());
    let (code, _) = geo.json(&["check", "--all-targets", "--read-data", "--json"]);
    assert_eq!(code, Some(drvault_tests::code::INTEGRITY));

    // repair replaces the damaged copies; afterwards every copy verifies.
    let out = geo
        .cmd()
        .env_remove("DRVAULT_PASSWORD")
        .args(["repair", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "repair: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let repaired: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        repaired["repaired"]["replaced"]["us"]
            .as_array()
            .unwrap()
            .len(),
        damaged.len()
    );
    for name in &damaged {
        let b = rt.block_on(us.get(name)).unwrap();
        assert!(
            drvault_repo::store::content_matches_name(name, &b),
            "{name} repaired"
        );
    }
    let out = geo.run(&["check", "--all-targets", "--read-data"]);
    assert!(
        out.status.success(),
        "clean after repair: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn with_every_target_down_a_backup_fails_clearly_and_commits_nothing() {
    let mut geo = Geo::new(true);
    geo.configure(
        "write_quorum = 1\nrequest_timeout = \"5s\"\nmax_retries = 1",
        false,
    );
    geo.init();
    let src = geo.path("src");
    make_source(&src, 16);
    geo.ok(&["backup", src.to_str().unwrap()]);
    fs::write(src.join("new-file"), noise(1 << 20, 99)).unwrap();

    geo.server("us").kill();
    geo.server("eu").kill();
    let child = geo
        .cmd()
        .args(["backup", src.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, Duration::from_secs(180));
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("every target down: {stderr}");
    assert!(!out.status.success(), "no target, no backup");
    assert!(
        stderr.contains("us") && stderr.contains("eu"),
        "the error names the targets: {stderr}"
    );

    geo.server("us").restart();
    geo.server("eu").restart();
    let snaps: Value = serde_json::from_str(&geo.ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(
        snaps.as_array().unwrap().len(),
        1,
        "no snapshot from the failed run"
    );
    let out = geo.run(&["check", "--all-targets", "--read-data"]);
    assert!(
        out.status.success(),
        "nothing corrupted: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Below the quorum (both regions required, one dead): the same refusal.
    geo.configure(
        "write_quorum = 2\nrequest_timeout = \"5s\"\nmax_retries = 1",
        false,
    );
    geo.server("us").kill();
    let out = geo.run(&["backup", src.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("below quorum: {stderr}");
    assert!(!out.status.success(), "below quorum, no backup");
    assert!(stderr.contains("1 of the 2 targets"), "{stderr}");
    geo.server("us").restart();
    let snaps: Value = serde_json::from_str(&geo.ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(
        snaps.as_array().unwrap().len(),
        1,
        "no snapshot below the quorum"
    );
    geo.restore_and_compare(&src_without(&src, "new-file"), "restore-after");
}

/// A copy of `src` without one file, to compare against the earlier snapshot.
fn src_without(src: &Path, file: &str) -> PathBuf {
    fs::remove_file(src.join(file)).unwrap();
    src.to_path_buf()
}

#[test]
fn a_stalled_target_costs_bounded_time_and_is_healed_later() {
    let mut geo = Geo::new(false);
    geo.configure(
        "write_quorum = 2\nconnect_timeout = \"1s\"\nrequest_timeout = \"2s\"\nmax_retries = 1",
        true,
    );
    geo.init();
    let src = geo.path("src");
    make_source(&src, 24);

    // SIGSTOP: connections are accepted by the kernel, and nothing ever answers.
    geo.server("us").pause();
    let child = geo
        .cmd()
        .args(["backup", "--json", src.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "quorum holds without the stalled target: {stderr}"
    );
    assert!(stderr.contains("degraded"), "{stderr}");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["owed"]["us"].as_u64().unwrap() > 0, "{summary}");

    geo.server("us").resume();
    geo.ok(&["sync"]);
    let (code, targets) = geo.json(&["targets", "--json"]);
    assert_eq!(code, Some(0), "{targets}");
    let out = geo.run(&["check", "--all-targets", "--read-data"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_configurations_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("drvault.toml");
    let run = |text: &str, mode: u32| {
        fs::write(&cfg, text).unwrap();
        fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        let out = Command::new(drvault_bin())
            .arg("--config")
            .arg(&cfg)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["targets"])
            .env_remove("DRVAULT_REPO")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let local = format!(
        "[[targets]]\nname = \"a\"\nurl = \"file://{}\"\n",
        dir.path().join("a").display()
    );
    let secret = "[[targets]]\nname = \"s3\"\nurl = \"s3://b/p\"\noptions = { aws_secret_access_key = \"hunter2-not-real\" }\n";

    let (code, err) = run(&format!("{local}{secret}"), 0o644);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("chmod 600") && !err.contains("hunter2"),
        "{err}"
    );
    let cases = [
        (
            format!("[repository]\nwrite_quorum = 3\n{local}"),
            "write_quorum",
        ),
        (
            format!("[repository]\nwrite_quorum = 0\n{local}"),
            "write_quorum",
        ),
        (
            format!("[repository]\nread_order = [\"nowhere\"]\n{local}"),
            "nowhere",
        ),
        (
            format!("[repository]\nrequest_timeout = \"soon\"\n{local}"),
            "request_timeout",
        ),
        (format!("{local}{local}"), "unique"),
        (
            format!("[repository]\nwrit_quorum = 1\n{local}"),
            "writ_quorum",
        ),
        (local.replace("file://", "ftp://"), "ftp://"),
    ];
    for (text, hint) in cases {
        let (code, err) = run(&text, 0o600);
        assert_ne!(code, Some(0), "{text}");
        assert!(err.contains(hint), "{text}: {err}");
    }
}

#[test]
fn a_snapshot_that_misses_the_quorum_is_withdrawn() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let cfg = dir.path().join("drvault.toml");
    fs::write(
        &cfg,
        format!(
            "[[targets]]\nname = \"a\"\nurl = \"file://{}\"\n[[targets]]\nname = \"b\"\nurl = \"file://{}\"\n",
            a.display(),
            b.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(drvault_bin())
            .arg("--config")
            .arg(&cfg)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(args)
            .env("DRVAULT_PASSWORD", PASSWORD)
            .env_remove("DRVAULT_REPO")
            .output()
            .unwrap()
    };
    assert!(run(&["init", "--kdf-memory-kib", "64"]).status.success());
    let src = dir.path().join("src");
    make_source(&src, 8);
    // Target b takes packs and indexes but cannot take a snapshot: a file where the
    // snapshots directory would go (this fails even for root).
    fs::write(b.join("snapshots"), b"in the way").unwrap();
    let out = run(&["backup", src.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the snapshot is not durable on the quorum: {stderr}"
    );
    assert!(
        stderr.contains("snapshots/") && stderr.contains("1 of the 2 targets"),
        "{stderr}"
    );
    let left: Vec<_> = fs::read_dir(a.join("snapshots"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "the snapshot was withdrawn from a: {left:?}"
    );
    // Packs and indexes stay (durable on both); the next backup reuses them.
    fs::remove_file(b.join("snapshots")).unwrap();
    assert!(run(&["backup", src.to_str().unwrap()]).status.success());
    let snaps: Value = serde_json::from_slice(&run(&["snapshots", "--json"]).stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
}

#[test]
fn a_single_s3_target_works_through_repo_url_and_plain_http_needs_consent() {
    let server = S3Server::moto("drvault-solo");
    let dir = tempfile::tempdir().unwrap();
    let url = server.url("solo");
    let run = |args: &[&str], allow_http: bool| {
        let mut c = Command::new(drvault_bin());
        c.args(["--repo", &url, "--state-dir"])
            .arg(dir.path().join("state"))
            .args(args)
            .env("DRVAULT_PASSWORD", PASSWORD)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_ENDPOINT", server.endpoint())
            .env("AWS_REGION", "us-east-1")
            .env_remove("DRVAULT_CONFIG");
        if allow_http {
            c.env("AWS_ALLOW_HTTP", "true");
        }
        c.output().unwrap()
    };
    let refused = run(&["init", "--kdf-memory-kib", "64"], false);
    assert!(
        !refused.status.success(),
        "plain HTTP without allow_http must be refused"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("plain HTTP") && stderr.contains("allow_http"),
        "{stderr}"
    );

    let src = dir.path().join("src");
    make_source(&src, 8);
    // backup --init creates the repository in the bucket on first use.
    let out = run(&["backup", "--init", src.to_str().unwrap()], true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target = dir.path().join("restore");
    let out = run(
        &[
            "restore",
            "latest",
            "--verify",
            "--target",
            target.to_str().unwrap(),
        ],
        true,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&src, &restored(&target, &src));
}
