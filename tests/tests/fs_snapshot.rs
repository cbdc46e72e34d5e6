//! The docs/OPERATIONS.md file-system snapshot recipe, btrfs variant, run by the agent as written
//! on a real btrfs volume (an image made with mkfs.btrfs from btrfs-progs, which scripts/test
//! installs, loop-mounted). The LVM and ZFS variants cannot run on the test machine: its kernel has
//! neither device-mapper nor ZFS, and loads no modules.
//!
//! - While a writer keeps rewriting a set of files on the live volume, the backup made from the
//!   `before` hook's snapshot holds one moment of them, and nothing written after the snapshot.
//! - `after` deletes the snapshot; also when a later `before` hook fails (the job then fails and
//!   makes no snapshot).
//! - A run on a fresh snapshot of an unchanged volume reads no file again: a btrfs snapshot keeps
//!   inode numbers, sizes and times, and gets a new device number, which the walk does not compare.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use drvault_tests::agent::{signal, start_agent, wait_exit, wait_until};
use drvault_tests::{is_root, Env};

/// Files the writer keeps rewriting, each with the number of the round that last wrote it.
const LEDGER_FILES: usize = 100;

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A btrfs file system on a loop-mounted image, unmounted (and its loop device freed) on drop.
struct BtrfsVolume {
    mountpoint: PathBuf,
}

impl BtrfsVolume {
    /// None when this machine cannot mount btrfs (not root, no btrfs in the kernel, no mkfs.btrfs).
    fn create(dir: &Path) -> Option<BtrfsVolume> {
        let in_kernel = std::fs::read_to_string("/proc/filesystems")
            .is_ok_and(|f| f.lines().any(|l| l.trim_end().ends_with("btrfs")));
        let tools = Command::new("mkfs.btrfs").arg("--version").output();
        if !is_root() || !in_kernel || !tools.is_ok_and(|o| o.status.success()) {
            return None;
        }
        let image = dir.join("btrfs.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
        run("mkfs.btrfs", &["-q", image.to_str().unwrap()]);
        let mountpoint = dir.join("volume");
        std::fs::create_dir_all(&mountpoint).unwrap();
        run(
            "mount",
            &[
                "-o",
                "loop",
                image.to_str().unwrap(),
                mountpoint.to_str().unwrap(),
            ],
        );
        Some(BtrfsVolume { mountpoint })
    }
}

impl Drop for BtrfsVolume {
    fn drop(&mut self) {
        let m = self.mountpoint.to_str().unwrap();
        let ok = Command::new("umount")
            .arg(m)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
    }
}

/// Rewrites every ledger file with the round's number, in order, round after round, each file
/// replaced whole (written aside, renamed over), until told to stop. At any moment the files hold
/// n for a first part and n - 1 for the rest.
fn start_writer(ledger: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut round = 0u64;
        while !stop.load(Ordering::Relaxed) {
            round += 1;
            for i in 0..LEDGER_FILES {
                let aside = ledger.join(format!(".f{i:03}.new"));
                std::fs::write(&aside, format!("{round}\n")).unwrap();
                std::fs::rename(&aside, ledger.join(format!("f{i:03}"))).unwrap();
            }
        }
        round
    })
}

/// The rounds a restored ledger holds, in file order.
fn rounds(ledger: &Path) -> Vec<u64> {
    (0..LEDGER_FILES)
        .map(|i| {
            let text = std::fs::read_to_string(ledger.join(format!("f{i:03}"))).unwrap();
            text.trim().parse().unwrap()
        })
        .collect()
}

/// What a failed assertion must not leave running on the volume: the agent (its hooks take
/// snapshots every two seconds) and the writer. Dropped before the volume is unmounted.
struct Running {
    agent: Option<std::process::Child>,
    stop: Arc<AtomicBool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
    }
}

