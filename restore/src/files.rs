//! The files a restore writes: each is created under a temporary name by the writer that has
//! its first blob, and installed (metadata, then renamed to its name) by the writer that wrote
//! its last one, through the descriptors it already holds.
//!
//! Creating, writing and installing a small file is then one path resolution and a handful of
//! system calls in one place, overlapping the decompression of other packs, instead of three
//! passes over every file (create all, write all, install all), each resolving the path again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use drvault_repo::Id;

use crate::collect::Entry;
use crate::fsops::{FileId, Target, TempFile, TEMP_PREFIX};
use crate::Result;

/// The files that could not be restored intact, by entry: the byte ranges lost and why.
pub(crate) type Lost = HashMap<usize, (Vec<(u64, u64)>, String)>;

/// A file whose content this restore writes.
pub(crate) struct RestoredFile {
    /// Its blobs in order (taken from the entry, not copied).
    pub content: Vec<Id>,
    pub size: u64,
    /// The entry it becomes.
    pub entry: usize,
    /// Set once its temporary file exists.
    id: OnceLock<FileId>,
    /// Blob writes still to come; the writer that brings it to 0 installs the file.
    remaining: AtomicUsize,
    installed: AtomicBool,
}

impl RestoredFile {
    pub fn new(content: Vec<Id>, size: u64, entry: usize) -> Self {
        RestoredFile {
            remaining: AtomicUsize::new(content.len()),
            content,
            size,
            entry,
            id: OnceLock::new(),
            installed: AtomicBool::new(false),
        }
    }

    /// What its temporary file is, once created.
    pub fn id(&self) -> Option<FileId> {
        self.id.get().copied()
    }

    pub fn installed(&self) -> bool {
        self.installed.load(Ordering::Acquire)
    }
}

/// Locks that serialise the creation of one file by two writers holding blobs of it.
const CREATE_LOCKS: usize = 64;

/// The files of one restore and what their writers share.
pub(crate) struct Files {
    pub list: Vec<RestoredFile>,
    target: Arc<Target>,
    entries: Arc<Vec<Entry>>,
    /// Unique to this restore: the temporary names of two restores never collide.
    token: String,
    /// Install each file as soon as it is complete (off when the restore verifies every file
    /// first).
    early: bool,
    as_root: bool,
    creating: Vec<Mutex<()>>,
    warnings: Mutex<Vec<String>>,
    /// Set when the restore fails: writers still running (their spans were in flight) create
    /// and install nothing more.
    stopped: AtomicBool,
}

impl Files {
    pub fn new(
        list: Vec<RestoredFile>,
        target: Arc<Target>,
        entries: Arc<Vec<Entry>>,
        early: bool,
        as_root: bool,
    ) -> Self {
        Files {
            list,
            target,
            entries,
            token: temp_token(),
            early,
            as_root,
            creating: (0..CREATE_LOCKS).map(|_| Mutex::new(())).collect(),
            warnings: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The temporary name of file `n`, beside its final name.
    pub fn temp_path(&self, n: usize) -> PathBuf {
        let rel = &self.entries[self.list[n].entry].rel;
        rel.with_file_name(format!("{TEMP_PREFIX}{}-{n}", self.token))
    }

    /// File `n` opened for writing: created (sparse at its size) by the first writer to ask,
    /// opened again and checked by later ones.
    pub fn open(&self, n: usize) -> Result<TempFile> {
        let f = &self.list[n];
        if let Some(id) = f.id() {
            return self.target.reopen_temp(&self.temp_path(n), id, true);
        }
        let _creating = self.creating[n % CREATE_LOCKS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(id) = f.id() {
            return self.target.reopen_temp(&self.temp_path(n), id, true);
        }
        if self.stopped.load(Ordering::Acquire) {
            return Err(crate::Error::Invalid("the restore stopped".into()));
        }
        let rel = &self.entries[f.entry].rel;
        let temp = self.target.create_temp(rel, &self.temp_path(n), f.size)?;
        let _ = f.id.set(temp.id);
        Ok(temp)
    }

    /// Records `writes` blob writes to file `n` (done through `temp`); the last one installs
    /// the file when installing early.
    pub fn wrote(&self, n: usize, writes: usize, temp: TempFile) -> Result<()> {
        let before = self.list[n].remaining.fetch_sub(writes, Ordering::AcqRel);
        if before == writes && self.early && !self.stopped.load(Ordering::Acquire) {
            self.install(n, temp)?;
        }
        Ok(())
    }

    fn install(&self, n: usize, temp: TempFile) -> Result<()> {
        drvault_repo::failpoint::hit_blocking("restore.before-install");
        let e = &self.entries[self.list[n].entry];
        let warnings = self.target.install(temp, (&e.rel, &e.node), self.as_root)?;
        self.list[n].installed.store(true, Ordering::Release);
        if !warnings.is_empty() {
            self.warnings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(warnings);
        }
        Ok(())
    }

    /// Creates the files no writer created (those without content) and are not `lost`, so
    /// that every sound file exists under its temporary name.
    pub fn create_rest(&self, lost: &Lost) -> Result<()> {
        let rest: Vec<usize> = (0..self.list.len())
            .filter(|&n| self.list[n].id().is_none() && !lost.contains_key(&self.list[n].entry))
            .collect();
        crate::parallel::for_each_parallel(&rest, |&n| self.open(n).map(|_| Vec::new())).map(|_| ())
    }

    /// Installs every sound file not installed yet (creating those no writer had to) and
    /// removes the temporary files of the `lost` ones.
    pub fn finish(&self, lost: &Lost) -> Result<()> {
        let rest: Vec<usize> = (0..self.list.len())
            .filter(|&n| !self.list[n].installed())
            .collect();
        crate::parallel::for_each_parallel(&rest, |&n| {
            let f = &self.list[n];
            if lost.contains_key(&f.entry) {
                if let Some(id) = f.id() {
                    self.target.discard(&self.temp_path(n), id)?;
                }
            } else {
                let temp = self.open(n)?;
                self.install(n, temp)?;
            }
            Ok(Vec::new())
        })
        .map(|_| ())
    }

    /// Removes every temporary file still there (after a failure that stops the restore);
    /// installed files are complete and stay.
    pub fn discard_unfinished(&self) {
        self.stopped.store(true, Ordering::Release);
        // Writers of spans still in flight may be creating a file: wait them out, so that every
        // file created is seen below and none is created after.
        for lock in &self.creating {
            drop(lock.lock().unwrap_or_else(|e| e.into_inner()));
        }
        for (n, f) in self.list.iter().enumerate() {
            if let (Some(id), false) = (f.id(), f.installed()) {
                let _ = self.target.discard(&self.temp_path(n), id);
            }
        }
    }

    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Unique per restore: the temporary names of two restores into one tree never collide.
fn temp_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:08x}", std::process::id(), nanos)
}
