//! Key management on an open repository: slots, data-key epochs and rotation (re-encryption and
//! retirement are `reencrypt.rs`) (docs/FORMAT.md §6 and §16, docs/THREAT-MODEL.md "Key rotation").

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use drvault_keyring::ENVELOPE_OVERHEAD;

use super::*;
use crate::audit;
use crate::lease::Lease;

/// How long the maintenance lease lasts between renewals.
pub const LEASE_TTL: Duration = Duration::from_secs(600);

/// One data-key epoch and how many objects are still sealed under it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpochInfo {
    pub id: u32,
    pub created: i64,
    pub state: &'static str,
    pub objects: u64,
}

/// The first eight characters of a key slot's id, as the audit log names slots.
pub(crate) fn short(name: &str) -> &str {
    let id = name.rsplit('/').next().unwrap_or(name);
    &id[..8.min(id.len())]
}

/// When a data-key epoch is due for rotation: whichever comes first.
#[derive(Debug, Clone, Copy)]
pub struct RotationPolicy {
    pub max_age: Duration,
    pub max_blobs: u64,
}

/// What [`Repository::rotation_due`] found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RotationCheck {
    /// The active epoch, its age in whole days and the blobs it seals.
    pub epoch: u32,
    pub age_days: u64,
    pub blobs: u64,
    pub due: bool,
}

