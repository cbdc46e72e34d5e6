//! Issue "Ransomware-resilient repository": hosts that back up with storage credentials that
//! cannot delete, against a real S3 server enforcing IAM policies on loopback (moto with
//! `INITIAL_NO_AUTH_ACTION_COUNT`).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use drvault_repo::session::SessionBody;
use drvault_tests::s3::S3Server;
use drvault_tests::{code, drvault_bin, noise, PASSWORD};
use serde_json::Value;

struct Site {
    dir: tempfile::TempDir,
    server: S3Server,
}

#[derive(Clone, Copy)]
enum As {
    /// A host with the storage credentials that cannot delete and the repository passphrase.
    Host,
    /// A host with those credentials and its put-only host key (`key add --kind host`).
    HostKey(&'static str),
    Maintenance,
}

/// The passphrase of host `name`'s host key.
fn host_passphrase(name: &str) -> String {
    format!("{name}'s own passphrase, 7f3a")
}

impl Site {
    fn new() -> Self {
        let site = Site {
            dir: tempfile::tempdir().unwrap(),
            server: S3Server::moto_iam("drvault-append"),
        };
        fs::write(
            site.path("drvault.toml"),
            site.server.target_toml("s3", "prod"),
        )
        .unwrap();
        site
    }

    /// A bucket with object lock: every object drvault writes is locked for 30 days.
    fn locked() -> Self {
        Self::locked_with("compliance", "30d")
    }

    fn locked_with(mode: &str, retention: &str) -> Self {
        let site = Site {
            dir: tempfile::tempdir().unwrap(),
            server: S3Server::moto_iam_locked("drvault-locked"),
        };
        let target = site.server.target_toml("s3", "prod").replace(
            "options =",
            &format!(
                "object_lock_mode = \"{mode}\"\nobject_lock_retention = \"{retention}\"\noptions ="
            ),
        );
        fs::write(site.path("drvault.toml"), target).unwrap();
        site
    }

