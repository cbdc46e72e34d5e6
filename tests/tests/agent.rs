//! `drvault agent` end to end: the real binary with a job every few seconds, a notification
//! socket the test binds (the sd_notify protocol systemd speaks), the metrics endpoint over
//! loopback HTTP, SIGHUP with a broken and a good configuration, SIGTERM in the middle of a
//! backup and the restart after it.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use drvault_tests::agent::*;
use drvault_tests::{files_below, noise, restored, Env};

#[test]
fn agent_runs_jobs_reports_metrics_reloads_and_stops() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), noise(50_000, 1)).unwrap();
    let port = free_port();
    let config = env.path("drvault.toml");
    let good = format!(
        "[agent]\nmetrics_listen = \"127.0.0.1:{port}\"\n\n{}",
        backup_job("etc", &src, "*/2 * * * * *")
    );
    std::fs::write(&config, &good).unwrap();
    let mut notify = NotifySocket::bind(env.dir.path());
    let mut agent = start_agent(&env, &config, Some(&notify.path));

    notify.wait_for("READY=1", Duration::from_secs(60));
    notify.wait_for("STATUS=", Duration::from_secs(10));
    notify.wait_for("WATCHDOG=1", Duration::from_secs(5));
    notify.wait_for("WATCHDOG=1", Duration::from_secs(5));
    wait_until("two snapshots exist", Duration::from_secs(90), || {
        env.snapshots_json().len() >= 2
    });

    // Metrics: the job's last success, its RPO against the objective, the targets.
    let mut metrics = String::new();
    wait_until("metrics report a success", Duration::from_secs(30), || {
        metrics = http_get(port, "/metrics").1;
        sample(
            &metrics,
            "drvault_job_runs_total{job=\"etc\",result=\"success\"}",
        )
        .is_some()
    });
    let last_success = sample(
        &metrics,
        "drvault_job_last_success_timestamp_seconds{job=\"etc\",kind=\"backup\"}",
    )
    .expect("last success metric");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        last_success > now - 120.0 && last_success <= now + 1.0,
        "{metrics}"
    );
    let rpo = sample(&metrics, "drvault_rpo_seconds{job=\"etc\"}").expect("rpo metric");
    assert!((0.0..120.0).contains(&rpo), "{metrics}");
    assert_eq!(
        sample(&metrics, "drvault_rpo_objective_seconds{job=\"etc\"}"),
        Some(3600.0)
    );
    assert!(metrics.contains("# TYPE drvault_job_runs_total counter"));
    assert!(sample(&metrics, "drvault_repository_size_bytes").is_some_and(|b| b > 50_000.0));
    assert!(metrics.contains("drvault_target_up{"), "{metrics}");
    assert_eq!(http_get(port, "/other").0, "HTTP/1.1 404 Not Found");
    // Not a scrape: refused with a status, never a hang or a crash of the endpoint.
    assert_eq!(
        http_raw(
            port,
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        ),
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(
        http_raw(port, b"\x16\x03\x01 not http\r\n\r\n"),
        "HTTP/1.1 400 Bad Request"
    );
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Fill: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let status = http_raw(port, huge.as_bytes());
    assert!(
        status.is_empty() || status.starts_with("HTTP/1.1 431"),
        "a 64 KiB head is not read: {status}"
    );
    assert!(http_get(port, "/metrics")
        .1
        .contains("drvault_job_runs_total"));

    // SIGHUP with a broken configuration: refused, the old one keeps running.
    std::fs::write(
        &config,
        "[[jobs]]\nname = \"etc\"\nkind = \"backup\"\npaths = [\"/x\"]\nschedule = \"not a schedule\"\n",
    )
    .unwrap();
    signal(&agent, "HUP");
    notify.wait_for("RELOADING=1", Duration::from_secs(20));
    notify.wait_for("READY=1", Duration::from_secs(20));
    let before = env.snapshots_json().len();
    wait_until(
        "the old configuration backs up again",
        Duration::from_secs(60),
        || env.snapshots_json().len() > before,
    );
    assert!(agent.try_wait().unwrap().is_none(), "the agent exited");
    let log = std::fs::read_to_string(env.path("agent.log")).unwrap();
    assert!(
        log.contains("is refused") && log.contains("not a schedule"),
        "{log}"
    );

    // SIGHUP with a good configuration: the new job replaces the old one.
    std::fs::write(
        &config,
        format!(
            "[agent]\nmetrics_listen = \"127.0.0.1:{port}\"\n\n{}",
            backup_job("home", &src, "*/3 * * * * *")
        ),
    )
    .unwrap();
    signal(&agent, "HUP");
    notify.wait_for("RELOADING=1", Duration::from_secs(20));
    wait_until("the new job reports", Duration::from_secs(60), || {
        let m = http_get(port, "/metrics").1;
        m.contains("job=\"home\"")
            && sample(
                &m,
                "drvault_job_runs_total{job=\"home\",result=\"success\"}",
            )
            .is_some()
    });

    // SIGTERM: STOPPING=1, then a clean exit.
    signal(&agent, "TERM");
    notify.wait_for("STOPPING=1", Duration::from_secs(20));
    let status = wait_exit(&mut agent, Duration::from_secs(60));
    assert!(status.success(), "agent exit: {status}");

    // The job history: every run recorded, with a success rate.
    let jobs: serde_json::Value = serde_json::from_str(&env.ok(&["jobs", "--json"])).unwrap();
    let runs = jobs["runs"].as_array().unwrap();
    assert!(runs.len() >= 3, "{jobs}");
    assert!(runs.iter().all(|r| r["result"] == "success"), "{jobs}");
    assert!(runs.iter().any(|r| r["job"] == "home"));
    assert_eq!(jobs["backup_success_rate"], 1.0);
    assert!(runs
        .iter()
        .all(|r| r["snapshot"].as_str().is_some_and(|s| s.len() == 64)));
    // The auditor's report carries the backup success rate from the same history.
    let year = chrono_year();
    let out = env
        .drtest()
        .args(["report", "--period", &year, "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["backup_success_rate"], 1.0, "{report}");
    assert_eq!(report["backup_runs"], runs.len() as u64);
    let table = env.ok(&["jobs", "--job", "etc"]);
    assert!(
        table.contains("etc: ") && table.contains("success rate 100.00%"),
        "{table}"
    );
    env.ok(&["check"]);
}

#[test]
fn sigterm_mid_backup_keeps_what_was_uploaded_and_the_restart_does_not_upload_it_again() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // 192 files of 1 MiB, incompressible: a dozen 16 MiB packs.
    let corpus: u64 = 192 << 20;
    for i in 0..192u64 {
        std::fs::write(src.join(format!("f{i:03}")), noise(1 << 20, i + 7)).unwrap();
    }
    let config = env.path("drvault.toml");
    std::fs::write(&config, backup_job("data", &src, "* * * * * *")).unwrap();
    let data_bytes = || -> u64 {
        let dir = env.repo().join("data");
        if !dir.exists() {
            return 0;
        }
        files_below(&dir)
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum()
    };

    let mut agent = start_agent(&env, &config, None);
    wait_until(
        "the first backup has uploaded a pack",
        Duration::from_secs(120),
        || data_bytes() > 0,
    );
    signal(&agent, "TERM");
    let status = wait_exit(&mut agent, Duration::from_secs(120));
    assert!(status.success(), "agent exit: {status}");
    assert!(
        env.snapshots_json().is_empty(),
        "the backup finished before SIGTERM reached it; the corpus is too small for this machine"
    );
    let kept = data_bytes();
    assert!(kept >= 16 << 20, "only {kept} bytes were uploaded");
    let jobs: serde_json::Value = serde_json::from_str(&env.ok(&["jobs", "--json"])).unwrap();
    let first = &jobs["runs"][0];
    assert_eq!(first["result"], "interrupted", "{jobs}");
    // What was uploaded is indexed: check finds every pack in the index (an unindexed pack
    // would be a warning) and nothing damaged.
    let check: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "check"])).unwrap();
    assert_eq!(check["warnings"], serde_json::json!([]), "{check}");
    assert_eq!(check["errors"], serde_json::json!([]), "{check}");
    assert!(check["packs"].as_u64().unwrap() > 0, "{check}");

    // Restart: the backup completes, reusing what the first run uploaded.
    let mut agent = start_agent(&env, &config, None);
    wait_until("two snapshots exist", Duration::from_secs(180), || {
        env.snapshots_json().len() >= 2
    });
    signal(&agent, "TERM");
    assert!(wait_exit(&mut agent, Duration::from_secs(120)).success());
    // The job is due every second and a run reads 192 MiB: runs never overlap all the same.
    let jobs: serde_json::Value = serde_json::from_str(&env.ok(&["jobs", "--json"])).unwrap();
    let runs = jobs["runs"].as_array().unwrap();
    for pair in runs.windows(2) {
        let ended = pair[0]["ended"].as_f64().unwrap();
        assert!(pair[1]["started"].as_f64().unwrap() >= ended, "{jobs}");
    }
    let total = data_bytes();
    // Uploading the first run's packs again would add at least those bytes a second time.
    assert!(
        total < corpus + corpus / 50,
        "{total} bytes stored for a {corpus}-byte corpus after the restart ({kept} kept from the first run)"
    );
    env.ok(&["check", "--read-data"]);
    let target = env.path("restore");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    for f in files_below(&src) {
        assert_eq!(
            std::fs::read(restored(&target, &f)).unwrap(),
            std::fs::read(&f).unwrap(),
            "{}",
            f.display()
        );
    }
}

