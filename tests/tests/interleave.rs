//! The deterministic interleaving suite: one operation is held at a named fail point (compiled
//! into the test build only) while a conflicting operation from another "host" (its own state
//! directory) runs to completion; then the first resumes. Afterwards every snapshot an
//! operation reported as committed restores byte for byte, and `check --read-data` is clean.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use drvault_tests::failpoints::{start_paused, Paused};
use drvault_tests::{drvault_bin, files_below, noise, Env, PASSWORD};
use serde_json::Value;

/// `files` noise files of `size` bytes below `dir` (replacing what was there).
fn fill(dir: &Path, files: usize, size: usize, seed: u64) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    for i in 0..files {
        fs::write(
            dir.join(format!("f{i}")),
            noise(size, seed * 1000 + i as u64),
        )
        .unwrap();
    }
}

fn stdout_json(out: &Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn backup_cmd(env: &Env, host: &str, src: &Path) -> Command {
    let mut c = env.host_cmd(host);
    c.args(["--json", "backup", "--host", host, src.to_str().unwrap()]);
    c
}

/// Runs a backup to completion; returns its snapshot id.
fn backup(env: &Env, host: &str, src: &Path) -> String {
    let out = backup_cmd(env, host, src).output().unwrap();
    stdout_json(&out, "backup")["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn prune_now(env: &Env) -> Output {
    env.host_cmd("maint")
        .args(["--json", "prune", "--grace", "0s"])
        .output()
        .unwrap()
}

/// Every committed snapshot restores identically to its source, and check reads every blob
/// without a finding.
fn assert_intact(env: &Env, committed: &[(String, PathBuf)]) {
    for (i, (id, src)) in committed.iter().enumerate() {
        env.restore_and_compare(id, src, &format!("restored-{i}"));
        let _ = fs::remove_dir_all(env.path(&format!("restored-{i}")));
    }
    let out = env.run(&["--json", "check", "--read-data"]);
    let report = stdout_json(&out, "check --read-data");
    assert_eq!(report["errors"], Value::Array(vec![]), "{report}");
}

fn data_bytes(root: &Path) -> u64 {
    files_below(&root.join("data"))
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum()
}

/// The names (hex) of the objects holding snapshot `id`, from a `snapshots --json` listing (a
/// snapshot's ID is not its object's name).
fn objects_of(listing: &Value, id: &str) -> Vec<String> {
    listing
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["id"] == id)
        .flat_map(|s| s["objects"].as_array().unwrap().clone())
        .map(|o| o.as_str().unwrap().rsplit('/').next().unwrap().to_string())
        .collect()
}

/// Removes every snapshot object, as a `forget` of all of them would.
fn forget_all(env: &Env) {
    for f in files_below(&env.repo().join("snapshots")) {
        fs::remove_file(f).unwrap();
    }
}

/// Defect 1: a backup that opened the repository, then waited before announcing its session,
/// while a prune deleted the packs holding the data it is about to deduplicate against. The
/// index must be read after the session and the marks, or the snapshot refers to deleted blobs.
#[test]
fn backup_reads_its_index_after_its_session_while_prune_sweeps() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fill(&src, 6, 512 << 10, 1);
    backup(&env, "h1", &src);
    forget_all(&env);

    let held = start_paused(
        backup_cmd(&env, "h1", &src),
        &env.path("fp-backup"),
        "backup.before-session",
    );
    let pruned = stdout_json(&prune_now(&env), "prune");
    assert!(pruned["packs_deleted"].as_u64().unwrap() > 0, "{pruned}");

    let out = held.resume();
    let id = stdout_json(&out, "the held backup")["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_intact(&env, &[(id, src)]);
}

/// Defect 2: a backup sealing under the old epoch uploads its packs, re-encryption surveys the
/// repository (the packs are in no index yet), the backup indexes them, commits and ends; then
/// re-encryption goes on. It must not take those packs for an interrupted backup's garbage.
#[test]
fn reencryption_keeps_the_packs_of_a_backup_that_ends_during_its_survey() {
    let env = Env::new();
    env.init();
    let first = env.path("first");
    fill(&first, 3, 256 << 10, 2);
    let s1 = backup(&env, "h1", &first);

    let second = env.path("second");
    fill(&second, 4, 512 << 10, 3);
    let held_backup = start_paused(
        backup_cmd(&env, "h2", &second),
        &env.path("fp-backup"),
        "index.before-flush",
    );
    env.ok(&["key", "rotate"]);
    let held_reencrypt = start_paused(
        {
            let mut c = env.host_cmd("maint");
            c.args(["--json", "key", "reencrypt"]);
            c
        },
        &env.path("fp-reencrypt"),
        "reencrypt.after-survey",
    );
    let out = held_backup.resume();
    let s2 = stdout_json(&out, "the held backup")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = held_reencrypt.resume();
    assert!(
        out.status.success(),
        "re-encryption: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second run retires what the first could not.
    env.ok(&["key", "reencrypt"]);
    let epochs: Value = serde_json::from_str(&env.ok(&["--json", "key", "list"])).unwrap();
    let states: Vec<&str> = epochs["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states.iter().filter(|s| **s == "retired").count(),
        1,
        "{epochs}"
    );

    // Snapshot ids change when re-sealed: restore the newest snapshot of each host.
    let snaps = env.snapshots_json();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let _ = (s1, s2);
    let by_host = |h: &str| {
        snaps.iter().find(|s| s["host"] == h).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_intact(&env, &[(by_host("h1"), first), (by_host("h2"), second)]);
}

/// Defect 5: hosts backing up the same data at the same moment each store it; prune keeps one
/// copy of every used blob.
#[test]
fn prune_keeps_one_copy_of_what_concurrent_hosts_uploaded_twice() {
    let env = Env::new();
    env.init();
    let size = 12 << 20;
    let mut held: Vec<(String, PathBuf, Paused)> = Vec::new();
    for h in ["h1", "h2", "h3"] {
        let src = env.path(&format!("src-{h}"));
        // The same bytes on every host.
        fill(&src, 6, size / 6, 7);
        let p = start_paused(
            backup_cmd(&env, h, &src),
            &env.path(&format!("fp-{h}")),
            "backup.index-loaded",
        );
        held.push((h.to_string(), src, p));
    }
    let mut committed = Vec::new();
    for (_, src, p) in held {
        let out = p.resume();
        let id = stdout_json(&out, "backup")["id"]
            .as_str()
            .unwrap()
            .to_string();
        committed.push((id, src));
    }
    let before = data_bytes(&env.repo());
    assert!(
        before > 3 * size as u64 * 95 / 100,
        "three copies: {before}"
    );
    let pruned = stdout_json(&prune_now(&env), "prune");
    let after = data_bytes(&env.repo());
    assert!(
        after < size as u64 * 110 / 100,
        "one copy left: {after} bytes of {size} ({pruned})"
    );
    assert_intact(&env, &committed);
}

/// Defect 6: a check that listed the packs before another host's prune deleted some of them
/// does not report that prune's work as damage.
#[test]
fn check_during_another_hosts_prune_reports_no_damage() {
    let env = Env::new();
    env.init();
    let old = env.path("old");
    fill(&old, 4, 512 << 10, 4);
    backup(&env, "h1", &old);
    let kept = env.path("kept");
    fill(&kept, 2, 512 << 10, 5);
    let id = backup(&env, "h1", &kept);
    // The first snapshot goes; its packs become unused.
    let listing = Value::Array(env.snapshots_json());
    let first = listing[0]["id"].as_str().unwrap().to_string();
    let first_objects = objects_of(&listing, &first);
    for f in files_below(&env.repo().join("snapshots")) {
        if first_objects.contains(&f.file_name().unwrap().to_string_lossy().into_owned()) {
            fs::remove_file(f).unwrap();
        }
    }
    let mut c = env.host_cmd("checker");
    c.args(["--json", "check", "--read-data"]);
    let held = start_paused(c, &env.path("fp-check"), "check.after-listing");
    let pruned = stdout_json(&prune_now(&env), "prune");
    assert!(pruned["packs_deleted"].as_u64().unwrap() > 0, "{pruned}");
    let report = stdout_json(&held.resume(), "the held check");
    assert_eq!(report["errors"], Value::Array(vec![]), "{report}");
    assert_intact(&env, &[(id, kept)]);
}

/// prune × prune: a second prune while one holds the lease is refused, naming the holder; a
/// prune killed while it holds the lease is taken over at once by the next one on this host.
#[test]
fn a_second_prune_waits_for_the_first_and_takes_over_from_a_killed_one() {
    let env = Env::new();
    env.init();
    let old = env.path("old");
    fill(&old, 3, 512 << 10, 8);
    backup(&env, "h1", &old);
    let kept = env.path("kept");
    fill(&kept, 2, 512 << 10, 9);
    let id = backup(&env, "h1", &kept);
    let kept_objects = objects_of(&Value::Array(env.snapshots_json()), &id);
    fs::remove_file(
        files_below(&env.repo().join("snapshots"))
            .into_iter()
            .find(|f| {
                let name = f.file_name().unwrap().to_string_lossy().into_owned();
                !kept_objects.contains(&name)
            })
            .unwrap(),
    )
    .unwrap();

    let mut c = env.host_cmd("m1");
    c.args(["--json", "prune", "--grace", "0s"]);
    let held = start_paused(c, &env.path("fp-prune"), "prune.after-mark");
    let out = prune_now(&env);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("locked by"), "{stderr}");
    let first = stdout_json(&held.resume(), "the held prune");
    assert!(first["packs_deleted"].as_u64().unwrap() > 0, "{first}");

    // Killed at the worst moment: after the index was rewritten, before any pack is deleted.
    fill(&old, 2, 512 << 10, 10);
    backup(&env, "h1", &old);
    let newest = env.snapshots_json();
    let gone = newest.last().unwrap()["id"].as_str().unwrap().to_string();
    let gone_objects = objects_of(&Value::Array(newest.clone()), &gone);
    for f in files_below(&env.repo().join("snapshots")) {
        if gone_objects.contains(&f.file_name().unwrap().to_string_lossy().into_owned()) {
            fs::remove_file(f).unwrap();
        }
    }
    let out = env
        .host_cmd("m1")
        .args(["prune", "--grace", "0s"])
        .env("DRVAULT_FAILPOINTS", "prune.before-delete=abort")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the prune was aborted");
    let pruned = stdout_json(&prune_now(&env), "the prune after the kill");
    assert!(pruned["packs_deleted"].as_u64().unwrap() > 0, "{pruned}");
    assert_intact(&env, &[(id, kept)]);
}

/// re-encryption × prune: prune waits for the lease re-encryption holds; both finish and the
/// repository is intact.
#[test]
fn prune_waits_for_reencryption() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fill(&src, 3, 512 << 10, 11);
    backup(&env, "h1", &src);
    env.ok(&["key", "rotate"]);
    let mut c = env.host_cmd("m1");
    c.args(["key", "reencrypt"]);
    let held = start_paused(c, &env.path("fp-re"), "reencrypt.after-survey");
    let out = prune_now(&env);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked by"));
    let out = held.resume();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout_json(&prune_now(&env), "prune");
    let id = env.snapshots_json()[0]["id"].as_str().unwrap().to_string();
    assert_intact(&env, &[(id, src)]);
}

/// Two local targets, write quorum 1.
fn two_targets(env: &Env) -> PathBuf {
    let config = env.path("drvault.toml");
    fs::write(
        &config,
        format!(
            "[repository]\nwrite_quorum = 1\n[[targets]]\nname = \"a\"\nurl = \"file://{}\"\n[[targets]]\nname = \"b\"\nurl = \"file://{}\"\n",
            env.path("a").display(),
            env.path("b").display()
        ),
    )
    .unwrap();
    config
}

fn config_cmd(env: &Env, config: &Path, host: &str) -> Command {
    let mut c = Command::new(drvault_bin());
    c.arg("--config")
        .arg(config)
        .arg("--state-dir")
        .arg(env.path(&format!("state-{host}")))
        .env("DRVAULT_PASSWORD", PASSWORD)
        .env_remove("DRVAULT_REPO")
        .env_remove("DRVAULT_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY");
    c
}

/// sync × prune: a sync copying objects back to a target while a prune deletes them everywhere
/// could bring back an index object naming deleted packs. Sync takes the maintenance lease, so
/// the prune waits; afterwards every target is complete and intact.
#[test]
fn prune_waits_for_sync_and_no_deleted_object_comes_back() {
    let env = Env::new();
    let config = two_targets(&env);
    let run =
        |host: &str, args: &[&str]| config_cmd(&env, &config, host).args(args).output().unwrap();
    let ok = |host: &str, args: &[&str]| {
        let out = run(host, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    ok("h1", &["init", "--kdf-memory-kib", "64"]);
    let old = env.path("old");
    fill(&old, 3, 512 << 10, 12);
    ok("h1", &["backup", old.to_str().unwrap()]);
    let kept = env.path("kept");
    fill(&kept, 2, 512 << 10, 13);
    let id = stdout_json(
        &ok("h1", &["--json", "backup", kept.to_str().unwrap()]),
        "backup",
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Target b lost its copy of the index and of the first snapshot: sync owes it those.
    for dir in ["index", "snapshots"] {
        for f in files_below(&env.path("b").join(dir)) {
            fs::remove_file(f).unwrap();
        }
    }
    let listing = stdout_json(&ok("h1", &["--json", "snapshots"]), "snapshots");
    let kept_objects = objects_of(&listing, &id);
    for f in files_below(&env.path("a").join("snapshots")) {
        if !kept_objects.contains(&f.file_name().unwrap().to_string_lossy().into_owned()) {
            fs::remove_file(f).unwrap();
        }
    }
    let mut c = config_cmd(&env, &config, "syncer");
    c.arg("sync");
    let held = start_paused(c, &env.path("fp-sync"), "sync.before-copy");
    let out = run("maint", &["prune", "--grace", "0s"]);
    assert!(!out.status.success(), "prune runs only after sync");
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked by"));
    let out = held.resume();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok("maint", &["prune", "--grace", "0s"]);
    ok("maint", &["sync"]);
    let out = run("h1", &["--json", "check", "--all-targets", "--read-data"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let target = env.path("restored");
    ok(
        "h1",
        &[
            "restore",
            &id,
            "--verify",
            "--target",
            target.to_str().unwrap(),
        ],
    );
    let got = drvault_tests::restored(&target, &kept);
    for f in files_below(&kept) {
        let rel = f.strip_prefix(&kept).unwrap();
        assert_eq!(fs::read(&f).unwrap(), fs::read(got.join(rel)).unwrap());
    }
}

/// backup × forget × prune: a backup that reuses the blobs of its parent snapshot (unchanged
/// files are not read again) while that parent is forgotten and a prune runs. The prune must
/// not delete what the backup refers to, then or after it commits.
#[test]
fn a_backup_keeps_its_forgotten_parents_blobs_through_a_prune() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fill(&src, 4, 512 << 10, 14);
    backup(&env, "h1", &src);
    let held = start_paused(
        backup_cmd(&env, "h1", &src),
        &env.path("fp-backup"),
        "backup.index-loaded",
    );
    // The parent goes; its packs look unused.
    forget_all(&env);
    let first = stdout_json(&prune_now(&env), "prune while the backup runs");
    assert_eq!(
        first["packs_deleted"], 0,
        "the running backup holds the sweep: {first}"
    );
    let out = held.resume();
    let id = stdout_json(&out, "the held backup")["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The parent's packs were written less than the skew margin before the backup began, so
    // the first prune left them alone as possibly the backup's own; either way nothing the new
    // snapshot uses may go.
    stdout_json(&prune_now(&env), "prune after the backup");
    assert_intact(&env, &[(id, src)]);
}

/// repair × prune: repair holds the maintenance lease while it copies, as sync does.
#[test]
fn prune_waits_for_repair() {
    let env = Env::new();
    let config = two_targets(&env);
    let run =
        |host: &str, args: &[&str]| config_cmd(&env, &config, host).args(args).output().unwrap();
    let ok = |host: &str, args: &[&str]| {
        let out = run(host, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    ok("h1", &["init", "--kdf-memory-kib", "64"]);
    let src = env.path("src");
    fill(&src, 2, 512 << 10, 15);
    let id = stdout_json(
        &ok("h1", &["--json", "backup", src.to_str().unwrap()]),
        "backup",
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Target b lost its packs.
    for f in files_below(&env.path("b").join("data")) {
        fs::remove_file(f).unwrap();
    }
    let mut c = config_cmd(&env, &config, "repairer");
    c.arg("repair");
    let held = start_paused(c, &env.path("fp-repair"), "repair.before-copy");
    let out = run("maint", &["prune", "--grace", "0s"]);
    assert!(!out.status.success(), "prune runs only after repair");
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked by"));
    let out = held.resume();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok("maint", &["prune", "--grace", "0s"]);
    let out = run("h1", &["--json", "check", "--all-targets", "--read-data"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let target = env.path("restored");
    ok(
        "h1",
        &[
            "restore",
            &id,
            "--verify",
            "--target",
            target.to_str().unwrap(),
        ],
    );
}
