//! Issue "Ransomware-resilient repository": hosts that back up with storage credentials that
//! cannot delete, against a real S3 server enforcing IAM policies on loopback (moto with
//! `INITIAL_NO_AUTH_ACTION_COUNT`).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use drvault_repo::lease::SessionBody;
use drvault_tests::s3::S3Server;
use drvault_tests::{code, drvault_bin, noise, PASSWORD};
use serde_json::Value;

struct Site {
    dir: tempfile::TempDir,
    server: S3Server,
}

#[derive(Clone, Copy)]
enum As {
    Host,
    Maintenance,
}

impl Site {
    fn new() -> Self {
        let site = Site {
            dir: tempfile::tempdir().unwrap(),
            server: S3Server::moto_iam("drvault-locked"),
        };
        fs::write(
            site.path("drvault.toml"),
            site.server.target_toml("s3", "prod"),
        )
        .unwrap();
        site
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn run(&self, who: As, args: &[&str]) -> Output {
        let iam = self.server.iam.as_ref().unwrap();
        let (access, secret) = match who {
            As::Host => &iam.host,
            As::Maintenance => &iam.maintenance,
        };
        let state = match who {
            As::Host => "state-host",
            As::Maintenance => "state-maintenance",
        };
        let out = Command::new(drvault_bin())
            .arg("--config")
            .arg(self.path("drvault.toml"))
            .arg("--state-dir")
            .arg(self.path(state))
            .args(args)
            .env("DRVAULT_PASSWORD", PASSWORD)
            .env("AWS_ACCESS_KEY_ID", access)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env_remove("DRVAULT_REPO")
            .env_remove("DRVAULT_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains(secret.as_str()),
            "a secret leaked: {stderr}"
        );
        out
    }

    fn ok(&self, who: As, args: &[&str]) -> String {
        let out = self.run(who, args);
        assert!(
            out.status.success(),
            "drvault {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The session objects in the bucket, read with the maintenance user's key.
    fn sessions(&self) -> Vec<SessionBody> {
        let t = self
            .server
            .target_as("prod", &self.server.iam.as_ref().unwrap().maintenance);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut out = Vec::new();
            for l in t.list("locks/").await.unwrap() {
                if l.name.starts_with("locks/session-") {
                    let bytes = t.get(&l.name).await.unwrap();
                    out.push(serde_json::from_slice(&bytes).unwrap());
                }
            }
            out
        })
    }
}

#[test]
fn an_append_only_host_backs_up_and_is_refused_maintenance_with_exit_21() {
    let site = Site::new();
    site.ok(As::Maintenance, &["init", "--kdf-memory-kib", "64"]);
    let src = site.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("data"), noise(300_000, 13)).unwrap();
    fs::write(src.join("notes"), b"first").unwrap();
    let src_arg = src.to_str().unwrap();

    // The host backs up with credentials that cannot delete, twice (the second deduplicates).
    site.ok(As::Host, &["backup", src_arg]);
    fs::write(src.join("notes"), b"second").unwrap();
    let second: Value =
        serde_json::from_str(&site.ok(As::Host, &["--json", "backup", src_arg])).unwrap();
    assert!(second["files_unchanged"].as_u64().unwrap() >= 1, "{second}");
    // Its sessions could not be deleted: they were rewritten as ended, so no prune waits.
    let sessions = site.sessions();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert!(sessions.iter().all(|s| s.heartbeat == SessionBody::ENDED));

    // Everything that deletes is refused at once, with the code and the way out.
    let snaps: Value = serde_json::from_str(&site.ok(As::Host, &["snapshots", "--json"])).unwrap();
    let first_id = snaps[0]["id"].as_str().unwrap().to_string();
    for args in [
        vec!["forget", "--keep-last", "1"],
        vec!["forget", first_id.as_str()],
        vec!["prune"],
        vec!["key", "reencrypt"],
        vec!["repair"],
    ] {
        let out = site.run(As::Host, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(code::NOT_PERMITTED),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("maintenance host"), "{args:?}: {stderr}");
    }
    let after: Value = serde_json::from_str(&site.ok(As::Host, &["snapshots", "--json"])).unwrap();
    assert_eq!(after.as_array().unwrap().len(), 2, "nothing was removed");

    // The host can still restore its own data (it holds the passphrase: put-only keys are the
    // next step).
    site.ok(
        As::Host,
        &[
            "restore",
            "latest",
            "--target",
            site.path("back").to_str().unwrap(),
        ],
    );
    let restored = drvault_tests::restored(&site.path("back"), &src);
    assert_eq!(fs::read(restored.join("notes")).unwrap(), b"second");

    // The maintenance host forgets and prunes, and clears the ended sessions.
    site.ok(As::Maintenance, &["forget", "--keep-last", "1"]);
    let pruned: Value =
        serde_json::from_str(&site.ok(As::Maintenance, &["--json", "prune"])).unwrap();
    assert_eq!(pruned["sessions_removed"], 2, "{pruned}");
    assert!(site.sessions().is_empty());
    site.ok(As::Maintenance, &["check", "--read-data"]);
}