fn print_schedule(env: &Env, config: &Path) -> std::process::Output {
    env.cmd()
        .arg("--config")
        .arg(config)
        .args(["agent", "--print-schedule"])
        .output()
        .unwrap()
}

#[test]
fn bad_agent_configurations_are_refused_with_the_reason() {
    let env = Env::new();
    let config = env.path("drvault.toml");
    let base = "name = \"j\"\nschedule = \"0 0 * * * *\"\n";
    for (body, why) in [
        (
            format!("[[jobs]]\n{base}kind = \"backup\"\n"),
            "a backup job needs `paths`",
        ),
        (
            format!("[[jobs]]\n{base}kind = \"nap\"\n"),
            "unknown variant `nap`",
        ),
        (
            format!("[[jobs]]\n{base}kind = \"forget\"\n"),
            "needs at least one keep_* rule",
        ),
        (
            format!("[[jobs]]\n{base}kind = \"sync\"\npaths = [\"/etc\"]\n"),
            "`paths` does not apply to a sync job",
        ),
        (
            "[[jobs]]\nname = \"j\"\nkind = \"sync\"\nschedule = \"0 61 * * * *\"\n".to_string(),
            "minute 61 is outside 0-59",
        ),
        (
            format!("[[jobs]]\n{base}kind = \"sync\"\n[[jobs]]\n{base}kind = \"sync\"\n"),
            "two jobs are named \"j\"",
        ),
        (
            format!("[[jobs]]\n{base}kind = \"drill\"\nplan = \"q\"\n"),
            "plan \"q\" is not a [[drills]] entry",
        ),
        (
            "[agent]\nmetrics_listen = \"0.0.0.0:9477\"\n".to_string(),
            "not a loopback address",
        ),
        (
            format!("[[jobs]]\n{base}kind = \"check\"\nread_data_subset = 150.0\n"),
            "read_data_subset 150 must be a percentage",
        ),
    ] {
        std::fs::write(&config, &body).unwrap();
        let out = print_schedule(&env, &config);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{body}");
        assert!(err.contains(why), "{body}\nexpected {why:?} in: {err}");
    }
    // A good one prints the next runs.
    std::fs::write(
        &config,
        format!("[[jobs]]\n{base}kind = \"sync\"\n[agent]\nmetrics_listen = \"[::1]:9477\"\n"),
    )
    .unwrap();
    let out = print_schedule(&env, &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("j (sync): ") && text.matches(":00:00").count() == 3,
        "{text}"
    );
    // Without a configuration file the agent says where to put one.
    let out = env
        .cmd()
        .arg("--config")
        .arg(env.path("missing.toml"))
        .arg("agent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config"));
}

