//! Directories whose files are still with the readers.
//!
//! The walk queues each directory once it has listed it and goes on walking; a directory's tree
//! is stored when the readers' answers for its files are in. Waiting at the end of every
//! directory instead (as the walk did) left the readers idle while the walker waited and the
//! walker idle while they read: with ten small files per directory, a third of a backup's CPU
//! went to threads spinning on empty channels. Queued directories are stored oldest first,
//! which is children before parents (a directory is queued after everything below it), so a
//! parent finds each child's tree ID stored.

use std::collections::{HashMap, VecDeque};

use drvault_repo::format::Node;
use drvault_repo::Id;

use super::{Entry, Walker};
use crate::readers::ReadError;
use crate::{Error, Result};

/// Files with the readers whose directories are not stored yet, beyond which the walk waits.
/// Each holds its directory's descriptor open until read, so this also bounds the descriptors
/// held beyond the walk's own path.
const MAX_PENDING_FILES: usize = 256;
/// Directories queued, beyond which the walk waits.
const MAX_QUEUED_DIRS: usize = 1024;
/// Entries and chunk IDs queued (an unchanged file's whole chunk list is held with its entry),
/// beyond which the walk waits: bounds memory while one large file is read (a few tens of MiB).
const MAX_QUEUED_WEIGHT: usize = 128 * 1024;

#[derive(Default)]
pub(super) struct Deferred {
    queue: VecDeque<QueuedDir>,
    /// Tree IDs of stored directories whose parents are not stored yet, by slot.
    trees: HashMap<u64, Id>,
    next_slot: u64,
    pending_files: usize,
    weight: usize,
}

struct QueuedDir {
    entries: Vec<Entry>,
    slot: u64,
    files: usize,
    weight: usize,
}

impl QueuedDir {
    /// Every reader's answer for this directory is in: storing it does not wait.
    fn ready(&self) -> bool {
        self.entries
            .iter()
            .all(|e| e.pending.as_ref().is_none_or(|(rx, _, _)| !rx.is_empty()))
    }
}

impl Walker {
    /// Queues a listed directory; returns the slot its tree ID will be stored in.
    pub(super) fn defer_dir(&mut self, entries: Vec<Entry>) -> Result<u64> {
        let d = &mut self.deferred;
        let slot = d.next_slot;
        d.next_slot += 1;
        let files = entries.iter().filter(|e| e.pending.is_some()).count();
        let weight = entries.iter().map(|e| 1 + e.node.content.len()).sum();
        d.pending_files += files;
        d.weight += weight;
        d.queue.push_back(QueuedDir {
            entries,
            slot,
            files,
            weight,
        });
        self.settle(false)?;
        Ok(slot)
    }

    /// Stores the queued directories that are ready, and more (waiting for their readers)
    /// while too many are queued; every one when `all`.
    pub(super) fn settle(&mut self, all: bool) -> Result<()> {
        loop {
            let d = &self.deferred;
            let over = d.pending_files > MAX_PENDING_FILES
                || d.queue.len() > MAX_QUEUED_DIRS
                || d.weight > MAX_QUEUED_WEIGHT;
            let go = d.queue.front().is_some_and(|q| all || over || q.ready());
            if !go {
                return Ok(());
            }
            let Some(q) = self.deferred.queue.pop_front() else {
                return Ok(());
            };
            self.deferred.pending_files -= q.files;
            self.deferred.weight -= q.weight;
            let nodes = self.resolve(q.entries)?;
            let id = self.store_tree(nodes)?;
            self.deferred.trees.insert(q.slot, id);
        }
    }

    /// Waits for the readers' answers for `entries`, dropping files that could not be read,
    /// and gives each directory its stored tree.
    pub(super) fn resolve(&mut self, entries: Vec<Entry>) -> Result<Vec<Node>> {
        let mut nodes = Vec::with_capacity(entries.len());
        for Entry {
            mut node,
            pending,
            subtree,
        } in entries
        {
            if let Some(slot) = subtree {
                let id = self.deferred.trees.remove(&slot).ok_or_else(|| {
                    Error::Internal("a directory's tree was not stored before its parent's".into())
                })?;
                node.subtree = Some(id);
            }
            let Some((rx, had_parent, path)) = pending else {
                nodes.push(node);
                continue;
            };
            let answer = rx
                .recv()
                .map_err(|_| Error::Internal("a reader thread stopped".into()))?;
            self.summary.bytes_read += answer.bytes_read;
            if let Some((xattrs, xerr)) = answer.xattrs {
                node.xattrs = xattrs;
                if let Some(e) = xerr {
                    self.warn(&path, &format!("cannot read extended attributes: {e}"));
                }
            }
            match answer.content {
                Ok(content) => {
                    node.content = content;
                    if had_parent {
                        self.summary.files_changed += 1;
                    } else {
                        self.summary.files_new += 1;
                    }
                    nodes.push(node);
                }
                Err(ReadError::Source(e)) => self.warn(&path, &format!("cannot read: {e}")),
                Err(ReadError::Changed(why)) => self.warn(
                    &path,
                    &format!("changed since it was walked ({why}): skipped"),
                ),
                Err(ReadError::Store(e)) => return Err(e),
            }
            self.report();
        }
        Ok(nodes)
    }
}
