//! A backup of a stream: a command's standard output (`--stdin-from-command`, a job's
//! `stdin_command`) or drvault's own standard input (`--stdin`), stored as one file of the
//! snapshot. Made for databases and other services whose consistent copy is a stream
//! (`pg_basebackup -Ft -D -`, `mysqldump --single-transaction`, `etcdctl snapshot save`).
//!
//! The stream goes through the same chunker and pipeline as files, so memory stays bounded
//! (two maximum-size chunks) whatever its length, and it deduplicates like any file. A command
//! that fails leaves no snapshot; what was uploaded is indexed, as after a stop request, so the
//! next run does not upload it again.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Instant;

use drvault_repo::cancel::Cancel;
use drvault_repo::format::{validate_name, BlobKind, Node, NodeKind, Summary, Tree, TREE_VERSION};
use drvault_repo::repository::Committed;
use drvault_repo::{Id, Repository};

use crate::{Error, Pipeline, Result, Work};

/// Where the stream comes from.
pub enum StreamSource {
    /// Run this command (program and arguments, no shell) and store its standard output.
    Command {
        argv: Vec<OsString>,
        /// Variables set for it on top of drvault's environment, which it gets without
        /// drvault's secrets ([`SECRET_VARIABLES`]).
        env: Vec<(String, String)>,
    },
    /// drvault's own standard input.
    Stdin,
}

/// Variables of drvault's environment a stream command does not get: the passphrase and the
/// storage credentials (a database dump needs neither). Names starting with one of
/// [`SECRET_PREFIXES`] are removed too.
pub const SECRET_VARIABLES: &[&str] = &[
    "DRVAULT_PASSWORD",
    "CREDENTIALS_DIRECTORY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "GOOGLE_SERVICE_ACCOUNT",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_MASTER_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_TOKEN",
    "AZURE_CLIENT_SECRET",
];

/// Every variable whose name starts with one of these is removed from a stream command's
/// environment: the cloud SDKs' credentials come in many names (`AWS_WEB_IDENTITY_TOKEN_FILE`,
/// `AZURE_STORAGE_SAS_TOKEN`, ...) and drvault's own variables name its secrets' files.
pub const SECRET_PREFIXES: &[&str] = &["AWS_", "AZURE_", "GOOGLE_", "DRVAULT_"];

/// Whether a stream command must not inherit the variable `name`.
fn is_secret(name: &std::ffi::OsStr) -> bool {
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(name);
    SECRET_VARIABLES.iter().any(|v| v.as_bytes() == bytes)
        || SECRET_PREFIXES
            .iter()
            .any(|p| bytes.starts_with(p.as_bytes()))
}

/// The components of a stream's file name in the snapshot; each must be a valid entry name.
pub fn filename_components(name: &str) -> Result<Vec<Vec<u8>>> {
    let parts: Vec<Vec<u8>> = name
        .trim_start_matches('/')
        .split('/')
        .map(|c| c.as_bytes().to_vec())
        .collect();
    for p in &parts {
        if let Err(e) = validate_name(p) {
            return Err(Error::Usage(format!(
                "--stdin-filename {name:?}: {e}; give a name such as \"db.sql\" or \
                 \"postgres/base.tar\""
            )));
        }
    }
    Ok(parts)
}

/// Stores the stream as the file `components` (its path below the snapshot's root) of a new
/// snapshot committed under the work's session.
pub(crate) fn run(
    work: Work<'_>,
    components: Vec<Vec<u8>>,
    source: &StreamSource,
    cancel: Cancel,
) -> Result<Committed> {
    let started = Instant::now();
    let time_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let pipeline = Pipeline::start(
        work.repo.clone(),
        work.rt.handle().clone(),
        crate::workers(),
        cancel.clone(),
    )?;
    let stored = store_stream(&pipeline, &work.repo, source, &cancel);
    let (content, size) = match stored {
        Ok(done) => done,
        // What was uploaded is indexed (a storage failure is reported in preference to its
        // echo), and no snapshot is made.
        Err(e) => return Err(pipeline.finish().err().unwrap_or(e)),
    };
    let owner = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    let node = |name: &[u8], kind, mode| Node::bare(name.to_vec(), kind, mode, owner, time_ns);
    // A dump holds a service's data: readable by its owner only, as are its directories.
    let (last, dirs) = components
        .split_last()
        .ok_or_else(|| Error::Usage("--stdin-filename: an empty file name".into()))?;
    let mut entry = Node {
        size,
        content,
        ..node(last, NodeKind::File, 0o600)
    };
    let mut tree_ids = 0u64;
    let mut store_tree = |entry: Node| -> Result<Id> {
        tree_ids += 1;
        let tree = Tree {
            version: TREE_VERSION,
            entries: vec![entry],
        };
        pipeline.add(BlobKind::Tree, &tree.encode())
    };
    for dir in dirs.iter().rev() {
        let subtree = store_tree(entry)?;
        entry = Node {
            subtree: Some(subtree),
            ..node(dir, NodeKind::Dir, 0o700)
        };
    }
    let tree = store_tree(entry)?;
    let blobs_added = pipeline.blobs_added();
    let bytes_added = pipeline.finish()?;
    let summary = Summary {
        files_new: 1,
        dirs: dirs.len() as u64,
        bytes_read: size,
        bytes_total: size,
        bytes_added,
        blobs_added,
        duration_ms: started.elapsed().as_millis() as u64,
        ..Summary::default()
    };
    let path = [b"/".as_slice(), &components.join(&b'/')].concat();
    work.commit(vec![path], tree, summary, time_ns)
}

