//! Naming snapshots under pressure (issue "Restores that work under pressure"): `--at` takes
//! the times `snapshots` prints, filters select by host, tag and path, and `forget` removes
//! exactly what it is told and refuses a policy that would keep nothing.
#![allow(clippy::unwrap_used)]

use std::fs;

use drvault_tests::{code, text, Env};

#[test]
fn at_takes_the_time_snapshots_prints_and_names_the_oldest_when_too_early() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let listing = env.ok(&["snapshots"]);
    // "id  2026-12-01 20:53:31  host ..." : the printed time, as printed.
    let line = listing.lines().nth(1).unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let printed = format!("{} {}", words[1], words[2]);
    let target = env.path("t");
    let t = target.to_str().unwrap();
    env.ok(&["restore", "--at", &printed, "--target", t]);
    env.ok(&["restore", "--at", words[1], "--target", t]);
    let out = env.run(&["restore", "--at", "2001-01-01", "--target", t]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code::USAGE), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the oldest such snapshot is {} of {printed}",
            words[0]
        )),
        "{stderr}"
    );
    let out = env.run(&["restore", "--at", "last tuesday", "--target", t]);
    assert_eq!(out.status.code(), Some(code::USAGE));
    assert!(text(&out.stderr).contains("2026-12-01 20:53:31"));
}

#[test]
fn forget_refuses_a_policy_that_keeps_nothing_and_removes_exactly_what_is_named() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        fs::write(src.join("a"), format!("{i}")).unwrap();
        env.ok(&["backup", src.to_str().unwrap()]);
    }
    let count = || env.snapshots_json().len();
    let out = env.run(&["forget", "--keep-last", "0"]);
    assert_eq!(
        out.status.code(),
        Some(code::USAGE),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("--allow-empty"));
    assert_eq!(count(), 4, "nothing removed");
    let out = env.run(&["forget", "--keep-tag", "release"]);
    assert_eq!(out.status.code(), Some(code::USAGE));
    assert!(
        text(&out.stderr).contains("no snapshot has this tag"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(count(), 4);
    let out = env.run(&["forget"]);
    assert_eq!(out.status.code(), Some(code::USAGE));

    let ids: Vec<String> = env
        .snapshots_json()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    env.ok(&["forget", &ids[1][..10], &ids[2]]);
    let left: Vec<String> = env
        .snapshots_json()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, vec![ids[0].clone(), ids[3].clone()]);
    let out = env.run(&["forget", "ffffffffff"]);
    assert_eq!(out.status.code(), Some(code::USAGE));
    assert_eq!(count(), 2);
    env.ok(&["forget", "--keep-last", "0", "--allow-empty"]);
    assert_eq!(count(), 0);
}

#[test]
fn snapshots_and_forget_take_the_host_tag_and_path_filters() {
    let env = Env::new();
    env.init();
    let (a, b) = (env.path("a"), env.path("b"));
    for d in [&a, &b] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("f"), b"x").unwrap();
    }
    env.ok(&["backup", a.to_str().unwrap(), "--tag", "daily"]);
    env.ok(&["backup", a.to_str().unwrap()]);
    env.ok(&["backup", b.to_str().unwrap(), "--tag", "daily"]);
    let count = |args: &[&str]| -> usize {
        let mut all = vec!["--json", "snapshots"];
        all.extend_from_slice(args);
        serde_json::from_str::<serde_json::Value>(&env.ok(&all))
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count(&[]), 3);
    assert_eq!(count(&["--tag", "daily"]), 2);
    assert_eq!(count(&["--path", a.to_str().unwrap()]), 2);
    assert_eq!(count(&["--path", b.to_str().unwrap(), "--tag", "daily"]), 1);
    assert_eq!(count(&["--host", "nobody"]), 0);
    // forget --path: the policy applies to a's snapshots only.
    env.ok(&["forget", "--keep-last", "1", "--path", a.to_str().unwrap()]);
    assert_eq!(count(&["--path", a.to_str().unwrap()]), 1);
    assert_eq!(count(&["--path", b.to_str().unwrap()]), 1);
}
