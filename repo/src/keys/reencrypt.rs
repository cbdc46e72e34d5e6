//! Re-encryption: every object still sealed under a retiring data-key epoch is sealed again under
//! the active one, then the retiring epochs' keys are destroyed (docs/FORMAT.md sections 6 and
//! 16, docs/THREAT-MODEL.md "Key rotation").

use std::collections::{BTreeSet, HashSet};

use drvault_keyring::{EpochState, Keys, ObjectKind};
use futures::StreamExt;

use super::*;
use crate::blob::open_blob;
use crate::cancel::Cancel;
use crate::format::PackEntry;
use crate::lease::Lease;
use crate::packer::FinishedPack;
use crate::packer::PackBuilder;
use crate::repository::{name_id, verify_name};
use crate::session::live_sessions;

/// Packs rewritten between index flushes: what a crash can make the next run redo.
const FLUSH_EVERY: usize = 32;
/// What the refusal on an incomplete listing names.
const REENCRYPT_ACTION: &str = "re-encrypt (it deletes packs under old epochs)";
const RETIRE_ACTION: &str = "retire key epochs (it destroys their keys)";

/// What a re-encryption did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReencryptReport {
    /// Epochs whose objects were rewritten.
    pub epochs: Vec<u32>,
    pub packs_rewritten: u64,
    pub packs_already_done: u64,
    pub bytes_rewritten: u64,
    pub indexes_rewritten: u64,
    /// Old and new names of re-sealed snapshots (a snapshot's id is the hash of its bytes).
    pub snapshots: Vec<(String, String)>,
    /// Epochs retired (key material destroyed).
    pub retired: Vec<u32>,
    /// Why an epoch was not retired (a backup still sealing under it, objects left).
    pub not_retired: Vec<String>,
}

/// Progress of a re-encryption, for the caller to display.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub packs_done: u64,
    pub packs_total: u64,
    pub bytes_done: u64,
}

/// Rewrites every object still sealed under a retiring epoch under the active epoch, then
/// retires those epochs (their keys are destroyed). Blob ids do not change, so
/// deduplication survives; snapshot ids do (they are hashes of the stored bytes).
///
/// Safe to interrupt at any point and run again; safe while other hosts back up (an epoch
/// a running backup still seals under is not retired).
///
/// Stops between two packs when `cancel` is set ([`Error::Interrupted`]). Recorded in the
/// audit log (`key.reencrypt`).
pub async fn reencrypt(
    repo: &Repository,
    progress: &(dyn Fn(Progress) + Sync),
    cancel: &Cancel,
) -> Result<ReencryptReport> {
    Admin { repo }.reencrypt(progress, cancel).await
}

