//! Backup → restore round trip over a tree holding every kind of entry drvault captures.
#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use drvault_tests::{noise, restored, Env};

fn make_tree(src: &Path) {
    fs::create_dir_all(src.join("dir/nested")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    fs::write(src.join("small.txt"), b"hello drvault\n").unwrap();
    fs::write(
        src.join("dir/nested/big.bin"),
        noise(9 * 1024 * 1024 + 17, 1),
    )
    .unwrap();
    fs::write(src.join("dir/zero-length"), b"").unwrap();
    // Hard links: three names, one inode.
    fs::write(src.join("linked"), b"one inode, several names").unwrap();
    fs::hard_link(src.join("linked"), src.join("dir/linked-again")).unwrap();
    fs::hard_link(src.join("linked"), src.join("dir/nested/linked-thrice")).unwrap();
    // Symlinks are never followed: absolute, relative, dangling.
    symlink("/etc/passwd", src.join("abs-link")).unwrap();
    symlink("dir/nested", src.join("rel-link")).unwrap();
    symlink("does/not/exist", src.join("dangling")).unwrap();
    // A FIFO.
    let status = Command::new("mkfifo")
        .arg(src.join("pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    // Permission bits including setuid, setgid and sticky.
    fs::write(src.join("setuid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(src.join("setgid"), b"x").unwrap();
    fs::set_permissions(src.join("setgid"), fs::Permissions::from_mode(0o2750)).unwrap();
    fs::create_dir(src.join("sticky")).unwrap();
    fs::set_permissions(src.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(src.join("private"), b"secret-ish").unwrap();
    fs::set_permissions(src.join("private"), fs::Permissions::from_mode(0o600)).unwrap();
    // Names that are arbitrary bytes: not UTF-8, with a newline.
    fs::write(
        src.join(OsStr::from_bytes(b"bytes-\xff\xfe-name\nwith newline")),
        b"odd name",
    )
    .unwrap();
    // A sparse file: 64 MiB hole, then data, then another hole.
    let f = fs::File::create(src.join("sparse")).unwrap();
    f.set_len(64 * 1024 * 1024).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"data in the middle", 32 * 1024 * 1024).unwrap();
    // Extended attributes in the user namespace (when the file system supports them).
    let _ = xattr::set(
        src.join("small.txt"),
        "user.drvault.test",
        b"value \x00 with nul",
    );
    let _ = xattr::set(src.join("dir"), "user.drvault.dir", b"of a directory");
    // Owner and group other than the test's (only root can set them; restored as root).
    if drvault_tests::is_root() {
        std::os::unix::fs::lchown(src.join("private"), Some(1234), Some(5678)).unwrap();
    }
    // Nanosecond mtime.
    let times = fs::FileTimes::new()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_789));
    fs::File::options()
        .write(true)
        .open(src.join("small.txt"))
        .unwrap()
        .set_times(times)
        .unwrap();
}

fn compare(a: &Path, b: &Path) {
    let ma = fs::symlink_metadata(a).unwrap();
    let mb = fs::symlink_metadata(b)
        .unwrap_or_else(|e| panic!("{} missing after restore: {e}", b.display()));
    assert_eq!(ma.file_type(), mb.file_type(), "{}", a.display());
    if !ma.file_type().is_symlink() {
        assert_eq!(
            ma.mode() & 0o7777,
            mb.mode() & 0o7777,
            "mode of {}",
            a.display()
        );
    }
    assert_eq!(
        (ma.mtime(), ma.mtime_nsec()),
        (mb.mtime(), mb.mtime_nsec()),
        "mtime of {}",
        a.display()
    );
    if drvault_tests::is_root() {
        assert_eq!(
            (ma.uid(), ma.gid()),
            (mb.uid(), mb.gid()),
            "owner of {}",
            a.display()
        );
    }
    if ma.file_type().is_symlink() {
        assert_eq!(fs::read_link(a).unwrap(), fs::read_link(b).unwrap());
    } else if ma.is_file() {
        assert_eq!(
            fs::read(a).unwrap(),
            fs::read(b).unwrap(),
            "content of {}",
            a.display()
        );
        let xa: Vec<_> = xattr::list(a).map(|l| l.collect()).unwrap_or_default();
        for name in xa {
            assert_eq!(
                xattr::get(a, &name).unwrap(),
                xattr::get(b, &name).unwrap(),
                "xattr of {}",
                a.display()
            );
        }
    } else if ma.is_dir() {
        assert_eq!(
            xattr::get(a, "user.drvault.dir").unwrap(),
            xattr::get(b, "user.drvault.dir").unwrap(),
            "xattr of {}",
            a.display()
        );
        let mut na: Vec<_> = fs::read_dir(a)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let mut nb: Vec<_> = fs::read_dir(b)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        na.sort();
        nb.sort();
        assert_eq!(na, nb, "entries of {}", a.display());
        for n in na {
            compare(&a.join(&n), &b.join(&n));
        }
    }
}

#[test]
fn every_kind_of_entry_round_trips() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    env.init();
    let out = env.ok(&["backup", src.to_str().unwrap(), "--tag", "first"]);
    assert!(out.contains("snapshot"), "{out}");

    let target = env.path("restore");
    let out = env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--verify",
    ]);
    assert!(out.contains("verified"), "{out}");
    let r = restored(&target, &src);
    compare(&src, &r);

    // Hard links come back as hard links.
    let ino = |p: &Path| fs::metadata(p).unwrap().ino();
    assert_eq!(ino(&r.join("linked")), ino(&r.join("dir/linked-again")));
    assert_eq!(
        ino(&r.join("linked")),
        ino(&r.join("dir/nested/linked-thrice"))
    );
    // Holes come back as holes: far fewer blocks than the size.
    let sparse = fs::metadata(r.join("sparse")).unwrap();
    assert_eq!(sparse.len(), 64 * 1024 * 1024);
    assert!(
        sparse.blocks() * 512 < 8 * 1024 * 1024,
        "sparse file restored with {} blocks",
        sparse.blocks()
    );

    // The JSON listing has the documented fields.
    let snaps = env.snapshots_json();
    assert_eq!(snaps.len(), 1);
    for field in ["id", "time", "host", "paths", "tags"] {
        assert!(snaps[0].get(field).is_some(), "missing {field}");
    }
    assert_eq!(snaps[0]["tags"][0], "first");
    let ls = env.ok(&["ls", "latest"]);
    assert!(
        ls.contains("big.bin") && ls.contains("abs-link -> /etc/passwd"),
        "{ls}"
    );
}

