//! A running PostgreSQL cluster under a pgbench write load, backed up as a base-backup stream
//! (`pg_basebackup -Ft -D - -X fetch` through `backup --stdin-from-command`), restored, started
//! and checked for consistency: in pgbench's tables every transaction adds the same delta to
//! one account, one teller, one branch and the history, so the four sums agree in any
//! consistent state and disagree in a torn copy. PostgreSQL comes from Debian's packages
//! (scripts/test installs it); the server runs as the `postgres` user when the tests run as root.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use drvault_tests::{is_root, Env};

/// The server's programs (Debian puts them under /usr/lib/postgresql/VERSION/bin).
fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run scripts/test, which installs it")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("postgres").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("no PostgreSQL server under /usr/lib/postgresql")
}

/// Runs a server program as the cluster's owner.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn chown_to_owner(path: &Path) {
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    port: u16,
    server: Child,
}

impl Cluster {
    fn start(bin: &Path, data: &Path, socket: &Path, port: u16, log: &Path) -> Cluster {
        std::fs::create_dir_all(socket).unwrap();
        chown_to_owner(socket);
        let server = as_owner(&bin.join("postgres"))
            .arg("-D")
            .arg(data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses="])
            .arg("-k")
            .arg(socket)
            .args(["-c", "fsync=off", "-c", "max_wal_size=1GB"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let cluster = Cluster {
            bin: bin.to_path_buf(),
            data: data.to_path_buf(),
            socket: socket.to_path_buf(),
            port,
            server,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .arg("-h")
                .arg(socket)
                .args(["-p", &port.to_string()])
                .stdout(Stdio::null())
                .status()
                .unwrap();
            if ready.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        cluster
    }

    /// A client program connected to this cluster as `postgres`.
    fn client(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.arg("-h")
            .arg(&self.socket)
            .args(["-p", &self.port.to_string(), "-U", "postgres"]);
        c
    }

    fn query(&self, sql: &str) -> String {
        let out = self
            .client("psql")
            .args([
                "-d",
                "postgres",
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn stop(mut self) {
        let _ = as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .status();
        let _ = self.server.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_cluster_under_write_load_restores_consistent() {
    let env = Env::new();
    env.init();
    let bin = pg_bin();
    let work = env.path("pg");
    std::fs::create_dir_all(&work).unwrap();
    // The owner must reach its directories: the test's temporary directory may be private.
    if is_root() {
        let mut dir = work.clone();
        while dir != Path::new("/") {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o711)).unwrap();
            dir.pop();
        }
    }
    chown_to_owner(&work);
    let data = work.join("data");
    let init = as_owner(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "--no-sync"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let socket = work.join("sock");
    let cluster = Cluster::start(&bin, &data, &socket, free_port(), &work.join("server.log"));
    let pgbench_init = cluster
        .client("pgbench")
        .args(["-i", "-s", "2", "-q", "postgres"])
        .output()
        .unwrap();
    assert!(
        pgbench_init.status.success(),
        "{}",
        String::from_utf8_lossy(&pgbench_init.stderr)
    );
    // The write load runs through the whole backup.
    let mut load = cluster
        .client("pgbench")
        .args(["-c", "4", "-T", "600", "-n", "postgres"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let before = cluster.query("SELECT count(*) FROM pgbench_history");
    let basebackup = bin.join("pg_basebackup");
    let out = env
        .cmd()
        .args([
            "--json",
            "backup",
            "--tag",
            "postgres",
            "--stdin-filename",
            "postgres/base.tar",
            "--stdin-from-command",
            "--",
        ])
        .arg(&basebackup)
        .arg("-h")
        .arg(&socket)
        .args(["-p", &cluster.port.to_string(), "-U", "postgres"])
        .args(["-D", "-", "-Ft", "-X", "fetch", "-c", "fast"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_secs(1));
    let after = cluster.query("SELECT count(*) FROM pgbench_history");
    let _ = load.kill();
    let _ = load.wait();
    cluster.stop();
    let (before, after): (u64, u64) = (before.parse().unwrap(), after.parse().unwrap());
    assert!(
        after > before,
        "the load wrote during the backup ({before} → {after})"
    );

    // Restore the stream, unpack it as a data directory, start it and check the sums.
    let target = env.path("restored");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let restored = work.join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(target.join("postgres/base.tar"))
        .arg("-C")
        .arg(&restored)
        .status()
        .unwrap();
    assert!(untar.success());
    chown_to_owner(&restored);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&restored, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let copy = Cluster::start(
        &bin,
        &restored,
        &work.join("sock2"),
        free_port(),
        &work.join("restored.log"),
    );
    let sums = copy.query(
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || \
                (SELECT sum(tbalance) FROM pgbench_tellers) || ' ' || \
                (SELECT sum(bbalance) FROM pgbench_branches) || ' ' || \
                (SELECT coalesce(sum(delta), 0) FROM pgbench_history) || ' ' || \
                (SELECT count(*) FROM pgbench_history)",
    );
    copy.stop();
    let v: Vec<i64> = sums.split(' ').map(|s| s.parse().unwrap()).collect();
    assert_eq!(v[0], v[3], "accounts against history: {sums}");
    assert_eq!(v[1], v[3], "tellers against history: {sums}");
    assert_eq!(v[2], v[3], "branches against history: {sums}");
    let rows = v[4] as u64;
    assert!(
        rows >= before && rows <= after,
        "the copy holds the transactions of a moment within the backup: {before} ≤ {rows} ≤ {after}"
    );

    // The OPERATIONS recipe's drill: its validation unpacks the restored stream, starts the
    // cluster and checks the same sums with a query; the drill passes only when they agree.
    let script = work.join("validate.sh");
    let drill_data = work.join("drill-data");
    let port = free_port();
    let (sock, b) = (work.join("sock3"), bin.display());
    let run_as = if is_root() {
        "runuser -u postgres --"
    } else {
        ""
    };
    let chown = if is_root() {
        "chown -R postgres: \"$d\" \"$s\""
    } else {
        "true"
    };
    std::fs::write(
        &script,
        format!(
            "set -e\nd={dd}; s={sock}; rm -rf \"$d\"; mkdir -p \"$d\" \"$s\"\n\
             tar -xf \"$1/postgres/base.tar\" -C \"$d\"; {chown}; chmod 700 \"$d\"\n\
             {run_as} {b}/pg_ctl -D \"$d\" -o \"-p {port} -k $s -c listen_addresses=\" -w start >/dev/null\n\
             ok=$({b}/psql -h \"$s\" -p {port} -U postgres -d postgres -Atc \
             'SELECT (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT sum(delta) FROM pgbench_history)')\n\
             {run_as} {b}/pg_ctl -D \"$d\" -m fast -w stop >/dev/null\n\
             echo \"consistent: $ok\"; test \"$ok\" = t\n",
            dd = drill_data.display(),
            sock = sock.display(),
        ),
    )
    .unwrap();
    let config = env.path("drvault.toml");
    std::fs::write(
        &config,
        format!(
            "[[drills]]\nname = \"postgres\"\npaths = [\"/postgres/base.tar\"]\n\
             rto_objective = \"30m\"\nrpo_objective = \"24h\"\nvalidate_timeout = \"2m\"\n\
             validate = [\"sh {} {{restore_dir}}\"]\n",
            script.display()
        ),
    )
    .unwrap();
    let out = env
        .drtest()
        .arg("--config")
        .arg(&config)
        .args(["--json", "run", "--plan", "postgres"])
        .output()
        .unwrap();
    let record = String::from_utf8_lossy(&out.stdout).into_owned();
    let d: serde_json::Value = serde_json::from_str(&record)
        .unwrap_or_else(|e| panic!("{e}: {record} {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(d["passed"], true, "{}", d["validations"]);
    assert!(
        d["validations"][0]["output"]
            .as_str()
            .unwrap()
            .contains("consistent: t"),
        "{}",
        d["validations"]
    );
}
