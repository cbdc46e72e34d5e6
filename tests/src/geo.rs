//! One repository on several targets for the geo-redundancy tests: S3 servers on loopback
//! ("us", "eu") and a local directory, a configuration file naming them, and `drvault` run
//! against it.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::s3::{S3Server, ACCESS_KEY, SECRET_KEY};
use crate::{drvault_bin, files_below, restored, PASSWORD};

pub struct Geo {
    pub dir: tempfile::TempDir,
    pub servers: Vec<(String, S3Server)>,
}

impl Geo {
    /// Targets "us" (SeaweedFS) and "eu" (moto, or a second SeaweedFS when `persistent`, since
    /// moto keeps nothing across a restart), then "local".
    pub fn new(persistent: bool) -> Self {
        let us = S3Server::seaweed("drvault-us");
        let eu = if persistent {
            S3Server::seaweed("drvault-eu")
        } else {
            S3Server::moto("drvault-eu")
        };
        Geo {
            dir: tempfile::tempdir().unwrap(),
            servers: vec![("us".into(), us), ("eu".into(), eu)],
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn server(&mut self, name: &str) -> &mut S3Server {
        &mut self.servers.iter_mut().find(|(n, _)| n == name).unwrap().1
    }

    /// Writes the config file: `[repository]` lines, then the S3 targets, then the local one.
    pub fn configure(&self, repository: &str, with_local: bool) {
        let mut text = format!("[repository]\n{repository}\n");
        for (name, s) in &self.servers {
            text.push_str(&s.target_toml(name, "prod"));
        }
        if with_local {
            text.push_str(&format!(
                "[[targets]]\nname = \"local\"\nurl = \"file://{}\"\n",
                self.path("local").display()
            ));
        }
        fs::write(self.path("drvault.toml"), text).unwrap();
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(drvault_bin());
        c.arg("--config")
            .arg(self.path("drvault.toml"))
            .arg("--state-dir")
            .arg(self.path("state"))
            .env("DRVAULT_PASSWORD", PASSWORD)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env_remove("DRVAULT_REPO")
            .env_remove("DRVAULT_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains(SECRET_KEY) && !stderr.contains(PASSWORD),
            "a secret leaked: {stderr}"
        );
        out
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "drvault {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> (Option<i32>, Value) {
        let out = self.run(args);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code(), v)
    }

    pub fn init(&self) {
        self.ok(&["init", "--kdf-memory-kib", "64"]);
    }

    /// Restores the latest snapshot and compares it with `src`, returning stderr.
    pub fn restore_and_compare(&self, src: &Path, into: &str) -> String {
        let target = self.path(into);
        let out = self.run(&[
            "restore",
            "latest",
            "--verify",
            "--target",
            target.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "restore failed: {stderr}");
        assert_same_tree(src, &restored(&target, src));
        stderr
    }
}

/// Every file below `src` is in `got` with the same bytes, and `got` holds nothing else.
pub fn assert_same_tree(src: &Path, got: &Path) {
    let mut want = files_below(src);
    want.sort();
    assert!(!want.is_empty());
    for f in &want {
        let rel = f.strip_prefix(src).unwrap();
        assert_eq!(
            fs::read(f).unwrap(),
            fs::read(got.join(rel)).unwrap(),
            "{} differs",
            rel.display()
        );
    }
    assert_eq!(files_below(got).len(), want.len());
}
