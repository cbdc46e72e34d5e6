//! The storing half of the backup pipeline, as bounded stages:
//!
//! walker (caller's thread: read, chunk, keyed hash, dedup)
//!   → `seal` workers (one per core: zstd, AES-256-GCM, pack building)
//!   → uploader (tokio: bounded parallel pack uploads)
//!
//! Each channel is bounded, so memory stays fixed whatever the size of the files.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{bounded, Receiver, Sender};
use drvault_repo::blob::BlobSealer;
use drvault_repo::cancel::Cancel;
use drvault_repo::format::BlobKind;
use drvault_repo::packer::{FinishedPack, PackBuffers, PackBuilder};
use drvault_repo::{Id, IdSet, Repository};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::{Error, Result};

fn internal(what: &str) -> Error {
    Error::Internal(what.to_string())
}

struct Job {
    kind: BlobKind,
    id: Id,
    data: Vec<u8>,
}

/// Packs being filled, one per blob kind: trees and data live in separate packs so that
/// reading a snapshot's trees does not fetch file data.
struct Packers {
    data: PackBuilder,
    tree: PackBuilder,
    buffers: PackBuffers,
}

impl Packers {
    /// Data packs reuse their buffers; tree packs, a small share of most backups, do not (a
    /// pooled buffer is wholly resident, a fresh one only as far as it is filled).
    fn new(target: usize) -> Self {
        let buffers = PackBuffers::default();
        Packers {
            data: PackBuilder::pooled(target, &buffers),
            tree: PackBuilder::new(target),
            buffers,
        }
    }

    /// Takes the builder of `kind`, leaving an empty one in its place.
    fn take(&mut self, kind: BlobKind, target: usize) -> PackBuilder {
        let fresh = match kind {
            BlobKind::Data => PackBuilder::pooled(target, &self.buffers),
            BlobKind::Tree => PackBuilder::new(target),
        };
        std::mem::replace(self.get(kind), fresh)
    }

    fn get(&mut self, kind: BlobKind) -> &mut PackBuilder {
        match kind {
            BlobKind::Data => &mut self.data,
            BlobKind::Tree => &mut self.tree,
        }
    }
}

pub struct Pipeline {
    repo: Arc<Repository>,
    jobs: Option<Sender<Job>>,
    /// Chunk buffers the seal workers are done with: copying a chunk into one of these costs
    /// no page faults, a fresh allocation per chunk did (a megabyte each).
    spare: Receiver<Vec<u8>>,
    workers: Vec<std::thread::JoinHandle<Result<()>>>,
    packers: Arc<Mutex<Packers>>,
    packs: Option<tokio::sync::mpsc::Sender<FinishedPack>>,
    uploader: Option<JoinHandle<Result<u64>>>,
    rt: Handle,
    /// Blobs queued in this run whose packs are not uploaded yet (the uploader drops them once
    /// the index has them, so this holds what is in flight, not every blob of the run).
    queued: Arc<Mutex<IdSet>>,
    blobs_added: AtomicU64,
    /// The ID of the chunker's run of zeros (holes, zeroed regions), computed once.
    zero_id: std::sync::OnceLock<Id>,
    /// The caller's stop request, checked by whoever feeds the pipeline.
    cancel: Cancel,
}

