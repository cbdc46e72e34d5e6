//! Consistent sources (issue "Application-consistent backups"): a backup of a command's
//! standard output or of drvault's standard input, and a job's hooks under the agent.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Write;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use drvault_tests::{code, noise, Env, PASSWORD};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn a_commands_output_is_one_file_of_the_snapshot() {
    let env = Env::new();
    env.init();
    let data = noise(9 << 20, 31);
    let file = env.path("dump.bin");
    fs::write(&file, &data).unwrap();
    let out = json(&env.ok(&[
        "--json",
        "backup",
        "--tag",
        "db",
        "--stdin-filename",
        "postgres/base.tar",
        "--stdin-from-command",
        "--",
        "cat",
        file.to_str().unwrap(),
    ]));
    assert_eq!(out["files_new"], 1, "{out}");
    assert_eq!(out["bytes_total"], data.len() as u64, "{out}");
    let snaps = env.snapshots_json();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["paths"], serde_json::json!(["/postgres/base.tar"]));
    assert_eq!(snaps[0]["tags"], serde_json::json!(["db"]));
    // dump gives the bytes back; restore makes the file, owner-only.
    let dumped = env
        .cmd()
        .args(["dump", "latest", "/postgres/base.tar"])
        .output()
        .unwrap();
    assert!(dumped.status.success());
    assert!(dumped.stdout == data, "dump returns the command's output");
    let target = env.path("restored");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let got = target.join("postgres/base.tar");
    assert!(fs::read(&got).unwrap() == data);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&got).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The same output again deduplicates: no data blob is added.
    let again = json(&env.ok(&[
        "--json",
        "backup",
        "--stdin-filename",
        "postgres/base.tar",
        "--stdin-from-command",
        "--",
        "cat",
        file.to_str().unwrap(),
    ]));
    assert!(again["blobs_added"].as_u64().unwrap() <= 2, "{again}");
    // The second snapshot's parent is the first (same host, same path).
    assert_eq!(again["parent"], snaps[0]["id"]);
}

