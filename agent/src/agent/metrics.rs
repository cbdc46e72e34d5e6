//! The Prometheus endpoint: `GET /metrics` in the text exposition format (version 0.0.4).
//! Every metric is named `drvault_…`, labelled by job or target.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use drvault_repo::sync::TargetStatus;

use crate::history::{Run, RunResult};

/// What the endpoint reports; the agent updates it as jobs end.
#[derive(Default)]
pub struct State {
    pub jobs: BTreeMap<String, JobState>,
    pub targets: Vec<TargetStatus>,
    pub up_since: f64,
}

#[derive(Default, Clone)]
pub struct JobState {
    pub kind: String,
    pub running: bool,
    pub last_run: Option<Run>,
    pub last_success: Option<f64>,
    /// Time of the newest snapshot a run of this (backup) job made.
    pub newest_snapshot: Option<f64>,
    pub rpo_objective: Option<f64>,
    pub runs: BTreeMap<&'static str, u64>,
}

impl JobState {
    pub fn record(&mut self, run: &Run) {
        if matches!(run.result, RunResult::Success | RunResult::Partial) {
            self.last_success = run.ended.or(self.last_success);
            if let Some(t) = run.figures.snapshot_time {
                self.newest_snapshot = Some(self.newest_snapshot.map_or(t, |n| n.max(t)));
            }
        }
        let key = match run.result {
            RunResult::Success => "success",
            RunResult::Partial => "partial",
            RunResult::Failed => "failed",
            RunResult::Interrupted => "interrupted",
            RunResult::Running => return,
        };
        *self.runs.entry(key).or_insert(0) += 1;
        self.last_run = Some(run.clone());
    }
}

pub type Shared = Arc<Mutex<State>>;

/// A label value escaped as the exposition format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn help(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(
            self.0,
            "# HELP drvault_{name} {help}\n# TYPE drvault_{name} {kind}"
        );
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(self.0, "drvault_{name} {value}");
        } else {
            let _ = writeln!(self.0, "drvault_{name}{{{}}} {value}", labels.join(","));
        }
    }
}

pub fn render(state: &State, now: f64) -> String {
    let mut o = Out(String::new());
    let jobs = &state.jobs;
    type Getter = fn(&JobState) -> Option<f64>;
    let per_job: [(&str, &str, &str, Getter); 9] = [
        (
            "job_last_success_timestamp_seconds",
            "gauge",
            "Unix time the job last ended successfully.",
            |j| j.last_success,
        ),
        (
            "job_last_run_timestamp_seconds",
            "gauge",
            "Unix time the job's last run started.",
            |j| j.last_run.as_ref().map(|r| r.started),
        ),
        (
            "job_last_duration_seconds",
            "gauge",
            "Duration of the job's last run.",
            |j| j.last_run.as_ref().and_then(|r| r.duration()),
        ),
        (
            "job_last_success",
            "gauge",
            "1 when the job's last run succeeded, else 0.",
            |j| {
                j.last_run
                    .as_ref()
                    .map(|r| f64::from(u8::from(r.result == RunResult::Success)))
            },
        ),
        ("job_running", "gauge", "1 while the job runs.", |j| {
            Some(f64::from(u8::from(j.running)))
        }),
        (
            "job_last_files",
            "gauge",
            "Files the job's last run processed.",
            |j| j.last_run.as_ref().map(|r| r.figures.files as f64),
        ),
        (
            "job_last_bytes_read",
            "gauge",
            "Bytes the job's last run read.",
            |j| j.last_run.as_ref().map(|r| r.figures.bytes_read as f64),
        ),
        (
            "job_last_bytes_added",
            "gauge",
            "Bytes the job's last run added to the repository.",
            |j| j.last_run.as_ref().map(|r| r.figures.bytes_added as f64),
        ),
        (
            "job_last_errors",
            "gauge",
            "Entries the job's last run could not read.",
            |j| j.last_run.as_ref().map(|r| r.figures.errors as f64),
        ),
    ];
    for (name, kind, help, get) in per_job {
        o.help(name, kind, help);
        for (job, j) in jobs {
            if let Some(v) = get(j) {
                o.sample(name, &[("job", job), ("kind", &j.kind)], v);
            }
        }
    }
    o.help(
        "job_runs_total",
        "counter",
        "Runs of the job since the agent started, by result.",
    );
    for (job, j) in jobs {
        for (result, n) in &j.runs {
            o.sample(
                "job_runs_total",
                &[("job", job), ("result", result)],
                *n as f64,
            );
        }
    }
    o.help(
        "rpo_seconds",
        "gauge",
        "Current recovery point: age of the newest snapshot the backup job made.",
    );
    for (job, j) in jobs {
        if let Some(t) = j.newest_snapshot {
            o.sample("rpo_seconds", &[("job", job)], (now - t).max(0.0));
        }
    }
    o.help(
        "rpo_objective_seconds",
        "gauge",
        "The backup job's recovery point objective.",
    );
    for (job, j) in jobs {
        if let Some(t) = j.rpo_objective {
            o.sample("rpo_objective_seconds", &[("job", job)], t);
        }
    }
    o.help(
        "target_up",
        "gauge",
        "1 when the target answered its last survey.",
    );
    for t in &state.targets {
        o.sample(
            "target_up",
            &[("target", &t.name)],
            f64::from(u8::from(t.reachable)),
        );
    }
    o.help(
        "target_owed_objects",
        "gauge",
        "Objects other targets hold that the target lacks (drvault sync copies them).",
    );
    for t in &state.targets {
        if t.reachable {
            o.sample("target_owed_objects", &[("target", &t.name)], t.owes as f64);
        }
    }
    o.help(
        "target_bytes",
        "gauge",
        "Bytes the target stores for the repository.",
    );
    for t in &state.targets {
        if t.reachable {
            o.sample("target_bytes", &[("target", &t.name)], t.bytes as f64);
        }
    }
    if let Some(size) = state
        .targets
        .iter()
        .filter(|t| t.reachable)
        .map(|t| t.bytes)
        .max()
    {
        o.help(
            "repository_size_bytes",
            "gauge",
            "Size of the repository (its largest reachable copy).",
        );
        o.sample("repository_size_bytes", &[], size as f64);
    }
    o.help(
        "agent_start_timestamp_seconds",
        "gauge",
        "Unix time the agent started.",
    );
    o.sample("agent_start_timestamp_seconds", &[], state.up_since);
    o.0
}

