//! Driving the fail points compiled into the test build (repo/src/failpoint.rs): a process is
//! started paused at a named point, another operation runs to completion, then it resumes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A process held at a fail point.
pub struct Paused {
    child: Option<Child>,
    dir: PathBuf,
    point: String,
}

/// Arms `point` (pause) in `cmd`, starts it, and waits until it is reached. `dir` holds the
/// handshake files.
pub fn start_paused(mut cmd: Command, dir: &Path, point: &str) -> Paused {
    std::fs::create_dir_all(dir).unwrap();
    let _ = std::fs::remove_file(dir.join(format!("{point}.reached")));
    let _ = std::fs::remove_file(dir.join(format!("{point}.resume")));
    cmd.env("DRVAULT_FAILPOINTS", format!("{point}=pause"))
        .env("DRVAULT_FAILPOINT_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut p = Paused {
        child: Some(cmd.spawn().unwrap()),
        dir: dir.to_path_buf(),
        point: point.to_string(),
    };
    p.wait_reached();
    p
}

impl Paused {
    /// The held process's id (to send it a signal).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    fn wait_reached(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(300);
        let reached = self.dir.join(format!("{}.reached", self.point));
        while !reached.exists() {
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                let out = self.child.take().unwrap().wait_with_output().unwrap();
                panic!(
                    "exited ({status}) before reaching fail point {}: {}",
                    self.point,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(
                Instant::now() < deadline,
                "fail point {} not reached",
                self.point
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lets the process go on and waits at most `limit` for it to end; `None` (and the
    /// process killed) when it did not.
    pub fn resume_within(mut self, limit: Duration) -> Option<Output> {
        std::fs::write(self.dir.join(format!("{}.resume", self.point)), b"").unwrap();
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().unwrap();
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(self.child.take().unwrap().wait_with_output().unwrap())
    }

    /// Lets the process go on and waits for it to end.
    pub fn resume(mut self) -> Output {
        std::fs::write(self.dir.join(format!("{}.resume", self.point)), b"").unwrap();
        self.child.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
