//! Faults during a backup: unreadable sources and a kill -9 in the middle.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use drvault_tests::{noise, restored, Env};

#[test]
fn unreadable_files_are_named_counted_and_the_rest_is_saved() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("locked-dir")).unwrap();
    fs::write(src.join("readable"), b"fine").unwrap();
    fs::write(src.join("secret"), b"no access").unwrap();
    fs::write(src.join("locked-dir/inside"), b"no access either").unwrap();
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(src.join("locked-dir"), fs::Permissions::from_mode(0o000)).unwrap();
    env.init();
    // Root reads everything, so as root the backup runs as an unprivileged user instead.
    let mut cmd = env.cmd();
    if drvault_tests::is_root() {
        for p in [env.dir.path().to_path_buf(), env.repo(), env.state()] {
            fs::create_dir_all(&p).unwrap();
        }
        Command::new("chmod")
            .args(["-R", "a+rwX"])
            .arg(env.dir.path())
            .status()
            .unwrap();
        fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
        fs::set_permissions(src.join("locked-dir"), fs::Permissions::from_mode(0o000)).unwrap();
        let mut wrapped = Command::new("setpriv");
        wrapped
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(drvault_tests::drvault_bin());
        wrapped
            .arg("--repo")
            .arg(env.repo())
            .arg("--state-dir")
            .arg(env.path("state-nobody"));
        wrapped.env("DRVAULT_PASSWORD", drvault_tests::PASSWORD);
        cmd = wrapped;
    }
    let out = cmd
        .args(["backup", "--json", src.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "partial backup exit code: {stderr}"
    );
    assert!(
        stderr.contains("secret") && stderr.contains("locked-dir"),
        "{stderr}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["errors"], 2);
    fs::set_permissions(src.join("locked-dir"), fs::Permissions::from_mode(0o755)).unwrap();
    let target = env.path("out");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(
        fs::read(restored(&target, &src).join("readable")).unwrap(),
        b"fine"
    );
    assert!(!restored(&target, &src).join("secret").exists());
}

#[test]
fn kill_9_during_backup_leaves_earlier_snapshots_intact() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("first"), b"the first snapshot's file").unwrap();
    env.init();
    let first: serde_json::Value =
        serde_json::from_str(&env.ok(&["backup", "--json", src.to_str().unwrap()])).unwrap();
    let first_id = first["id"].as_str().unwrap().to_string();
    for i in 0..12 {
        fs::write(src.join(format!("big-{i}")), noise(8 * 1024 * 1024, i)).unwrap();
    }
    // Kill at several points of a run: early, and later while packs are being written.
    for delay_ms in [50u64, 400, 1200] {
        let mut child = env
            .cmd()
            .args(["backup", src.to_str().unwrap()])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let out = env.run(&["check", "--read-data"]);
        assert!(
            out.status.success(),
            "check after kill at {delay_ms} ms: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The snapshot taken before the kills is still there, whole.
    let snaps = env.snapshots_json();
    assert!(
        snaps.iter().any(|s| s["id"] == first_id.as_str()),
        "{snaps:?}"
    );
    let target = env.path("out");
    env.ok(&[
        "restore",
        &first_id,
        "--target",
        target.to_str().unwrap(),
        "--verify",
    ]);
    assert_eq!(
        fs::read(restored(&target, &src).join("first")).unwrap(),
        b"the first snapshot's file"
    );
    // The next run completes, with every file (what the killed runs uploaded is reused or
    // stored again, never lost).
    let last: serde_json::Value =
        serde_json::from_str(&env.ok(&["backup", "--json", src.to_str().unwrap()])).unwrap();
    let files = ["files_new", "files_changed", "files_unchanged"]
        .iter()
        .map(|k| last[k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(files, 13, "{last}");
    assert_eq!(last["errors"], 0, "{last}");
    assert!(env.run(&["check", "--read-data"]).status.success());
}

/// Issue "Ransomware-resilient repository": an operation that must be audited went ahead with
/// only a warning when its entry could not be written (exit 0, nothing in the log). It now
/// fails and says the change stands unrecorded.
#[test]
fn an_audited_operation_fails_when_the_audit_log_cannot_take_its_entry() {
    let env = Env::new();
    env.init();
    let audit = env.repo().join("audit");
    fs::rename(&audit, env.path("audit-aside")).unwrap();
    // A file where the log's directory was: the target takes no entry.
    fs::write(&audit, b"").unwrap();
    let out = env.run(&["key", "rotate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("key.rotate was done, but the audit log did not take its entry"),
        "{stderr}"
    );
}
