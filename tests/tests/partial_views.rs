//! Destructive decisions from partial listings (defect 3 of "Nothing lost under concurrency"):
//! with a write quorum below the number of targets, a dead target is left out of reads and
//! backups, but prune, re-encryption and epoch retirement refuse, naming it, before they
//! delete anything: objects only that target holds could otherwise look unreferenced. Three
//! targets (two directories and a SeaweedFS bucket), so that the lease, a majority object,
//! can still be taken with one of them dead.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use drvault_tests::s3::{S3Server, ACCESS_KEY, SECRET_KEY};
use drvault_tests::{drvault_bin, files_below, noise, PASSWORD};

/// Every file below `dir` with its size.
fn tree(dir: &Path) -> BTreeMap<String, u64> {
    files_below(dir)
        .into_iter()
        .map(|f| {
            let len = fs::metadata(&f).unwrap().len();
            (f.strip_prefix(dir).unwrap().display().to_string(), len)
        })
        .collect()
}

/// Without `locks/`: leases and sessions come and go with every command.
fn data_tree(dir: &Path) -> BTreeMap<String, u64> {
    tree(dir)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("locks/"))
        .collect()
}

/// Nothing of `before` was deleted or changed (an audit entry of the refusal may be added).
fn assert_kept(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, what: &str) {
    for (name, len) in before {
        assert_eq!(
            after.get(name),
            Some(len),
            "{what} deleted or changed {name}"
        );
    }
}

#[test]
fn prune_and_reencryption_refuse_while_a_target_cannot_be_listed() {
    let dir = tempfile::tempdir().unwrap();
    let mut s3 = S3Server::seaweed("drvault-partial");
    let local = dir.path().join("a");
    let config = dir.path().join("drvault.toml");
    fs::write(
        &config,
        format!(
            "[repository]\nwrite_quorum = 1\n[[targets]]\nname = \"a\"\nurl = \"file://{}\"\n{}[[targets]]\nname = \"c\"\nurl = \"file://{}\"\n",
            local.display(),
            s3.target_toml("b", "repo"),
            dir.path().join("c").display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| -> Output {
        Command::new(drvault_bin())
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(args)
            .env("DRVAULT_PASSWORD", PASSWORD)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env_remove("DRVAULT_REPO")
            .env_remove("DRVAULT_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(&["init", "--kdf-memory-kib", "64"]);
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), noise(2 << 20, 1)).unwrap();
    ok(&["backup", src.to_str().unwrap()]);
    fs::write(src.join("f"), noise(2 << 20, 2)).unwrap();
    ok(&["backup", src.to_str().unwrap()]);
    ok(&["forget", "--keep-last", "1"]);

    s3.kill();
    let before = data_tree(&local);
    let out = run(&["prune", "--grace", "0s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("target b could not be listed"), "{stderr}");
    assert_kept(&before, &data_tree(&local), "prune");

    // A rotation only adds a keyring object; re-encryption would delete packs and retire keys.
    ok(&["key", "rotate"]);
    let before = data_tree(&local);
    let out = run(&["key", "reencrypt"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("target b could not be listed"), "{stderr}");
    assert_kept(&before, &data_tree(&local), "re-encryption");

    // A backup still runs (the write quorum holds), holding every sweep while it does.
    let out = run(&["backup", src.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds every prune sweep"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Back again: both run, and the repository is intact on every target.
    s3.restart();
    ok(&["sync"]);
    ok(&["prune", "--grace", "0s"]);
    ok(&["key", "reencrypt"]);
    ok(&["check", "--all-targets", "--read-data"]);
}
