//! The docs/OPERATIONS.md recipes for MariaDB and etcd, run as written against real servers
//! from Debian's packages (scripts/test installs them; each server is private to its test, on a
//! socket or loopback ports, with its data in the test's directory).
//!
//! - MariaDB: `mysqldump --single-transaction` through `backup --stdin-from-command` while a
//!   client moves money between accounts and logs each move in a second table; the dump, read
//!   back with `drvault dump` into a fresh server, must hold a state in which the ledger and the
//!   balances agree (a dump that read the two tables at different moments does not).
//! - etcd: the recipe's agent job (`etcdctl snapshot save` in `before`, the file backed up, removed
//!   in `after`); the snapshot restored with `etcdctl snapshot restore` starts a member that
//!   serves the keys written before the job ran.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use drvault_tests::agent::{free_port, signal, wait_exit, wait_until};
use drvault_tests::{is_root, Env};

/// Accounts and the money each starts with.
const ACCOUNTS: u32 = 10;
const START: i64 = 1_000_000;

struct MariaDb {
    socket: PathBuf,
    server: Child,
}

impl MariaDb {
    /// A new server with its own data directory under `dir`, reachable on a socket only.
    fn start(dir: &Path) -> MariaDb {
        let data = dir.join("data");
        let user = if is_root() {
            "root".to_string()
        } else {
            whoami()
        };
        let install = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--skip-test-db",
                "--auth-root-authentication-method=normal",
            ])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--user={user}"))
            .output()
            .expect(
                "mariadb-install-db is missing: run scripts/test, which installs mariadb-server",
            );
        assert!(
            install.status.success(),
            "{}",
            String::from_utf8_lossy(&install.stderr)
        );
        let socket = dir.join("sock");
        let server = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .args(["--skip-networking", "--innodb-flush-log-at-trx-commit=0"])
            .arg(format!("--user={user}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let db = MariaDb { socket, server };
        let deadline = Instant::now() + Duration::from_secs(60);
        while db.try_query("SELECT 1").is_none() {
            assert!(
                Instant::now() < deadline,
                "the server did not start: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        db
    }

    fn client(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .arg("--user=root");
        c
    }

    fn try_query(&self, sql: &str) -> Option<String> {
        let out = self
            .client("mariadb")
            .args(["-N", "-B", "-e", sql])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn query(&self, sql: &str) -> String {
        let out = self
            .client("mariadb")
            .args(["-N", "-B", "-e", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The ledger's invariants: money is neither made nor lost, and the fee row has paid
/// one unit for every logged transfer (the two are in different tables).
fn check_ledger(db: &MariaDb) -> i64 {
    let total: i64 = db
        .query("SELECT SUM(balance) FROM bank.accounts")
        .parse()
        .unwrap();
    let fee: i64 = db
        .query("SELECT balance FROM bank.fees WHERE id = 1")
        .parse()
        .unwrap();
    let logged: i64 = db
        .query("SELECT COUNT(*) FROM bank.transfers")
        .parse()
        .unwrap();
    assert_eq!(total, i64::from(ACCOUNTS) * START, "money was made or lost");
    assert_eq!(
        fee + logged,
        START,
        "the fee account and the transfer log disagree"
    );
    logged
}

#[test]
fn a_mariadb_dump_under_write_load_restores_consistent() {
    let env = Env::new();
    env.init();
    let work = env.path("mariadb");
    std::fs::create_dir_all(&work).unwrap();
    let db = MariaDb::start(&work.join("live"));
    db.query(&format!(
        "CREATE DATABASE bank; \
         CREATE TABLE bank.accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB; \
         CREATE TABLE bank.fees (id INT PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB; \
         CREATE TABLE bank.transfers (id INT AUTO_INCREMENT PRIMARY KEY, src INT, dst INT, \
             amount BIGINT) ENGINE=InnoDB; \
         INSERT INTO bank.fees VALUES (1, {START}); \
         INSERT INTO bank.accounts VALUES {};",
        (1..=ACCOUNTS)
            .map(|i| format!("({i}, {START})"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    // The load: one client sending transactions until told to stop. Each moves money between
    // two accounts, takes a fee and logs the transfer, across three tables.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = db
        .client("mariadb")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = load.stdin.take().unwrap();
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let (src, dst) = (n % ACCOUNTS + 1, (n * 7 + 3) % ACCOUNTS + 1);
                let sql = format!(
                    "START TRANSACTION; \
                     UPDATE bank.accounts SET balance = balance - 5 WHERE id = {src}; \
                     UPDATE bank.accounts SET balance = balance + 5 WHERE id = {dst}; \
                     UPDATE bank.fees SET balance = balance - 1 WHERE id = 1; \
                     INSERT INTO bank.transfers (src, dst, amount) VALUES ({src}, {dst}, 5); \
                     COMMIT;\n"
                );
                if stdin.write_all(sql.as_bytes()).is_err() {
                    break;
                }
                n += 1;
            }
        })
    };
    let logged = |db: &MariaDb| -> u64 {
        db.query("SELECT COUNT(*) FROM bank.transfers")
            .parse()
            .unwrap()
    };
    wait_until("the load has written", Duration::from_secs(30), || {
        logged(&db) > 200
    });
    let before = logged(&db);
    // The recipe, with the test server's socket.
    let out = env
        .cmd()
        .args([
            "--json",
            "backup",
            "--tag",
            "mariadb",
            "--stdin-filename",
            "mysql/all.sql",
            "--stdin-from-command",
            "--",
            "mysqldump",
            "--no-defaults",
        ])
        .arg(format!("--socket={}", db.socket.display()))
        .args([
            "--user=root",
            "--all-databases",
            "--single-transaction",
            "--routines",
            "--events",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the load went on", Duration::from_secs(30), || {
        logged(&db) > before + 100
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let _ = load.wait();
    let live_end = check_ledger(&db);

    // Into a fresh server, as the recipe restores it.
    let fresh = MariaDb::start(&work.join("fresh"));
    let mut dump = env
        .cmd()
        .args(["dump", "latest", "/mysql/all.sql"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let load_dump = fresh
        .client("mariadb")
        .stdin(dump.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(dump.wait().unwrap().success());
    assert!(
        load_dump.status.success(),
        "{}",
        String::from_utf8_lossy(&load_dump.stderr)
    );
    let restored = check_ledger(&fresh);
    assert!(
        restored >= before as i64 && restored <= live_end,
        "the dump holds {restored} transfers: between {before} (backup started) and {live_end}"
    );
}

/// A single-member etcd cluster on loopback ports.
struct Etcd {
    client_url: String,
    server: Child,
}

impl Etcd {
    /// A member named `name` on `data` (new, or written by `etcdctl snapshot restore` for
    /// `peer_url`), serving clients on a free loopback port.
    fn start(name: &str, data: &Path, peer_url: &str, log: &Path) -> Etcd {
        let client_url = format!("http://127.0.0.1:{}", free_port());
        let server = Command::new("etcd")
            .args(["--name", name, "--data-dir"])
            .arg(data)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", peer_url])
            .args(["--initial-advertise-peer-urls", peer_url])
            .args(["--initial-cluster", &format!("{name}={peer_url}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("etcd is missing: run scripts/test, which installs etcd-server");
        let etcd = Etcd { client_url, server };
        wait_until("etcd answers", Duration::from_secs(60), || {
            etcd.ctl()
                .args(["endpoint", "health"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        etcd
    }

    fn ctl(&self) -> Command {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3")
            .env("ETCDCTL_ENDPOINTS", &self.client_url)
            .stderr(Stdio::null());
        c
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

#[test]
fn the_etcd_recipe_job_backs_up_a_snapshot_that_restores_into_a_serving_member() {
    let env = Env::new();
    env.init();
    let work = env.path("etcd");
    std::fs::create_dir_all(&work).unwrap();
    let etcd = Etcd::start(
        "live",
        &work.join("data"),
        &format!("http://127.0.0.1:{}", free_port()),
        &work.join("live.log"),
    );
    for i in 0..50 {
        let put = etcd
            .ctl()
            .args(["put", &format!("/config/key{i:02}"), &format!("value {i}")])
            .output()
            .unwrap();
        assert!(put.status.success());
    }
    let spool = work.join("backups");
    std::fs::create_dir_all(&spool).unwrap();
    let snapshot_file = spool.join("snapshot.db");
    // The recipe's job, with this test's endpoint, spool directory and a schedule that comes soon.
    let config = env.path("drvault.toml");
    std::fs::write(
        &config,
        format!(
            r#"[[jobs]]
name = "etcd"
kind = "backup"
schedule = "*/2 * * * * *"
paths = ["{spool}"]
before = ["etcdctl snapshot save {file}"]
after = ["rm -f {file}"]
env = {{ ETCDCTL_API = "3", ETCDCTL_ENDPOINTS = "{url}" }}
"#,
            spool = spool.display(),
            file = snapshot_file.display(),
            url = etcd.client_url,
        ),
    )
    .unwrap();
    let mut agent = drvault_tests::agent::start_agent(&env, &config, None);
    let runs = || -> Vec<serde_json::Value> {
        let out = env.ok(&["jobs", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["runs"].as_array().unwrap().clone()
    };
    wait_until("the etcd job has run", Duration::from_secs(120), || {
        runs()
            .iter()
            .any(|r| r["job"] == "etcd" && r["result"] != "running")
    });
    signal(&agent, "TERM");
    wait_exit(&mut agent, Duration::from_secs(60));
    let run = runs()
        .into_iter()
        .find(|r| r["job"] == "etcd" && r["result"] != "running")
        .unwrap();
    assert_eq!(run["result"], "success", "{run}");
    let phases: Vec<&str> = run["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["before", "after"], "{run}");
    assert!(
        run["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["exit_code"] == 0),
        "{run}"
    );
    // New keys after the backup must not be in what is restored.
    let late = etcd
        .ctl()
        .args(["put", "/config/late", "x"])
        .output()
        .unwrap();
    assert!(late.status.success());
    drop(etcd);

    // Restore the snapshot file, rebuild a member from it, and read the keys back.
    let target = env.path("restored");
    env.ok(&[
        "restore",
        run["snapshot"].as_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ]);
    let restored_file = drvault_tests::restored(&target, &snapshot_file);
    assert!(
        restored_file.exists(),
        "{} restored",
        restored_file.display()
    );
    let peer = format!("http://127.0.0.1:{}", free_port());
    let rebuilt = work.join("rebuilt");
    let restore = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(&restored_file)
        .arg("--data-dir")
        .arg(&rebuilt)
        .args([
            "--name",
            "rebuilt",
            "--initial-cluster",
            &format!("rebuilt={peer}"),
        ])
        .args(["--initial-advertise-peer-urls", &peer])
        .output()
        .unwrap();
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    let member = Etcd::start("rebuilt", &rebuilt, &peer, &work.join("rebuilt.log"));
    let got = member
        .ctl()
        .args(["get", "--prefix", "/config/", "--keys-only"])
        .output()
        .unwrap();
    let keys: Vec<String> = String::from_utf8_lossy(&got.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(keys.len(), 50, "{keys:?}");
    let value = member
        .ctl()
        .args(["get", "/config/key07", "--print-value-only"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&value.stdout).trim(), "value 7");
}
