//! `restore --delete` against what it must not remove or must not count: file systems mounted in
//! the target (tmpfs, a bind mount, a mount below an extra directory) and an entry whose unlink
//! is refused. Each runs as root (mounting, `chattr +i`) and is skipped otherwise.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::process::Command;

use drvault_tests::{restored, Env};

/// A file system mounted on a directory (`mount ARGS... DIR`), unmounted on drop.
struct Mounted(std::path::PathBuf);

impl Mounted {
    fn new(args: &[&str], at: &std::path::Path) -> Mounted {
        let ok = Command::new("mount").args(args).arg(at).status().unwrap();
        assert!(ok.success(), "mount {args:?} {}", at.display());
        Mounted(at.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `--delete` removes what the snapshot lacks on the target's own mount only: a file system
/// mounted on a directory the snapshot has empty (as a backup with --one-file-system stores a mount
/// point), a bind mount of the target's own file system there, and a mount below an extra
/// directory keep everything, and the restore (and its dry run) says so, once each. Before, the
/// first two were emptied, and the third too, then the restore failed on the busy mount point.
#[test]
fn delete_leaves_file_systems_mounted_in_the_target_alone() {
    if !drvault_tests::is_root() {
        eprintln!("skipped: mounting needs root");
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("data")).unwrap();
    fs::create_dir_all(src.join("bound")).unwrap();
    fs::write(src.join("a"), b"a\n").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let t = env.path("t");
    let ts = t.to_str().unwrap();
    env.ok(&["restore", "latest", "--target", ts]);
    let got = restored(&t, &src);
    fs::create_dir_all(got.join("extra/mnt")).unwrap();
    fs::write(got.join("extra/file"), b"x").unwrap();
    let elsewhere = env.path("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::write(elsewhere.join("precious"), b"p").unwrap();
    let _data = Mounted::new(&["-t", "tmpfs", "tmpfs"], &got.join("data"));
    let _bound = Mounted::new(&["--bind", elsewhere.to_str().unwrap()], &got.join("bound"));
    let _inner = Mounted::new(&["-t", "tmpfs", "tmpfs"], &got.join("extra/mnt"));
    fs::write(got.join("data/precious"), b"p").unwrap();
    fs::write(got.join("extra/mnt/precious"), b"p").unwrap();
    fs::write(got.join("a"), b"edited\n").unwrap();

    let left: Vec<String> = ["/bound", "/data", "/extra/mnt"]
        .iter()
        .map(|rel| format!("{}{rel}", got.display()))
        .collect();
    let warned = |v: &serde_json::Value| -> Vec<String> {
        let mut paths: Vec<String> = v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .filter(|w| w.contains("another file system is mounted there"))
            .map(|w| w.split(": --delete").next().unwrap().to_string())
            .collect();
        paths.sort();
        paths
    };
    let dry = env.ok(&[
        "--json",
        "restore",
        "latest",
        "--target",
        ts,
        "--delete",
        "--dry-run",
    ]);
    let v: serde_json::Value = serde_json::from_str(&dry).unwrap();
    assert_eq!(warned(&v), left, "{v}");
    let planned: Vec<&str> = v["planned"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["action"] == "delete")
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(planned, [format!("{}/extra", got.display())], "{v}");
    assert_eq!(v["deleted"], 1, "only extra/file would go: {v}");

    let out = env.ok(&["--json", "restore", "latest", "--target", ts, "--delete"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(warned(&v), left, "{v}");
    assert_eq!(fs::read(got.join("data/precious")).unwrap(), b"p");
    assert_eq!(fs::read(got.join("bound/precious")).unwrap(), b"p");
    assert_eq!(fs::read(elsewhere.join("precious")).unwrap(), b"p");
    assert_eq!(fs::read(got.join("extra/mnt/precious")).unwrap(), b"p");
    assert!(
        !got.join("extra/file").exists(),
        "an extra on the target's mount goes"
    );
    assert!(
        got.join("extra").is_dir(),
        "a directory holding a mount stays"
    );
    assert_eq!(fs::read(got.join("a")).unwrap(), b"a\n");
    assert_eq!(v["deleted"], 1, "{v}");
}

/// An extra `--delete` is refused to remove (an immutable file) stays, is named in a warning and
/// is not counted as deleted; the restore still succeeds. Before, it was counted as gone.
#[test]
fn delete_reports_what_it_could_not_remove() {
    if !drvault_tests::is_root() {
        eprintln!("skipped: chattr +i needs root");
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a\n").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let t = env.path("t");
    let ts = t.to_str().unwrap();
    env.ok(&["restore", "latest", "--target", ts]);
    let got = restored(&t, &src);
    let stuck = got.join("stuck");
    fs::write(&stuck, b"x").unwrap();
    let immutable = |flag: &str| Command::new("chattr").arg(flag).arg(&stuck).status();
    if !immutable("+i").is_ok_and(|s| s.success()) {
        eprintln!("skipped: this file system has no immutable flag");
        return;
    }
    let out = env.run(&["--json", "restore", "latest", "--target", ts, "--delete"]);
    immutable("-i").unwrap();
    assert!(out.status.success(), "{}", drvault_tests::text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["deleted"], 0, "{v}");
    let warned = v["warnings"].as_array().unwrap().iter().any(|w| {
        let w = w.as_str().unwrap();
        w.starts_with(&format!(
            "{}: --delete could not remove it",
            stuck.display()
        ))
    });
    assert!(warned, "{v}");
    assert!(stuck.exists());
}
