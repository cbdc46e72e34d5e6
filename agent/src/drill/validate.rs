//! Validation commands of a drill: run against the restored data, each within a time limit.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Output kept per command in the evidence record.
const OUTPUT_LIMIT: usize = 4096;

#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    pub command: String,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub seconds: f64,
    /// stdout and stderr, truncated to 4 KiB.
    pub output: String,
}

impl Validation {
    pub fn passed(&self) -> bool {
        !self.timed_out && self.exit_code == Some(0)
    }
}

/// Runs `sh -c COMMAND` with `{restore_dir}` replaced, in its own process group so that a
/// timeout kills everything it started.
pub fn run(command: &str, restore_dir: &Path, timeout: Duration, scratch: &Path) -> Validation {
    let text = command.replace("{restore_dir}", &restore_dir.display().to_string());
    let started = Instant::now();
    let out_path = scratch.join(format!("validate-{}.out", std::process::id()));
    let mut v = Validation {
        command: text.clone(),
        exit_code: None,
        timed_out: false,
        seconds: 0.0,
        output: String::new(),
    };
    let spawned = std::fs::File::create(&out_path).and_then(|f| {
        let err = f.try_clone()?;
        Command::new("sh")
            .arg("-c")
            .arg(&text)
            .env("DRVAULT_RESTORE_DIR", restore_dir)
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(err)
            .process_group(0)
            .spawn()
    });
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            v.output = format!("cannot start: {e}");
            return v;
        }
    };
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                v.exit_code = status.code();
                break;
            }
            Ok(None) if started.elapsed() >= timeout => {
                // The whole process group: the shell and whatever it started.
                let _ = rustix::process::kill_process_group(
                    rustix::process::Pid::from_child(&child),
                    rustix::process::Signal::KILL,
                );
                let _ = child.wait();
                v.timed_out = true;
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                v.output = format!("cannot wait for it: {e}");
                break;
            }
        }
    }
    v.seconds = started.elapsed().as_secs_f64();
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open(&out_path) {
        let _ = f.take(OUTPUT_LIMIT as u64 + 1).read_to_end(&mut buf);
    }
    let _ = std::fs::remove_file(&out_path);
    let mut output = String::from_utf8_lossy(&buf[..buf.len().min(OUTPUT_LIMIT)]).into_owned();
    if buf.len() > OUTPUT_LIMIT {
        output.push_str("\n[truncated]");
    }
    v.output = output;
    v
}
