//! Key management end to end: slots, rotation, re-encryption and retirement, including a kill -9
//! in the middle of a re-encryption and a backup from another process while it runs.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use drvault_keyring::Header;
use drvault_tests::{files_below, noise, Env};
use serde_json::Value;

/// Every envelope header the format puts in the clear, per epoch: the first envelope of every
/// object, and for packs also the pack header envelope found through the trailer.
fn sealed_epochs(repo: &Path) -> BTreeMap<u32, usize> {
    let mut out = BTreeMap::new();
    for dir in ["data", "index", "snapshots"] {
        let d = repo.join(dir);
        if !d.exists() {
            continue;
        }
        for f in files_below(&d) {
            // object_store's staging files (`<name>#<n>`) left by a killed upload are not objects.
            if f.to_string_lossy().contains('#') {
                continue;
            }
            let bytes = fs::read(&f).unwrap();
            *out.entry(Header::parse(&bytes).unwrap().epoch).or_default() += 1;
            if dir == "data" {
                let n = bytes.len();
                let len = u32::from_le_bytes(bytes[n - 4..].try_into().unwrap()) as usize;
                let header = Header::parse(&bytes[n - 4 - len..n - 4]).unwrap();
                *out.entry(header.epoch).or_default() += 1;
            }
        }
    }
    out
}

fn key_list(env: &Env) -> Value {
    serde_json::from_str(&env.ok(&["key", "list", "--json"])).unwrap()
}

