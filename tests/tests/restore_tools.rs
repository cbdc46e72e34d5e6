//! The restore tools (issue "Application-consistent backups and restore tools"): `dump` (a file on
//! stdout, a directory as a tar stream the real `tar` extracts), `diff`, `find`, `tag`, `stats`.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use drvault_tests::{code, files_below, noise, restored, Env};

#[test]
fn dump_writes_a_file_or_a_directory_as_tar() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    // Several chunks: the blobs come out in order.
    let big = noise(6 << 20, 5);
    fs::write(src.join("big.bin"), &big).unwrap();
    fs::write(src.join("sub/small.txt"), b"hello\n").unwrap();
    fs::write(src.join("sub/deeper/empty"), b"").unwrap();
    fs::set_permissions(src.join("sub/small.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("small.txt", src.join("sub/link")).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);

    let file = format!("{}/big.bin", src.display());
    let out = env.cmd().args(["dump", "latest", &file]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == big, "the file's bytes");

    // A directory: a tar stream with modes, links and every file.
    let dir = format!("{}/sub", src.display());
    let out = env.cmd().args(["dump", "latest", &dir]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tarball = env.path("sub.tar");
    fs::write(&tarball, &out.stdout).unwrap();
    let into = env.path("untarred");
    fs::create_dir_all(&into).unwrap();
    let status = Command::new("tar")
        .arg("-xpf")
        .arg(&tarball)
        .arg("-C")
        .arg(&into)
        .status()
        .unwrap();
    assert!(status.success());
    let got = restored(&into, &src.join("sub"));
    for f in files_below(&src.join("sub")) {
        let rel = f.strip_prefix(src.join("sub")).unwrap();
        assert_eq!(
            fs::read(&f).unwrap(),
            fs::read(got.join(rel)).unwrap(),
            "{rel:?}"
        );
    }
    assert_eq!(
        fs::metadata(got.join("small.txt")).unwrap().mode() & 0o777,
        0o640
    );
    assert_eq!(
        fs::read_link(got.join("link")).unwrap().to_str().unwrap(),
        "small.txt"
    );

    // A path the snapshot lacks names the snapshot's paths; `| head` ends quietly.
    let out = env
        .cmd()
        .args(["dump", "latest", &format!("{}/nope", src.display())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(code::FAILURE));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not in the snapshot") && stderr.contains("which holds"),
        "{stderr}"
    );
    let (read, write) = rustix::pipe::pipe().unwrap();
    drop(read);
    let out = env
        .cmd()
        .args(["dump", "latest", &file])
        .stdout(std::process::Stdio::from(write))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn diff_names_what_was_added_removed_modified_and_retouched() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("same")).unwrap();
    fs::create_dir_all(src.join("gone")).unwrap();
    fs::write(src.join("same/a"), b"unchanged").unwrap();
    fs::write(src.join("gone/b"), b"b").unwrap();
    fs::write(src.join("edited"), b"old").unwrap();
    fs::write(src.join("chmodded"), b"c").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    fs::remove_dir_all(src.join("gone")).unwrap();
    fs::write(src.join("edited"), b"new content").unwrap();
    fs::set_permissions(src.join("chmodded"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir_all(src.join("new/inner")).unwrap();
    fs::write(src.join("new/inner/c"), b"c").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let ids: Vec<String> = env
        .snapshots_json()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let out = env.ok(&["--json", "diff", &ids[0], &ids[1], src.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let list = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|p| {
                p.as_str()
                    .unwrap()
                    .strip_prefix(src.to_str().unwrap())
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(list("added"), ["/new", "/new/inner", "/new/inner/c"]);
    assert_eq!(list("removed"), ["/gone", "/gone/b"]);
    assert_eq!(list("modified"), ["/edited"]);
    assert!(list("metadata").contains(&"/chmodded".to_string()), "{v}");
    assert!(
        !list("metadata").iter().any(|p| p.starts_with("/same")),
        "{v}"
    );
    let text = env.ok(&["diff", &ids[0][..10], "latest"]);
    assert!(
        text.contains("+    ") && text.contains("3 added, 2 removed, 1 modified"),
        "{text}"
    );
}

#[test]
fn find_answers_when_a_file_last_looked_right() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("etc/app")).unwrap();
    fs::create_dir_all(src.join("other")).unwrap();
    fs::write(src.join("other/unrelated"), b"u").unwrap();
    fs::write(src.join("etc/app/app.conf"), b"good").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    fs::write(src.join("etc/app/app.conf"), b"broken config").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    fs::remove_file(src.join("etc/app/app.conf")).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);

    let found = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["--json", "find"];
        all.extend_from_slice(args);
        serde_json::from_str::<serde_json::Value>(&env.ok(&all))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let by_name = found(&["*.conf"]);
    let sizes: Vec<u64> = by_name
        .iter()
        .map(|f| f["size"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sizes,
        [4, 13],
        "in the two snapshots that had it: {by_name:?}"
    );
    assert!(by_name[0]["path"]
        .as_str()
        .unwrap()
        .ends_with("/etc/app/app.conf"));
    let path_pattern = format!("{}/etc/*/app.conf", src.display());
    assert_eq!(found(&[&path_pattern]).len(), 2);
    assert!(found(&["*.conf", "--newest", "1"]).is_empty());
    assert!(found(&["nothing-like-this"]).is_empty());
    let text = env.ok(&["find", "app.conf"]);
    assert!(
        text.trim_end().ends_with("2 matches in 3 snapshots"),
        "{text}"
    );
}

#[test]
fn tag_changes_tags_under_a_new_id_and_records_it() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    env.ok(&["backup", src.to_str().unwrap(), "--tag", "daily"]);
    let before = env.snapshots_json();
    let old = before[0]["id"].as_str().unwrap().to_string();
    let out: serde_json::Value = serde_json::from_str(&env.ok(&[
        "--json",
        "tag",
        &old[..10],
        "--add",
        "keep",
        "--remove",
        "daily",
    ]))
    .unwrap();
    let new = out[0]["new"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    let after = env.snapshots_json();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["id"], new.as_str());
    assert_eq!(after[0]["tags"], serde_json::json!(["keep"]));
    assert_eq!(
        after[0]["time"], before[0]["time"],
        "same snapshot, other tags"
    );
    env.ok(&["tag", "latest", "--set", "release", "--set", "q4"]);
    assert_eq!(
        env.snapshots_json()[0]["tags"],
        serde_json::json!(["release", "q4"])
    );
    let log: serde_json::Value =
        serde_json::from_str(&env.ok(&["--json", "audit", "log"])).unwrap();
    assert_eq!(
        log.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "snapshots.tag")
            .count(),
        2
    );
    env.restore_and_compare("latest", &src, "r");
    let out = env.run(&["tag", "latest"]);
    assert_eq!(out.status.code(), Some(code::USAGE), "a change is required");
}

#[test]
fn stats_show_restore_and_stored_sizes() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    // Compressible and repeated: stored is much smaller than restored.
    fs::write(src.join("d/text"), "all work and no play ".repeat(50_000)).unwrap();
    fs::write(src.join("copy"), "all work and no play ".repeat(50_000)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["--json", "stats", "latest"])).unwrap();
    assert_eq!(v["files"], 2);
    assert_eq!(v["restore_bytes"], 2 * 21 * 50_000);
    let stored = v["stored_bytes"].as_u64().unwrap();
    assert!(
        stored > 0 && stored * 10 < v["restore_bytes"].as_u64().unwrap(),
        "{v}"
    );
    let whole: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "stats"])).unwrap();
    assert_eq!(whole["snapshots"], 1);
    assert!(whole["blobs"].as_u64().unwrap() >= v["blobs"].as_u64().unwrap());
    assert!(env.ok(&["stats", "latest"]).contains("restore size"));
}

