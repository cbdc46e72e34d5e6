//! Fleet scale: twenty hosts (each its own state directory and `--host`) back up at the same
//! moment into one bucket of a real S3 server on loopback, sharing most of their data. No
//! coordinator and no lock for backups: all succeed, deduplicate across hosts on the next
//! round, and prune leaves each shared blob stored once.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use drvault_tests::s3::{S3Server, ACCESS_KEY, SECRET_KEY};
use drvault_tests::{drvault_bin, files_below, noise, restored, PASSWORD};
use serde_json::Value;

const HOSTS: usize = 20;
const SHARED: usize = 8 << 20;
const UNIQUE: usize = 256 << 10;

struct Fleet {
    dir: tempfile::TempDir,
    s3: S3Server,
}

impl Fleet {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn cmd(&self, host: &str) -> Command {
        let mut c = Command::new(drvault_bin());
        c.arg("--config")
            .arg(self.path("drvault.toml"))
            .arg("--state-dir")
            .arg(self.path(&format!("state-{host}")))
            .env("DRVAULT_PASSWORD", PASSWORD)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env_remove("DRVAULT_REPO")
            .env_remove("DRVAULT_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY");
        c
    }

    fn ok(&self, host: &str, args: &[&str]) -> String {
        let out = self.cmd(host).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{host}: {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn source(&self, h: usize) -> PathBuf {
        self.path(&format!("src-{h}"))
    }

    /// Starts every host's backup at once; returns each one's JSON summary.
    fn round(&self) -> Vec<Value> {
        let children: Vec<Child> = (0..HOSTS)
            .map(|h| {
                self.cmd(&format!("h{h}"))
                    .args(["--json", "backup", "--host", &format!("h{h}")])
                    .arg(self.source(h))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        children
            .into_iter()
            .enumerate()
            .map(|(h, c)| {
                let out = c.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "host h{h}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                serde_json::from_slice(&out.stdout).unwrap()
            })
            .collect()
    }

    /// Bytes stored under `data/` in the bucket.
    fn data_bytes(&self) -> u64 {
        let target = self.s3.target("fleet");
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(target.list("data/"))
            .unwrap()
            .iter()
            .map(|l| l.size)
            .sum()
    }
}

/// The shared files (the same on every host) and one unique file per host, of `round`.
fn fill(src: &Path, h: usize, round: u64) {
    fs::create_dir_all(src.join("shared")).unwrap();
    for i in 0..8 {
        let f = src.join("shared").join(format!("lib{i}"));
        if !f.exists() {
            fs::write(f, noise(SHARED / 8, 500 + i)).unwrap();
        }
    }
    fs::write(
        src.join(format!("own-{round}")),
        noise(UNIQUE, 10_000 * round + h as u64),
    )
    .unwrap();
}

#[test]
fn twenty_hosts_back_up_at_once_and_share_their_data() {
    let fleet = Fleet {
        dir: tempfile::tempdir().unwrap(),
        s3: S3Server::seaweed("drvault-fleet"),
    };
    fs::write(
        fleet.path("drvault.toml"),
        format!("[repository]\n{}", fleet.s3.target_toml("s3", "fleet")),
    )
    .unwrap();
    fleet.ok("admin", &["init", "--kdf-memory-kib", "64"]);
    for h in 0..HOSTS {
        fill(&fleet.source(h), h, 1);
    }

    // Round one: everyone at once. Duplicates of the shared data are expected.
    let first = fleet.round();
    let snaps: Value = serde_json::from_str(&fleet.ok("admin", &["--json", "snapshots"])).unwrap();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), HOSTS);
    let mut hosts: Vec<&str> = snaps.iter().map(|s| s["host"].as_str().unwrap()).collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), HOSTS, "one snapshot per host");
    let added_first: u64 = first
        .iter()
        .map(|s| s["bytes_added"].as_u64().unwrap())
        .sum();
    assert!(added_first >= (SHARED + HOSTS * UNIQUE) as u64);

    // Round two: the shared data is in the index every host reads; only the new files go up.
    for h in 0..HOSTS {
        fill(&fleet.source(h), h, 2);
    }
    let second = fleet.round();
    let added_second: u64 = second
        .iter()
        .map(|s| s["bytes_added"].as_u64().unwrap())
        .sum();
    assert!(
        added_second < (HOSTS * UNIQUE) as u64 * 12 / 10,
        "round two stored {added_second} bytes: the shared data again?"
    );

    // Prune keeps one copy of each shared blob.
    let before = fleet.data_bytes();
    let pruned: Value =
        serde_json::from_str(&fleet.ok("admin", &["--json", "prune", "--grace", "0s"])).unwrap();
    let after = fleet.data_bytes();
    let ideal = (SHARED + 2 * HOSTS * UNIQUE) as u64;
    assert!(
        after <= ideal * 115 / 100,
        "{after} bytes stored after prune, ideal {ideal} (before: {before}; {pruned})"
    );
    let check: Value =
        serde_json::from_str(&fleet.ok("admin", &["--json", "check", "--read-data"])).unwrap();
    assert_eq!(check["errors"], Value::Array(vec![]), "{check}");

    // Sampled hosts restore byte for byte.
    for h in [0, HOSTS / 2, HOSTS - 1] {
        let id = second[h]["id"].as_str().unwrap();
        let target = fleet.path(&format!("restore-{h}"));
        fleet.ok(
            "admin",
            &[
                "restore",
                id,
                "--verify",
                "--target",
                target.to_str().unwrap(),
            ],
        );
        let src = fleet.source(h);
        let got = restored(&target, &src);
        let expected = files_below(&src);
        assert_eq!(files_below(&got).len(), expected.len());
        for f in expected {
            let rel = f.strip_prefix(&src).unwrap();
            assert_eq!(
                fs::read(&f).unwrap(),
                fs::read(got.join(rel)).unwrap(),
                "{rel:?}"
            );
        }
    }
}