fn epoch_states(list: &Value) -> Vec<(u64, String, u64)> {
    list["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_u64().unwrap(),
                e["state"].as_str().unwrap().to_string(),
                e["objects"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn make_source(dir: &Path, files: usize, seed: u64) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..files {
        fs::write(dir.join(format!("f{i}")), noise(3 << 20, seed + i as u64)).unwrap();
    }
    fs::write(dir.join("small"), format!("seed {seed}")).unwrap();
}

#[test]
fn rotation_and_reencryption_retire_the_old_epoch_and_keep_every_snapshot() {
    let env = Env::new();
    env.init();
    let (a, b) = (env.path("a"), env.path("b"));
    make_source(&a, 4, 1);
    make_source(&b, 4, 100);
    env.ok(&["backup", a.to_str().unwrap()]);
    let before = key_list(&env);
    assert_eq!(epoch_states(&before)[0].1, "active");
    // init made a passphrase slot and a recovery slot.
    let kinds: Vec<&str> = before["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 2);
    assert!(
        kinds.contains(&"passphrase") && kinds.contains(&"recovery"),
        "{kinds:?}"
    );
    for field in ["id", "kind", "created"] {
        assert!(before["slots"][0].get(field).is_some(), "slot has {field}");
    }

    let out: Value = serde_json::from_str(&env.ok(&["key", "rotate", "--json"])).unwrap();
    assert_eq!(out["epoch"], 2);
    // New data is sealed under the new epoch at once; old data stays readable.
    env.ok(&["backup", b.to_str().unwrap()]);
    let mid = epoch_states(&key_list(&env));
    assert_eq!(mid[0].1, "retiring");
    assert_eq!(mid[1].1, "active");
    assert!(mid[0].2 > 0 && mid[1].2 > 0, "{mid:?}");
    let before_copy = env.path("repo-before");
    fs::create_dir_all(&before_copy).unwrap();
    drvault_tests::copy_tree(&env.repo(), &before_copy);

    let out: Value = serde_json::from_str(&env.ok(&["key", "reencrypt", "--json"])).unwrap();
    assert_eq!(out["retired"], serde_json::json!([1]), "{out}");
    assert!(out["packs_rewritten"].as_u64().unwrap() > 0);

    // No object is sealed under the retired epoch, read from the headers themselves.
    let epochs = sealed_epochs(&env.repo());
    assert_eq!(
        epochs.keys().copied().collect::<Vec<_>>(),
        vec![2],
        "{epochs:?}"
    );
    let after = epoch_states(&key_list(&env));
    assert_eq!(after[0], (1, "retired".to_string(), 0));
    assert_eq!(after[1].1, "active");

    // Every snapshot restores byte for byte; the check reads every blob.
    let snaps: Vec<Value> = env.snapshots_json();
    assert_eq!(snaps.len(), 2);
    env.ok(&["check", "--read-data"]);
    env.restore_and_compare("latest", &b, "rb");
    let first = snaps
        .iter()
        .find(|s| s["paths"][0].as_str().unwrap().ends_with("/a"))
        .unwrap();
    env.restore_and_compare(first["id"].as_str().unwrap(), &a, "ra");

    // The retired key is gone: one keyring object remains (with its host keyring beside it), and
    // it holds no key for epoch 1, so an object sealed under epoch 1 (put back from the copy) can
    // no longer be opened.
    assert_eq!(fs::read_dir(env.repo().join("keyring")).unwrap().count(), 2);
    let old_snaps = files_below(&before_copy.join("snapshots"));
    let old_epoch1 = old_snaps
        .iter()
        .find(|f| Header::parse(&fs::read(f).unwrap()).unwrap().epoch == 1)
        .unwrap();
    fs::copy(
        old_epoch1,
        env.repo()
            .join("snapshots")
            .join(old_epoch1.file_name().unwrap()),
    )
    .unwrap();
    let out = env.run(&["snapshots"]);
    assert_eq!(
        out.status.code(),
        Some(drvault_tests::code::INTEGRITY),
        "an epoch-1 object cannot be opened: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("epoch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_reencryption_killed_at_random_points_resumes_to_a_clean_repository() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_source(&src, 24, 7);
    env.ok(&["backup", src.to_str().unwrap()]);
    env.ok(&["key", "rotate"]);
    let mut killed = 0;
    // Random kill points, from a seed printed for a rerun (DRVAULT_TEST_SEED=...).
    let seed = drvault_tests::test_seed("kill points");
    let noise_bytes = noise(8, seed);
    let mut delays: Vec<u64> = noise_bytes.iter().map(|b| 20 + u64::from(*b) * 3).collect();
    delays.push(5);
    // Earliest first, so the kills fall at ever later points of one job.
    delays.sort_unstable();
    for delay_ms in delays {
        let child = env
            .cmd()
            .args(["key", "reencrypt"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let mut child = child;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        // After every kill: every snapshot is listed and the repository checks clean.
        assert_eq!(
            env.snapshots_json().len(),
            1,
            "after a kill at {delay_ms} ms"
        );
        env.ok(&["check"]);
    }
    assert!(killed > 0, "at least one run was killed mid-way");
    let out: Value = serde_json::from_str(&env.ok(&["key", "reencrypt", "--json"])).unwrap();
    assert!(out["not_retired"].as_array().unwrap().is_empty(), "{out}");
    assert_eq!(
        sealed_epochs(&env.repo())
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![2]
    );
    env.ok(&["check", "--read-data"]);
    env.restore_and_compare("latest", &src, "r");
}

#[test]
fn a_backup_running_across_the_rotation_keeps_its_epoch_alive_until_it_ends() {
    let env = Env::new();
    env.init();
    let small = env.path("small");
    make_source(&small, 1, 3);
    env.ok(&["backup", small.to_str().unwrap()]);
    let big = env.path("big");
    make_source(&big, 60, 50);

    // A backup that starts before the rotation seals under epoch 1 for its whole run.
    let backup = env
        .cmd()
        .args(["backup", big.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !env.repo().join("locks").exists()
        || !fs::read_dir(env.repo().join("locks")).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("session-")
        })
    {
        assert!(Instant::now() < deadline, "the backup announced itself");
        std::thread::sleep(Duration::from_millis(10));
    }
    env.ok(&["key", "rotate"]);
    let during = env.run(&["key", "reencrypt", "--json"]);
    let running = backup.wait_with_output().unwrap();
    assert!(
        running.status.success(),
        "{}",
        String::from_utf8_lossy(&running.stderr)
    );
    let report: Value = serde_json::from_slice(&during.stdout).unwrap();
    eprintln!(
        "re-encryption during the backup: exit {:?}, {report}",
        during.status.code()
    );
    if during.status.code() == Some(3) {
        // The backup was still running: epoch 1 was kept, and the reason names the backup.
        let why = report["not_retired"].to_string();
        assert!(why.contains("epoch 1") && why.contains("backup"), "{why}");
        assert!(report["retired"].as_array().unwrap().is_empty());
    }
    // Once it has ended, the next run rewrites what it sealed under epoch 1 and retires it.
    let out: Value = serde_json::from_str(&env.ok(&["key", "reencrypt", "--json"])).unwrap();
    let retired_now =
        out["retired"].as_array().unwrap().len() + report["retired"].as_array().unwrap().len();
    assert_eq!(retired_now, 1, "{out}");
    assert_eq!(
        sealed_epochs(&env.repo())
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![2]
    );
    env.ok(&["check", "--read-data"]);
    env.restore_and_compare("latest", &big, "rbig");
    assert_eq!(env.snapshots_json().len(), 2);
}

#[test]
fn a_new_master_key_leaves_the_old_one_unable_to_read_anything() {
    let env = Env::new();
    let init: Value =
        serde_json::from_str(&env.ok(&["init", "--json", "--kdf-memory-kib", "64"])).unwrap();
    let recovery_file = env.path("recovery");
    fs::write(
        &recovery_file,
        format!("{}\n", init["recovery_key"].as_str().unwrap()),
    )
    .unwrap();
    let src = env.path("src");
    make_source(&src, 3, 11);
    env.ok(&["backup", src.to_str().unwrap()]);
    // What a thief of the old master key would hold: the old slots and keyring objects.
    let stolen = env.path("stolen");
    for dir in ["keys", "keyring"] {
        drvault_tests::copy_tree(&env.repo().join(dir), &stolen.join(dir));
    }

    let out = env.run(&["key", "rotate", "--master", "--reencrypt", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["retired"], serde_json::json!([1]), "{report}");
    // The passphrase in use still opens it; the other slot (the recovery key) is gone.
    let list = key_list(&env);
    assert_eq!(list["slots"].as_array().unwrap().len(), 1);
    // The keyring and the host keyring of its generation.
    assert_eq!(fs::read_dir(env.repo().join("keyring")).unwrap().count(), 2);
    let with_recovery = || {
        env.cmd()
            .env_remove("DRVAULT_PASSWORD")
            .arg("--password-file")
            .arg(&recovery_file)
            .arg("snapshots")
            .output()
            .unwrap()
    };
    assert_eq!(
        with_recovery().status.code(),
        Some(drvault_tests::code::WRONG_PASSWORD)
    );
    env.ok(&["check", "--read-data"]);
    env.restore_and_compare("latest", &src, "r");

    // Put the stolen slots and keyring back: the old master key opens only the old keyring,
    // whose epoch keys seal nothing that is left.
    for dir in ["keys", "keyring"] {
        drvault_tests::copy_tree(&stolen.join(dir), &env.repo().join(dir));
    }
    let out = with_recovery();
    assert_eq!(
        out.status.code(),
        Some(drvault_tests::code::INTEGRITY),
        "old keys open nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sealed_epochs(&env.repo())
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![2]
    );
}

#[test]
fn key_operations_are_in_a_hash_chained_audit_log_that_detects_tampering() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_source(&src, 1, 5);
    env.ok(&["backup", src.to_str().unwrap()]);
    env.ok(&["key", "rotate"]);
    env.ok(&["key", "reencrypt"]);
    let wrong_slot = env.run(&["key", "remove", "nosuchslot"]);
    assert!(!wrong_slot.status.success());

    let log: Vec<Value> = serde_json::from_str(&env.ok(&["audit", "log", "--json"])).unwrap();
    let actions: Vec<(&str, &str)> = log
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    // The log starts with the repository's creation; the backup's commit is recorded too.
    assert_eq!(actions[0], ("repository.init", "ok"));
    assert_eq!(actions[1], ("snapshot.commit", "ok"));
    assert_eq!(actions[2], ("key.rotate", "ok"));
    assert_eq!(actions[3], ("key.reencrypt", "ok"));
    assert_eq!(actions[4].0, "key.remove");
    assert!(
        actions[4].1.starts_with("failed"),
        "a failed operation is evidence too: {actions:?}"
    );
    assert_eq!(log[2]["details"]["new_epoch"], 2);
    assert_eq!(log[3]["details"]["retired"], serde_json::json!([1]));
    for e in &log {
        assert!(e["actor"].as_str().unwrap().contains('@'));
        let text = e.to_string();
        assert!(
            !text.contains(drvault_tests::PASSWORD),
            "no secrets in the log"
        );
    }
    let verify: Value = serde_json::from_str(&env.ok(&["audit", "verify", "--json"])).unwrap();
    assert_eq!(verify["entries"], 5);
    assert_eq!(verify["anchored"], 1, "{verify}");
    assert!(
        verify["first_broken"].is_null()
            && verify["catalog_mismatches"].as_array().unwrap().is_empty()
    );

    // An entry edited in the SQLite catalog is detected and named.
    let config: Value =
        serde_json::from_slice(&fs::read(env.repo().join("config")).unwrap()).unwrap();
    let db = env
        .state()
        .join(config["id"].as_str().unwrap())
        .join("catalog.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE audit SET entry = replace(entry, '\"ok\"', '\"OK\"') WHERE seq = 2",
        [],
    )
    .unwrap();
    drop(conn);
    let out = env.run(&["audit", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(drvault_tests::code::INTEGRITY));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["catalog_mismatches"][0][0], 2, "{report}");

    // An entry changed in the repository (here: bytes flipped) breaks the chain there.
    let entry = env.repo().join("audit").join(format!("{:020}", 2));
    let mut bytes = fs::read(&entry).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&entry, bytes).unwrap();
    let out = env.run(&["audit", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(drvault_tests::code::INTEGRITY));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["first_broken"][0], 2, "{report}");

    // A removed entry is a gap.
    fs::remove_file(&entry).unwrap();
    let report: Value =
        serde_json::from_slice(&env.run(&["audit", "verify", "--json"]).stdout).unwrap();
    assert_eq!(report["first_broken"][0], 2, "{report}");
    assert!(report["first_broken"][1]
        .as_str()
        .unwrap()
        .contains("missing"));
}

#[test]
fn an_automatic_rotation_policy_rotates_only_when_due() {
    let env = Env::new();
    env.init();
    let cfg = env.path("drvault.toml");
    fs::write(
        &cfg,
        "[keys]\nrotate_every = \"30d\"\nrotate_after_blobs = 20\n",
    )
    .unwrap();
    let if_due = || {
        let out = env
            .cmd()
            .arg("--config")
            .arg(&cfg)
            .args(["key", "rotate", "--if-due", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let small = env.path("small");
    make_source(&small, 1, 1);
    env.ok(&["backup", small.to_str().unwrap()]);
    let r = if_due();
    assert_eq!(
        r["rotated"], false,
        "a few blobs under a new epoch: not due ({r})"
    );
    assert_eq!(epoch_states(&key_list(&env)).len(), 1);

    let more = env.path("more");
    make_source(&more, 6, 40);
    env.ok(&["backup", more.to_str().unwrap()]);
    let r = if_due();
    assert_eq!(r["epoch"], 2, "past 20 blobs: rotated ({r})");
    assert_eq!(epoch_states(&key_list(&env))[1].1, "active");

    // A bad policy is refused with the reason.
    fs::write(&cfg, "[keys]\nrotate_every = \"soon\"\n").unwrap();
    let out = env
        .cmd()
        .arg("--config")
        .arg(&cfg)
        .args(["key", "rotate", "--if-due"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rotate_every"));
}

/// Issue "Ransomware-resilient repository": snapshot IDs survive re-encryption (they are keyed
/// hashes of the snapshot's plaintext, not names of the objects holding it), and the object
/// names older drvaults showed as IDs still resolve while those objects exist.
#[test]
fn snapshot_ids_survive_reencryption_and_old_object_names_still_resolve() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), noise(100_000, 77)).unwrap();
    let backup: Value =
        serde_json::from_str(&env.ok(&["--json", "backup", src.to_str().unwrap()])).unwrap();
    let id = backup["id"].as_str().unwrap().to_string();
    let before = env.snapshots_json();
    assert_eq!(before[0]["id"], id.as_str());
    let object = before[0]["objects"][0].as_str().unwrap().to_string();
    let object_id = object.rsplit('/').next().unwrap().to_string();
    assert_ne!(object_id, id, "the ID is not the object's name");
    // What drvault before 0.7 showed as the ID (the object's name) still resolves.
    env.restore_and_compare(&object_id[..12], &src, "by-object");

    env.ok(&["key", "rotate", "--reencrypt"]);
    let after = env.snapshots_json();
    assert_eq!(after[0]["id"], id.as_str(), "same ID after re-encryption");
    assert_ne!(
        after[0]["objects"][0],
        object.as_str(),
        "a new object holds it"
    );
    env.restore_and_compare(&id[..8], &src, "by-id");
    env.ok(&["forget", &id]);
    assert!(env.snapshots_json().is_empty());
    assert!(drvault_tests::files_below(&env.repo().join("snapshots")).is_empty());
}