#[test]
fn a_run_missed_while_the_agent_was_down_runs_at_start_and_drills_can_name_a_job() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), noise(10_000, 3)).unwrap();
    let config = env.path("drvault.toml");
    // Yearly at New Year: it would not run during this test unless it is caught up.
    std::fs::write(
        &config,
        format!(
            "{}\n[[drills]]\nname = \"monthly\"\njob = \"yearly\"\nrto_objective = \"1h\"\nrpo_objective = \"1h\"\n",
            backup_job("yearly", &src, "0 0 0 1 1 *")
        ),
    )
    .unwrap();
    // First start: no history, so nothing was missed and nothing runs.
    let mut agent = start_agent(&env, &config, None);
    std::thread::sleep(Duration::from_secs(4));
    signal(&agent, "TERM");
    assert!(wait_exit(&mut agent, Duration::from_secs(60)).success());
    assert!(env.snapshots_json().is_empty());
    // A run recorded two years ago: the New Year's run since then was missed.
    let db = rusqlite::Connection::open(env.state().join("jobs.sqlite")).unwrap();
    let two_years_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - 2.0 * 365.0 * 86_400.0;
    db.execute(
        "INSERT INTO job_runs (job, kind, host, started, ended, result) VALUES ('yearly', 'backup', 'h', ?1, ?1, 'success')",
        [two_years_ago],
    )
    .unwrap();
    drop(db);
    let mut agent = start_agent_with(&env, &config, None, &[("DRVAULT_LOG_FORMAT", "json")]);
    wait_until("the missed run ran", Duration::from_secs(90), || {
        env.snapshots_json().len() == 1
    });
    std::thread::sleep(Duration::from_secs(3));
    signal(&agent, "TERM");
    assert!(wait_exit(&mut agent, Duration::from_secs(60)).success());
    // Once, however many runs were missed.
    assert_eq!(env.snapshots_json().len(), 1);
    // One JSON object per log line.
    let log = std::fs::read_to_string(env.path("agent.log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "INFO"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("was missed"))),
        "{log}"
    );

    // A drill plan naming the job restores the job's paths.
    let out = env
        .drtest()
        .arg("--config")
        .arg(&config)
        .args(["--json", "run", "--plan", "monthly"])
        .output()
        .unwrap();
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{record}");
    assert_eq!(record["passed"], true);
    assert_eq!(record["files"], 1, "{record}");
    // With a single location, the evidence names it as the target used.
    assert_eq!(
        record["targets_used"],
        serde_json::json!([env.repo().display().to_string()])
    );
}