#[test]
fn a_restore_run_again_with_overwrite_if_changed_keeps_what_is_already_right() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..10u64 {
        fs::write(src.join(format!("f{i}")), noise(50_000, i)).unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    let target = env.path("t");
    let t = target.to_str().unwrap();
    env.ok(&["restore", "latest", "--target", t]);
    let got = restored(&target, &src);
    // Damage one file in place (same size), remove another, give a third a second name.
    let mut bytes = fs::read(got.join("f1")).unwrap();
    bytes[100] ^= 1;
    fs::write(got.join("f1"), &bytes).unwrap();
    fs::remove_file(got.join("f2")).unwrap();
    fs::hard_link(got.join("f3"), env.path("elsewhere")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&env.ok(&[
        "--json",
        "restore",
        "latest",
        "--target",
        t,
        "--overwrite",
        "if-changed",
    ]))
    .unwrap();
    assert_eq!(v["unchanged"], 7, "{v}");
    for i in 0..10u64 {
        assert_eq!(
            fs::read(got.join(format!("f{i}"))).unwrap(),
            noise(50_000, i),
            "f{i}"
        );
    }
    // A file with another name was replaced, not kept: the other name is untouched.
    assert_eq!(fs::metadata(got.join("f3")).unwrap().nlink(), 1);
    // --overwrite never keeps what is there, whatever it holds.
    fs::write(got.join("f4"), b"mine").unwrap();
    env.ok(&["restore", "latest", "--target", t, "--overwrite", "never"]);
    assert_eq!(fs::read(got.join("f4")).unwrap(), b"mine");
}

