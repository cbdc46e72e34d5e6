//! The systemd packaging (packaging/systemd/): the agent's unit passes `systemd-analyze verify`
//! and keeps its sandbox, and the sysusers.d file creates the user the unit runs as.
//!
//! systemd-analyze and systemd-sysusers (Debian's `systemd` package) and /bin/kill (`procps`,
//! the unit's ExecReload) are installed by scripts/test; like the drill report's Chromium, a
//! missing tool fails the test rather than skipping it. Neither tool needs systemd as PID 1:
//! `verify` loads the unit offline, `sysusers --dry-run --root` writes nothing.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use drvault_tests::drvault_bin;

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("packaging/systemd")
}

fn unit_text() -> String {
    fs::read_to_string(packaging().join("drvault-agent.service")).unwrap()
}

/// Every `Key=value` setting of the unit (comments and section headers left out), in order.
fn settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', ';', '[']))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not Key=value: {l}"));
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

/// A tool from Debian's packages, by $var or on PATH; absent, the test fails with what to do.
fn tool(var: &str, name: &str, args: &[&str]) -> Output {
    let prog = std::env::var(var).unwrap_or_else(|_| name.into());
    let mut cmd = Command::new(&prog);
    cmd.args(args)
        .env("SYSTEMD_LOG_LEVEL", "info")
        .env("SYSTEMD_LOG_COLOR", "0");
    cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {prog} ({e}): run the tests through scripts/test, which installs it \
             (Debian: apt-get install systemd)"
        )
    })
}

/// `unit` saved as drvault-agent.service in a scratch directory, with ExecStart pointing at the
/// drvault binary just built: `verify` checks that the binary exists.
fn scratch_unit(unit: &str) -> (tempfile::TempDir, PathBuf) {
    let bin = drvault_bin();
    assert!(bin.is_file(), "{} was built", bin.display());
    let unit = unit.replace(
        "ExecStart=/usr/bin/drvault ",
        &format!("ExecStart={} ", bin.display()),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drvault-agent.service");
    fs::write(&file, unit).unwrap();
    (dir, file)
}

/// `systemd-analyze verify` on `unit`: whether it passed, and what it printed. verify exits 0
/// on an unknown key or a bad value (it ignores them, with a warning), so any warning naming
/// the unit counts as a failure.
fn verify(unit: &str) -> (bool, String) {
    let (dir, file) = scratch_unit(unit);
    // --man=no: the man page named by Documentation= is not installed here (docs.rs checks
    // that `drvault man` writes drvault.1); --generators=no: only this unit, nothing from the host.
    let out = tool(
        "DRVAULT_TEST_SYSTEMD_ANALYZE",
        "systemd-analyze",
        &[
            "verify",
            "--man=no",
            "--generators=no",
            file.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let about_unit = stderr
        .lines()
        .any(|l| l.contains("drvault-agent") || l.contains(&*dir.path().to_string_lossy()));
    (out.status.success() && !about_unit, stderr)
}

#[test]
fn the_agent_unit_passes_systemd_analyze_verify() {
    let (ok, stderr) = verify(&unit_text());
    assert!(
        ok,
        "systemd-analyze verify drvault-agent.service:\n{stderr}"
    );

    // The check itself catches a broken setting and a missing binary.
    let broken = unit_text().replace("ProtectSystem=strict", "ProtectSystem=bogus");
    let (ok, stderr) = verify(&broken);
    assert!(
        !ok,
        "a bad ProtectSystem= value is reported, got:\n{stderr}"
    );
    let broken = unit_text().replace("ExecStart=/usr/bin/drvault ", "ExecStart=/nonexistent ");
    let (ok, _) = verify(&broken);
    assert!(!ok, "a missing ExecStart binary is reported");

    // systemd's own rating of the sandbox (0 best, 10 worst; 1.8 when this was written):
    // weakening it notably fails here even with every directive below still present.
    let (_dir, file) = scratch_unit(&unit_text());
    let out = tool(
        "DRVAULT_TEST_SYSTEMD_ANALYZE",
        "systemd-analyze",
        &[
            "security",
            "--offline=yes",
            "--threshold=25",
            "--no-pager",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "systemd-analyze security rates the unit's exposure above 2.5:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_agent_unit_keeps_its_settings_and_sandbox() {
    let unit = unit_text();
    let set = settings(&unit);
    let get = |key: &str| -> Vec<&str> {
        set.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let expected: BTreeMap<&str, &str> = [
        // Service.
        ("Type", "notify"),
        ("ExecStart", "/usr/bin/drvault agent"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("WatchdogSec", "5min"),
        ("Restart", "on-failure"),
        ("RestartSec", "30s"),
        ("TimeoutStopSec", "5min"),
        ("KillMode", "mixed"),
        ("StateDirectory", "drvault"),
        ("StateDirectoryMode", "0700"),
        ("ConfigurationDirectory", "drvault"),
        ("LoadCredential", "drvault-password:/etc/drvault/password"),
        ("WantedBy", "multi-user.target"),
        // Identity: a dedicated user that may read everything and do nothing else.
        ("User", "drvault"),
        ("Group", "drvault"),
        ("CapabilityBoundingSet", "CAP_DAC_READ_SEARCH"),
        ("AmbientCapabilities", "CAP_DAC_READ_SEARCH"),
        // Sandbox.
        ("ProtectSystem", "strict"),
        ("ProtectHome", "read-only"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictNamespaces", "yes"),
        ("SystemCallArchitectures", "native"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("PrivateMounts", "yes"),
        ("ProtectProc", "invisible"),
        ("RemoveIPC", "yes"),
        ("SystemCallFilter", "@system-service"),
        ("UMask", "0077"),
    ]
    .into_iter()
    .collect();
    for (key, value) in &expected {
        assert_eq!(
            get(key),
            [*value],
            "drvault-agent.service sets {key}={value} exactly once"
        );
    }
    // Not root: a uid 0 without capabilities still owns root's sockets and processes.
    assert!(!get("User").contains(&"root"));
    // Nothing widens the sandbox except the state directory (ReadWritePaths= stays an example).
    assert!(
        get("ReadWritePaths").is_empty(),
        "ReadWritePaths= is commented out"
    );
    assert!(
        get("Environment").contains(&"DRVAULT_CONFIG=/etc/drvault/drvault.toml")
            && get("Environment").contains(&"DRVAULT_STATE_DIR=%S/drvault"),
        "a non-root agent is told where root's defaults are"
    );

    // The credential's name is the one drvault reads from $CREDENTIALS_DIRECTORY.
    let password_rs =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src/password.rs"))
            .unwrap();
    assert!(password_rs.contains("join(\"drvault-password\")"));
}

#[test]
fn sysusers_creates_the_units_user() {
    let conf = packaging().join("sysusers.d/drvault.conf");
    let root = tempfile::tempdir().unwrap();
    let out = tool(
        "DRVAULT_TEST_SYSTEMD_SYSUSERS",
        "systemd-sysusers",
        &[
            "--dry-run",
            &format!("--root={}", root.path().display()),
            conf.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-sysusers:\n{stderr}");
    assert!(
        stderr.contains("Creating group 'drvault'") && stderr.contains("Creating user 'drvault'"),
        "systemd-sysusers:\n{stderr}"
    );
    assert!(
        !stderr.contains("drvault.conf:"),
        "no complaint about a line:\n{stderr}"
    );
    assert_eq!(
        fs::read_dir(root.path()).unwrap().count(),
        0,
        "a dry run writes nothing"
    );
    let unit = unit_text();
    assert!(unit.contains("\nUser=drvault\n") && unit.contains("\nGroup=drvault\n"));
}
