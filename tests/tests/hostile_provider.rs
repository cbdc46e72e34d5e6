//! A storage provider (or one compromised target) that edits the clear-text config, plants
//! objects under their own hash, or plants key slots that cost minutes to try.
#![allow(clippy::unwrap_used)]

use std::fs;

use drvault_keyring::{KdfParams, Key, KeySlot, SlotKind};
use drvault_repo::Id;
use drvault_tests::Env;

fn backed_up() -> Env {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"hello").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    env
}

fn edit_config(env: &Env, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = env.repo().join("config");
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut v);
    fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn an_edited_config_is_refused_because_the_keyring_binds_it() {
    let env = backed_up();
    // Near-fixed small chunks would reveal file structure through pack and blob sizes.
    edit_config(&env, |v| {
        v["chunker"]["min_size"] = 1024.into();
        v["chunker"]["avg_size"] = 2048.into();
        v["chunker"]["max_size"] = 4096.into();
    });
    let out = env.run(&["snapshots"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an edited config was used: {stderr}");
    assert!(stderr.contains("config"), "{stderr}");
}

#[test]
fn a_config_id_that_is_a_path_is_refused_before_anything_is_written() {
    let env = backed_up();
    edit_config(&env, |v| v["id"] = "../../escaped".into());
    let out = env.run(&["snapshots"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("32 hex digits"), "{stderr}");
    // state/../../escaped: beside the scratch directory.
    let beside = env.dir.path().parent().unwrap().join("escaped");
    assert!(
        !beside.exists(),
        "the catalog was written outside the state directory"
    );
}

/// Writes `bytes` as `dir/<hash of bytes>`: what a compromised target can always do.
fn plant(env: &Env, dir: &str, bytes: &[u8]) -> String {
    let name = Id::of_stored(bytes).to_hex();
    fs::write(env.repo().join(dir).join(&name), bytes).unwrap();
    name
}

#[test]
fn planted_objects_are_skipped_with_a_warning_and_everything_else_opens() {
    let env = backed_up();
    let slot = plant(&env, "keys", b"not a key slot");
    let keyring = plant(&env, "keyring", b"not a keyring");
    let snapshot = plant(&env, "snapshots", b"not a snapshot");
    fs::write(env.repo().join("snapshots/not-a-hash"), b"x").unwrap();
    // Larger than any key slot can be: refused before its body is read.
    let huge = plant(&env, "keys", &vec![7u8; 200 * 1024]);
    let out = env.run(&["--json", "snapshots"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    for name in [&slot, &keyring, &snapshot, &huge] {
        assert!(
            stderr.contains(name.as_str()),
            "the warning names {name}: {stderr}"
        );
    }
    let target = env.path("target");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    // check still calls the planted snapshot damage.
    assert!(!env.run(&["check"]).status.success());
}

#[test]
fn a_planted_key_slot_with_ruinous_kdf_parameters_is_not_run() {
    let env = backed_up();
    let mut slot = KeySlot::create(
        SlotKind::Passphrase,
        0,
        KdfParams::INSECURE_TEST,
        b"attacker",
        "",
        &Key::generate().unwrap(),
    )
    .unwrap();
    // 1 GiB × 16 passes per open, for every planted slot.
    slot.kdf = KdfParams {
        m_cost_kib: 1024 * 1024,
        t_cost: 16,
        p_cost: 1,
    };
    let name = plant(&env, "keys", &slot.encode());
    let started = std::time::Instant::now();
    let out = env.run(&["snapshots"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&name),
        "the warning names the slot: {stderr}"
    );
    eprintln!("opened in {:?}", started.elapsed());
}

/// A provider that withholds the newest keyring object serves an older generation (one from
/// before a rotation retired a compromised epoch, or from before the config was bound): a host
/// that opened the newer one refuses the older, naming the file to remove if the repository was
/// restored from an older copy on purpose. A fresh host has nothing to compare with and opens.
#[test]
fn a_keyring_rolled_back_by_the_provider_is_refused_by_a_host_that_saw_the_newer_one() {
    let env = backed_up();
    let dir = env.repo().join("keyring");
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        fs::create_dir_all(to).unwrap();
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    };
    let old = env.path("old-keyring");
    copy(&dir, &old);
    env.ok(&["key", "rotate"]);
    env.ok(&["snapshots"]);
    // The provider shows only the old keyring objects.
    fs::remove_dir_all(&dir).unwrap();
    copy(&old, &dir);
    let out = env.run(&["snapshots"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(drvault_tests::code::INTEGRITY),
        "{stderr}"
    );
    assert!(stderr.contains("withholds the newest keyring"), "{stderr}");
    assert!(
        stderr.contains("keyrings/"),
        "names the memory file: {stderr}"
    );
    // Another host, which never saw the newer keyring, cannot tell and opens.
    let other = env.host_cmd("fresh").arg("snapshots").output().unwrap();
    assert!(other.status.success());
}

fn verify_elsewhere(env: &Env, state: &str) -> (Option<i32>, serde_json::Value, String) {
    // Another machine: a fresh state directory, no catalog remembering the log.
    let out = env
        .host_cmd(state)
        .args(["audit", "verify", "--json"])
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap();
    // What a person reads: the same findings, in words.
    let text = env
        .host_cmd(state)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert_eq!(text.status.code(), out.status.code());
    (
        out.status.code(),
        report,
        String::from_utf8_lossy(&text.stderr).into_owned(),
    )
}

fn audit_entry(env: &Env, seq: u64) -> std::path::PathBuf {
    env.repo().join("audit").join(format!("{seq:020}"))
}

/// Issue "Ransomware-resilient repository", the verified gap: deleting the newest audit entries
/// left a shorter chain that verified as intact on any machine but the one whose catalog
/// remembered them. Every snapshot now anchors the entry that recorded its commit.
#[test]
fn cutting_the_newest_audit_entries_is_noticed_from_a_machine_that_never_saw_them() {
    let env = backed_up();
    let src = env.path("src");
    fs::write(src.join("b"), b"second").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let log: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["audit", "log", "--json"])).unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["repository.init", "snapshot.commit", "snapshot.commit"]
    );
    assert_eq!(log[1]["details"]["bytes_total"], 5);
    assert!(log[2]["details"]["bytes_added"].as_u64().unwrap() > 0);
    let (code, report, _) = verify_elsewhere(&env, "fresh-1");
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["anchored"], 2);

    // The newest entry deleted: the chain 1..2 is intact, but the newest snapshot names 3.
    fs::remove_file(audit_entry(&env, 3)).unwrap();
    let (code, report, stderr) = verify_elsewhere(&env, "fresh-2");
    assert_eq!(code, Some(drvault_tests::code::INTEGRITY), "{report}");
    assert!(report["first_broken"].is_null(), "{report}");
    assert_eq!(report["broken_anchors"][0]["seq"], 3, "{report}");
    assert!(stderr.contains("cut or rewritten"), "{stderr}");

    // Both commits cut, only the creation left: both snapshots say so.
    fs::remove_file(audit_entry(&env, 2)).unwrap();
    let (code, report, _) = verify_elsewhere(&env, "fresh-3");
    assert_eq!(code, Some(drvault_tests::code::INTEGRITY));
    assert_eq!(report["broken_anchors"].as_array().unwrap().len(), 2);
}

#[test]
fn a_snapshot_deleted_outside_forget_is_named_and_a_forgotten_one_is_not() {
    let env = backed_up();
    let src = env.path("src");
    fs::write(src.join("b"), b"second").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let snaps = env.snapshots_json();
    let (first, second) = (
        snaps[0]["id"].as_str().unwrap().to_string(),
        snaps[1]["objects"][0].as_str().unwrap().to_string(),
    );
    env.ok(&["forget", &first]);
    let (code, report, _) = verify_elsewhere(&env, "after-forget");
    assert_eq!(code, Some(0), "a recorded forget is not a loss: {report}");

    // The provider (or a host with delete rights) removes the other one.
    fs::remove_file(env.repo().join(&second)).unwrap();
    let (code, report, stderr) = verify_elsewhere(&env, "after-delete");
    assert_eq!(code, Some(drvault_tests::code::INTEGRITY), "{report}");
    let missing = report["missing_snapshots"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{report}");
    assert_eq!(missing[0]["commit"], 3);
    assert!(missing[0]["paths"][0].as_str().unwrap().ends_with("/src"));
    assert!(stderr.contains("snapshot missing"), "{stderr}");
}

/// The keyring anchors the log too (it records the head it saw), so cutting the key operations
/// that followed the newest snapshot is noticed from any machine. Before, the shorter chain,
/// whose every snapshot anchor still held, verified as intact.
#[test]
fn cutting_key_operations_after_the_newest_snapshot_is_noticed_through_the_keyring() {
    let env = backed_up();
    env.ok(&["key", "rotate"]);
    env.ok(&["key", "rotate"]);
    let log: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["audit", "log", "--json"])).unwrap();
    assert_eq!(log.len(), 4, "init, commit, two rotations");
    let (code, report, _) = verify_elsewhere(&env, "fresh-1");
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(
        report["keyring_anchor"]["seq"], 3,
        "the second rotation saw the first one's entry: {report}"
    );

    fs::remove_file(audit_entry(&env, 4)).unwrap();
    fs::remove_file(audit_entry(&env, 3)).unwrap();
    let (code, report, stderr) = verify_elsewhere(&env, "fresh-2");
    assert_eq!(code, Some(drvault_tests::code::INTEGRITY), "{report}");
    assert!(report["first_broken"].is_null(), "{report}");
    assert_eq!(report["broken_anchors"].as_array().unwrap().len(), 0);
    assert!(
        report["keyring_anchor"]["broken"]
            .as_str()
            .unwrap()
            .contains("deleted"),
        "{report}"
    );
    assert!(stderr.contains("the keyring (generation"), "{stderr}");
}
