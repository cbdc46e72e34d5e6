//! `drvault mount` through a real FUSE mount (/dev/fuse; fuse3's fusermount3 when not root):
//! the layout (snapshots/, hosts/ with latest, tags/), a large file read at an offset, `cp -a`
//! of a subtree compared with the source, writes refused, and SIGTERM unmounting.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use drvault_tests::{code, files_below, noise, Env};

fn mounted(dir: &Path) -> bool {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let dir = dir.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(dir))
}

struct Mounted {
    child: Child,
    dir: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mount(env: &Env, dir: &Path, extra: &[&str]) -> Mounted {
    fs::create_dir_all(dir).unwrap();
    let child = env
        .cmd()
        .arg("mount")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(fs::File::create(env.path("mount.log")).unwrap())
        .spawn()
        .unwrap();
    let mut m = Mounted {
        child,
        dir: dir.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(mounted(dir) && dir.join("snapshots").exists()) {
        if let Some(status) = m.child.try_wait().unwrap() {
            panic!(
                "mount exited ({status}): {}",
                fs::read_to_string(env.path("mount.log")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "the mount did not appear");
        std::thread::sleep(Duration::from_millis(100));
    }
    m
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn snapshots_mount_read_only_and_copy_out_exactly() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("tree/deeper")).unwrap();
    let big = noise(24 << 20, 41);
    fs::write(src.join("big.bin"), &big).unwrap();
    for i in 0..30 {
        fs::write(
            src.join(format!("tree/f{i}")),
            noise(1000 + i * 7919, i as u64),
        )
        .unwrap();
    }
    fs::write(src.join("tree/deeper/secret"), b"owner only\n").unwrap();
    fs::set_permissions(
        src.join("tree/deeper/secret"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("f1", src.join("tree/link")).unwrap();
    fs::hard_link(src.join("tree/f2"), src.join("tree/f2-again")).unwrap();
    let s = src.to_str().unwrap();
    env.ok(&["backup", "--host", "db1", s]);
    fs::write(src.join("tree/f0"), b"changed\n").unwrap();
    env.ok(&["backup", "--host", "db1", "--tag", "after-change", s]);
    env.ok(&["backup", "--host", "web", s]);
    let snaps = env.snapshots_json();
    assert_eq!(snaps.len(), 3);

    let dir = env.path("mnt");
    let m = mount(&env, &dir, &[]);
    assert_eq!(names(&dir), ["hosts", "snapshots", "tags"]);
    assert_eq!(names(&dir.join("snapshots")).len(), 3);
    assert_eq!(names(&dir.join("hosts")), ["db1", "web"]);
    let db1 = dir.join("hosts/db1");
    let times = names(&db1);
    assert_eq!(times.len(), 3, "two snapshots and latest: {times:?}");
    assert_eq!(
        fs::read_link(db1.join("latest")).unwrap().to_str().unwrap(),
        times[1],
        "latest is the newer snapshot"
    );
    assert_eq!(names(&dir.join("tags")), ["after-change"]);
    let rel = src.strip_prefix("/").unwrap();
    let latest = db1.join("latest").join(rel);
    let first = db1.join(&times[0]).join(rel);
    assert_eq!(fs::read(latest.join("tree/f0")).unwrap(), b"changed\n");
    assert_ne!(fs::read(first.join("tree/f0")).unwrap(), b"changed\n");

    // A large file read at an offset: only what was asked for comes back, exactly.
    let mut f = fs::File::open(latest.join("big.bin")).unwrap();
    assert_eq!(f.metadata().unwrap().len(), big.len() as u64);
    let at = (13 << 20) + 7;
    f.seek(SeekFrom::Start(at as u64)).unwrap();
    let mut part = vec![0u8; 300_000];
    f.read_exact(&mut part).unwrap();
    assert!(part == big[at..at + 300_000], "bytes at an offset");
    drop(f);

    // cp -a of a subtree: the same bytes, modes, times and links as the source.
    let out = env.path("copied");
    let status = Command::new("cp")
        .arg("-a")
        .arg(latest.join("tree"))
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    for file in files_below(&src.join("tree")) {
        let rel = file.strip_prefix(src.join("tree")).unwrap();
        let (a, b) = (
            fs::symlink_metadata(&file).unwrap(),
            fs::symlink_metadata(out.join(rel)).unwrap(),
        );
        assert_eq!(a.mode(), b.mode(), "{rel:?}");
        assert_eq!(a.mtime(), b.mtime(), "{rel:?}");
        assert_eq!(a.uid(), b.uid(), "{rel:?}");
        if a.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(&file).unwrap(),
                fs::read_link(out.join(rel)).unwrap()
            );
        } else {
            assert!(
                fs::read(&file).unwrap() == fs::read(out.join(rel)).unwrap(),
                "{rel:?}"
            );
        }
    }

    // Read-only: nothing can be created or changed.
    assert!(fs::write(latest.join("tree/new"), b"x").is_err());
    assert!(fs::OpenOptions::new()
        .write(true)
        .open(latest.join("tree/f1"))
        .is_err());
    assert!(fs::remove_file(latest.join("tree/f1")).is_err());

    // SIGTERM unmounts and ends the command successfully.
    let mut m = m;
    let status = Command::new("kill")
        .args(["-TERM", &m.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = m.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "mount did not end on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        exit.success(),
        "{exit}: {}",
        fs::read_to_string(env.path("mount.log")).unwrap_or_default()
    );
    assert!(!mounted(&dir), "unmounted");
}

#[test]
fn mount_filters_snapshots_and_refuses_a_bad_mountpoint() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    env.ok(&["backup", "--host", "one", src.to_str().unwrap()]);
    env.ok(&["backup", "--host", "two", src.to_str().unwrap()]);
    let dir = env.path("mnt");
    let m = mount(&env, &dir, &["--host", "two"]);
    assert_eq!(names(&dir.join("hosts")), ["two"]);
    assert_eq!(names(&dir.join("snapshots")).len(), 1);
    drop(m);
    // Not a directory, or missing: a usage error before anything is mounted.
    let file = env.path("file");
    fs::write(&file, b"").unwrap();
    for bad in [file, env.path("missing")] {
        let out = env.cmd().arg("mount").arg(&bad).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code::USAGE),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