/// Serves `/metrics` until the task is dropped, with hyper (HTTP/1.1, one request per
/// connection): at most [`MAX_CONNECTIONS`] at once, a deadline for the request head and one for
/// the whole exchange, so neither a flood of idle connections nor a slow client can take the
/// descriptors and memory the backups need.
pub async fn serve(addr: SocketAddr, state: Shared) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    tracing::info!("metrics on http://{addr}/metrics");
    Ok(tokio::spawn(async move {
        // Connections beyond the cap wait in the kernel's backlog.
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let conn = match listener.accept().await {
                Ok((conn, _)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    conn
                }
                Err(e) => {
                    // Out of descriptors, or the like: wait instead of spinning on the error.
                    tracing::warn!("metrics endpoint cannot accept a connection: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            let state = state.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |req| {
                    let response = respond(&req, &state);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let exchange = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT)
                    .keep_alive(false)
                    .max_buf_size(MAX_REQUEST_BYTES)
                    .serve_connection(hyper_util::rt::TokioIo::new(conn), service);
                match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
                    Ok(Err(e)) => tracing::debug!("metrics request: {e}"),
                    Err(_) => tracing::debug!("metrics request: timed out"),
                    Ok(Ok(())) => {}
                }
            });
        }
    }))
}

/// Requests answered at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 32;
/// The request head must arrive within this; a client that sends nothing is dropped.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// A whole request, read and answered: a client that stalls longer is dropped.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// A scrape's request is a few hundred bytes; hyper's smallest buffer bound is 8 KiB.
const MAX_REQUEST_BYTES: usize = 8192;
const ACCEPT_BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(50);
const ACCEPT_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(2);

type Body = http_body_util::Full<bytes::Bytes>;

/// `GET /metrics` gets the exposition; anything else a short answer saying what is served.
fn respond<B>(req: &hyper::Request<B>, state: &Shared) -> hyper::Response<Body> {
    let (status, body) = if req.method() != hyper::Method::GET {
        (
            hyper::StatusCode::METHOD_NOT_ALLOWED,
            "only GET\n".to_string(),
        )
    } else if req.uri().path() == "/metrics" {
        // A poisoned lock (a panicked job thread) still holds the last figures.
        let state = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (hyper::StatusCode::OK, render(&state, crate::history::now()))
    } else {
        (
            hyper::StatusCode::NOT_FOUND,
            "drvault serves /metrics\n".to_string(),
        )
    };
    let mut response = hyper::Response::new(Body::new(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