/// `restore --exclude`, `--dry-run` and `--delete`: a dry run changes nothing and says what a
/// restore would do; `--delete` removes what the snapshot lacks in the directories restored in
/// full, never what an exclude matches, never outside an `--include`, never through a symlink.
#[test]
fn restore_excludes_deletes_and_dry_runs() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("a"), b"a\n").unwrap();
    fs::write(src.join("b.log"), b"log\n").unwrap();
    fs::write(src.join("d/f"), noise(100_000, 77)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let t = env.path("t");
    let ts = t.to_str().unwrap();
    env.ok(&["restore", "latest", "--target", ts]);
    let got = restored(&t, &src);
    // Local changes: a modified file, extras (a directory tree, a symlink to a directory
    // outside the target), an excluded name.
    fs::write(got.join("a"), b"edited\n").unwrap();
    fs::write(got.join("extra.txt"), b"x").unwrap();
    fs::create_dir_all(got.join("d/junk/deeper")).unwrap();
    fs::write(got.join("d/junk/deeper/file"), b"x").unwrap();
    fs::write(got.join("keep.log"), b"mine").unwrap();
    let victim = env.path("victim");
    fs::create_dir_all(&victim).unwrap();
    fs::write(victim.join("precious"), b"p").unwrap();
    std::os::unix::fs::symlink(&victim, got.join("d/evil")).unwrap();

    let out = env.ok(&[
        "--json",
        "restore",
        "latest",
        "--target",
        ts,
        "--dry-run",
        "--delete",
        "--overwrite",
        "if-changed",
        "--exclude",
        "*.log",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let planned: Vec<(String, String)> = v["planned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let path = p["path"].as_str().unwrap();
            let rel = path.strip_prefix(got.to_str().unwrap()).unwrap_or(path);
            (p["action"].as_str().unwrap().to_string(), rel.to_string())
        })
        .collect();
    let has = |action: &str, rel: &str| planned.iter().any(|(a, r)| a == action && r == rel);
    assert!(has("replace", "/a"), "{planned:?}");
    assert!(has("keep", "/d/f"), "{planned:?}");
    assert!(has("delete", "/extra.txt"), "{planned:?}");
    assert!(has("delete", "/d/junk"), "{planned:?}");
    assert!(has("delete", "/d/evil"), "{planned:?}");
    assert!(
        !planned.iter().any(|(_, r)| r.ends_with(".log")),
        "{planned:?}"
    );
    // Nothing changed.
    assert_eq!(fs::read(got.join("a")).unwrap(), b"edited\n");
    assert!(got.join("extra.txt").exists() && got.join("d/junk/deeper/file").exists());
    // A dry run into a missing target does not create it.
    let missing = env.path("missing");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        missing.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(!missing.exists());

    // --delete within an --include: only below it.
    let d = format!("{}/d", src.display());
    env.ok(&[
        "restore",
        "latest",
        "--target",
        ts,
        "--include",
        &d,
        "--delete",
    ]);
    assert!(got.join("extra.txt").exists(), "outside the include: kept");
    assert!(!got.join("d/junk").exists() && !got.join("d/evil").exists());
    assert!(
        victim.join("precious").exists(),
        "the symlink went, not what it named"
    );

    // The whole snapshot: extras go, excluded names stay, the edited file is restored.
    let out = env.ok(&[
        "restore",
        "latest",
        "--target",
        ts,
        "--delete",
        "--exclude",
        "*.log",
    ]);
    assert!(out.contains("deleted 1 entry"), "{out}");
    assert!(!got.join("extra.txt").exists());
    assert_eq!(fs::read(got.join("keep.log")).unwrap(), b"mine");
    assert_eq!(
        fs::read(got.join("b.log")).unwrap(),
        b"log\n",
        "excluded: left as it was"
    );
    assert_eq!(fs::read(got.join("a")).unwrap(), b"a\n");
    // An exclude leaves the entry out of a fresh restore.
    let fresh = env.path("fresh");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        fresh.to_str().unwrap(),
        "-e",
        "*.log",
        "-e",
        &d,
    ]);
    let f = restored(&fresh, &src);
    assert!(f.join("a").exists() && !f.join("b.log").exists() && !f.join("d").exists());
    // A relative path pattern is a usage error.
    let out = env.run(&["restore", "latest", "--target", ts, "-e", "d/f"]);
    assert_eq!(out.status.code(), Some(code::USAGE));
}