impl Pipeline {
    pub fn start(
        repo: Arc<Repository>,
        rt: Handle,
        workers: usize,
        cancel: Cancel,
    ) -> Result<Self> {
        let (tx, rx) = bounded::<Job>(workers * 2);
        let (spare_tx, spare) = bounded::<Vec<u8>>(workers * 2 + 2);
        let (pack_tx, pack_rx) = tokio::sync::mpsc::channel::<FinishedPack>(1);
        let target = repo.config().pack_size as usize;
        let packers = Arc::new(Mutex::new(Packers::new(target)));
        let mut handles = Vec::new();
        for i in 0..workers {
            let rx = rx.clone();
            let repo = repo.clone();
            let packers = packers.clone();
            let pack_tx = pack_tx.clone();
            let spare_tx = spare_tx.clone();
            let h = std::thread::Builder::new()
                .name(format!("seal-{i}"))
                .spawn(move || seal_worker(rx, repo, packers, (pack_tx, spare_tx)))
                .map_err(|e| Error::Internal(format!("cannot start a worker thread: {e}")))?;
            handles.push(h);
        }
        // Remote targets need several requests in flight to fill the link; a local one does not,
        // and every pack in flight is 16 MiB of memory.
        let in_flight = if repo.store().is_local() { 1 } else { 4 };
        let queued: Arc<Mutex<IdSet>> = Arc::default();
        let uploader = rt.spawn(upload_stage(
            repo.clone(),
            pack_rx,
            in_flight,
            queued.clone(),
        ));
        Ok(Pipeline {
            repo,
            jobs: Some(tx),
            spare,
            workers: handles,
            packers,
            packs: Some(pack_tx),
            uploader: Some(uploader),
            rt,
            queued,
            blobs_added: AtomicU64::new(0),
            zero_id: std::sync::OnceLock::new(),
            cancel,
        })
    }

    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    /// `Err(Error::Interrupted)` once the caller asked to stop: a clean point, since
    /// everything handed over so far is packed, uploaded and indexed by [`Pipeline::finish`].
    pub fn check_cancelled(&self) -> Result<()> {
        Ok(self.cancel.check()?)
    }

    /// Stores a blob unless the repository (or this run) already has it. Returns its ID.
    /// Called from several reader threads at once.
    pub fn add(&self, kind: BlobKind, data: &[u8]) -> Result<Id> {
        self.add_hashed(kind, self.repo.blob_id(data), data)
    }

    /// Stores a data chunk from a [`drvault_repo::chunker::ChunkStream`]; `zeros` is what the
    /// stream said of it (the chunker's run of zeros, whose ID is computed once per backup).
    pub fn add_data(&self, chunk: &[u8], zeros: bool) -> Result<Id> {
        let id = if zeros {
            *self.zero_id.get_or_init(|| self.repo.blob_id(chunk))
        } else {
            self.repo.blob_id(chunk)
        };
        self.add_hashed(BlobKind::Data, id, chunk)
    }

    /// [`Pipeline::add`] for a blob whose ID is already known.
    fn add_hashed(&self, kind: BlobKind, id: Id, data: &[u8]) -> Result<Id> {
        if self.repo.has_blob(&id) {
            return Ok(id);
        }
        {
            let mut queued = self
                .queued
                .lock()
                .map_err(|_| internal("the queued-blob lock is poisoned"))?;
            // Asked again under the lock: the uploader drops a blob from `queued` only after
            // the index has it, so one of the two always knows it.
            if self.repo.has_blob(&id) || !queued.insert(id) {
                return Ok(id);
            }
        }
        self.blobs_added.fetch_add(1, Ordering::Relaxed);
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| internal("the pipeline was used after it finished"))?;
        // A failed send means a worker stopped; `finish` reports why.
        let mut buf = self.spare.try_recv().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        jobs.send(Job {
            kind,
            id,
            data: buf,
        })
        .map_err(|_| internal("the storing stage stopped without an error"))?;
        Ok(id)
    }

    /// Blobs in the dedup set: those whose packs are not uploaded yet.
    #[cfg(test)]
    pub(crate) fn queued_len(&self) -> usize {
        self.queued.lock().map_or(0, |q| q.len())
    }

    pub fn blobs_added(&self) -> u64 {
        self.blobs_added.load(Ordering::Relaxed)
    }

    /// Closes the job queue and waits for the workers; returns the first failure.
    fn join_workers(&mut self) -> Result<()> {
        self.jobs = None;
        let mut failure = None;
        for h in std::mem::take(&mut self.workers) {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => failure = failure.or(Some(internal("a seal worker panicked"))),
            }
        }
        failure.map_or(Ok(()), Err)
    }

    fn uploader_error(&mut self) -> Option<Error> {
        self.packs = None;
        let uploader = self.uploader.take()?;
        match self.rt.block_on(uploader) {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(Error::Internal(format!("the uploader failed: {e}"))),
        }
    }

    /// Drains every stage, uploads the last partial packs and writes the index. Returns the
    /// bytes written to the repository.
    pub fn finish(mut self) -> Result<u64> {
        if let Err(e) = self.join_workers() {
            return Err(self.uploader_error().unwrap_or(e));
        }
        let pack_tx = self
            .packs
            .take()
            .ok_or_else(|| internal("the pipeline was used after it finished"))?;
        for kind in [BlobKind::Data, BlobKind::Tree] {
            let pack = {
                let mut p = self
                    .packers
                    .lock()
                    .map_err(|_| internal("the packer lock is poisoned"))?;
                let b = p.get(kind);
                if b.is_empty() {
                    continue;
                }
                b.finish(self.repo.keys())?
            };
            pack_tx
                .blocking_send(pack)
                .map_err(|_| internal("the uploader stopped without an error"))?;
        }
        drop(pack_tx);
        let uploader = self
            .uploader
            .take()
            .ok_or_else(|| internal("the pipeline was used after it finished"))?;
        let uploaded = self
            .rt
            .block_on(uploader)
            .map_err(|e| Error::Internal(format!("the uploader failed: {e}")))??;
        let repo = self.repo.clone();
        let index = self.rt.block_on(async move { repo.flush_index().await })?;
        Ok(uploaded + index)
    }
}