#[test]
fn every_job_kind_runs_under_the_agent() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), noise(200_000, 9)).unwrap();
    let config = env.path("drvault.toml");
    let every = |name: &str, kind: &str, extra: &str| {
        format!("[[jobs]]\nname = \"{name}\"\nkind = \"{kind}\"\nschedule = \"*/2 * * * * *\"\n{extra}\n")
    };
    let text = [
        backup_job("data", &src, "* * * * * *"),
        every("retention", "forget", "keep_last = 1"),
        every("prune", "prune", "grace = \"0s\"\nrepack_threshold = 0.5"),
        every("check", "check", "read_data_subset = 50.0"),
        every("sync", "sync", ""),
        every("rotate", "rotate", ""),
    ]
    .concat();
    std::fs::write(&config, text).unwrap();
    let mut agent = start_agent(&env, &config, None);
    // The data changes as the agent runs, so forget has snapshots to remove and prune data to
    // delete while backups go on.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, file) = (stop.clone(), src.join("a"));
        std::thread::spawn(move || {
            let mut seed = 9;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(700));
                seed += 1;
                let tmp = file.with_extension("tmp");
                std::fs::write(&tmp, noise(200_000, seed)).unwrap();
                std::fs::rename(&tmp, &file).unwrap();
            }
            seed
        })
    };
    let kinds = ["data", "retention", "prune", "check", "sync", "rotate"];
    wait_until(
        "every job has succeeded twice, and forget and prune have removed data",
        // Generous: on two loaded cores (other agent tests running beside it) six jobs every
        // two seconds took longer than 150 s once; a timeout is a safety net, not a measure.
        Duration::from_secs(420),
        || {
            let log = env.ok(&["--json", "audit", "log"]);
            if !(log.contains("snapshots.forget") && log.contains("data.prune")) {
                return false;
            }
            let jobs: serde_json::Value =
                serde_json::from_str(&env.ok(&["jobs", "--json"])).unwrap();
            kinds.iter().all(|k| {
                jobs["runs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| r["job"] == *k && r["result"] == "success")
                    .count()
                    >= 2
            })
        },
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let last_seed = writer.join().unwrap();
    signal(&agent, "TERM");
    assert!(wait_exit(&mut agent, Duration::from_secs(120)).success());
    let jobs: serde_json::Value = serde_json::from_str(&env.ok(&["jobs", "--json"])).unwrap();
    let failed: Vec<&serde_json::Value> = jobs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["result"] == "failed")
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    // Forget kept one snapshot at a time, prune freed what the others used, all concurrently
    // with backups: the repository is whole and the newest snapshot restores.
    assert!(env.snapshots_json().len() <= 3);
    let log = env.ok(&["--json", "audit", "log"]);
    assert!(log.contains("snapshots.forget") && log.contains("data.prune"));
    env.ok(&["check", "--read-data"]);
    let target = env.path("restore");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let got = std::fs::read(restored(&target, &src.join("a"))).unwrap();
    assert!(
        (9..=last_seed).any(|seed| got == noise(200_000, seed)),
        "the restored file is none of the versions written"
    );
}
