//! A local user racing drvault: swapping directories for symlinks under a root restore, and
//! files for symlinks or FIFOs under a backup. Fail points (repo/src/failpoint.rs) hold the
//! window open at fixed phases; a free-running racer covers the points in between.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use drvault_tests::failpoints::start_paused;
use drvault_tests::{noise, restored, Env};
use rustix::fs::{renameat_with, RenameFlags, CWD};

/// Everything below `dir`: relative path → (mode, size, content hash or link target).
fn inventory(dir: &Path) -> BTreeMap<PathBuf, (u32, u64, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.is_dir() {
                stack.push(p.clone());
                String::from("dir")
            } else if m.file_type().is_symlink() {
                fs::read_link(&p).unwrap().display().to_string()
            } else {
                blake3::hash(&fs::read(&p).unwrap()).to_hex().to_string()
            };
            out.insert(
                p.strip_prefix(dir).unwrap().to_path_buf(),
                (m.mode(), m.len(), what),
            );
        }
    }
    let m = fs::metadata(dir).unwrap();
    out.insert(PathBuf::new(), (m.mode(), m.uid().into(), String::new()));
    out
}

/// Atomically exchanges the directory `dir` with a symlink to `to` (what a user who owns the
/// parent can do at any instant).
fn swap_for_symlink(dir: &Path, to: &Path) {
    let link = dir.with_extension("evil");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(to, &link).unwrap();
    renameat_with(CWD, &link, CWD, dir, RenameFlags::EXCHANGE).unwrap();
}