fn seal_worker(
    rx: Receiver<Job>,
    repo: Arc<Repository>,
    packers: Arc<Mutex<Packers>>,
    (pack_tx, spare_tx): (tokio::sync::mpsc::Sender<FinishedPack>, Sender<Vec<u8>>),
) -> Result<()> {
    let mut sealer = BlobSealer::new(repo.keys(), repo.config().compression_level)?;
    let target = repo.config().pack_size as usize;
    // Reused for every blob this worker seals.
    let mut sealed = Vec::new();
    for job in rx {
        sealed.clear();
        sealer.seal_into(job.kind, &job.id, &job.data, &mut sealed)?;
        let full = {
            let mut p = packers
                .lock()
                .map_err(|_| internal("the packer lock is poisoned"))?;
            if p.get(job.kind)
                .add(job.kind, job.id, job.data.len() as u32, &sealed)
            {
                Some(p.take(job.kind, target))
            } else {
                None
            }
        };
        // Full: the buffer is dropped, which is fine (the reader allocates another).
        let _ = spare_tx.try_send(job.data);
        if let Some(mut builder) = full {
            let pack = builder.finish(repo.keys())?;
            pack_tx
                .blocking_send(pack)
                .map_err(|_| internal("the uploader stopped without an error"))?;
        }
    }
    Ok(())
}

/// Uploads finished packs, `in_flight` at a time. Once a pack is uploaded (and so in the
/// index), its blobs leave `queued`; once a full index object's worth of entries is pending, it
/// is written. Both keep a backup's memory from growing with every blob it adds (on 4,000,000
/// small files, the two held 200 bytes per blob until the end).
async fn upload_stage(
    repo: Arc<Repository>,
    mut rx: tokio::sync::mpsc::Receiver<FinishedPack>,
    in_flight: usize,
    queued: Arc<Mutex<IdSet>>,
) -> Result<u64> {
    let mut running = tokio::task::JoinSet::new();
    let mut total = 0u64;
    let done = |r: std::result::Result<Result<(u64, Vec<Id>)>, tokio::task::JoinError>| {
        let (bytes, ids) =
            r.map_err(|e| Error::Internal(format!("an upload task failed: {e}")))??;
        let mut q = queued
            .lock()
            .map_err(|_| internal("the queued-blob lock is poisoned"))?;
        for id in &ids {
            q.remove(id);
        }
        Ok::<u64, Error>(bytes)
    };
    loop {
        // An upload that ends is reaped (and the index written if due) at once, not when the
        // next pack comes: that may be the last one, at the end of the run.
        let pack = tokio::select! {
            Some(r) = running.join_next(), if !running.is_empty() => {
                total += done(r)?;
                total += repo.flush_index_when_full().await?;
                continue;
            }
            pack = rx.recv(), if running.len() < in_flight => pack,
        };
        let Some(pack) = pack else { break };
        let repo = repo.clone();
        running.spawn(async move {
            let ids: Vec<Id> = pack.entries.iter().map(|e| e.id).collect();
            let bytes = repo.upload_pack(pack).await?;
            Ok::<_, Error>((bytes, ids))
        });
    }
    while let Some(r) = running.join_next().await {
        total += done(r)?;
    }
    Ok(total)
}