#[test]
fn a_failing_command_leaves_no_snapshot_and_its_uploads_serve_the_next_run() {
    let env = Env::new();
    env.init();
    let data = noise(12 << 20, 32);
    let file = env.path("partial.bin");
    fs::write(&file, &data).unwrap();
    let script = format!("cat {}; echo 'dump failed' >&2; exit 3", file.display());
    let out = env
        .cmd()
        .args(["backup", "--stdin-from-command", "--", "sh", "-c", &script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code::FAILURE), "{stderr}");
    assert!(stderr.contains("exited with status 3"), "{stderr}");
    assert!(stderr.contains("no snapshot was made"), "{stderr}");
    // The command's own error went to drvault's stderr (the log).
    assert!(stderr.contains("dump failed"), "{stderr}");
    assert!(env.snapshots_json().is_empty());
    // What it wrote was uploaded and indexed: the next run of the same bytes adds no data.
    let ok = json(&env.ok(&[
        "--json",
        "backup",
        "--stdin-from-command",
        "--",
        "cat",
        file.to_str().unwrap(),
    ]));
    assert!(ok["blobs_added"].as_u64().unwrap() <= 2, "{ok}");
    env.ok(&["check", "--read-data"]);
    // A command that cannot start, and a program killed by a signal, fail the same way.
    let out = env
        .cmd()
        .args([
            "backup",
            "--stdin-from-command",
            "--",
            "/nonexistent/pg_dump",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(code::FAILURE));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot start"));
    let out = env
        .cmd()
        .args([
            "backup",
            "--stdin-from-command",
            "--",
            "sh",
            "-c",
            "echo partial; kill -9 $$",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(code::FAILURE));
    assert!(String::from_utf8_lossy(&out.stderr).contains("killed by signal 9"));
    assert_eq!(env.snapshots_json().len(), 1);
}

/// Whether process `pid` has ended (gone, or a zombie waiting for its parent).
fn ended(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// A stop request (Ctrl-C, SIGTERM, the agent's shutdown) during a backup of a command's output
/// ends the command and everything it started, also while it writes nothing, and leaves no
/// snapshot. Before, drvault waited for the command's next output to notice the request, and
/// then killed the command only, leaving what it had started running.
#[test]
fn a_stop_request_ends_the_command_and_what_it_started() {
    let env = Env::new();
    env.init();
    let pid_file = env.path("helper.pid");
    let script = format!(
        "sleep 600 & echo $! > {p}; echo started; sleep 600",
        p = pid_file.display()
    );
    let mut backup = env
        .cmd()
        .args(["backup", "--stdin-from-command", "--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let helper = loop {
        let pid = fs::read_to_string(&pid_file).unwrap_or_default();
        if pid.ends_with('\n') {
            break pid.trim().to_string();
        }
        assert!(Instant::now() < deadline, "the command did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Reading the stream: the command has written its line and now writes nothing.
    std::thread::sleep(Duration::from_millis(500));
    let term = std::process::Command::new("kill")
        .args(["-TERM", &backup.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = backup.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = backup.kill();
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &helper])
                .status();
            panic!("drvault did not stop within 30 s of SIGTERM while the command wrote nothing");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut backup.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(code::INTERRUPTED), "{stderr}");
    assert!(env.snapshots_json().is_empty(), "{stderr}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ended(&helper) {
        if Instant::now() >= deadline {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &helper])
                .status();
            panic!("the command's background process {helper} outlived the backup");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn stdin_is_stored_and_the_command_gets_no_secret() {
    let env = Env::new();
    env.init();
    let data = noise(3 << 20, 33);
    let mut child = env
        .cmd()
        .args([
            "--json",
            "backup",
            "--stdin",
            "--stdin-filename",
            "piped.bin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        json(&String::from_utf8_lossy(&out.stdout))["bytes_total"],
        data.len() as u64
    );
    let dumped = env
        .cmd()
        .args(["dump", "latest", "/piped.bin"])
        .output()
        .unwrap();
    assert!(dumped.stdout == data);
    // drvault's passphrase (in its environment here) and any cloud credential, whatever its
    // name, do not reach the command.
    let out = env
        .cmd()
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", "/secret/aws-token")
        .env("AZURE_STORAGE_SAS_TOKEN", "sas-secret")
        .env("GOOGLE_OAUTH_ACCESS_TOKEN", "gcs-secret")
        .args([
            "backup",
            "--stdin-filename",
            "env.txt",
            "--stdin-from-command",
            "--",
            "sh",
            "-c",
            "echo \"password=$DRVAULT_PASSWORD\"; echo \"path=$PATH\"; env",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dumped = env
        .cmd()
        .args(["dump", "latest", "/env.txt"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&dumped.stdout);
    assert!(text.contains("password=\n"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    for secret in ["aws-token", "sas-secret", "gcs-secret"] {
        assert!(
            !text.contains(secret),
            "{secret} reached the command: {text}"
        );
    }
    assert!(
        text.contains("path=/"),
        "the rest of the environment is kept: {text}"
    );
}

#[test]
fn bad_stream_arguments_are_usage_errors() {
    let env = Env::new();
    env.init();
    for args in [
        // A name that would escape the snapshot's root, or is empty.
        vec!["backup", "--stdin", "--stdin-filename", "../escape"],
        vec!["backup", "--stdin", "--stdin-filename", "a//b"],
        // A command with --stdin, paths with --stdin, nothing at all.
        vec!["backup", "--stdin-from-command"],
        vec!["backup", "--stdin", "/etc"],
        vec!["backup"],
    ] {
        let out = env.cmd().args(&args).stdin(Stdio::null()).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code::USAGE),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(env.snapshots_json().is_empty());
}

fn wait_exit(child: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("the agent did not exit within {timeout:?}");
}

/// Hooks around agent jobs: `before` (a failure stops the job), `after` (always, with the
/// result) and `on_failure`; a job backing up a command's output; all recorded in `jobs`.
#[test]
fn job_hooks_run_around_jobs_and_are_recorded() {
    let env = Env::new();
    env.init();
    let marks = env.path("marks");
    fs::create_dir_all(&marks).unwrap();
    let m = marks.display();
    let config = env.path("drvault.toml");
    let text = format!(
        r#"[[jobs]]
name = "db"
kind = "backup"
schedule = "*/2 * * * * *"
stdin_command = ["sh", "-c", "echo rows from $PGDATABASE; cat {m}/frozen"]
stdin_filename = "db.sql"
env = {{ PGDATABASE = "shop" }}
before = ["echo frozen > {m}/frozen", "echo $DRVAULT_JOB $DRVAULT_HOOK > {m}/before.$$"]
after = ["rm {m}/frozen; echo $DRVAULT_JOB_RESULT $DRVAULT_SNAPSHOT_ID > {m}/after-db"]
on_failure = ["touch {m}/db-failed"]

[[jobs]]
name = "blocked"
kind = "backup"
schedule = "*/2 * * * * *"
paths = ["{m}"]
before = ["echo cannot freeze; exit 4", "touch {m}/second-before-ran"]
after = ["echo $DRVAULT_JOB_RESULT > {m}/after-blocked"]
on_failure = ["echo \"$DRVAULT_JOB_MESSAGE\" > {m}/blocked-failed"]

[[jobs]]
name = "slow"
kind = "check"
schedule = "*/2 * * * * *"
hook_timeout = "1s"
before = ["sleep 30"]
"#
    );
    fs::write(&config, text).unwrap();
    let mut agent = env
        .cmd()
        .arg("--config")
        .arg(&config)
        .arg("agent")
        .stdout(Stdio::null())
        .stderr(fs::File::create(env.path("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let runs = loop {
        let jobs = json(&env.ok(&["jobs", "--json"]));
        let runs = jobs["runs"].as_array().unwrap().clone();
        let done = |job: &str| {
            runs.iter()
                .any(|r| r["job"] == job && r["result"] != "running")
        };
        if done("db") && done("blocked") && done("slow") && marks.join("after-db").exists() {
            break runs;
        }
        assert!(Instant::now() < deadline, "jobs did not run: {runs:?}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = runs;
    let term = std::process::Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    wait_exit(&mut agent, Duration::from_secs(60));
    // Read again once the agent has stopped: every run has ended, every hook has run.
    let runs = json(&env.ok(&["jobs", "--json"]))["runs"]
        .as_array()
        .unwrap()
        .clone();
    let run = |job: &str| {
        runs.iter()
            .find(|r| r["job"] == job && r["result"] != "running")
            .unwrap()
            .clone()
    };
    // The stream job: before froze, the command saw it and its env, after released it.
    let db = run("db");
    assert_eq!(db["result"], "success", "{db}");
    let phases: Vec<&str> = db["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["before", "before", "after"], "{db}");
    assert!(db["hooks"][0]["exit_code"] == 0);
    let snapshot = db["snapshot"].as_str().unwrap();
    // The last db run's after hook wrote the file last: its result and snapshot.
    let last_db = runs.iter().rev().find(|r| r["job"] == "db").unwrap();
    let after = fs::read_to_string(marks.join("after-db")).unwrap();
    let want = format!(
        "{} {}",
        last_db["result"].as_str().unwrap(),
        last_db["snapshot"].as_str().unwrap_or("")
    );
    assert_eq!(after.trim(), want.trim());
    assert!(!marks.join("db-failed").exists());
    let dumped = env
        .cmd()
        .args(["dump", &snapshot[..12], "/db.sql"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&dumped.stdout),
        "rows from shop\nfrozen\n"
    );
    // A failing before hook: the job does not run, later before hooks neither, after and
    // on_failure do, and the history names the hook and its output.
    let blocked = run("blocked");
    assert_eq!(blocked["result"], "failed", "{blocked}");
    let message = blocked["message"].as_str().unwrap();
    assert!(
        message.contains("before hook") && message.contains("exited with 4"),
        "{message}"
    );
    assert!(message.contains("cannot freeze"), "{message}");
    assert!(blocked["snapshot"].is_null());
    assert!(!marks.join("second-before-ran").exists());
    assert_eq!(
        fs::read_to_string(marks.join("after-blocked"))
            .unwrap()
            .trim(),
        "failed"
    );
    assert!(fs::read_to_string(marks.join("blocked-failed"))
        .unwrap()
        .contains("exited with 4"));
    assert_eq!(blocked["hooks"][0]["output"], "cannot freeze\n");
    // A hook past its timeout is killed and fails its job.
    let slow = run("slow");
    assert_eq!(slow["result"], "failed", "{slow}");
    assert_eq!(slow["hooks"][0]["timed_out"], true, "{slow}");
    assert!(
        slow["hooks"][0]["seconds"].as_f64().unwrap() < 20.0,
        "{slow}"
    );
    // Every snapshot in the repository came from the db job.
    for s in env.snapshots_json() {
        assert_eq!(s["paths"], serde_json::json!(["/db.sql"]), "{s}");
    }
}

#[test]
fn hook_and_stream_job_settings_are_checked() {
    let env = Env::new();
    let config = env.path("drvault.toml");
    let base = "name = \"j\"\nschedule = \"0 0 * * * *\"\n";
    for (extra, reason) in [
        (
            "kind = \"backup\"\npaths = [\"/etc\"]\nstdin_command = [\"pg_dump\"]\n",
            "not both",
        ),
        ("kind = \"backup\"\n", "`paths` or `stdin_command`"),
        (
            "kind = \"check\"\nstdin_command = [\"pg_dump\"]\n",
            "does not apply",
        ),
        (
            "kind = \"backup\"\nstdin_command = [\"x\"]\nstdin_filename = \"../x\"\n",
            "stdin-filename",
        ),
        (
            "kind = \"backup\"\npaths = [\"/etc\"]\nstdin_filename = \"x\"\n",
            "stdin_filename",
        ),
        ("kind = \"sync\"\nhook_timeout = \"soon\"\n", "hook_timeout"),
    ] {
        fs::write(&config, format!("[[jobs]]\n{base}{extra}")).unwrap();
        let out = env
            .cmd()
            .arg("--config")
            .arg(&config)
            .args(["agent", "--print-schedule"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra}");
        assert!(stderr.contains(reason), "{extra}: {stderr}");
    }
}