/// On a terminal a restore shows bytes written, the rate and the time left; off one, nothing.
#[test]
fn restore_shows_progress_with_an_eta_on_a_terminal() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), noise(8 << 20, 78)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let target = env.path("t");
    // `script` runs the command on a pseudo-terminal (util-linux), with the test's options.
    let mut cmd = env.cmd();
    cmd.args(["restore", "latest", "--target"]).arg(&target);
    let words: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|w| format!("'{}'", w.to_string_lossy()))
        .collect();
    let out = Command::new("script")
        .args(["-qec", &words.join(" "), "/dev/null"])
        .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("(100%)") && text.contains("ETA"), "{text}");
    // Not on a terminal: no progress line.
    let plain = env
        .cmd()
        .args(["restore", "latest", "--target"])
        .arg(env.path("t2"))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&plain.stderr).contains("ETA"));
}

/// A killed restore leaves files under temporary names; the next restore into the same target
/// removes those whose process is gone (and never another process's).
#[test]
fn a_rerun_removes_what_a_killed_restore_left_under_temporary_names() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let t = env.path("t");
    env.ok(&["restore", "latest", "--target", t.to_str().unwrap()]);
    let got = restored(&t, &src);
    // A dead writer (a process ID above any pid_max) and a live one (this test).
    let dead = got.join(".drvault-restore-7fffffff0000abcd-3");
    let live = got.join(format!(
        ".drvault-restore-{:x}0000abcd-4",
        std::process::id()
    ));
    fs::write(&dead, b"half").unwrap();
    fs::write(&live, b"busy").unwrap();
    env.ok(&[
        "restore",
        "latest",
        "--target",
        t.to_str().unwrap(),
        "--overwrite",
        "if-changed",
    ]);
    assert!(!dead.exists(), "a dead restore's temporary file is removed");
    assert!(live.exists(), "a running restore's is left alone");
}
