//! File readers: a small pool that reads, chunks and hashes changed files in parallel while the
//! walker goes on walking. Each submitted file gets a reply channel the walker waits on only
//! when it closes the directory holding the file.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use crossbeam_channel::{bounded, Receiver, Sender};
use drvault_repo::chunker::Chunker;
use drvault_repo::format::BlobKind;
use drvault_repo::Id;

use super::pipeline::Pipeline;

/// Why a file's content could not be stored.
pub enum ReadError {
    /// The file could not be read: warn, skip it, go on.
    Source(std::io::Error),
    /// The repository side failed: the backup stops.
    Store(anyhow::Error),
}

pub struct ReadResult {
    pub content: Result<Vec<Id>, ReadError>,
    pub bytes_read: u64,
}

/// The answer for one submitted file.
pub type Pending = Receiver<ReadResult>;

struct ReadJob {
    path: PathBuf,
    reply: Sender<ReadResult>,
}

pub struct Readers {
    jobs: Option<Sender<ReadJob>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Readers {
    pub fn start(pipeline: Arc<Pipeline>, chunker: Chunker, n: usize) -> Result<Self> {
        let (tx, rx) = bounded::<ReadJob>(n * 64);
        let mut handles = Vec::new();
        for i in 0..n {
            let (rx, pipeline, chunker) = (rx.clone(), pipeline.clone(), chunker.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("read-{i}"))
                    .spawn(move || reader_loop(rx, pipeline, chunker))
                    .context("cannot start a reader thread")?,
            );
        }
        Ok(Readers {
            jobs: Some(tx),
            handles,
        })
    }

    pub fn submit(&self, path: PathBuf) -> Result<Pending> {
        let (reply, pending) = bounded(1);
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| anyhow!("readers already stopped"))?;
        jobs.send(ReadJob { path, reply })
            .map_err(|_| anyhow!("the reader threads stopped"))?;
        Ok(pending)
    }

    pub fn finish(mut self) {
        self.jobs = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn reader_loop(rx: Receiver<ReadJob>, pipeline: Arc<Pipeline>, chunker: Chunker) {
    let mut buf = Vec::new();
    for job in rx {
        let mut bytes_read = 0;
        let content = read_file(&pipeline, &chunker, &job.path, &mut buf, &mut bytes_read);
        let _ = job.reply.send(ReadResult {
            content,
            bytes_read,
        });
    }
}

fn read_file(
    pipeline: &Pipeline,
    chunker: &Chunker,
    path: &PathBuf,
    buf: &mut Vec<u8>,
    bytes_read: &mut u64,
) -> Result<Vec<Id>, ReadError> {
    drvault_repo::failpoint::hit_blocking("backup.before-open");
    let file = File::open(path).map_err(ReadError::Source)?;
    let mut stream = chunker.stream(file, buf);
    let mut content = Vec::new();
    while let Some(chunk) = stream.next().map_err(ReadError::Source)? {
        // A stop request ends the backup between two chunks: the chunks handed over so far
        // are packed, uploaded and indexed before the error reaches the caller.
        if crate::stop::requested() {
            return Err(ReadError::Store(crate::stop::Interrupted.into()));
        }
        *bytes_read += chunk.len() as u64;
        content.push(
            pipeline
                .add(BlobKind::Data, chunk)
                .map_err(ReadError::Store)?,
        );
    }
    Ok(content)
}
