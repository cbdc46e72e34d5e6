//! The Debian package (packaging/debian/build-deb): it holds the binaries, the agent's unit, the
//! sysusers.d file, man pages, completions and an example configuration that the packaged
//! agent accepts, and lintian finds no error or warning in it. lintian (Debian's `lintian`) is
//! installed by scripts/test; a missing one fails the test rather than skipping it.
//!
//! The package is built from the binaries the tests use (a debug build with fail points): what
//! is checked is the package, not the build; `build-deb` alone builds a release.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use drvault_tests::drvault_bin;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn the_debian_package_installs_everything_and_passes_lintian() {
    let bin_dir = drvault_bin().parent().unwrap().to_path_buf();
    let out = tempfile::tempdir().unwrap();
    let built = Command::new(root().join("packaging/debian/build-deb"))
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = PathBuf::from(String::from_utf8(built.stdout).unwrap().trim());
    assert!(deb
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("drvault_"));

    let lint = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--tag-display-limit", "0"])
        .arg(&deb)
        .output()
        .expect("lintian (Debian package lintian; scripts/test installs it)");
    let said = String::from_utf8_lossy(&lint.stdout).into_owned();
    assert!(lint.status.success(), "{said}");
    assert!(
        !said
            .lines()
            .any(|l| l.starts_with("E:") || l.starts_with("W:")),
        "{said}"
    );

    let tree = tempfile::tempdir().unwrap();
    let unpacked = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(tree.path())
        .status()
        .unwrap();
    assert!(unpacked.success());
    let t = tree.path();
    for f in [
        "usr/bin/drvault",
        "usr/bin/drtest",
        "lib/systemd/system/drvault-agent.service",
        "usr/lib/sysusers.d/drvault.conf",
        "usr/share/man/man1/drvault.1.gz",
        "usr/share/man/man1/drvault-backup.1.gz",
        "usr/share/man/man1/drtest.1.gz",
        "usr/share/bash-completion/completions/drvault",
        "usr/share/zsh/vendor-completions/_drvault",
        "usr/share/fish/vendor_completions.d/drvault.fish",
        "usr/share/doc/drvault/examples/drvault.toml",
        "usr/share/doc/drvault/copyright",
        "usr/share/doc/drvault/changelog.gz",
    ] {
        assert!(t.join(f).is_file(), "the package lacks {f}");
    }
    // The unit runs the binary the package installs.
    let unit = std::fs::read_to_string(t.join("lib/systemd/system/drvault-agent.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/drvault agent"));
    // The packaged agent accepts the example configuration as shipped.
    let schedule = Command::new(t.join("usr/bin/drvault"))
        .arg("--config")
        .arg(t.join("usr/share/doc/drvault/examples/drvault.toml"))
        .args(["agent", "--print-schedule"])
        .env_remove("DRVAULT_CONFIG")
        .env_remove("DRVAULT_REPO")
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&schedule.stdout);
    assert!(
        schedule.status.success(),
        "{listed}{}",
        String::from_utf8_lossy(&schedule.stderr)
    );
    for job in [
        "system (backup)",
        "retention (forget)",
        "prune (prune)",
        "verify (check)",
    ] {
        assert!(listed.contains(job), "{listed}");
    }
}
