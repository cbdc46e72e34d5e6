//! Key management on an open repository: slots, data-key epochs, rotation, re-encryption and
//! retirement (docs/FORMAT.md §6 and §16, docs/THREAT-MODEL.md "Key rotation").

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use drvault_keyring::{EpochState, ENVELOPE_OVERHEAD};

use super::*;
use crate::audit;
use crate::cancel::Cancel;
use crate::lease::{live_sessions, Lease};
use crate::packer::PackBuilder;

/// How long the maintenance lease lasts between renewals.
pub const LEASE_TTL: Duration = Duration::from_secs(600);
/// Packs rewritten between index flushes: what a crash can make the next run redo.
const FLUSH_EVERY: usize = 32;
/// What the refusal on an incomplete listing names.
const REENCRYPT_ACTION: &str = "re-encrypt (it deletes packs under old epochs)";
const RETIRE_ACTION: &str = "retire key epochs (it destroys their keys)";

/// One data-key epoch and how many objects are still sealed under it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpochInfo {
    pub id: u32,
    pub created: i64,
    pub state: &'static str,
    pub objects: u64,
}

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

/// The first eight characters of a key slot's id, as the audit log names slots.
pub(crate) fn short(name: &str) -> &str {
    let id = name.rsplit('/').next().unwrap_or(name);
    &id[..8.min(id.len())]
}

impl Repository {
    /// The newest keyring in storage (another process may have changed it since this one opened).
    async fn current_keyring(&self) -> Result<Keyring> {
        let current = Self::load_keyring(&self.store, self.keyring.master().clone()).await?;
        // A key operation built on an older keyring than the one this process opened (the
        // provider withholding the newest) would bring back retired epochs: refuse it.
        if current.generation() < self.keyring.generation()
            || (self.keyring.config_hash().is_some() && current.config_hash().is_none())
        {
            return Err(Error::integrity(
                paths::KEYRING,
                format!(
                    "the repository now offers keyring generation {}, older than generation {}                      this process opened: a target withholds the newest keyring (run `drvault                      check --all-targets`)",
                    current.generation(),
                    self.keyring.generation()
                ),
            ));
        }
        Ok(current)
    }

    /// Where this repository's catalog lives, when a state directory was given.
    pub fn catalog_dir(&self) -> Option<std::path::PathBuf> {
        self.state_dir.clone()
    }

    /// False when another process changed the keyring (a rotation) since this one opened it.
    pub async fn keyring_is_current(&self) -> Result<bool> {
        Ok(self.current_keyring().await?.generation() == self.keyring.generation())
    }

    /// Seals and stores a keyring; returns its object name.
    async fn save_keyring(&self, kr: &Keyring) -> Result<String> {
        // Every key operation binds the config: older keyrings gain the binding here.
        let mut kr = kr.clone();
        kr.bind_config(self.config.binding());
        let sealed = kr.seal()?;
        let name = paths::keyring(&Id::of_stored(&sealed));
        self.store.put_new(&name, sealed.into(), true).await?;
        Ok(name)
    }

    /// Deletes every keyring object but `keep`. After a retirement or a new master key the
    /// older objects still hold the retired keys or open with the old master key.
    async fn delete_other_keyrings(&self, keep: &str) -> Result<()> {
        for l in self
            .store
            .list_complete(paths::KEYRING, "delete superseded keyring objects")
            .await?
        {
            if l.name != keep {
                self.store.delete(&l.name).await?;
            }
        }
        Ok(())
    }

    /// Removes the key slot whose id starts with `prefix`. The last slot cannot be removed.
    /// Recorded in the audit log (`key.remove`).
    pub async fn remove_key_slot(&self, prefix: &str) -> Result<String> {
        let removed = self.delete_key_slot(prefix).await;
        audit::record_outcome(
            self,
            "key.remove",
            &removed,
            |name| serde_json::json!({ "slot": short(name) }),
        )
        .await;
        removed
    }