impl Admin<'_> {
    async fn reencrypt(
        &self,
        progress: &(dyn Fn(Progress) + Sync),
        cancel: &Cancel,
    ) -> Result<ReencryptReport> {
        self.repo.keyring()?;
        let started = std::time::Instant::now();
        self.repo
            .store()
            .ensure_deletable(
                "key reencrypt",
                &[paths::DATA, paths::INDEX, paths::SNAPSHOTS, paths::KEYRING],
            )
            .await?;
        self.repo.audit().ready("key.reencrypt").await?;
        let done = async {
            let mut lease = Lease::acquire(self.repo.store(), "re-encryption", LEASE_TTL).await?;
            let result = self.reencrypt_locked(&mut lease, progress, cancel).await;
            let released = lease.release(self.repo.store()).await;
            let report = result?;
            released?;
            Ok(report)
        }
        .await;
        self.repo
            .audit()
            .record_outcome("key.reencrypt", done, |r: &ReencryptReport| {
                serde_json::json!({
                    "epochs": r.epochs, "retired": r.retired, "not_retired": r.not_retired,
                    "packs_rewritten": r.packs_rewritten, "bytes_rewritten": r.bytes_rewritten,
                    "snapshots_resealed": r.snapshots.len(),
                    "seconds": started.elapsed().as_secs_f64(),
                })
            })
            .await
    }

    pub(super) async fn reencrypt_locked(
        &self,
        lease: &mut Lease,
        progress: &(dyn Fn(Progress) + Sync),
        cancel: &Cancel,
    ) -> Result<ReencryptReport> {
        let kr = self.repo.current_keyring().await?;
        if kr.generation() != self.repo.keys().generation() {
            return Err(Error::KeyringChanged);
        }
        let old: BTreeSet<u32> = kr
            .epochs()
            .iter()
            .filter(|e| e.state == EpochState::Retiring)
            .map(|e| e.id)
            .collect();
        let mut report = ReencryptReport {
            epochs: old.iter().copied().collect(),
            ..Default::default()
        };
        if old.is_empty() {
            return Ok(report);
        }
        // Two passes at most: the second picks up objects a backup that started before the
        // rotation wrote under an old epoch while the first pass ran.
        for _ in 0..2 {
            // Clean points: before a pass, and before retirement (each pass ends whole).
            cancel.check()?;
            let remaining = self
                .reencrypt_pass(lease, &old, progress, &mut report, cancel)
                .await?;
            if remaining == 0 {
                break;
            }
        }
        // Sessions before the survey: a backup sealing under an old epoch that ends after this
        // reading is named below; one that ended before it has all its objects in storage, so
        // the survey that follows counts them.
        cancel.check()?;
        let sessions = live_sessions(self.repo.store()).await?;
        let epochs = self
            .repo
            .object_epochs(
                &[paths::DATA, paths::INDEX, paths::SNAPSHOTS],
                Some(RETIRE_ACTION),
            )
            .await?;
        crate::failpoint::hit("reencrypt.before-retire").await;
        let mut retire = Vec::new();
        for e in &old {
            let left = epochs.values().filter(|x| *x == e).count();
            // A running backup explains leftover objects (its packs not yet indexed), so it is
            // named first.
            if let Some(s) = sessions.iter().find(|s| s.epoch == *e) {
                report.not_retired.push(format!(
                    "epoch {e}: a backup on {} (pid {}) that started at {} still seals under it; run this again after it ends",
                    s.host,
                    s.pid,
                    chrono::DateTime::from_timestamp(s.started, 0).map(|t| t.to_rfc3339()).unwrap_or_default()
                ));
            } else if left > 0 {
                report.not_retired.push(format!(
                    "epoch {e}: {left} objects are still sealed under it"
                ));
            } else {
                retire.push(*e);
            }
        }
        if !retire.is_empty() {
            lease.keep_alive(self.repo.store()).await?;
            // Key material is destroyed only on a complete view of every target.
            let mut kr = self.repo.current_keyring().await?;
            kr.retire(&retire)?;
            let keep = self.save_keyring(&kr).await?;
            self.repo.delete_other_keyrings(&keep).await?;
            report.retired = retire;
        }
        Ok(report)
    }

    /// One pass over the repository; returns how many objects it found under old epochs.
    pub(super) async fn reencrypt_pass(
        &self,
        lease: &mut Lease,
        old: &BTreeSet<u32>,
        progress: &(dyn Fn(Progress) + Sync),
        report: &mut ReencryptReport,
        cancel: &Cancel,
    ) -> Result<u64> {
        // Sessions first: a backup sealing under an old epoch passed its keyring check before the
        // rotation, so its session was durable before this reading. Its packs may be missing
        // from the index read below (it indexes them later), so while any such backup was
        // running at this point, no unindexed old pack is deleted.
        let backups_under_old = live_sessions(self.repo.store())
            .await?
            .iter()
            .any(|s| old.contains(&s.epoch));
        let epochs = self
            .repo
            .object_epochs(
                &[paths::DATA, paths::INDEX, paths::SNAPSHOTS],
                Some(REENCRYPT_ACTION),
            )
            .await?;
        let under_old = |name: &str| epochs.get(name).is_some_and(|e| old.contains(e));
        let found = epochs.values().filter(|e| old.contains(e)).count() as u64;
        if found == 0 {
            return Ok(0);
        }
        // Blobs already held by a pack under a current epoch (from an interrupted run).
        let index_names: Vec<String> = self
            .repo
            .store()
            .list_names_complete(paths::INDEX, REENCRYPT_ACTION)
            .await?;
        let files = self.repo.fetch_indexes(index_names.clone()).await?;
        let mut safe_blobs: HashSet<Id> = HashSet::new();
        for (_, f) in &files {
            for p in &f.packs {
                if !under_old(&paths::pack(&p.pack)) && epochs.contains_key(&paths::pack(&p.pack)) {
                    safe_blobs.extend(p.blobs.iter().map(|b| b.id));
                }
            }
        }
        // Only packs an index refers to are rewritten. A pack no index names yet belongs to a
        // backup still running (it would index it after this pass deleted it) or to one that
        // crashed (garbage): the first kind is left for a later run, the second deleted.
        let indexed: HashSet<Id> = files
            .iter()
            .flat_map(|(_, f)| f.packs.iter().map(|p| p.pack))
            .collect();
        crate::failpoint::hit("reencrypt.after-survey").await;
        let (old_packs, unindexed): (Vec<String>, Vec<String>) = epochs
            .keys()
            .filter(|n| n.starts_with(paths::DATA) && under_old(n))
            .cloned()
            .partition(|n| name_id(n).is_ok_and(|id| indexed.contains(&id)));
        if !backups_under_old {
            for name in &unindexed {
                tracing::info!(
                    "{name} is referenced by no index (left by an interrupted backup); deleting it"
                );
                self.repo.store().delete(name).await?;
            }
        }
        let total = old_packs.len() as u64;
        // Three packs in flight: download, re-seal on the blocking pool, upload overlap.
        let safe = &safe_blobs;
        let mut rewritten = futures::stream::iter(old_packs.iter())
            .map(|name| async move {
                let bytes = self.repo.store().get(name).await?;
                verify_name(name, &bytes)?;
                let entries = self.repo.read_pack_header(&name_id(name)?, &bytes)?;
                if entries.iter().all(|e| safe.contains(&e.id)) {
                    return Ok::<_, Error>(None);
                }
                let keyring = self.repo.keys().clone();
                let size = self.repo.config().pack_size as usize;
                let pack = tokio::task::spawn_blocking(move || {
                    reseal_pack(&keyring, &bytes, &entries, size)
                })
                .await
                .map_err(Error::task)??;
                Ok(Some(pack))
            })
            .buffer_unordered(3);
        let mut done = 0u64;
        while let Some(result) = rewritten.next().await {
            lease.keep_alive(self.repo.store()).await?;
            match result? {
                None => report.packs_already_done += 1,
                Some(pack) => {
                    report.bytes_rewritten += pack.bytes.len() as u64;
                    self.repo.upload_pack(pack).await?;
                    report.packs_rewritten += 1;
                }
            }
            done += 1;
            progress(Progress {
                packs_done: done,
                packs_total: total,
                bytes_done: report.bytes_rewritten,
            });
            if done.is_multiple_of(FLUSH_EVERY as u64) {
                self.repo.flush_index().await?;
            }
            // A clean point: the packs rewritten so far are indexed before stopping, so the
            // next run counts them as done (old objects are deleted only after a full pass).
            if cancel.is_cancelled() {
                drop(rewritten);
                self.repo.flush_index().await?;
                return Err(Error::Interrupted);
            }
        }
        drop(rewritten);
        self.repo.flush_index().await?;

        // Index objects: one consolidated set under the active epoch, without the old packs,
        // written before any old index object or pack is deleted.
        lease.keep_alive(self.repo.store()).await?;
        let old_pack_ids: HashSet<Id> = old_packs.iter().filter_map(|n| name_id(n).ok()).collect();
        let index_names: Vec<String> = self
            .repo
            .store()
            .list_names_complete(paths::INDEX, REENCRYPT_ACTION)
            .await?;
        let files = self.repo.fetch_indexes(index_names.clone()).await?;
        let mut seen = HashSet::new();
        let mut keep = Vec::new();
        for (_, f) in files {
            for p in f.packs {
                if !old_pack_ids.contains(&p.pack) && seen.insert(p.pack) {
                    keep.push(p);
                }
            }
        }
        self.repo.queue_index_packs(keep)?;
        self.repo.flush_index().await?;
        let now_listed: HashSet<String> = self
            .repo
            .store()
            .list_names(paths::INDEX)
            .await?
            .into_iter()
            .collect();
        let written: HashSet<&String> = now_listed
            .iter()
            .filter(|n| !index_names.contains(n))
            .collect();
        for name in &index_names {
            if !written.contains(name) {
                self.repo.store().delete(name).await?;
                report.indexes_rewritten += 1;
            }
        }

        // Snapshots: re-sealed one by one; an interrupted run may have written the new copy
        // already, recognised by its plaintext.
        let snaps: Vec<String> = self
            .repo
            .store()
            .list_names_complete(paths::SNAPSHOTS, REENCRYPT_ACTION)
            .await?;
        let mut current: HashSet<[u8; 32]> = HashSet::new();
        for name in snaps
            .iter()
            .filter(|n| !under_old(n) && epochs.contains_key(*n))
        {
            let s = self.repo.load_snapshot(name).await?;
            current.insert(*blake3::hash(&s.encode()).as_bytes());
        }
        for name in snaps.iter().filter(|n| under_old(n)) {
            lease.keep_alive(self.repo.store()).await?;
            let snap = self.repo.load_snapshot(name).await?;
            // The snapshot's own codec: a version 1 snapshot keeps its version 1 bytes.
            let plain = snap.encode();
            if current.insert(*blake3::hash(&plain).as_bytes()) {
                let sealed = if snap.untrusted.is_some() {
                    // Sealed to the public key again, as a host key seals: under the data key
                    // the full keys would vouch for it (a doubtful snapshot stays doubtful).
                    self.repo.seal_as_host(ObjectKind::Snapshot, &plain)?
                } else {
                    self.repo.seal_object(ObjectKind::Snapshot, &plain)?
                };
                let new_name = paths::snapshot(&Id::of_stored(&sealed));
                self.repo
                    .store()
                    .put_new(&new_name, sealed.into(), true)
                    .await?;
                self.repo.load_snapshot(&new_name).await?;
                report.snapshots.push((name.clone(), new_name));
            }
            self.repo.store().delete(name).await?;
        }

        // Old packs last: no index refers to them any more.
        for name in &old_packs {
            self.repo.store().delete(name).await?;
        }
        Ok(found)
    }
}

