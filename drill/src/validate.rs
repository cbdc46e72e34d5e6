//! Validation commands of a drill: run against the restored data, each within a time limit.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use zeroize::Zeroizing;

/// Output kept per command in the evidence record.
const OUTPUT_LIMIT: usize = 4096;

/// Names the output files of commands run at once (the agent's jobs run in parallel).
static OUTPUT_FILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

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

/// Variables of drvault's own environment a validation command gets: none of them secret. It
/// gets nothing else: not `DRVAULT_PASSWORD`, `CREDENTIALS_DIRECTORY` or cloud credentials.
pub const INHERITED: &[&str] = &[
    "PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME",
];

/// What a validation command is told, beside the allowlist.
pub struct Environment<'a> {
    pub restore_dir: &'a Path,
    pub snapshot_id: &'a str,
    pub drill_id: &'a str,
    /// The plan's `validate_env`.
    pub plan: &'a BTreeMap<String, String>,
}

/// Secrets that must not reach a drill's evidence even if a command prints them (it may read
/// a password file it can reach): each occurrence becomes `[redacted]`.
#[derive(Default)]
pub struct Redactor {
    secrets: Vec<Zeroizing<String>>,
}

impl Redactor {
    /// Shorter values are not redacted (they would blank out ordinary output).
    const MIN_LEN: usize = 6;

    /// Adds a secret, and each line of it on its own (a password file's passphrase is its
    /// first line).
    pub fn add(&mut self, secret: &[u8]) {
        let text = Zeroizing::new(String::from_utf8_lossy(secret).into_owned());
        for s in std::iter::once(text.as_str()).chain(text.lines()) {
            let s = s.trim();
            if s.len() >= Self::MIN_LEN && !self.secrets.iter().any(|x| x.as_str() == s) {
                self.secrets.push(Zeroizing::new(s.to_string()));
            }
        }
        // Longest first: a secret holding another is replaced whole.
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    pub fn longest(&self) -> usize {
        self.secrets.first().map_or(0, |s| s.len())
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "[redacted]");
            }
        }
        out
    }
}

/// Runs `sh -c COMMAND` with `{restore_dir}` replaced, in its own process group so that a
/// timeout kills everything it started, with a cleared environment: the allowlist
/// [`INHERITED`], `DRVAULT_RESTORE_DIR`, `DRVAULT_SNAPSHOT_ID`, `DRVAULT_DRILL_ID` and the
/// plan's `validate_env`.
pub fn run(
    command: &str,
    env: &Environment<'_>,
    timeout: Duration,
    scratch: &Path,
    redactor: &Redactor,
) -> Validation {
    let restore_dir = env.restore_dir;
    let text = command.replace("{restore_dir}", &restore_dir.display().to_string());
    let mut vars: Vec<(String, String)> = env
        .plan
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.push((
        "DRVAULT_RESTORE_DIR".into(),
        restore_dir.display().to_string(),
    ));
    vars.push(("DRVAULT_SNAPSHOT_ID".into(), env.snapshot_id.into()));
    vars.push(("DRVAULT_DRILL_ID".into(), env.drill_id.into()));
    run_shell(&text, &vars, timeout, scratch, redactor)
}

/// Runs `sh -c TEXT` in its own process group (a timeout kills everything it started) with a
/// cleared environment: the allowlist [`INHERITED`] and `vars`. Its standard output and error
/// are kept (4 KiB, secrets redacted first).
pub fn run_shell(
    text: &str,
    vars: &[(String, String)],
    timeout: Duration,
    scratch: &Path,
    redactor: &Redactor,
) -> Validation {
    let started = Instant::now();
    let out_path = scratch.join(format!(
        "command-{}-{}.out",
        std::process::id(),
        OUTPUT_FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut v = Validation {
        command: redactor.redact(text),
        exit_code: None,
        timed_out: false,
        seconds: 0.0,
        output: String::new(),
    };
    // A new file, never one already there or a symlink (defence in depth: `scratch` is a
    // directory of drvault's own, not a shared one like /tmp).
    let _ = std::fs::remove_file(&out_path);
    let created = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&out_path)
    };
    let spawned = created.and_then(|f| {
        let err = f.try_clone()?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(text).env_clear();
        for name in INHERITED {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        if std::env::var_os("PATH").is_none() {
            cmd.env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            );
        }
        cmd.envs(vars.iter().map(|(k, v)| (k, v)))
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
    // Redacted before it is cut, and read past the limit by the longest secret: a secret
    // across the cut is still found whole.
    let read = OUTPUT_LIMIT + redactor.longest();
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open(&out_path) {
        let _ = f.take(read as u64 + 1).read_to_end(&mut buf);
    }
    let _ = std::fs::remove_file(&out_path);
    let longer = buf.len() > OUTPUT_LIMIT;
    let redacted = redactor.redact(&String::from_utf8_lossy(&buf));
    let mut output: String = redacted.chars().take(OUTPUT_LIMIT).collect();
    if longer {
        output.push_str("\n[truncated]");
    }
    v.output = output;
    v
}