#[test]
fn unchanged_files_are_not_read_again_and_changes_are_picked_up() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), noise(3 * 1024 * 1024, 7)).unwrap();
    fs::write(src.join("b"), b"before").unwrap();
    env.init();
    env.ok(&["backup", src.to_str().unwrap()]);
    let second: serde_json::Value =
        serde_json::from_str(&env.ok(&["backup", "--json", src.to_str().unwrap()])).unwrap();
    assert_eq!(second["files_unchanged"], 2);
    assert_eq!(second["bytes_read"], 0);
    fs::write(src.join("b"), b"after, and longer").unwrap();
    let third: serde_json::Value =
        serde_json::from_str(&env.ok(&["backup", "--json", src.to_str().unwrap()])).unwrap();
    assert_eq!(
        (
            third["files_unchanged"].as_u64(),
            third["files_changed"].as_u64()
        ),
        (Some(1), Some(1))
    );
    // Deleting the catalog (a cache) loses nothing: the next backup still deduplicates.
    fs::remove_dir_all(env.state()).unwrap();
    let fourth: serde_json::Value =
        serde_json::from_str(&env.ok(&["backup", "--json", src.to_str().unwrap()])).unwrap();
    assert_eq!(fourth["files_unchanged"], 2);
    let target = env.path("out");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--verify",
    ]);
    assert_eq!(
        fs::read(restored(&target, &src).join("b")).unwrap(),
        b"after, and longer"
    );
}