    async fn delete_key_slot(&self, prefix: &str) -> Result<String> {
        let slots = self.key_slots().await?;
        let matching: Vec<&String> = slots
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                n.rsplit('/')
                    .next()
                    .is_some_and(|id| !prefix.is_empty() && id.starts_with(prefix))
            })
            .collect();
        let name = match matching.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(Error::Invalid(format!(
                    "no key slot starts with {prefix:?}; see `drvault key list`"
                )))
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "{prefix:?} matches several key slots; give more of the id"
                )))
            }
        };
        if slots.len() == 1 {
            return Err(Error::Invalid(
                "refusing to remove the last key slot: nothing could open the repository".into(),
            ));
        }
        if self.opened_slot.as_deref() == Some(name.as_str()) {
            return Err(Error::NotPermitted(
                "refusing to remove the key slot this passphrase opened: the next command would \
                 find no key. Remove it with another slot's passphrase, or change it with `drvault \
                 key passwd`"
                    .into(),
            ));
        }
        self.store.delete(&name).await?;
        Ok(name)
    }

    /// Re-wraps the slot that `old` opens under `new` (same kind), then removes the old slot.
    /// Returns (old slot name, new slot name).
    /// Recorded in the audit log (`key.passwd`).
    pub async fn change_passphrase(
        &self,
        old: &drvault_keyring::Credential,
        new: &[u8],
        kdf: KdfParams,
    ) -> Result<(String, String)> {
        let changed = self.rewrap_slot(old, new, kdf).await;
        audit::record_outcome(
            self,
            "key.passwd",
            &changed,
            |(old, new)| serde_json::json!({ "old_slot": short(old), "new_slot": short(new) }),
        )
        .await;
        changed
    }

    async fn rewrap_slot(
        &self,
        old: &drvault_keyring::Credential,
        new: &[u8],
        kdf: KdfParams,
    ) -> Result<(String, String)> {
        if new.is_empty() {
            return Err(Error::Invalid("refusing an empty passphrase".into()));
        }
        let slots = self.key_slots().await?;
        let old = old.clone();
        let found = tokio::task::spawn_blocking(move || {
            slots.into_iter().find(|(_, s)| s.unwrap_with(&old).is_ok())
        })
        .await
        .map_err(Error::task)?;
        let Some((old_name, old_slot)) = found else {
            return Err(Error::WrongPassphrase);
        };
        if old_slot.kind == SlotKind::KeyFile {
            return Err(Error::Invalid(
                "a key-file slot has no passphrase to change: add the new key file with `drvault \
                 key add --kind keyfile`, then remove this slot with `drvault key remove`"
                    .into(),
            ));
        }
        let new_name = self
            .create_key_slot(old_slot.kind, new, kdf, &old_slot.label)
            .await?;
        self.store.delete(&old_name).await?;
        Ok((old_name, new_name))
    }

    /// The epoch of every pack, index and snapshot object, read from its envelope header.
    /// With `deciding`, the listing must be complete (every target answered): the result is
    /// what re-encryption deletes packs and retires epochs on.
    async fn object_epochs(
        &self,
        prefixes: &[&str],
        deciding: Option<&str>,
    ) -> Result<BTreeMap<String, u32>> {
        let mut names = Vec::new();
        for p in prefixes {
            names.extend(match deciding {
                Some(action) => self.store.list_names_complete(p, action).await?,
                None => self.store.list_names(p).await?,
            });
        }
        futures::stream::iter(names)
            .map(|name| async move {
                // Every object starts with an envelope (a pack with its first blob's).
                let head = self
                    .store
                    .get_range(&name, 0..ENVELOPE_OVERHEAD as u64)
                    .await?;
                let epoch = Header::parse(&head)
                    .map_err(|e| Error::integrity(&name, e))?
                    .epoch;
                Ok::<_, Error>((name, epoch))
            })
            .buffer_unordered(16)
            .try_collect()
            .await
    }

    /// Every data-key epoch with the number of objects still sealed under it.
    pub async fn epochs(&self) -> Result<Vec<EpochInfo>> {
        let kr = self.current_keyring().await?;
        let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
        for epoch in self
            .object_epochs(&[paths::DATA, paths::INDEX, paths::SNAPSHOTS], None)
            .await?
            .values()
        {
            *counts.entry(*epoch).or_default() += 1;
        }
        Ok(kr
            .epochs()
            .iter()
            .map(|e| EpochInfo {
                id: e.id,
                created: e.created,
                state: e.state.as_str(),
                objects: counts.get(&e.id).copied().unwrap_or(0),
            })
            .collect())
    }

    /// The active epoch: (id, created, blobs sealed under it, read from the index and the packs'
    /// headers). What an automatic rotation policy decides on.
    pub async fn active_epoch_usage(&self) -> Result<(u32, i64, u64)> {
        let kr = self.current_keyring().await?;
        let (id, _) = kr.active_epoch()?;
        let created = kr
            .epochs()
            .iter()
            .find(|e| e.id == id)
            .map_or(0, |e| e.created);
        let epochs = self.object_epochs(&[paths::DATA], None).await?;
        let names: Vec<String> = self.store.list_names(paths::INDEX).await?;
        let mut seen = HashSet::new();
        let mut blobs = 0u64;
        for (_, f) in self.fetch_indexes(names).await? {
            for p in &f.packs {
                if seen.insert(p.pack) && epochs.get(&paths::pack(&p.pack)) == Some(&id) {
                    blobs += p.blobs.len() as u64;
                }
            }
        }
        Ok((id, created, blobs))
    }

    /// Starts a new data-key epoch; new data is sealed under it from the next opening of the
    /// repository on. Returns the new epoch's id.
    /// Recorded in the audit log (`key.rotate`).
    pub async fn rotate_epoch(&self) -> Result<u32> {
        let rotated = self.start_epoch().await;
        audit::record_outcome(
            self,
            "key.rotate",
            &rotated,
            |e| serde_json::json!({ "new_epoch": e }),
        )
        .await;
        rotated
    }

    async fn start_epoch(&self) -> Result<u32> {
        let lease = Lease::acquire(&self.store, "key rotation", LEASE_TTL).await?;
        let result = async {
            let mut kr = self.current_keyring().await?;
            let id = kr.rotate(unix_now())?;
            self.save_keyring(&kr).await?;
            Ok(id)
        }
        .await;
        lease.release(&self.store).await?;
        result
    }

    /// Replaces the master key after a suspected compromise: the keyring is sealed under a new
    /// master key, the slot `passphrase` opens is wrapped again, every other slot and every
    /// older keyring object is deleted, and a new data-key epoch starts (the old master key
    /// opened the old epochs' keys; re-encrypt and retire them next). Returns (new epoch, the
    /// number of other slots removed).
    /// Recorded in the audit log (`key.rotate_master`).
    pub async fn rotate_master(
        &self,
        credential: &drvault_keyring::Credential,
        kdf: KdfParams,
    ) -> Result<(u32, usize)> {
        let rotated = self.replace_master(credential, kdf).await;
        audit::record_outcome(self, "key.rotate_master", &rotated, |(epoch, removed)| {
            serde_json::json!({ "new_epoch": epoch, "other_slots_removed": removed })
        })
        .await;
        rotated
    }

    async fn replace_master(
        &self,
        credential: &drvault_keyring::Credential,
        kdf: KdfParams,
    ) -> Result<(u32, usize)> {
        let lease = Lease::acquire(&self.store, "master key rotation", LEASE_TTL).await?;
        let result = async {
            let slots = self.key_slots_complete().await?;
            let (in_use, kind, label, pass) = {
                let slots = slots.clone();
                let credential = credential.clone();
                tokio::task::spawn_blocking(move || {
                    slots
                        .into_iter()
                        .find(|(_, s)| s.unwrap_with(&credential).is_ok())
                        .map(|(n, s)| {
                            let input =
                                zeroize::Zeroizing::new(s.input_for_new_slot(&credential).to_vec());
                            (n, s.kind, s.label, input)
                        })
                })
                .await
                .map_err(Error::task)?
                .ok_or(Error::WrongPassphrase)?
            };
            let mut kr = self.current_keyring().await?;
            kr.replace_master()?;
            let epoch = kr.rotate(unix_now())?;
            // Order matters for a crash: the new keyring first (the old slots cannot open it and
            // readers skip it), then the new slot, then the removals.
            let keep = self.save_keyring(&kr).await?;
            let master = kr.master().clone();
            let now = unix_now();
            let slot = tokio::task::spawn_blocking(move || {
                KeySlot::create(kind, now, kdf, &pass, &label, &master)
            })
            .await
            .map_err(Error::task)??;
            let bytes = slot.encode();
            let new_slot = paths::key(&Id::of_stored(&bytes));
            self.store.put_new(&new_slot, bytes.into(), true).await?;
            let mut removed = 0;
            for (name, _) in &slots {
                if *name != new_slot {
                    self.store.delete(name).await?;
                    if *name != in_use {
                        removed += 1;
                    }
                }
            }
            self.delete_other_keyrings(&keep).await?;
            Ok((epoch, removed))
        }
        .await;
        lease.release(&self.store).await?;
        result
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
        &self,
        progress: &(dyn Fn(Progress) + Sync),
        cancel: &Cancel,
    ) -> Result<ReencryptReport> {
        let started = std::time::Instant::now();
        let done = async {
            let mut lease = Lease::acquire(&self.store, "re-encryption", LEASE_TTL).await?;
            let result = self.reencrypt_locked(&mut lease, progress, cancel).await;
            let released = lease.release(&self.store).await;
            let report = result?;
            released?;
            Ok(report)
        }
        .await;
        audit::record_outcome(self, "key.reencrypt", &done, |r: &ReencryptReport| {
            serde_json::json!({
                "epochs": r.epochs, "retired": r.retired, "not_retired": r.not_retired,
                "packs_rewritten": r.packs_rewritten, "bytes_rewritten": r.bytes_rewritten,
                "snapshots_resealed": r.snapshots.len(),
                "seconds": started.elapsed().as_secs_f64(),
            })
        })
        .await;
        done
    }

    async fn reencrypt_locked(
        &self,
        lease: &mut Lease,
        progress: &(dyn Fn(Progress) + Sync),
        cancel: &Cancel,
    ) -> Result<ReencryptReport> {
        let kr = self.current_keyring().await?;
        if kr.generation() != self.keyring.generation() {
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
        let sessions = live_sessions(&self.store).await?;
        let epochs = self
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
            lease.keep_alive(&self.store).await?;
            // Key material is destroyed only on a complete view of every target.
            let mut kr = self.current_keyring().await?;
            kr.retire(&retire)?;
            let keep = self.save_keyring(&kr).await?;
            self.delete_other_keyrings(&keep).await?;
            report.retired = retire;
        }
        Ok(report)
    }

    /// One pass over the repository; returns how many objects it found under old epochs.
    async fn reencrypt_pass(
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
        let backups_under_old = live_sessions(&self.store)
            .await?
            .iter()
            .any(|s| old.contains(&s.epoch));
        let epochs = self
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
            .store
            .list_names_complete(paths::INDEX, REENCRYPT_ACTION)
            .await?;
        let files = self.fetch_indexes(index_names.clone()).await?;
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
                self.store.delete(name).await?;
            }
        }
        let total = old_packs.len() as u64;
        // Three packs in flight: download, re-seal on the blocking pool, upload overlap.
        let safe = &safe_blobs;
        let mut rewritten = futures::stream::iter(old_packs.iter())
            .map(|name| async move {
                let bytes = self.store.get(name).await?;
                verify_name(name, &bytes)?;
                let entries = self.read_pack_header(&name_id(name)?, &bytes)?;
                if entries.iter().all(|e| safe.contains(&e.id)) {
                    return Ok::<_, Error>(None);
                }
                let keyring = self.keyring.clone();
                let size = self.config.pack_size as usize;
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
            lease.keep_alive(&self.store).await?;
            match result? {
                None => report.packs_already_done += 1,
                Some(pack) => {
                    report.bytes_rewritten += pack.bytes.len() as u64;
                    self.upload_pack(pack).await?;
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
                self.flush_index().await?;
            }
            // A clean point: the packs rewritten so far are indexed before stopping, so the
            // next run counts them as done (old objects are deleted only after a full pass).
            if cancel.is_cancelled() {
                drop(rewritten);
                self.flush_index().await?;
                return Err(Error::Interrupted);
            }
        }
        drop(rewritten);
        self.flush_index().await?;

        // Index objects: one consolidated set under the active epoch, without the old packs,
        // written before any old index object or pack is deleted.
        lease.keep_alive(&self.store).await?;
        let old_pack_ids: HashSet<Id> = old_packs.iter().filter_map(|n| name_id(n).ok()).collect();
        let index_names: Vec<String> = self
            .store
            .list_names_complete(paths::INDEX, REENCRYPT_ACTION)
            .await?;
        let files = self.fetch_indexes(index_names.clone()).await?;
        let mut seen = HashSet::new();
        let mut keep = Vec::new();
        for (_, f) in files {
            for p in f.packs {
                if !old_pack_ids.contains(&p.pack) && seen.insert(p.pack) {
                    keep.push(p);
                }
            }
        }
        self.pending
            .lock()
            .map_err(|_| Error::Internal("lock poisoned".into()))?
            .extend(keep);
        self.flush_index().await?;
        let now_listed: HashSet<String> = self
            .store
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
                self.store.delete(name).await?;
                report.indexes_rewritten += 1;
            }
        }

        // Snapshots: re-sealed one by one; an interrupted run may have written the new copy
        // already, recognised by its plaintext.
        let snaps: Vec<String> = self
            .store
            .list_names_complete(paths::SNAPSHOTS, REENCRYPT_ACTION)
            .await?;
        let mut current: HashSet<[u8; 32]> = HashSet::new();
        for name in snaps
            .iter()
            .filter(|n| !under_old(n) && epochs.contains_key(*n))
        {
            let s = self.load_snapshot(name).await?;
            current.insert(*blake3::hash(&encode(&s)).as_bytes());
        }
        for name in snaps.iter().filter(|n| under_old(n)) {
            lease.keep_alive(&self.store).await?;
            let snap = self.load_snapshot(name).await?;
            let plain = encode(&snap);
            if current.insert(*blake3::hash(&plain).as_bytes()) {
                let sealed = self.seal_object(ObjectKind::Snapshot, &plain)?;
                let new_name = paths::snapshot(&Id::of_stored(&sealed));
                self.store.put_new(&new_name, sealed.into(), true).await?;
                self.load_snapshot(&new_name).await?;
                report.snapshots.push((name.clone(), new_name));
            }
            self.store.delete(name).await?;
        }

        // Old packs last: no index refers to them any more.
        for name in &old_packs {
            self.store.delete(name).await?;
        }
        Ok(found)
    }
}

