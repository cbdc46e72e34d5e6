//! `drvault prune`: two-phase deletion of unused packs on real repositories, with the real
//! binary: marking, sweeping, repacking, backups during a prune, interrupted runs, bad input.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use drvault_tests::{files_below, noise, Env};
use serde_json::Value;

/// Replaces the content of `dir` by `files` noise files of `size` bytes from `seed`.
fn fill(dir: &Path, files: usize, size: usize, seed: u64) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    for i in 0..files {
        fs::write(
            dir.join(format!("s{seed}-f{i}")),
            noise(size, seed * 1000 + i as u64),
        )
        .unwrap();
    }
}

fn repo_bytes(env: &Env) -> u64 {
    files_below(&env.repo())
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum()
}

/// The pack files of the repository.
fn packs(env: &Env) -> BTreeSet<String> {
    files_below(&env.repo().join("data"))
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn prune(env: &Env, args: &[&str]) -> Value {
    let mut all = vec!["prune", "--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&env.ok(&all)).unwrap()
}

fn backup_json(env: &Env, src: &Path) -> Value {
    serde_json::from_str(&env.ok(&["backup", "--json", src.to_str().unwrap()])).unwrap()
}

/// `check` (with `--read-data`) passes with neither errors nor warnings.
fn assert_clean(env: &Env) {
    let out = env.run(&["check", "--read-data"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check failed: {stderr}");
    assert!(!stderr.contains("warning"), "check warned: {stderr}");
}

/// Two snapshots of `src` with nothing in common; the first is forgotten. Returns the packs
/// only the forgotten one used.
fn two_snapshots_first_forgotten(env: &Env, src: &Path) -> BTreeSet<String> {
    env.init();
    fill(src, 3, 3 << 20, 1);
    env.ok(&["backup", src.to_str().unwrap()]);
    let first = packs(env);
    fill(src, 2, 3 << 20, 2);
    env.ok(&["backup", src.to_str().unwrap()]);
    env.ok(&["forget", "--keep-last", "1"]);
    assert_eq!(env.snapshots_json().len(), 1);
    first
}

#[test]
fn prune_without_grace_frees_the_forgotten_data_and_keeps_the_rest() {
    let env = Env::new();
    let src = env.path("src");
    let forgotten = two_snapshots_first_forgotten(&env, &src);
    let before = repo_bytes(&env);
    let r = prune(&env, &["--grace", "0s"]);
    assert_eq!(r["snapshots"], 1);
    assert_eq!(
        r["packs_marked"].as_u64(),
        Some(forgotten.len() as u64),
        "{r}"
    );
    assert_eq!(r["packs_deleted"], r["packs_marked"], "{r}");
    assert!(r["kept_back"].as_array().unwrap().is_empty());
    assert!(r["marks_pending"].as_array().unwrap().is_empty());
    let after = repo_bytes(&env);
    assert!(
        after + (9 << 20) < before + (1 << 20),
        "{before} -> {after} bytes"
    );
    assert!(packs(&env).is_disjoint(&forgotten));
    assert!(
        !env.repo().join("prune").exists()
            || fs::read_dir(env.repo().join("prune"))
                .unwrap()
                .next()
                .is_none()
    );
    assert_clean(&env);
    env.restore_and_compare("latest", &src, "r");
    // The deletion is in the audit log (and the log verifies).
    let log = env.ok(&["--json", "audit", "log"]);
    assert!(log.contains("data.prune"), "{log}");
    env.ok(&["audit", "verify"]);
    // Nothing is left to do.
    let again = prune(&env, &["--grace", "0s"]);
    assert_eq!(
        (
            again["packs_marked"].as_u64(),
            again["packs_deleted"].as_u64()
        ),
        (Some(0), Some(0))
    );
}

#[test]
fn the_default_grace_only_marks_and_a_later_prune_deletes() {
    let env = Env::new();
    let src = env.path("src");
    let forgotten = two_snapshots_first_forgotten(&env, &src);
    let before = packs(&env);

    let text = env.ok(&["prune"]);
    assert!(
        text.contains(&format!("marked {} packs", forgotten.len()))
            && text.contains("they are deleted by the first prune after"),
        "{text}"
    );
    assert_eq!(packs(&env), before, "marking deletes nothing");
    env.ok(&["check"]);
    // A dry run says what would go and changes nothing.
    let dry = prune(&env, &["--grace", "0s", "--dry-run"]);
    assert_eq!(
        dry["packs_deleted"].as_u64(),
        Some(forgotten.len() as u64),
        "{dry}"
    );
    assert_eq!(packs(&env), before);
    // Still within the grace period: nothing happens, the mark stays pending.
    let r = prune(&env, &[]);
    assert_eq!(r["packs_deleted"], 0);
    assert_eq!(r["marks_pending"].as_array().unwrap().len(), 1, "{r}");

    let text = env.ok(&["prune", "--grace", "0s"]);
    assert!(
        text.contains(&format!("deleted {} packs, freed", forgotten.len())),
        "{text}"
    );
    assert_eq!(packs(&env), &before - &forgotten);
    assert_clean(&env);
    env.restore_and_compare("latest", &src, "r");
}

#[test]
fn a_backup_after_the_mark_stores_marked_data_again_instead_of_referring_to_it() {
    let env = Env::new();
    let src = env.path("src");
    two_snapshots_first_forgotten(&env, &src);
    prune(&env, &[]);
    // The forgotten snapshot's data comes back: its blobs are only in marked packs.
    fill(&src, 3, 3 << 20, 1);
    let b = backup_json(&env, &src);
    assert!(
        b["bytes_added"].as_u64().unwrap() > 9 << 20,
        "the backup stored the data again: {b}"
    );
    let r = prune(&env, &["--grace", "0s"]);
    assert!(r["packs_deleted"].as_u64().unwrap() >= 2, "{r}");
    assert!(r["kept_back"].as_array().unwrap().is_empty(), "{r}");
    assert_clean(&env);
    env.restore_and_compare("latest", &src, "r");
}

#[test]
fn a_partly_used_pack_is_repacked() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // One pack holds both the file that stays and the one that goes.
    fs::write(src.join("stays"), noise(200 << 10, 5)).unwrap();
    fs::write(src.join("goes"), noise(2 << 20, 6)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    fs::remove_file(src.join("goes")).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    env.ok(&["forget", "--keep-last", "1"]);
    // Above the threshold nothing is repacked and the pack stays.
    let r = prune(&env, &["--grace", "0s", "--repack-threshold", "1"]);
    assert_eq!(r["packs_repacked"], 0, "{r}");
    let before = repo_bytes(&env);
    let r = prune(&env, &["--grace", "0s"]);
    assert!(r["packs_repacked"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["blobs_repacked"].as_u64().unwrap() >= 1, "{r}");
    // The first run deleted the old tree pack; this one the repacked data pack.
    assert_eq!(r["packs_deleted"], 1, "{r}");
    assert!(repo_bytes(&env) + (3 << 20) / 2 < before);
    assert_clean(&env);
    env.restore_and_compare("latest", &src, "r");
}

#[test]
fn prune_during_a_backup_leaves_the_backup_intact() {
    let env = Env::new();
    let src = env.path("src");
    two_snapshots_first_forgotten(&env, &src);
    // A mark made before the backup starts.
    prune(&env, &[]);
    let big = env.path("big");
    fill(&big, 40, 3 << 20, 9);
    // The big backup also holds the forgotten snapshot's data again.
    fill(&big.join("again"), 3, 3 << 20, 1);
    let backup = env
        .cmd()
        .args(["backup", big.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let locks = env.repo().join("locks");
    while !locks.exists()
        || !fs::read_dir(&locks).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("session-")
        })
    {
        assert!(Instant::now() < deadline, "the backup announced itself");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut backup = backup;
    let mut during = 0;
    let mut deleted = 0;
    while backup.try_wait().unwrap().is_none() {
        let r = prune(&env, &["--grace", "0s"]);
        during += 1;
        deleted += r["packs_deleted"].as_u64().unwrap();
        // Every mark is younger than the backup's start plus the clock-skew margin: nothing
        // goes while it runs (a prune may overlap its end).
        assert!(
            r["packs_deleted"] == 0 || backup.try_wait().unwrap().is_some(),
            "deleted during the backup: {r}"
        );
        assert_eq!(r["packs_unindexed"], 0, "the running backup's packs: {r}");
    }
    let out = backup.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{during} prunes ran during the backup");
    assert!(during >= 1, "a prune ran while the backup did");
    let r = prune(&env, &["--grace", "0s"]);
    assert!(r["marks_pending"].as_array().unwrap().is_empty(), "{r}");
    deleted += r["packs_deleted"].as_u64().unwrap();
    assert!(deleted >= 2, "the forgotten snapshot's packs went: {r}");
    assert_clean(&env);
    env.restore_and_compare("latest", &big, "rbig");
    assert_eq!(env.snapshots_json().len(), 2);
}

#[test]
fn an_interrupted_sweep_is_finished_by_the_next_prune() {
    let env = Env::new();
    let src = env.path("src");
    let forgotten = two_snapshots_first_forgotten(&env, &src);
    prune(&env, &[]);
    // As if a sweep had deleted the packs and stopped before deleting the mark (and, harder,
    // before the index was written again).
    for f in files_below(&env.repo().join("data")) {
        if forgotten.contains(&*f.file_name().unwrap().to_string_lossy()) {
            fs::remove_file(f).unwrap();
        }
    }
    let r = prune(&env, &["--grace", "0s"]);
    assert_eq!(r["marks_swept"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert!(r["indexes_rewritten"].as_u64().unwrap() >= 1, "{r}");
    assert_clean(&env);
    env.restore_and_compare("latest", &src, "r");
}

#[test]
fn a_prune_killed_at_random_points_resumes_to_a_clean_repository() {
    let env = Env::new();
    let src = env.path("src");
    env.init();
    // Many packs, so that a kill falls between deletions.
    for seed in 1..=6 {
        fill(&src, 4, 3 << 20, seed);
        env.ok(&["backup", src.to_str().unwrap()]);
    }
    env.ok(&["forget", "--keep-last", "1"]);
    let seed = drvault_tests::test_seed("kill points");
    // Kill points within the time a dry run takes (the real run does more).
    let t0 = Instant::now();
    prune(&env, &["--grace", "0s", "--dry-run"]);
    let span = t0.elapsed().as_micros() as u64;
    let mut delays: Vec<u64> = noise(8, seed)
        .iter()
        .map(|b| span / 8 + span * u64::from(*b) / 128)
        .collect();
    // Earliest first, so the kills fall at ever later points of one job.
    delays.sort_unstable();
    let mut killed = 0;
    for delay_us in delays {
        let mut child = env
            .cmd()
            .args(["prune", "--grace", "0s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(delay_us));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        // After every kill the snapshot is whole.
        env.ok(&["check"]);
    }
    eprintln!("{killed} prunes killed within {span} µs");
    assert!(killed > 0, "at least one run was killed mid-way");
    let r = prune(&env, &["--grace", "0s"]);
    assert!(r["marks_pending"].as_array().unwrap().is_empty(), "{r}");
    let again = prune(&env, &["--grace", "0s"]);
    assert_eq!(again["packs_marked"], 0, "{again}");
    assert_eq!(packs(&env).len(), 2, "one data and one tree pack are left");
    assert_clean(&env);
    env.restore_and_compare("latest", &src, "r");
}

#[test]
fn a_damaged_mark_stops_prune_and_bad_options_are_refused() {
    let env = Env::new();
    let src = env.path("src");
    two_snapshots_first_forgotten(&env, &src);
    prune(&env, &[]);
    let marks = files_below(&env.repo().join("prune"));
    assert_eq!(marks.len(), 1);
    let mut bytes = fs::read(&marks[0]).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    fs::write(&marks[0], bytes).unwrap();
    let name = marks[0].file_name().unwrap().to_string_lossy().into_owned();
    let before = files_below(&env.repo());

    let out = env.run(&["prune", "--grace", "0s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(drvault_tests::code::INTEGRITY),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("prune/{name}")), "{stderr}");
    let mut after = files_below(&env.repo());
    after.retain(|f| !f.starts_with(env.repo().join("locks")));
    let mut before = before;
    before.retain(|f| !f.starts_with(env.repo().join("locks")));
    after.sort();
    before.sort();
    assert_eq!(after, before, "nothing was written or deleted");
    // check names it; a backup still runs (prune will not delete what the mark lists).
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(drvault_tests::code::INTEGRITY));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&name));
    env.ok(&["backup", src.to_str().unwrap()]);

    for bad in [
        &["prune", "--repack-threshold", "1.5"][..],
        &["prune", "--repack-threshold=-0.1"],
        &["prune", "--grace", "soon"],
    ] {
        let out = env.run(bad);
        assert!(!out.status.success(), "{bad:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("threshold") || stderr.contains("duration"),
            "{stderr}"
        );
    }
}

fn sigterm(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sigterm_stops_prune_and_check_at_a_clean_point_with_exit_130() {
    let env = Env::new();
    let src = env.path("src");
    let doomed = two_snapshots_first_forgotten(&env, &src);
    let fp = env.path("fp");
    // Prune, held after it worked out what is unused and before it marks anything.
    let mut cmd = env.cmd();
    cmd.args(["prune", "--grace", "0s"]);
    let paused = drvault_tests::failpoints::start_paused(cmd, &fp, "prune.after-usage");
    sigterm(paused.pid());
    // The handler runs on the runtime's threads, which the paused prune leaves free.
    std::thread::sleep(Duration::from_millis(300));
    let out = paused.resume();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("stopped on request"), "{stderr}");
    // Nothing was marked or deleted, and no lease is left held: the next prune does it all.
    assert!(doomed.is_subset(&packs(&env)));
    let marks = env.repo().join("prune");
    assert!(!marks.exists() || files_below(&marks).is_empty());
    // Held after writing its mark: stopped there, the mark is durable, nothing deleted, and
    // the audit log says what it set out to do and that it stopped.
    let mut cmd = env.cmd();
    cmd.args(["prune", "--grace", "0s"]);
    let paused = drvault_tests::failpoints::start_paused(cmd, &fp, "prune.after-mark");
    sigterm(paused.pid());
    std::thread::sleep(Duration::from_millis(300));
    let out = paused.resume();
    assert_eq!(out.status.code(), Some(130));
    assert_eq!(files_below(&marks).len(), 1);
    assert!(doomed.is_subset(&packs(&env)));
    let log: Value = serde_json::from_str(&env.ok(&["--json", "audit", "log"])).unwrap();
    let entries = log
        .as_array()
        .or_else(|| log["entries"].as_array())
        .unwrap();
    let last = entries.last().unwrap();
    assert_eq!(last["action"], "data.prune", "{last}");
    assert!(
        last["result"]
            .as_str()
            .unwrap()
            .starts_with("failed: stopped on request"),
        "{last}"
    );
    let r = prune(&env, &["--grace", "0s"]);
    assert_eq!(
        r["packs_deleted"].as_u64(),
        Some(doomed.len() as u64),
        "{r}"
    );
    assert!(packs(&env).is_disjoint(&doomed));
    // Check, held before it reads data: stopped, it reports no verdict.
    let mut cmd = env.cmd();
    cmd.args(["check", "--read-data"]);
    let paused = drvault_tests::failpoints::start_paused(cmd, &fp, "check.before-data");
    sigterm(paused.pid());
    std::thread::sleep(Duration::from_millis(300));
    let out = paused.resume();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("no errors"));
    assert_clean(&env);
}