#[test]
fn partial_restore_and_point_in_time() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("keep/deeper")).unwrap();
    fs::create_dir_all(src.join("skip")).unwrap();
    fs::write(src.join("keep/deeper/f"), b"version 1").unwrap();
    fs::write(src.join("skip/g"), b"not wanted").unwrap();
    env.init();
    env.ok(&["backup", src.to_str().unwrap()]);
    fs::write(src.join("keep/deeper/f"), b"version 2 (after the incident)").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let snaps = env.snapshots_json();
    assert_eq!(snaps.len(), 2);
    let first_time = snaps[0]["time"].as_str().unwrap().to_string();

    // --at the first snapshot's time picks it, not the newer one.
    let target = env.path("pit");
    let include = src.join("keep");
    env.ok(&[
        "restore",
        "--at",
        &first_time,
        "--include",
        include.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ]);
    let r = restored(&target, &src);
    assert_eq!(fs::read(r.join("keep/deeper/f")).unwrap(), b"version 1");
    assert!(!r.join("skip").exists(), "an excluded path was restored");

    // A time before any snapshot is a clear error.
    let out = env.run(&[
        "restore",
        "--at",
        "2001-01-01T00:00:00Z",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no snapshot"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A time that is not RFC 3339 is refused.
    let out = env.run(&[
        "restore",
        "--at",
        "yesterday",
        "--target",
        target.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a usage error: {stderr}");
    assert!(
        stderr.contains("\"yesterday\" is not a time") && stderr.contains("drvault snapshots"),
        "the message names the input and a form that works: {stderr}"
    );
}

#[test]
fn excludes_are_honoured() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("cache")).unwrap();
    fs::write(src.join("cache/x"), b"x").unwrap();
    fs::write(src.join("keep.txt"), b"k").unwrap();
    fs::write(src.join("drop.tmp"), b"d").unwrap();
    env.init();
    env.ok(&[
        "backup",
        src.to_str().unwrap(),
        "--exclude",
        "*.tmp",
        "--exclude",
        "cache",
    ]);
    let ls = env.ok(&["ls", "latest"]);
    assert!(ls.contains("keep.txt"));
    assert!(!ls.contains("drop.tmp") && !ls.contains("cache"), "{ls}");
}

#[test]
fn a_changed_extended_attribute_is_picked_up_without_content_change() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let f = src.join("tagged");
    fs::write(&f, b"same content").unwrap();
    if xattr::set(&f, "user.state", b"before").is_err() {
        return; // no user xattrs on this file system
    }
    env.init();
    env.ok(&["backup", src.to_str().unwrap()]);
    // Changing an attribute changes ctime, so the next backup must record the new value.
    xattr::set(&f, "user.state", b"after").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let target = env.path("out");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let got = xattr::get(restored(&target, &src).join("tagged"), "user.state").unwrap();
    assert_eq!(got.as_deref(), Some(&b"after"[..]));
}

#[test]
fn sparse_files_come_back_sparse_at_block_granularity() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let image = src.join("disk.img");
    let f = std::fs::File::create(&image).unwrap();
    f.write_at(b"head!", 0).unwrap();
    f.write_at(b"end", (64 << 20) - 3).unwrap();
    drop(f);
    env.ok(&["backup", src.to_str().unwrap()]);
    let target = env.path("target");
    env.ok(&[
        "restore",
        "latest",
        "--verify",
        "--target",
        target.to_str().unwrap(),
    ]);
    let got = drvault_tests::restored(&target, &image);
    assert!(std::fs::read(&got).unwrap() == std::fs::read(&image).unwrap());
    let m = std::fs::metadata(&got).unwrap();
    assert_eq!(m.len(), 64 << 20);
    assert!(
        m.blocks() * 512 <= 64 * 1024,
        "{} bytes allocated for 8 bytes of data",
        m.blocks() * 512
    );
}

/// As root, a file is chowned to its snapshot owner when it takes its name; a hard link to it
/// made after that must accept the new owner (it was refused as "replaced by another file").
#[test]
fn hard_links_to_another_users_file_restore_as_root() {
    if !drvault_tests::is_root() {
        eprintln!("skipped: needs root to restore another owner");
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/first"), b"one inode, another owner").unwrap();
    std::os::unix::fs::lchown(src.join("d/first"), Some(1234), Some(5678)).unwrap();
    fs::hard_link(src.join("d/first"), src.join("second")).unwrap();
    env.init();
    env.ok(&["backup", src.to_str().unwrap()]);
    for (name, verify) in [("plain", false), ("verified", true)] {
        let target = env.path(name);
        let mut args = vec!["restore", "latest", "--target", target.to_str().unwrap()];
        if verify {
            args.push("--verify");
        }
        env.ok(&args);
        let r = restored(&target, &src);
        let (a, b) = (
            fs::metadata(r.join("d/first")).unwrap(),
            fs::metadata(r.join("second")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "{name}: not one inode");
        assert_eq!((a.uid(), a.gid(), a.nlink()), (1234, 5678, 2), "{name}");
        assert_eq!(
            fs::read(r.join("second")).unwrap(),
            b"one inode, another owner"
        );
    }
}
