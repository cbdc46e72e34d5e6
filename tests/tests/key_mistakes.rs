//! Key management that survives slips of the keyboard (issue "Restores that work under
//! pressure", items 7 and 8): the slot in use cannot be removed, slots say whose they are, a key
//! file is all its bytes, and a recovery key opens however it is typed.
#![allow(clippy::unwrap_used)]

use std::fs;

use drvault_tests::{code, noise, text, Env};

fn slots(env: &Env) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "key", "list"])).unwrap();
    v["slots"].as_array().unwrap().clone()
}

fn with_file(env: &Env, file: &std::path::Path, args: &[&str]) -> std::process::Output {
    env.cmd()
        .env_remove("DRVAULT_PASSWORD")
        .arg("--password-file")
        .arg(file)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_slot_in_use_cannot_be_removed_and_slots_carry_labels() {
    let env = Env::new();
    env.init();
    let listed = slots(&env);
    let current: Vec<&serde_json::Value> = listed.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "{listed:?}");
    let in_use = current[0]["id"].as_str().unwrap().to_string();
    assert!(
        current[0]["label"].as_str().unwrap().contains('@'),
        "user@host: {listed:?}"
    );
    assert!(listed
        .iter()
        .any(|s| s["kind"] == "recovery" && s["label"] == "recovery"));
    assert!(env
        .ok(&["key", "list"])
        .contains(&format!("* {}", &in_use[..8])));

    let out = env.run(&["key", "remove", &in_use[..12]]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code::NOT_PERMITTED), "{stderr}");
    assert!(stderr.contains("another slot's passphrase"), "{stderr}");
    env.ok(&["snapshots"]);

    // A second passphrase with a label removes the first.
    let second = env.path("second");
    fs::write(&second, "another passphrase\n").unwrap();
    env.ok(&[
        "key",
        "add",
        "--new-password-file",
        second.to_str().unwrap(),
        "--label",
        "ops@backup-admin",
    ]);
    assert!(slots(&env).iter().any(|s| s["label"] == "ops@backup-admin"));
    let out = with_file(&env, &second, &["key", "remove", &in_use[..12]]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(code::WRONG_PASSWORD));
}

#[test]
fn a_key_file_is_every_byte_of_it() {
    let env = Env::new();
    env.init();
    let key = env.path("key");
    let mut bytes = b"abc\n".to_vec();
    bytes.extend(noise(60, 3));
    fs::write(&key, &bytes).unwrap();
    env.ok(&[
        "key",
        "add",
        "--kind",
        "keyfile",
        "--new-password-file",
        key.to_str().unwrap(),
    ]);
    let out = with_file(&env, &key, &["snapshots"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The first line alone is not the key.
    for (name, content) in [("first-line", &b"abc"[..]), ("first-line-nl", b"abc\n")] {
        let f = env.path(name);
        fs::write(&f, content).unwrap();
        let out = with_file(&env, &f, &["snapshots"]);
        assert_eq!(out.status.code(), Some(code::WRONG_PASSWORD), "{name}");
    }
    // An empty file says so instead of "wrong passphrase".
    let empty = env.path("empty");
    fs::write(&empty, b"").unwrap();
    let out = with_file(&env, &empty, &["snapshots"]);
    assert_eq!(out.status.code(), Some(code::FAILURE));
    assert!(
        text(&out.stderr).contains("is empty"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn key_add_recovery_generates_a_key_that_opens_however_it_is_typed() {
    let env = Env::new();
    env.init();
    let out = env.ok(&["--json", "key", "add", "--kind", "recovery"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let key = v["recovery_key"].as_str().unwrap().to_string();
    assert_eq!(key.len(), 71, "{key}");
    let upper = key.to_ascii_uppercase();
    let bare: String = key.chars().filter(|c| *c != '-').collect();
    for typed in [key.clone(), upper, bare, format!("  {key}  ")] {
        let out = env
            .cmd()
            .env("DRVAULT_PASSWORD", &typed)
            .arg("snapshots")
            .output()
            .unwrap();
        assert!(out.status.success(), "{typed}: {}", text(&out.stderr));
    }
    let out = env.run(&[
        "key",
        "add",
        "--kind",
        "recovery",
        "--new-password-file",
        "/etc/hostname",
    ]);
    assert_eq!(out.status.code(), Some(code::USAGE));
}
