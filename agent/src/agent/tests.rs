//! The scheduler's decisions, at times the tests choose.
#![allow(clippy::unwrap_used)]

use super::*;

fn slots(toml_jobs: &str) -> BTreeMap<String, Slot> {
    let config: Config = toml::from_str(toml_jobs).unwrap();
    config
        .jobs()
        .unwrap()
        .into_iter()
        .map(|job| {
            let slot = Slot {
                job,
                next: None,
                running: false,
            };
            (slot.job.config.name.clone(), slot)
        })
        .collect()
}

fn at(text: &str) -> DateTime<Local> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Local)
}

const JOBS: &str = r#"
[[jobs]]
name = "backup"
kind = "backup"
paths = ["/etc"]
schedule = "0 */5 * * * *"
[[jobs]]
name = "check"
kind = "check"
schedule = "0 */15 * * * *"
[[jobs]]
name = "prune"
kind = "prune"
schedule = "0 */15 * * * *"
"#;

#[test]
fn due_jobs_start_once_and_get_their_next_time() {
    let mut s = slots(JOBS);
    let t0 = at("2026-12-03T10:00:00Z");
    for slot in s.values_mut() {
        slot.next = Some(t0);
    }
    // At t0 the backup and one maintenance job start; the other maintenance job waits.
    let started = take_due(&mut s, t0);
    assert_eq!(started, ["backup", "check"]);
    assert_eq!(s["backup"].next, Some(at("2026-12-03T10:05:00Z")));
    assert_eq!(s["check"].next, Some(at("2026-12-03T10:15:00Z")));
    assert_eq!(s["prune"].next, Some(t0), "still due");
    // Nothing new before the next times; prune still waits while check runs.
    assert!(take_due(&mut s, at("2026-12-03T10:02:00Z")).is_empty());
    // The check ends: prune starts at once.
    s.get_mut("check").unwrap().running = false;
    assert_eq!(take_due(&mut s, at("2026-12-03T10:02:01Z")), ["prune"]);
    assert_eq!(s["prune"].next, Some(at("2026-12-03T10:15:00Z")));
}

#[test]
fn a_run_due_while_the_previous_one_goes_is_skipped_not_queued() {
    let mut s = slots(JOBS);
    s.retain(|name, _| name == "backup");
    s.get_mut("backup").unwrap().next = Some(at("2026-12-03T10:00:00Z"));
    assert_eq!(take_due(&mut s, at("2026-12-03T10:00:00Z")), ["backup"]);
    // Still running at 10:05: that run is skipped and the one after planned.
    assert!(take_due(&mut s, at("2026-12-03T10:05:00Z")).is_empty());
    assert_eq!(s["backup"].next, Some(at("2026-12-03T10:10:00Z")));
    s.get_mut("backup").unwrap().running = false;
    assert_eq!(take_due(&mut s, at("2026-12-03T10:10:00Z")), ["backup"]);
}

#[test]
fn a_run_missed_while_the_agent_was_down_runs_once_at_start() {
    let s = slots(JOBS);
    let job = s["check"].job.clone();
    let last = crate::history::Run {
        id: 1,
        job: "check".into(),
        kind: "check".into(),
        host: "h".into(),
        started: at("2026-12-03T07:00:00Z").timestamp() as f64,
        ended: None,
        result: crate::history::RunResult::Success,
        message: String::new(),
        repository: None,
        figures: Default::default(),
        hooks: Vec::new(),
    };
    // Many runs (every 15 minutes) were missed: one run, now.
    let now = at("2026-12-03T10:30:00Z");
    assert_eq!(new_slot(job.clone(), Some(&last), now).next, Some(now));
    // None was missed: the next quarter of an hour. (Schedules here are in minutes that
    // every time zone shares: offsets are whole quarters of an hour.)
    let soon = at("2026-12-03T07:10:00Z");
    assert_eq!(
        new_slot(job, Some(&last), soon).next,
        Some(at("2026-12-03T07:15:00Z"))
    );
}

#[test]
fn random_delays_stay_within_their_bound_and_vary() {
    let max = Duration::from_secs(300);
    let delays: Vec<Duration> = (0..200).map(|_| random_delay(max)).collect();
    assert!(delays.iter().all(|d| *d <= max));
    assert!(delays.iter().any(|d| *d != delays[0]));
    assert_eq!(random_delay(Duration::ZERO), Duration::ZERO);
}
