//! Key slots end to end: passphrase, key-file and recovery slots are added, changed and
//! removed, the recovery key opens the repository, and the last slot can never be removed.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use drvault_tests::Env;
use serde_json::Value;

fn key_list(env: &Env) -> Value {
    serde_json::from_str(&env.ok(&["key", "list", "--json"])).unwrap()
}

#[test]
fn slots_can_be_added_changed_and_removed_but_never_the_last() {
    let env = Env::new();
    let init: Value =
        serde_json::from_str(&env.ok(&["init", "--json", "--kdf-memory-kib", "64"])).unwrap();
    let recovery = init["recovery_key"].as_str().unwrap().to_string();
    assert_eq!(recovery.len(), 71, "8 groups of 8 hex digits");
    let slot_of = |kind: &str| {
        key_list(&env)["slots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == kind)
            .map(|s| s["id"].as_str().unwrap().to_string())
            .unwrap()
    };
    let first_slot = slot_of("passphrase");
    let recovery_slot = slot_of("recovery");
    let recovery_file = env.path("recovery");
    fs::write(&recovery_file, format!("{recovery}\n")).unwrap();
    let second = env.path("second-pass");
    fs::write(&second, "a second passphrase\n").unwrap();
    let added: Value = serde_json::from_str(&env.ok(&[
        "key",
        "add",
        "--json",
        "--new-password-file",
        second.to_str().unwrap(),
    ]))
    .unwrap();
    assert_ne!(added["id"].as_str().unwrap(), first_slot);
    assert_eq!(key_list(&env)["slots"].as_array().unwrap().len(), 3);
    let with = |pass: &Path, args: &[&str]| {
        env.cmd()
            .env_remove("DRVAULT_PASSWORD")
            .arg("--password-file")
            .arg(pass)
            .args(args)
            .output()
            .unwrap()
    };

    // A removed passphrase no longer opens the repository (removed with another slot's
    // passphrase: the slot in use cannot remove itself).
    assert!(with(&second, &["key", "remove", &first_slot[..12]])
        .status
        .success());
    assert_eq!(
        env.run(&["snapshots"]).status.code(),
        Some(drvault_tests::code::WRONG_PASSWORD)
    );
    assert!(with(&second, &["snapshots"]).status.success());

    // The recovery key opens the repository; then its slot goes too.
    assert!(with(&recovery_file, &["snapshots"]).status.success());
    assert!(with(&second, &["key", "remove", &recovery_slot[..12]])
        .status
        .success());
    assert_eq!(
        with(&recovery_file, &["snapshots"]).status.code(),
        Some(drvault_tests::code::WRONG_PASSWORD)
    );
    // The last slot cannot be removed.
    let out = with(
        &second,
        &["key", "remove", &added["id"].as_str().unwrap()[..12]],
    );
    assert_eq!(out.status.code(), Some(drvault_tests::code::USAGE));
    assert!(String::from_utf8_lossy(&out.stderr).contains("last key slot"));
    // An unknown prefix is refused, naming it (an ambiguous one: the library's
    // `a_prefix_matching_several_slots_is_refused`).
    let out = with(&second, &["key", "remove", "zzzz"]);
    assert_eq!(out.status.code(), Some(drvault_tests::code::USAGE));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no key slot starts with \"zzzz\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // passwd: the old passphrase stops working, the new one works.
    let third = env.path("third-pass");
    fs::write(&third, "the third passphrase\n").unwrap();
    let out = with(
        &second,
        &[
            "key",
            "passwd",
            "--new-password-file",
            third.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        with(&second, &["snapshots"]).status.code(),
        Some(drvault_tests::code::WRONG_PASSWORD)
    );
    assert!(with(&third, &["snapshots"]).status.success());

    // A wrong passphrase changes nothing and says so with its exit code.
    let wrong = env.path("wrong");
    fs::write(&wrong, "not it\n").unwrap();
    for args in [
        vec!["key", "rotate"],
        vec!["key", "remove", "abc"],
        vec!["key", "reencrypt"],
    ] {
        assert_eq!(
            with(&wrong, &args).status.code(),
            Some(drvault_tests::code::WRONG_PASSWORD),
            "{args:?}"
        );
    }
    let list: Value =
        serde_json::from_slice(&with(&third, &["key", "list", "--json"]).stdout).unwrap();
    assert_eq!(
        list["epochs"].as_array().unwrap().len(),
        1,
        "no rotation happened"
    );
    assert_eq!(list["slots"].as_array().unwrap().len(), 1);
}
