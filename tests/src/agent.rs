//! Helpers for the tests that run `drvault agent`: its notification socket (the sd_notify
//! protocol systemd speaks), the metrics endpoint over loopback HTTP, signals, waits.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Env;

/// The current UTC year, as a report period.
pub fn chrono_year() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Days since 1970 to a year: exact enough away from New Year's Eve.
    (1970 + secs / 86_400 * 400 / 146_097).to_string()
}

/// The messages an agent sends to the notification socket.
pub struct NotifySocket {
    sock: UnixDatagram,
    pub path: PathBuf,
    seen: Vec<String>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket {
            sock,
            path,
            seen: Vec::new(),
        }
    }

    /// Waits for a message containing `needle` that arrives after the ones already seen.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                if msg.contains(needle) {
                    return msg;
                }
            }
        }
        panic!(
            "no notification with {needle:?} within {timeout:?}; got {:?}",
            self.seen
        );
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The value of the sample whose line starts with `series` (name and labels).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} failed");
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("the agent did not exit within {timeout:?}");
}

pub fn start_agent(env: &Env, config: &Path, notify: Option<&Path>) -> Child {
    start_agent_with(env, config, notify, &[])
}

pub fn start_agent_with(
    env: &Env,
    config: &Path,
    notify: Option<&Path>,
    vars: &[(&str, &str)],
) -> Child {
    let mut c = env.cmd();
    c.envs(vars.iter().copied());
    c.arg("--config").arg(config).arg("-v").arg("agent");
    match notify {
        // As systemd does with WatchdogSec=2s: the agent must ping every second.
        Some(p) => c
            .env("NOTIFY_SOCKET", p)
            .env("WATCHDOG_USEC", "2000000")
            .env_remove("WATCHDOG_PID"),
        None => c.env_remove("NOTIFY_SOCKET").env_remove("WATCHDOG_USEC"),
    };
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(env.path("agent.log")).unwrap())
        .spawn()
        .unwrap()
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("timed out waiting until {what}");
}

pub fn backup_job(name: &str, src: &Path, schedule: &str) -> String {
    format!(
        "[[jobs]]\nname = \"{name}\"\nkind = \"backup\"\npaths = [\"{}\"]\nschedule = \"{schedule}\"\nrpo_objective = \"1h\"\n",
        src.display()
    )
}

/// Sends `request` as is and returns the response's status line ("" when the server closed
/// the connection without one).
pub fn http_raw(port: u16, request: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may close before reading everything (a head too large): not our failure.
    let _ = s.write_all(request);
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text);
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// A source holding one file, and a configuration with the metrics endpoint on a free loopback
/// port and one backup job `etc` of that source on `schedule`: (configuration, metrics port).
pub fn backup_agent_config(env: &Env, schedule: &str) -> (PathBuf, u16) {
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), crate::noise(10_000, 2)).unwrap();
    let port = free_port();
    let config = env.path("drvault.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nmetrics_listen = \"127.0.0.1:{port}\"\n\n{}",
            backup_job("etc", &src, schedule)
        ),
    )
    .unwrap();
    (config, port)
}