/// Chunks and stores the stream; returns its content and length. A command is waited for,
/// and its failure (exit status, signal) is the backup's failure. It runs in a process group of
/// its own, which a stop request or a failed store ends whole: a shell's pipeline, a dump
/// tool's helpers, also while the command writes nothing.
fn store_stream(
    pipeline: &Pipeline,
    repo: &Repository,
    source: &StreamSource,
    cancel: &Cancel,
) -> Result<(Vec<Id>, u64)> {
    match source {
        StreamSource::Stdin => store_reader(pipeline, repo, std::io::stdin().lock()),
        StreamSource::Command { argv, env } => {
            let (program, args) = argv.split_first().ok_or_else(|| {
                Error::Usage("--stdin-from-command needs a command after `--`".into())
            })?;
            let shown = shown(argv);
            let mut cmd = Command::new(program);
            cmd.args(args)
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                // Its messages are drvault's log: the terminal, or the agent's journal.
                .stderr(Stdio::inherit());
            for (name, _) in std::env::vars_os() {
                if is_secret(&name) {
                    cmd.env_remove(&name);
                }
            }
            cmd.envs(env.iter().map(|(k, v)| (k, v)));
            let mut child = cmd.spawn().map_err(|e| {
                Error::Source(format!("cannot start {shown}: {e}; no snapshot was made"))
            })?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| Error::Internal(format!("{shown}: no standard output pipe")))?;
            let group = rustix::process::Pid::from_child(&child);
            let stored = {
                let _watch = StopWatch::start(group, cancel.clone());
                store_reader(pipeline, repo, stdout)
            };
            // The group leader is not reaped yet, so the group ID cannot have been reused.
            if stored.is_err() || cancel.is_cancelled() {
                // Stopped, or the repository failed: the command's output is no longer read.
                kill_group(group, rustix::process::Signal::KILL);
            }
            let status = child
                .wait()
                .map_err(|e| Error::Source(format!("cannot wait for {shown}: {e}")))?;
            let stored = stored?;
            pipeline.check_cancelled()?;
            if !status.success() {
                return Err(Error::Source(format!(
                    "{shown} {}; no snapshot was made (what it wrote before is stored and \
                     indexed, so the next run does not upload it again)",
                    describe(status)
                )));
            }
            Ok(stored)
        }
    }
}

fn kill_group(group: rustix::process::Pid, signal: rustix::process::Signal) {
    let _ = rustix::process::kill_process_group(group, signal);
}

/// While a command's output is read: on a stop request, asks the command's process group to
/// end (SIGTERM), and ends it (SIGKILL) if it is still there after a grace period. Reading may
/// be blocked on a command that writes nothing for minutes (a base backup waiting for a
/// checkpoint), so the request cannot wait for the next chunk.
struct StopWatch {
    done: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StopWatch {
    const POLL: std::time::Duration = std::time::Duration::from_millis(100);
    const GRACE: std::time::Duration = std::time::Duration::from_secs(5);

    fn start(group: rustix::process::Pid, cancel: Cancel) -> StopWatch {
        use std::sync::mpsc::RecvTimeoutError::Timeout;
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while let Err(Timeout) = finished.recv_timeout(Self::POLL) {
                if cancel.is_cancelled() {
                    kill_group(group, rustix::process::Signal::TERM);
                    if let Err(Timeout) = finished.recv_timeout(Self::GRACE) {
                        kill_group(group, rustix::process::Signal::KILL);
                    }
                    return;
                }
            }
        });
        StopWatch {
            done: Some(done),
            thread: Some(thread),
        }
    }
}

impl Drop for StopWatch {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn store_reader(
    pipeline: &Pipeline,
    repo: &Repository,
    reader: impl Read,
) -> Result<(Vec<Id>, u64)> {
    let chunker = repo.chunker();
    let mut buf = Vec::new();
    let mut stream = chunker.stream(reader, &mut buf);
    let (mut content, mut size) = (Vec::new(), 0u64);
    while let Some((chunk, zeros)) = stream
        .next_chunk()
        .map_err(|e| Error::Source(format!("cannot read the stream: {e}; no snapshot was made")))?
    {
        pipeline.check_cancelled()?;
        size += chunk.len() as u64;
        content.push(pipeline.add_data(chunk, zeros)?);
    }
    Ok((content, size))
}

/// The command as shown in messages: its program and arguments, each quoted when needed.
fn shown(argv: &[OsString]) -> String {
    let words: Vec<String> = argv
        .iter()
        .map(|a| {
            let s = drvault_repo::printable::path(std::path::Path::new(a)).to_string();
            if s.is_empty() || s.contains(char::is_whitespace) {
                format!("{s:?}")
            } else {
                s
            }
        })
        .collect();
    format!("`{}`", words.join(" "))
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "failed".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_any_cloud_or_drvault_variable_are_secret() {
        for name in [
            "DRVAULT_PASSWORD",
            "DRVAULT_PASSWORD_FILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AZURE_STORAGE_SAS_TOKEN",
            "GOOGLE_OAUTH_ACCESS_TOKEN",
            "CREDENTIALS_DIRECTORY",
        ] {
            assert!(is_secret(std::ffi::OsStr::new(name)), "{name}");
        }
        for name in ["PATH", "HOME", "PGHOST", "MY_AWS_REGION", "LANG"] {
            assert!(!is_secret(std::ffi::OsStr::new(name)), "{name}");
        }
    }
}