/// A source of `dirs` directories, each with a subdirectory of `files` files, backed up; and an
/// "outside" directory shaped like one of them (the victim).
fn backed_up(env: &Env, dirs: usize, files: usize) -> (PathBuf, PathBuf) {
    env.init();
    let src = env.path("src");
    for d in 0..dirs {
        let sub = src.join(format!("d{d}/sub"));
        fs::create_dir_all(&sub).unwrap();
        for f in 0..files {
            let p = sub.join(format!("f{f}"));
            fs::write(&p, noise(64 + f, (d * 1000 + f) as u64)).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        }
        // Distinctive modes: a chmod that lands outside shows.
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o701)).unwrap();
        fs::set_permissions(src.join(format!("d{d}")), fs::Permissions::from_mode(0o701)).unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    let outside = env.path("outside");
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::write(outside.join("sub/f0"), b"the victim's own file").unwrap();
    fs::set_permissions(outside.join("sub/f0"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(outside.join("sub"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
    (src, outside)
}

fn restore_cmd(env: &Env, target: &Path) -> std::process::Command {
    let mut c = env.cmd();
    c.args(["restore", "latest", "--target", target.to_str().unwrap()]);
    c
}

#[test]
fn a_directory_swapped_for_a_symlink_during_a_restore_is_refused_at_every_phase() {
    let env = Env::new();
    let (src, outside) = backed_up(&env, 4, 20);
    let before = inventory(&outside);
    for point in [
        "restore.after-dirs",
        "restore.before-contents",
        "restore.before-metadata",
        "restore.before-dir-metadata",
    ] {
        let target = env.path(&format!("t-{point}"));
        let paused = start_paused(restore_cmd(&env, &target), &env.path("fp"), point);
        let victim = restored(&target, &src).join("d2");
        swap_for_symlink(&victim, &outside);
        let out = paused.resume();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            inventory(&outside),
            before,
            "{point}: the restore wrote outside its target: {stderr}"
        );
        assert!(
            !out.status.success(),
            "{point}: a redirected restore succeeded"
        );
        assert!(
            stderr.contains("d2"),
            "{point}: the error names the path that changed: {stderr}"
        );
    }
}

#[test]
fn a_racing_attacker_swapping_directories_never_gets_a_write_outside() {
    let env = Env::new();
    let (src, outside) = backed_up(&env, 30, 100);
    let before = inventory(&outside);
    let target = env.path("target");
    let base = restored(&target, &src);
    let stop = AtomicBool::new(false);
    let swaps = AtomicUsize::new(0);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i = (i * 7 + 3) % 30;
                for victim in [base.join(format!("d{i}")), base.join(format!("d{i}/sub"))] {
                    if fs::symlink_metadata(&victim).is_ok_and(|m| m.is_dir()) {
                        swap_for_symlink(&victim, &outside);
                        swaps.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_micros(300));
                        // Swap back, so the restore may go on and meet the next swap.
                        let link = victim.with_extension("evil");
                        let _ = renameat_with(CWD, &link, CWD, &victim, RenameFlags::EXCHANGE);
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        let out = restore_cmd(&env, &target).output().unwrap();
        stop.store(true, Ordering::Relaxed);
        out
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "{} swaps; the restore {}",
        swaps.load(Ordering::Relaxed),
        if out.status.success() {
            "succeeded"
        } else {
            "stopped"
        }
    );
    assert!(swaps.load(Ordering::Relaxed) > 0, "the racer never swapped");
    assert_eq!(
        inventory(&outside),
        before,
        "the restore wrote outside its target: {stderr}"
    );
    if out.status.success() {
        // Every swap was undone before the restore met it: the tree is complete and exact.
        let mut got = inventory(&base);
        let mut want = inventory(&src);
        got.remove(Path::new(""));
        want.remove(Path::new(""));
        assert_eq!(got, want);
    } else {
        // Met while restoring into it ("changed during the restore"), or found swapped when the
        // restore came to open it ("not a plain directory"): either way a refusal naming it.
        assert!(
            stderr.contains("changed during the restore")
                || stderr.contains("it is not a plain directory"),
            "a swap stops the restore with an error naming what changed: {stderr}"
        );
    }
}

/// A backed-up source holding one file the backup will read.
fn one_file_source(env: &Env) -> (PathBuf, PathBuf) {
    env.init();
    let src = env.path("home");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("notes.txt"), b"my own notes").unwrap();
    let secret = env.path("shadow");
    fs::write(&secret, b"root:TOPSECRET-HASH:19000::::::").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    (src, secret)
}

/// Every byte of a restore of the latest snapshot.
fn restored_bytes(env: &Env) -> Vec<u8> {
    let target = env.path("check");
    let _ = fs::remove_dir_all(&target);
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let mut all = Vec::new();
    for f in drvault_tests::files_below(&target) {
        all.extend(fs::read(f).unwrap());
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_file_swapped_for_a_symlink_before_it_is_read_is_skipped_not_followed() {
    let env = Env::new();
    let (src, secret) = one_file_source(&env);
    let mut cmd = env.cmd();
    cmd.args(["backup", src.to_str().unwrap()]);
    let paused = start_paused(cmd, &env.path("fp"), "backup.before-open");
    let file = src.join("notes.txt");
    fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(&secret, &file).unwrap();
    let out = paused.resume();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "skipped, counted: {stderr}");
    assert!(
        stderr.contains("notes.txt"),
        "the warning names it: {stderr}"
    );
    assert!(
        !contains(&restored_bytes(&env), b"TOPSECRET"),
        "the symlink's target was stored under the user's file name"
    );
}

#[test]
fn a_file_swapped_for_a_fifo_before_it_is_read_does_not_hang_the_backup() {
    let env = Env::new();
    let (src, _) = one_file_source(&env);
    let mut cmd = env.cmd();
    cmd.args(["backup", src.to_str().unwrap()]);
    let paused = start_paused(cmd, &env.path("fp"), "backup.before-open");
    let file = src.join("notes.txt");
    fs::remove_file(&file).unwrap();
    rustix::fs::mknodat(
        CWD,
        &file,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o666),
        0,
    )
    .unwrap();
    let out = paused
        .resume_within(Duration::from_secs(60))
        .expect("the backup hung on a FIFO swapped in for a file");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_directory_swapped_for_a_symlink_before_it_is_listed_is_not_followed() {
    let env = Env::new();
    let (src, _) = one_file_source(&env);
    let private = env.path("private");
    fs::create_dir_all(&private).unwrap();
    fs::write(private.join("id_ed25519"), b"TOPSECRET key").unwrap();
    let mut cmd = env.cmd();
    cmd.args(["backup", src.to_str().unwrap()]);
    let paused = start_paused(cmd, &env.path("fp"), "backup.before-list");
    swap_for_symlink(&src, &private);
    let out = paused.resume();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("home"), "the warning names it: {stderr}");
    if !env.snapshots_json().is_empty() {
        assert!(
            !contains(&restored_bytes(&env), b"TOPSECRET"),
            "the directory a symlink pointed to was stored"
        );
    }
}

#[test]
fn file_capabilities_survive_a_root_restore() {
    if !drvault_tests::is_root() {
        eprintln!("skipped: setting security.capability needs root");
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("bin");
    fs::create_dir_all(&src).unwrap();
    let tool = src.join("ping");
    fs::write(&tool, b"#!/bin/sh\n").unwrap();
    std::os::unix::fs::chown(&tool, Some(1000), Some(1000)).unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    // cap_net_raw+ep, set after the chown (which would clear it).
    let cap: &[u8] = &[
        1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    xattr::set(&tool, "security.capability", cap).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let target = env.path("target");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let got = restored(&target, &tool);
    let m = fs::metadata(&got).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1000, 0o755));
    assert_eq!(
        xattr::get(&got, "security.capability").unwrap().as_deref(),
        Some(cap),
        "the file capability was restored after the ownership that clears it"
    );
}

#[test]
fn a_config_others_can_write_is_refused_and_an_exposed_password_file_is_named() {
    let env = Env::new();
    env.init();
    let config = env.path("drvault.toml");
    fs::write(
        &config,
        "[[drills]]\nname = \"d\"\nrto_objective = \"1h\"\nrpo_objective = \"1d\"\nvalidate = [\"id\"]\n",
    )
    .unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o666)).unwrap();
    let out = env
        .cmd()
        .arg("--config")
        .arg(&config)
        .arg("snapshots")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("writable by others"), "{stderr}");

    let pw = env.path("pw");
    fs::write(&pw, drvault_tests::PASSWORD).unwrap();
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o644)).unwrap();
    let out = env
        .cmd()
        .env_remove("DRVAULT_PASSWORD")
        .arg("--password-file")
        .arg(&pw)
        .arg("snapshots")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("readable by group or others"), "{stderr}");
}