#[test]
fn the_btrfs_snapshot_recipe_backs_up_one_moment_and_releases_the_snapshot() {
    let env = Env::new();
    let Some(volume) = BtrfsVolume::create(&env.path("")) else {
        eprintln!("skipped: needs root, btrfs in the kernel and mkfs.btrfs (btrfs-progs)");
        return;
    };
    env.init();
    let srv = volume.mountpoint.join("srv");
    run("btrfs", &["subvolume", "create", srv.to_str().unwrap()]);
    let ledger = srv.join("ledger");
    std::fs::create_dir_all(&ledger).unwrap();
    for i in 0..LEDGER_FILES {
        std::fs::write(ledger.join(format!("f{i:03}")), "0\n").unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = start_writer(ledger.clone(), stop.clone());

    // The recipe's job with this test's volume, a schedule that comes soon, and one line more in
    // `before`: a file written to the live volume once the snapshot is taken, which the first
    // backup must not hold. A second job takes its own snapshot, then fails in `before`.
    let snap = srv.join(".drvault-snap");
    let broken_snap = srv.join(".broken-snap");
    let late = srv.join("written-after-the-snapshot");
    let config = env.path("drvault.toml");
    std::fs::write(
        &config,
        format!(
            r#"[[jobs]]
name = "srv"
kind = "backup"
schedule = "*/2 * * * * *"
paths = ["{snap}"]
before = ["if [ -e {snap} ]; then btrfs subvolume delete {snap}; fi",
          "btrfs subvolume snapshot -r {srv} {snap}",
          "[ -e {late} ] || echo late > {late}"]
after = ["btrfs subvolume delete {snap}"]
hook_timeout = "5m"

[[jobs]]
name = "broken"
kind = "backup"
schedule = "*/3 * * * * *"
paths = ["{broken_snap}"]
before = ["btrfs subvolume snapshot -r {srv} {broken_snap}", "exit 3"]
after = ["btrfs subvolume delete {broken_snap}"]
"#,
            snap = snap.display(),
            srv = srv.display(),
            late = late.display(),
            broken_snap = broken_snap.display(),
        ),
    )
    .unwrap();
    let mut running = Running {
        agent: Some(start_agent(&env, &config, None)),
        stop: stop.clone(),
    };
    let runs = |job: &str| -> Vec<serde_json::Value> {
        let out = env.ok(&["jobs", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let all = v["runs"].as_array().unwrap().clone();
        all.into_iter()
            .filter(|r| r["job"] == job && r["result"] != "running")
            .collect()
    };
    wait_until(
        "both jobs have run under the write load",
        Duration::from_secs(120),
        || !runs("srv").is_empty() && !runs("broken").is_empty(),
    );
    stop.store(true, Ordering::Relaxed);
    let last_round = writer.join().unwrap();
    assert!(last_round > 1, "the writer ran {last_round} rounds");
    // Once the writes have stopped, a run on a fresh snapshot reads nothing again.
    wait_until(
        "a run that reads no file again",
        Duration::from_secs(120),
        || {
            runs("srv")
                .iter()
                .any(|r| r["result"] == "success" && r["bytes_read"] == 0)
        },
    );
    let mut agent = running.agent.take().unwrap();
    signal(&agent, "TERM");
    wait_exit(&mut agent, Duration::from_secs(60));

    let srv_runs = runs("srv");
    let first = &srv_runs[0];
    assert_eq!(first["result"], "success", "{first}");
    let phases: Vec<&str> = first["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["before", "before", "before", "after"], "{first}");
    let unchanged = srv_runs
        .iter()
        .find(|r| r["result"] == "success" && r["bytes_read"] == 0)
        .unwrap();
    assert_eq!(
        unchanged["files"].as_u64(),
        Some(LEDGER_FILES as u64 + 1),
        "{unchanged}"
    );
    assert!(!snap.exists(), "the snapshot is released after each run");

    // The first backup: one moment of the ledger, and nothing written after the snapshot.
    let target = env.path("restored");
    env.ok(&[
        "restore",
        first["snapshot"].as_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ]);
    let restored = drvault_tests::restored(&target, &snap);
    let held = rounds(&restored.join("ledger"));
    let (newest, oldest) = (held[0], held[LEDGER_FILES - 1]);
    assert!(
        held.windows(2).all(|w| w[0] >= w[1]) && newest - oldest <= 1,
        "not one moment of the ledger: {held:?}"
    );
    assert!(
        !restored.join("written-after-the-snapshot").exists(),
        "the backup holds a file written after its snapshot"
    );

    // The failing job: no snapshot made, and its file-system snapshot released all the same.
    for r in runs("broken") {
        assert_eq!(r["result"], "failed", "{r}");
        assert!(r["snapshot"].is_null(), "{r}");
        let hooks: Vec<(&str, i64)> = r["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["phase"].as_str().unwrap(),
                    h["exit_code"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        assert_eq!(hooks, [("before", 0), ("before", 3), ("after", 0)], "{r}");
    }
    assert!(
        !broken_snap.exists(),
        "the failed job's snapshot is released"
    );
}
