//! `drvault forget`: a retention policy applied to real snapshots (the rules themselves have a
//! golden test in repo/src/retention.rs).
#![allow(clippy::unwrap_used)]

use std::fs;

use drvault_tests::Env;
use serde_json::Value;

#[test]
fn forget_keeps_what_the_policy_names_and_dry_run_changes_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        fs::write(src.join("f"), format!("version {i}")).unwrap();
        let mut args = vec!["backup", src.to_str().unwrap()];
        if i == 0 {
            args.extend(["--tag", "release"]);
        }
        env.ok(&args);
    }
    assert_eq!(env.snapshots_json().len(), 4);

    // Nothing to keep is refused.
    let out = env.run(&["forget"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("keep"));

    let plan: Value = serde_json::from_str(&env.ok(&[
        "forget",
        "--keep-last",
        "2",
        "--keep-tag",
        "release",
        "--dry-run",
        "--json",
    ]))
    .unwrap();
    let decisions = plan["decisions"].as_array().unwrap();
    let removed: Vec<&Value> = decisions.iter().filter(|d| d["keep"] == false).collect();
    assert_eq!(removed.len(), 1, "{plan}");
    let reasons: Vec<String> = decisions
        .iter()
        .filter(|d| d["keep"] == true)
        .map(|d| d["reasons"].to_string())
        .collect();
    assert_eq!(
        reasons,
        vec!["[\"last\"]", "[\"last\"]", "[\"tag release\"]"]
    );
    assert_eq!(env.snapshots_json().len(), 4, "a dry run changes nothing");

    env.ok(&["forget", "--keep-last", "2", "--keep-tag", "release"]);
    let left = env.snapshots_json();
    assert_eq!(left.len(), 3);
    assert!(left.iter().all(|s| s["id"] != removed[0]["id"]));
    env.ok(&["check"]);
    let target = env.path("r");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(
        fs::read_to_string(drvault_tests::restored(&target, &src).join("f")).unwrap(),
        "version 3"
    );
    let log: Vec<Value> = serde_json::from_str(&env.ok(&["audit", "log", "--json"])).unwrap();
    assert_eq!(log.last().unwrap()["action"], "snapshots.forget");
}