    /// Runs a boto3 script with the maintenance user's key (`s3`, `bucket` and `datetime`
    /// are defined); returns its standard output.
    fn boto(&self, script: &str) -> String {
        let (access, secret) = &self.server.iam.as_ref().unwrap().maintenance;
        let preamble = format!(
            "import boto3, datetime\nbucket = {:?}\ns3 = boto3.client('s3', endpoint_url={:?}, \
             region_name='us-east-1', aws_access_key_id={access:?}, aws_secret_access_key={secret:?})\n",
            self.server.bucket,
            self.server.endpoint()
        );
        let out = Command::new("python3")
            .arg("-c")
            .arg(format!("{preamble}{script}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "boto3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The bucket as the attacker with a host's storage credentials sees it.
    fn as_attacker(&self) -> drvault_repo::target::Target {
        self.server
            .target_as("prod", &self.server.iam.as_ref().unwrap().host)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `drtest` as the maintenance host.
    fn drtest(&self, args: &[&str]) -> Output {
        self.command(drvault_tests::drtest_bin(), As::Maintenance, args)
    }

    /// `program` with this site's configuration, `who`'s state directory and storage key.
    fn command(&self, program: PathBuf, who: As, args: &[&str]) -> Output {
        let iam = self.server.iam.as_ref().unwrap();
        let ((access, secret), state, password) = match who {
            As::Host => (&iam.host, "state-host".to_string(), PASSWORD.to_string()),
            As::HostKey(name) => (&iam.host, format!("state-{name}"), host_passphrase(name)),
            As::Maintenance => (
                &iam.maintenance,
                "state-maintenance".to_string(),
                PASSWORD.to_string(),
            ),
        };
        let out = Command::new(program)
            .arg("--config")
            .arg(self.path("drvault.toml"))
            .arg("--state-dir")
            .arg(self.path(&state))
            .args(args)
            .env("DRVAULT_PASSWORD", &password)
            .env("AWS_ACCESS_KEY_ID", access)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env_remove("DRVAULT_REPO")
            .env_remove("DRVAULT_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        for leaked in [secret.as_str(), password.as_str()] {
            assert!(
                !stderr.contains(leaked) && !stdout.contains(leaked),
                "a secret leaked: {stderr}"
            );
        }
        out
    }

    /// Adds a host key for `name` (as the maintenance host, which holds the passphrase).
    fn add_host_key(&self, name: &'static str) {
        let file = self.path(&format!("{name}.key"));
        fs::write(&file, host_passphrase(name)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        let added: Value = serde_json::from_str(&self.ok(
            As::Maintenance,
            &[
                "--json",
                "key",
                "add",
                "--kind",
                "host",
                "--host",
                name,
                "--new-password-file",
                file.to_str().unwrap(),
                "--kdf-memory-kib",
                "64",
            ],
        ))
        .unwrap();
        assert_eq!(added["kind"], "host", "{added}");
    }

    fn run(&self, who: As, args: &[&str]) -> Output {
        self.command(drvault_bin(), who, args)
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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The attacker: root on a host, with its host key and its storage credentials,
/// against a locked, versioned bucket that enforces IAM. Deleting is refused, overwriting only
/// hides the good versions, and the host key reads nothing; the maintenance host restores every
/// host's latest snapshot byte for byte, `check` names what was overwritten and `repair` heals
/// it.
#[test]
fn an_attacker_with_a_hosts_credentials_cannot_destroy_a_locked_repository() {
    let site = Site::locked();
    site.ok(As::Maintenance, &["init", "--kdf-memory-kib", "64"]);
    site.add_host_key("web1");
    site.add_host_key("db1");
    let src = site.path("src");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("data"), noise(400_000, 21)).unwrap();
    fs::write(src.join("etc/config"), b"listen 443").unwrap();
    let src_arg = src.to_str().unwrap();
    let db_src = site.path("db");
    fs::create_dir_all(&db_src).unwrap();
    fs::write(db_src.join("dump.sql"), noise(150_000, 22)).unwrap();
    site.ok(As::HostKey("db1"), &["backup", db_src.to_str().unwrap()]);
    let backup: Value =
        serde_json::from_str(&site.ok(As::HostKey("web1"), &["--json", "backup", src_arg]))
            .unwrap();
    let id = backup["id"].as_str().unwrap().to_string();

    // The host key reads nothing stored: no restore, no listing, no check, no key operation
    // (exit 21, and nothing is written into the restore target); its snapshot list is what this
    // machine wrote, from its own catalog.
    let own: Vec<Value> = serde_json::from_slice(
        &site
            .run(As::HostKey("web1"), &["--json", "snapshots"])
            .stdout,
    )
    .unwrap();
    let own: Vec<&str> = own.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(own, [id.as_str()]);
    for args in [
        vec![
            "restore",
            "latest",
            "--target",
            site.path("stolen").to_str().unwrap(),
        ],
        vec![
            "restore",
            id.as_str(),
            "--target",
            site.path("stolen").to_str().unwrap(),
        ],
        vec!["ls", id.as_str()],
        vec!["check", "--read-data"],
        vec!["key", "list"],
        vec!["key", "rotate"],
        vec!["audit", "verify"],
    ] {
        let out = site.run(As::HostKey("web1"), &args);
        assert_eq!(
            out.status.code(),
            Some(code::NOT_PERMITTED),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        !site.path("stolen").exists()
            || drvault_tests::files_below(&site.path("stolen")).is_empty(),
        "the host key restored something"
    );

    // Every object carries the retention; `targets` says so.
    let targets: Value =
        serde_json::from_str(&site.ok(As::Maintenance, &["--json", "targets"])).unwrap();
    assert_eq!(targets[0]["lock"], "compliance 30d", "{targets}");
    assert_eq!(targets[0]["unlocked"], 0, "{targets}");
    site.ok(As::Maintenance, &["check", "--locked-until", "29d"]);
    // The auditors' report has the same in its "Immutability" section.
    let snaps: Value =
        serde_json::from_str(&site.ok(As::Maintenance, &["snapshots", "--json"])).unwrap();
    let year = snaps[0]["time"].as_str().unwrap()[..4].to_string();
    let report = site.drtest(&["report", "--period", &year, "--format", "json"]);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(
        report["immutability"][0]["lock"], "compliance 30d",
        "{report}"
    );

    // The attacker deletes everything: refused. Then overwrites every object with garbage.
    let attacker = site.as_attacker();
    let rt = runtime();
    let names: Vec<String> = rt
        .block_on(attacker.list(""))
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .filter(|n| !n.starts_with("locks/"))
        .collect();
    assert!(names.len() >= 8, "{names:?}");
    for n in &names {
        let refused = rt.block_on(attacker.delete(n)).unwrap_err();
        assert!(refused.is_refused(), "{n}: {refused}");
    }
    // drvault's own destructive commands are refused on the host as well.
    let out = site.run(As::HostKey("web1"), &["forget", &id]);
    assert_eq!(
        out.status.code(),
        Some(code::NOT_PERMITTED),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let overwritten: Vec<&String> = names
        .iter()
        .filter(|n| {
            ["data/", "index/", "snapshots/", "keyring/"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .collect();
    for n in &overwritten {
        rt.block_on(attacker.put_replace(n, bytes::Bytes::from_static(b"encrypted by ransomware")))
            .unwrap();
    }
    // The maintenance host restores the latest snapshot byte for byte from the intact versions.
    site.ok(
        As::Maintenance,
        &[
            "restore",
            "latest",
            "--verify",
            "--target",
            site.path("back").to_str().unwrap(),
        ],
    );
    let restored = drvault_tests::restored(&site.path("back"), &src);
    assert_eq!(fs::read(restored.join("data")).unwrap(), noise(400_000, 21));
    assert_eq!(
        fs::read(restored.join("etc/config")).unwrap(),
        b"listen 443"
    );
    // Every host's latest snapshot: db1's too.
    site.ok(
        As::Maintenance,
        &[
            "restore",
            "latest",
            "--host",
            "db1",
            "--verify",
            "--target",
            site.path("back-db").to_str().unwrap(),
        ],
    );
    let restored = drvault_tests::restored(&site.path("back-db"), &db_src);
    assert_eq!(
        fs::read(restored.join("dump.sql")).unwrap(),
        noise(150_000, 22)
    );

    // check names every overwritten object it read, and the unlocked garbage on top.
    let out = site.run(As::Maintenance, &["--json", "check", "--read-data"]);
    assert_eq!(out.status.code(), Some(code::INTEGRITY));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hidden: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["problem"] == "hidden_version")
        .map(|f| f["object"].as_str().unwrap())
        .collect();
    for n in overwritten
        .iter()
        .filter(|n| n.starts_with("data/") || n.starts_with("snapshots/"))
    {
        assert!(hidden.contains(&n.as_str()), "{n} not named: {report}");
    }
    let out = site.run(As::Maintenance, &["check", "--locked-until", "1d"]);
    assert_eq!(
        out.status.code(),
        Some(code::INTEGRITY),
        "the garbage is not locked"
    );

    // repair makes the intact versions current again (locked, as everything drvault writes).
    site.ok(As::Maintenance, &["repair"]);
    site.ok(As::Maintenance, &["check", "--read-data"]);
    site.ok(As::Maintenance, &["check", "--locked-until", "29d"]);
    let out = site.ok(As::Maintenance, &["audit", "verify"]);
    assert!(out.contains("intact"), "{out}");
}

/// Prune renews every locked version before its lock runs out, the good version under an
/// attacker's overwrite included, and leaves the attacker's unlocked versions alone; a locked
/// version cannot be deleted even with credentials that may delete.
#[test]
fn prune_renews_every_locked_version_and_locked_versions_cannot_be_deleted() {
    let site = Site::locked_with("governance", "2d");
    site.ok(As::Maintenance, &["init", "--kdf-memory-kib", "64"]);
    let src = site.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("data"), noise(200_000, 5)).unwrap();
    site.ok(As::Host, &["backup", src.to_str().unwrap()]);

    // One pack's lock is shortened to an hour (governance mode lets a privileged user do it),
    // and an attacker puts unlocked garbage on top of it.
    let shortened = site.boto(
        "key = [o['Key'] for o in s3.list_objects_v2(Bucket=bucket)['Contents'] if '/data/' in o['Key']][0]\n\
         v = s3.list_object_versions(Bucket=bucket, Prefix=key)['Versions'][0]['VersionId']\n\
         soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)\n\
         s3.put_object_retention(Bucket=bucket, Key=key, VersionId=v, BypassGovernanceRetention=True,\n\
             Retention={'Mode': 'GOVERNANCE', 'RetainUntilDate': soon})\n\
         s3.put_object(Bucket=bucket, Key=key, Body=b'garbage')\n\
         print(key, v)",
    );
    let (key, version) = shortened.trim().split_once(' ').unwrap();

    let pruned: Value =
        serde_json::from_str(&site.ok(As::Maintenance, &["--json", "prune"])).unwrap();
    assert_eq!(pruned["locks_renewed"], 1, "{pruned}");
    assert_eq!(pruned["unlocked_versions"], 1, "{pruned}");
    let until = site.boto(&format!(
        "h = s3.head_object(Bucket=bucket, Key={key:?}, VersionId={version:?})\n\
         left = h['ObjectLockRetainUntilDate'] - datetime.datetime.now(datetime.timezone.utc)\n\
         print(int(left.total_seconds()))"
    ));
    let left: i64 = until.trim().parse().unwrap();
    assert!(
        left > 47 * 3600,
        "renewed to a full retention: {left} s left"
    );

    // Credentials that may delete still cannot delete a locked version.
    let refused = site.boto(&format!(
        "try:\n    s3.delete_object(Bucket=bucket, Key={key:?}, VersionId={version:?})\n    print('deleted')\n\
         except Exception as e:\n    print('refused', e)"
    ));
    assert!(refused.starts_with("refused"), "{refused}");
    // And the good version still restores.
    site.ok(
        As::Maintenance,
        &[
            "restore",
            "latest",
            "--verify",
            "--target",
            site.path("back").to_str().unwrap(),
        ],
    );
}
