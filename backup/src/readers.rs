//! File readers: a small pool that reads, chunks and hashes changed files in parallel while the
//! walker goes on walking. Each submitted file gets a reply channel the walker waits on only
//! when it closes the directory holding the file.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};
use drvault_repo::chunker::Chunker;
use drvault_repo::Id;

use crate::pipeline::Pipeline;
use crate::{Error, Result};

/// Why a file's content could not be stored.
pub enum ReadError {
    /// The file could not be read: warn, skip it, go on.
    Source(std::io::Error),
    /// What is there now is not what the walk saw (a symlink, a FIFO or another file was put in
    /// its place): warn, skip it, go on.
    Changed(&'static str),
    /// The repository side failed: the backup stops.
    Store(Error),
}

/// Extended attributes as read, and an error reading them.
pub type ReadXattrs = (Vec<(Vec<u8>, Vec<u8>)>, Option<std::io::Error>);

pub struct ReadResult {
    pub content: Result<Vec<Id>, ReadError>,
    pub bytes_read: u64,
    /// The file's extended attributes, read from the descriptor its content came from (when
    /// asked for), and an error reading them.
    pub xattrs: Option<ReadXattrs>,
}

/// The answer for one submitted file.
pub type Pending = Receiver<ReadResult>;

/// A file to read: the entry `name` of the walked directory `dir`, which the walk saw as the
/// regular file `id` (device, inode).
pub struct FileToRead {
    pub dir: Arc<OwnedFd>,
    pub name: Vec<u8>,
    pub id: (u64, u64),
    /// Read its extended attributes too (they are not the parent snapshot's).
    pub xattrs: bool,
}

struct ReadJob {
    file: FileToRead,
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
                    .map_err(|e| Error::Internal(format!("cannot start a reader thread: {e}")))?,
            );
        }
        Ok(Readers {
            jobs: Some(tx),
            handles,
        })
    }

    pub fn submit(&self, file: FileToRead) -> Result<Pending> {
        let (reply, pending) = bounded(1);
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| Error::Internal("the readers were used after they stopped".into()))?;
        jobs.send(ReadJob { file, reply })
            .map_err(|_| Error::Internal("the reader threads stopped".into()))?;
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
        let mut xattrs = None;
        let content = read_file(
            &pipeline,
            &chunker,
            &job.file,
            &mut buf,
            &mut bytes_read,
            &mut xattrs,
        );
        let _ = job.reply.send(ReadResult {
            content,
            bytes_read,
            xattrs,
        });
    }
}

/// Opens the file the walk saw, relative to its directory's descriptor: no symlink is
/// followed, a FIFO or device put in its place neither blocks nor is read, and the opened file
/// must be the walked one.
/// Returns the file, its size and whether it has holes.
fn open_walked(job: &FileToRead) -> Result<(File, u64, bool), ReadError> {
    use rustix::fs::{FileType, Mode, OFlags};
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(
        &*job.dir,
        OsStr::from_bytes(&job.name),
        flags,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) => {
            return Err(ReadError::Changed("it was replaced by a symlink"))
        }
        Err(e) => return Err(ReadError::Source(e.into())),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| ReadError::Source(e.into()))?;
    if FileType::from_raw_mode(st.st_mode as _) != FileType::RegularFile {
        return Err(ReadError::Changed("it is no longer a regular file"));
    }
    if crate::metadata::file_id(&st) != job.id {
        return Err(ReadError::Changed("another file was put in its place"));
    }
    let (size, allocated) = (st.st_size as u64, st.st_blocks as u64 * 512);
    // Fewer blocks than bytes: it has holes, which are not read.
    Ok((File::from(fd), size, allocated < size))
}

fn read_file(
    pipeline: &Pipeline,
    chunker: &Chunker,
    job: &FileToRead,
    buf: &mut Vec<u8>,
    bytes_read: &mut u64,
    xattrs: &mut Option<ReadXattrs>,
) -> Result<Vec<Id>, ReadError> {
    drvault_repo::failpoint::hit_blocking("backup.before-open");
    let (file, size, sparse) = open_walked(job)?;
    if job.xattrs {
        use std::os::fd::AsFd;
        *xattrs = Some(crate::metadata::read_xattrs_fd(file.as_fd()));
    }
    let file: Box<dyn std::io::Read> = if sparse {
        Box::new(crate::sparse::SparseReader::new(file, size))
    } else {
        Box::new(file)
    };
    let mut stream = chunker.stream(file, buf);
    let mut content = Vec::new();
    while let Some((chunk, zeros)) = stream.next_chunk().map_err(ReadError::Source)? {
        // A stop request ends the backup between two chunks: the chunks handed over so far
        // are packed, uploaded and indexed before the error reaches the caller.
        pipeline.check_cancelled().map_err(ReadError::Store)?;
        *bytes_read += chunk.len() as u64;
        content.push(pipeline.add_data(chunk, zeros).map_err(ReadError::Store)?);
    }
    Ok(content)
}
