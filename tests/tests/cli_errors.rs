//! What the command line says when something is wrong (issue "Restores that work under
//! pressure"): exit codes with restic's meanings, errors as JSON under `--json`, messages that
//! say what to do next, usage errors for values that do not parse, and requests refused before
//! anything is created.
#![allow(clippy::unwrap_used)]

use std::fs;

use drvault_tests::{code, text, Env};

#[test]
fn a_missing_path_fails_the_backup_without_a_snapshot() {
    let env = Env::new();
    env.init();
    let gone = env.path("not-mounted");
    let out = env.run(&["backup", gone.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code::FAILURE), "{stderr}");
    assert!(stderr.contains("no snapshot was made"), "{stderr}");
    assert!(env.snapshots_json().is_empty());
}

#[test]
fn exit_codes_mean_what_restics_mean() {
    let env = Env::new();
    // No repository: 10.
    let out = env.run(&["snapshots"]);
    assert_eq!(
        out.status.code(),
        Some(code::NO_REPOSITORY),
        "{}",
        text(&out.stderr)
    );
    env.init();
    // Wrong passphrase: 12.
    let out = env
        .cmd()
        .env("DRVAULT_PASSWORD", "not it")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(code::WRONG_PASSWORD));
    // Usage errors: 2, whoever catches them.
    for args in [
        &["check", "--read-data-subset", "150"][..],
        &["check", "--read-data-subset", "x"],
        &["restore", "--target", "/tmp/x"],
        &["no-such-command"],
    ] {
        let out = env.run(args);
        assert_eq!(
            out.status.code(),
            Some(code::USAGE),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    env.ok(&["check", "--read-data-subset", "5%"]);
}

#[test]
fn errors_under_json_are_a_json_object_on_stdout() {
    let env = Env::new();
    let out = env.run(&["--json", "snapshots"]);
    assert_eq!(out.status.code(), Some(code::NO_REPOSITORY));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["exit_code"], code::NO_REPOSITORY);
    assert_eq!(v["error"]["kind"], "no_repository");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("drvault init"));
    assert!(!text(&out.stderr).is_empty(), "also text on stderr");
    let out = env.run(&["--json", "check", "--read-data-subset", "150"]);
    assert_eq!(out.status.code(), Some(code::USAGE));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "usage");
}

#[test]
fn restore_onto_a_file_says_to_name_a_directory() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let file = env.path("a-file");
    fs::write(&file, b"keep me").unwrap();
    let out = env.run(&["restore", "latest", "--target", file.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code::USAGE), "{stderr}");
    assert!(stderr.contains("is not a directory"), "{stderr}");
    assert!(!stderr.contains("os error 17"), "{stderr}");
    assert_eq!(fs::read(&file).unwrap(), b"keep me");
}

#[test]
fn messages_say_what_to_do_next() {
    let env = Env::new();
    // A mistyped repository path: where drvault looked, that it may be a typo, and init.
    let out = env.run(&["snapshots"]);
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&*env.repo().to_string_lossy()), "{stderr}");
    assert!(
        stderr.contains("does not exist") && stderr.contains("mistyped"),
        "{stderr}"
    );
    assert!(stderr.contains("drvault init"), "{stderr}");
    env.init();
    // The audit log starts with the repository's creation, its time as every command prints
    // times ("2026-12-01 20:53:31").
    let log = env.ok(&["audit", "log"]);
    let first: Vec<&str> = log.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(first[0], "1", "{log}");
    assert!(
        first[1].len() == 10 && first[2].len() == 8 && first[2].contains(':'),
        "{log}"
    );
    assert!(
        log.lines().next().unwrap().contains(" repository.init "),
        "{log}"
    );
    // Plurals.
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    assert!(env.ok(&["snapshots"]).trim_end().ends_with("1 snapshot"));
}

#[test]
fn option_values_that_do_not_parse_are_usage_errors() {
    let env = Env::new();
    env.init();
    for (args, names) in [
        (vec!["prune", "--grace", "5x"], "--grace"),
        (
            vec!["prune", "--repack-threshold", "2"],
            "--repack-threshold",
        ),
        (vec!["forget", "--keep-within", "abc"], "--keep-within"),
        (vec!["jobs", "--since", "soon"], "--since"),
    ] {
        let out = env.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(names), "{args:?}: {stderr}");
    }
}

#[test]
fn backup_init_of_a_missing_path_creates_no_repository() {
    let env = Env::new();
    let missing = env.path("not-mounted");
    let out = env.run(&["backup", "--init", missing.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no snapshot was made"), "{stderr}");
    assert!(!stderr.contains("recovery key"), "{stderr}");
    assert!(!env.repo().exists(), "a repository was created");
}
