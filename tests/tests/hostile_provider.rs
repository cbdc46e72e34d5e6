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