impl Repository {
    /// The newest keyring in storage (another process may have changed it since this one opened).
    pub(super) async fn current_keyring(&self) -> Result<Keyring> {
        let opened = self.keyring()?;
        let current = Self::load_keyring(&self.store, opened.master().clone()).await?;
        // A key operation built on an older keyring than the one this process opened (the
        // provider withholding the newest) would bring back retired epochs: refuse it.
        if current.generation() < opened.generation()
            || (opened.config_hash().is_some() && current.config_hash().is_none())
        {
            return Err(Error::integrity(
                paths::KEYRING,
                format!(
                    "the repository now offers keyring generation {}, older than generation {} \
                this process opened: a target withholds the newest keyring (run `drvault \
                check --all-targets`)",
                    current.generation(),
                    opened.generation()
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
        if self.keys.keyring().is_none() {
            // A host: its host keyring is rebuilt with every keyring generation.
            let current = self.current_host_keyring().await?;
            return Ok(current.generation() == self.keys.generation());
        }
        Ok(self.current_keyring().await?.generation() == self.keys.generation())
    }

    /// The newest host keyring in storage, for a process a host key opened.
    async fn current_host_keyring(&self) -> Result<drvault_keyring::HostKeyring> {
        let slot = self
            .keys
            .host_slot()
            .ok_or_else(|| Error::Internal("a host keyring without a host key".into()))?;
        Self::load_host_keyring(&self.store, slot).await
    }

    /// Seals and stores a keyring and, once the repository takes host keys, the host keyring
    /// of the same generation, in that order: a crash between the two leaves hosts on the
    /// previous host keyring, whose epochs the new keyring still holds (the other order could
    /// leave hosts sealing to an epoch no stored keyring has the secret of). The next key
    /// operation writes the host keyring again. Returns their object names.
    pub(super) async fn save_keyring(&self, kr: &Keyring) -> Result<Vec<String>> {
        // Every key operation binds the config: older keyrings gain the binding here.
        let mut kr = kr.clone();
        kr.bind_config(self.config.binding());
        if kr.takes_hosts() {
            // Where the log stands, so a log cut later is found from the keyring too.
            let head = crate::audit::head_anchor(self).await?;
            kr.set_audit_anchor(head.map(|a| (a.seq, a.hash)));
        }
        let mut names = Vec::new();
        let sealed = kr.seal()?;
        let name = paths::keyring(&Id::of_stored(&sealed));
        self.store.put_new(&name, sealed.into(), true).await?;
        names.push(name);
        crate::failpoint::hit("keyring.before-host-keyring").await;
        if let Some(sealed) = kr.seal_host_keyring()? {
            let name = paths::keyring(&Id::of_stored(&sealed));
            self.store.put_new(&name, sealed.into(), true).await?;
            names.push(name);
        }
        Ok(names)
    }

    /// Deletes every keyring object but those in `keep`. After a retirement or a new master key
    /// the older objects still hold the retired keys or open with the old master key.
    pub(super) async fn delete_other_keyrings(&self, keep: &[String]) -> Result<()> {
        for l in self
            .store
            .list_complete(paths::KEYRING, "delete superseded keyring objects")
            .await?
        {
            if !keep.contains(&l.name) {
                self.store.delete(&l.name).await?;
            }
        }
        Ok(())
    }

    /// Removes the key slot whose id starts with `prefix`. The last slot cannot be removed.
    /// Recorded in the audit log (`key.remove`).
    pub async fn remove_key_slot(&self, prefix: &str) -> Result<String> {
        self.keyring()?;
        self.store
            .ensure_deletable("key remove", &[paths::KEYS])
            .await?;
        audit::ready(self, "key.remove").await?;
        let removed = self.delete_key_slot(prefix).await;
        audit::record_outcome(
            self,
            "key.remove",
            removed,
            |name| serde_json::json!({ "slot": short(name) }),
        )
        .await
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
                return Err(Error::Usage(format!(
                    "no key slot starts with {prefix:?}; see `drvault key list`"
                )))
            }
            _ => {
                return Err(Error::Usage(format!(
                    "{prefix:?} matches several key slots; give more of the id"
                )))
            }
        };
        if slots.len() == 1 {
            return Err(Error::Usage(
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
        self.keyring()?;
        self.store
            .ensure_deletable("key passwd", &[paths::KEYS])
            .await?;
        audit::ready(self, "key.passwd").await?;
        let changed = self.rewrap_slot(old, new, kdf).await;
        audit::record_outcome(
            self,
            "key.passwd",
            changed,
            |(old, new)| serde_json::json!({ "old_slot": short(old), "new_slot": short(new) }),
        )
        .await
    }

    async fn rewrap_slot(
        &self,
        old: &drvault_keyring::Credential,
        new: &[u8],
        kdf: KdfParams,
    ) -> Result<(String, String)> {
        if new.is_empty() {
            return Err(Error::Usage("refusing an empty passphrase".into()));
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
    pub(super) async fn object_epochs(
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
                let epoch = Header::parse_prefix(&head)
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
        self.keyring()?;
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

    /// Whether `policy` says the active epoch is due for rotation at `now` (Unix seconds): it
    /// is as old as `max_age`, or seals `max_blobs` blobs. What `key rotate --if-due` and the
    /// agent's rotation jobs both decide on.
    pub async fn rotation_due(&self, policy: &RotationPolicy, now: i64) -> Result<RotationCheck> {
        let (epoch, created, blobs) = self.active_epoch_usage().await?;
        let age = Duration::from_secs((now - created).max(0) as u64);
        Ok(RotationCheck {
            epoch,
            age_days: age.as_secs() / 86_400,
            blobs,
            due: age >= policy.max_age || blobs >= policy.max_blobs,
        })
    }

    /// The active epoch: (id, created, blobs sealed under it, read from the index and the packs'
    /// headers). What an automatic rotation policy decides on.
    pub async fn active_epoch_usage(&self) -> Result<(u32, i64, u64)> {
        self.keyring()?;
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
        self.keyring()?;
        audit::ready(self, "key.rotate").await?;
        let rotated = self.start_epoch().await;
        audit::record_outcome(
            self,
            "key.rotate",
            rotated,
            |e| serde_json::json!({ "new_epoch": e }),
        )
        .await
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
        self.keyring()?;
        self.store
            .ensure_deletable("key rotate --master", &[paths::KEYS, paths::KEYRING])
            .await?;
        audit::ready(self, "key.rotate_master").await?;
        let rotated = self.replace_master(credential, kdf).await;
        audit::record_outcome(self, "key.rotate_master", rotated, |(epoch, removed)| {
            serde_json::json!({ "new_epoch": epoch, "other_slots_removed": removed })
        })
        .await
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
            // Host slots go with every other slot; the host key they wrapped goes too.
            kr.replace_host_key()?;
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
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
