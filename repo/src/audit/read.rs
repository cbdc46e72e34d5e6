//! Reading the log: every entry as stored, and the sequence numbers a target holds, listed from
//! where this host's catalog last saw the log so an append's cost stays bounded.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};

use super::{links_to_stored, object_name, sequencer, stored_hash, AuditEntry, AuditLog, PREFIX};
use crate::catalog::Catalog;
use crate::target::{Listed, Target};
use crate::{Error, Result};

/// One entry as stored: the entry, the hash of its stored bytes, and how it links back.
pub(crate) struct Stored {
    pub(crate) entry: AuditEntry,
    pub(crate) stored_hash: String,
    pub(crate) links_to_stored: bool,
}

impl AuditLog<'_> {
    /// The entries in the repository, by sequence number; an entry that fails to open is an error
    /// for that entry, not for the whole log.
    pub async fn read_all(self) -> Result<BTreeMap<u64, Result<AuditEntry>>> {
        Ok(self
            .read_stored()
            .await?
            .into_iter()
            .map(|(seq, s)| (seq, s.map(|s| s.entry)))
            .collect())
    }

    pub(crate) async fn read_stored(self) -> Result<BTreeMap<u64, Result<Stored>>> {
        crate::error::full_keyring(self.keys)?;
        let names: Vec<(u64, String)> = self
            .store
            .list(PREFIX)
            .await?
            .into_iter()
            .filter_map(|l| {
                l.name
                    .strip_prefix(PREFIX)
                    .and_then(|s| s.parse().ok())
                    .map(|seq| (seq, l.name))
            })
            .collect();
        // The sequencer's copy is the log's; another target's serves when it lacks one.
        let sequencer = sequencer(self.store).ok();
        futures::stream::iter(names)
            .map(|(seq, name)| async move {
                let own = match sequencer {
                    Some(t) => t.get(&name).await.ok(),
                    None => None,
                };
                let bytes = match own {
                    Some(b) => Ok(b),
                    None => self.store.get(&name).await,
                };
                let entry = bytes.and_then(|b| {
                    Ok(Stored {
                        entry: self.open(&name, &b)?,
                        stored_hash: stored_hash(&b),
                        links_to_stored: links_to_stored(&b),
                    })
                });
                Ok::<_, Error>((seq, entry))
            })
            .buffer_unordered(16)
            .try_collect()
            .await
    }

    /// Where this host's listings of the log start: the newest entry its catalog holds.
    pub(super) async fn listing_hint(self) -> u64 {
        let Some(dir) = self.catalog_dir.map(std::path::Path::to_path_buf) else {
            return 0;
        };
        tokio::task::spawn_blocking(move || Catalog::open(&dir)?.audit_head_seq())
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or(0)
    }
}

/// The sequence numbers `target` holds, at least those from `from` on: a listing that starts
/// at `from` (what this host's catalog last saw), or the whole log when nothing is there (the
/// log was cut below it, or `from` is 0). Keeps an append's cost bounded as the log grows.
pub(super) async fn seqs_from(target: &Target, from: u64) -> Result<Vec<u64>> {
    let parse = |names: Vec<Listed>| -> Vec<u64> {
        let mut seqs: Vec<u64> = names
            .into_iter()
            .filter_map(|l| l.name.strip_prefix(PREFIX)?.parse::<u64>().ok())
            .collect();
        seqs.sort_unstable();
        seqs
    };
    if from > 1 {
        let tail = parse(target.list_after(PREFIX, &object_name(from - 1)).await?);
        if !tail.is_empty() {
            return Ok(tail);
        }
    }
    Ok(parse(target.list(PREFIX).await?))
}

/// The sequence numbers above `after` that `target` holds (all of them when `after` is 0).
pub(super) async fn seqs_after(target: &Target, after: u64) -> Result<Vec<u64>> {
    let names = if after == 0 {
        target.list(PREFIX).await?
    } else {
        target.list_after(PREFIX, &object_name(after)).await?
    };
    let mut seqs: Vec<u64> = names
        .into_iter()
        .filter_map(|l| l.name.strip_prefix(PREFIX)?.parse::<u64>().ok())
        .filter(|seq| *seq > after)
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}
