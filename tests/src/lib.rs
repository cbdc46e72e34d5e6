//! Helpers for the end-to-end tests: the real `drvault` binary on real directories.
#![allow(clippy::unwrap_used)]

pub mod agent;
pub mod azurite;
pub mod failpoints;
pub mod geo;
pub mod s3;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Test passphrase; tests never print it.
pub const PASSWORD: &str = "correct horse battery staple";

/// The `drvault` binary with its fail points. scripts/test builds it with the tests (this crate
/// depends on drvault with `failpoints`) and names its directory in `DRVAULT_TEST_BIN_DIR`;
/// without that, it is built once per test process.
pub fn drvault_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(dir) = std::env::var_os("DRVAULT_TEST_BIN_DIR") {
            return PathBuf::from(dir).join("drvault");
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf();
        let status = Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "drvault",
                "--bins",
                "--features",
                "failpoints",
            ])
            .current_dir(&root)
            .status()
            .expect("cargo build runs");
        assert!(status.success(), "building drvault failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target.join("debug").join("drvault")
    })
    .clone()
}

/// `drtest` sits next to `drvault` (one `cargo build -p drvault` builds both).
pub fn drtest_bin() -> PathBuf {
    drvault_bin().with_file_name("drtest")
}

/// A scratch directory with a repository location, a state directory and helpers to run commands.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    pub fn new() -> Self {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A `drvault` command bound to this repository, with the passphrase in the environment.
    pub fn cmd(&self) -> Command {
        self.command(drvault_bin())
    }

    /// A `drvault` command for another "host" of the fleet: its own state directory (catalog,
    /// cache) beside this repository.
    pub fn host_cmd(&self, host: &str) -> Command {
        let mut c = Command::new(drvault_bin());
        c.arg("--repo")
            .arg(self.repo())
            .arg("--state-dir")
            .arg(self.path(&format!("state-{host}")));
        c.env("DRVAULT_PASSWORD", PASSWORD)
            .env_remove("DRVAULT_REPO")
            .env_remove("CREDENTIALS_DIRECTORY");
        c
    }

    /// The same for `drtest`.
    pub fn drtest(&self) -> Command {
        self.command(drtest_bin())
    }

    fn command(&self, program: PathBuf) -> Command {
        let mut c = Command::new(program);
        c.arg("--repo")
            .arg(self.repo())
            .arg("--state-dir")
            .arg(self.state());
        c.env("DRVAULT_PASSWORD", PASSWORD)
            .env_remove("DRVAULT_REPO")
            .env_remove("CREDENTIALS_DIRECTORY");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs and asserts success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "drvault {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Creates the repository with cheap KDF parameters.
    pub fn init(&self) {
        self.ok(&["init", "--kdf-memory-kib", "64"]);
    }

    /// Restores `snapshot` with --verify into `into` (below the scratch directory) and asserts
    /// that it holds exactly the files below `src`, byte for byte.
    pub fn restore_and_compare(&self, snapshot: &str, src: &Path, into: &str) {
        let target = self.path(into);
        self.ok(&[
            "restore",
            snapshot,
            "--verify",
            "--target",
            target.to_str().unwrap(),
        ]);
        let got = restored(&target, src);
        let expected = files_below(src);
        assert_eq!(files_below(&got).len(), expected.len());
        for f in expected {
            let rel = f.strip_prefix(src).unwrap();
            assert!(
                std::fs::read(&f).unwrap() == std::fs::read(got.join(rel)).unwrap(),
                "{} differs",
                rel.display()
            );
        }
    }

    pub fn snapshots_json(&self) -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(&self.ok(&["snapshots", "--json"]))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

/// A seed for a randomized test: `$DRVAULT_TEST_SEED`, or a fresh one. It is printed, so a
/// failing run can be repeated.
pub fn test_seed(what: &str) -> u64 {
    let seed = std::env::var("DRVAULT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64
        });
    eprintln!("{what} from DRVAULT_TEST_SEED={seed}");
    seed
}

/// Deterministic pseudo-random bytes (incompressible).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in out.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    out
}

/// Every regular file below `dir` (recursively).
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// Where a backed-up absolute source path lands below a restore target.
pub fn restored(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").unwrap())
}

/// True when the tests run as root (ownership is then restored, and unreadable files need
/// another user to be unreadable).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Copies a directory tree (regular files and directories).
pub fn copy_tree(from: &Path, to: &Path) {
    for f in files_below(from) {
        let dest = to.join(f.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
}

/// drvault's exit codes (README.md "Exit codes"): restic's where restic has one.
/// A command's output as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub mod code {
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const PARTIAL: i32 = 3;
    pub const NO_REPOSITORY: i32 = 10;
    pub const LOCKED: i32 = 11;
    pub const WRONG_PASSWORD: i32 = 12;
    pub const INTEGRITY: i32 = 20;
    pub const NOT_PERMITTED: i32 = 21;
    pub const INTERRUPTED: i32 = 130;
}