/// Opens every blob of a pack and seals its payload again under the active epoch (the
/// compressed payload is kept as it is), then verifies every new blob before returning.
fn reseal_pack(
    keyring: &Keys,
    bytes: &[u8],
    entries: &[PackEntry],
    pack_size: usize,
) -> Result<FinishedPack> {
    let sealer = keyring.data_sealer()?;
    let mut builder = PackBuilder::new(pack_size);
    let mut out = Vec::new();
    for e in entries {
        let object = format!("blob {}", e.id);
        let range = e.offset as usize..(e.offset as usize + e.length as usize);
        let sealed = bytes
            .get(range)
            .ok_or_else(|| Error::integrity(&object, "lies outside its pack"))?;
        let (header, payload) = keyring
            .open(&e.id.0, sealed)
            .map_err(|err| crate::repository::key_error(&object, err))?;
        out.clear();
        sealer.seal(header.kind, header.compressed, &e.id.0, &payload, &mut out)?;
        builder.add(e.kind, e.id, e.raw_length, &out);
    }
    let pack = builder.finish(keyring)?;
    for e in &pack.entries {
        let range = e.offset as usize..(e.offset as usize + e.length as usize);
        open_blob(keyring, e.kind, &e.id, e.raw_length, &pack.bytes[range])?;
    }
    Ok(pack)
}
