//! `drvault agent` under strain: a flood of idle metrics connections, a run by hand without
//! `-v`, a job that panics. (The agent's ordinary life is in `agent.rs`.)
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use drvault_tests::agent::*;
use drvault_tests::Env;

#[test]
fn a_flood_of_idle_metrics_connections_neither_exhausts_descriptors_nor_stops_backups() {
    let env = Env::new();
    env.init();
    let (config, port) = backup_agent_config(&env, "*/2 * * * * *");
    let mut agent = start_agent(&env, &config, None);
    wait_until(
        "the metrics endpoint answers",
        Duration::from_secs(60),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    let baseline = open_fds(agent.id());
    // A local user opens 400 connections and sends nothing (those beyond the listen backlog
    // time out).
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let idle: Vec<std::net::TcpStream> = (0..400)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        })
        .collect();
    assert!(idle.len() > 150, "only {} connections opened", idle.len());
    std::thread::sleep(Duration::from_secs(1));
    let during = open_fds(agent.id());
    assert!(
        during < baseline + 100,
        "the agent holds {during} descriptors (from {baseline}) for idle connections"
    );
    // Backups go on meanwhile, and the endpoint still answers once idle clients time out.
    let before = env.snapshots_json().len();
    wait_until(
        "a backup completes under the flood",
        Duration::from_secs(60),
        || env.snapshots_json().len() > before,
    );
    drop(idle);
    let (status, body) = http_get(port, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("drvault_job_runs_total"));
    signal(&agent, "TERM");
    assert!(wait_exit(&mut agent, Duration::from_secs(30)).success());
}

#[test]
fn the_agent_run_by_hand_logs_its_start_and_each_job_without_v() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"a").unwrap();
    let config = env.path("drvault.toml");
    std::fs::write(&config, backup_job("etc", &src, "*/2 * * * * *")).unwrap();
    let log = env.path("quiet-agent.log");
    let mut agent = env
        .cmd()
        .arg("--config")
        .arg(&config)
        .arg("agent")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until("a job has ended", Duration::from_secs(90), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("job succeeded"))
    });
    signal(&agent, "TERM");
    wait_exit(&mut agent, Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("agent started with 1 jobs"), "{text}");
    assert!(text.contains("job started"), "{text}");
    let ended = text.lines().find(|l| l.contains("job succeeded")).unwrap();
    assert!(
        ended.contains(" s, snapshot "),
        "duration and snapshot: {ended}"
    );
    assert!(text.contains("agent stopped"), "{text}");
}

#[test]
fn a_job_that_panics_is_recorded_as_failed_and_its_next_run_goes_ahead() {
    let env = Env::new();
    env.init();
    let config = env.path("drvault.toml");
    std::fs::write(
        &config,
        "[[jobs]]\nname = \"check\"\nkind = \"check\"\nschedule = \"*/2 * * * * *\"\n",
    )
    .unwrap();
    // The first job run in the process panics (a bug's stand-in); later runs pass the point.
    let mut agent = start_agent_with(
        &env,
        &config,
        None,
        &[("DRVAULT_FAILPOINTS", "job.execute=panic")],
    );
    let runs = || -> Vec<serde_json::Value> {
        let jobs: serde_json::Value = serde_json::from_str(&env.ok(&["jobs", "--json"])).unwrap();
        jobs["runs"].as_array().unwrap().clone()
    };
    wait_until(
        "a failed run, then a successful one, of the same maintenance job",
        Duration::from_secs(60),
        || {
            let runs = runs();
            runs.iter().any(|r| r["result"] == "failed")
                && runs.iter().any(|r| r["result"] == "success")
        },
    );
    signal(&agent, "TERM");
    assert!(wait_exit(&mut agent, Duration::from_secs(60)).success());
    let runs = runs();
    let failed: Vec<_> = runs.iter().filter(|r| r["result"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{runs:?}");
    let message = failed[0]["message"].as_str().unwrap();
    assert!(
        message.contains("panicked") && message.contains("job.execute"),
        "{message}"
    );
    assert!(
        runs.iter().all(|r| r["result"] != "running"),
        "no run is left running: {runs:?}"
    );
}

/// Descriptors the process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The scheduler on a clock the test sets (the test build reads `DRVAULT_TEST_CLOCK`): a daily
/// job does not run before its time, runs once when the clock reaches it, again the next day,
/// and once at start after days the agent was not running. Nothing waits for a real day.
#[test]
fn a_daily_job_runs_at_its_time_once_a_day_and_after_a_missed_day() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), drvault_tests::noise(10_000, 3)).unwrap();
    let config = env.path("drvault.toml");
    std::fs::write(&config, backup_job("nightly", &src, "0 30 2 * * *")).unwrap();
    let clock = env.path("clock");
    let set = |t: &str| {
        // Whole or not at all: the agent reads the file at any moment.
        std::fs::write(env.path("clock.new"), t).unwrap();
        std::fs::rename(env.path("clock.new"), &clock).unwrap();
    };
    let vars = [
        ("DRVAULT_TEST_CLOCK", clock.to_str().unwrap()),
        ("TZ", "UTC"),
    ];
    let runs = || -> usize {
        let jobs: serde_json::Value = serde_json::from_str(&env.ok(&["jobs", "--json"])).unwrap();
        let runs = jobs["runs"].as_array().unwrap();
        assert!(runs.iter().all(|r| r["result"] == "success"), "{jobs}");
        runs.len()
    };

    set("2030-01-01T02:29:00Z");
    let mut agent = start_agent_with(&env, &config, None, &vars);
    wait_until("the agent has started", Duration::from_secs(60), || {
        std::fs::read_to_string(env.path("agent.log")).is_ok_and(|l| l.contains("agent started"))
    });
    // A minute early: the scheduler polls a set clock every 100 ms, so 20 polls pass.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(runs(), 0, "nothing runs before 02:30");
    set("2030-01-01T02:30:05Z");
    wait_until("the 02:30 run", Duration::from_secs(60), || runs() == 1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        runs(),
        1,
        "one run per day, however long the clock stays past 02:30"
    );
    set("2030-01-02T02:30:01Z");
    wait_until("the next day's run", Duration::from_secs(60), || {
        runs() == 2
    });
    signal(&agent, "TERM");
    assert!(wait_exit(&mut agent, Duration::from_secs(60)).success());

    // Stopped over several days: the missed run happens once, at start.
    set("2030-01-05T12:00:00Z");
    let mut agent = start_agent_with(&env, &config, None, &vars);
    wait_until("the missed run", Duration::from_secs(60), || runs() == 3);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(runs(), 3, "several missed days make one run");
    signal(&agent, "TERM");
    assert!(wait_exit(&mut agent, Duration::from_secs(60)).success());
    assert_eq!(env.snapshots_json().len(), 3);
}