/// Opens every blob of a pack and seals its payload again under the active epoch (the
/// compressed payload is kept as it is), then verifies every new blob before returning.
fn reseal_pack(
    keyring: &Keyring,
    bytes: &[u8],
    entries: &[PackEntry],
    pack_size: usize,
) -> Result<FinishedPack> {
    let (epoch, key) = keyring.active_epoch()?;
    let mut builder = PackBuilder::new(pack_size);
    let mut out = Vec::new();
    for e in entries {
        let object = format!("blob {}", e.id);
        let range = e.offset as usize..(e.offset as usize + e.length as usize);
        let sealed = bytes
            .get(range)
            .ok_or_else(|| Error::integrity(&object, "lies outside its pack"))?;
        let header = Header::parse(sealed).map_err(|err| Error::integrity(&object, err))?;
        let old_key = keyring.epoch_key(header.epoch)?;
        let (_, payload) = drvault_keyring::open(&old_key, &e.id.0, sealed)
            .map_err(|err| Error::integrity(&object, err))?;
        out.clear();
        drvault_keyring::seal(
            &key,
            Header { epoch, ..header },
            &e.id.0,
            &payload,
            &mut out,
        )?;
        builder.add(e.kind, e.id, e.raw_length, &out);
    }
    let pack = builder.finish(keyring)?;
    for e in &pack.entries {
        let range = e.offset as usize..(e.offset as usize + e.length as usize);
        open_blob(keyring, e.kind, &e.id, e.raw_length, &pack.bytes[range])?;
    }
    Ok(pack)
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