#[test]
fn the_process_writes_no_core_dump() {
    let env = Env::new();
    let _ = one_file_source(&env);
    env.ok(&["backup", env.path("home").to_str().unwrap()]);
    // A command that waits (at a fail point) long enough to be looked at.
    let paused = start_paused(
        restore_cmd(&env, &env.path("t")),
        &env.path("fp"),
        "restore.after-dirs",
    );
    let pid = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|e| contains(&e, env.path("fp").to_str().unwrap().as_bytes()))
        })
        .expect("the paused drvault");
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    // Soft and hard limit: the soft one is often 0 already where the tests run, the hard one
    // is what only drvault's own setrlimit lowers.
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(
        (fields.get(4), fields.get(5)),
        (Some(&"0"), Some(&"0")),
        "core dumps are off: {core}"
    );
    paused.resume();
}

#[test]
fn a_file_replaced_by_another_users_file_gets_neither_content_nor_ownership() {
    if !drvault_tests::is_root() {
        eprintln!("skipped: needs root to play the other user");
        return;
    }
    let env = Env::new();
    let (src, _) = backed_up(&env, 1, 3);
    let target = env.path("target");
    let paused = start_paused(
        restore_cmd(&env, &target),
        &env.path("fp"),
        "restore.before-install",
    );
    // The user unlinks the restore's file (under its temporary name until it is complete and
    // has its metadata) and makes their own; ext4 and XFS tend to hand the freed inode number straight
    // back.
    let dir = restored(&target, &src).join("d0/sub");
    let victim = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".drvault-restore-")
        })
        .expect("a file being restored");
    let before = fs::metadata(&victim).unwrap().ino();
    fs::remove_file(&victim).unwrap();
    fs::write(&victim, b"mine").unwrap();
    std::os::unix::fs::chown(&victim, Some(1000), Some(1000)).unwrap();
    let reused = fs::metadata(&victim).unwrap().ino() == before;
    eprintln!("inode number reused: {reused}");
    let out = paused.resume();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("changed during the restore"), "{stderr}");
    let m = fs::metadata(&victim).unwrap();
    assert_eq!(
        fs::read(&victim).unwrap(),
        b"mine",
        "the snapshot's content went into their file"
    );
    assert_eq!((m.uid(), m.mode() & 0o7777), (1000, 0o644));
}
