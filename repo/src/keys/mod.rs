//! Key management over the repository's public API: key slots, data-key epochs and rotation,
//! re-encryption and retirement (`reencrypt.rs`), host keys and the migration to format version 2
//! (`hosts.rs`) (docs/FORMAT.md §6 and §16, docs/THREAT-MODEL.md "Key rotation"). Each operation
//! writes its own audit entry.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use drvault_keyring::{KdfParams, KeySlot, SlotKind};

use crate::format::paths;
use crate::lease::Lease;
use crate::repository::LEASE_TTL;
use crate::{Error, Id, Repository, Result};

mod hosts;
mod reencrypt;
#[cfg(test)]
mod tests;

pub use hosts::{add_host_key, migrate, MigrateReport};
pub use reencrypt::{reencrypt, Progress, ReencryptReport};

/// One data-key epoch and how many objects are still sealed under it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpochInfo {
    pub id: u32,
    pub created: i64,
    pub state: &'static str,
    pub objects: u64,
}

/// When a data-key epoch is due for rotation: whichever comes first.
#[derive(Debug, Clone, Copy)]
pub struct RotationPolicy {
    pub max_age: Duration,
    pub max_blobs: u64,
}

/// What [`rotation_due`] found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RotationCheck {
    /// The active epoch, its age in whole days and the blobs it seals.
    pub epoch: u32,
    pub age_days: u64,
    pub blobs: u64,
    pub due: bool,
}

/// Key operations over one repository.
struct Admin<'a> {
    repo: &'a Repository,
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Adds a key slot wrapping the repository's master key under another passphrase (or key
/// file, or recovery key). Returns the slot's object name.
/// Recorded in the audit log (`key.add`).
pub async fn add_key_slot(
    repo: &Repository,
    kind: SlotKind,
    passphrase: &[u8],
    kdf: KdfParams,
    label: &str,
) -> Result<String> {
    repo.audit().ready("key.add").await?;
    let added = repo.create_key_slot(kind, passphrase, kdf, label).await;
    repo.audit().record_outcome("key.add", added, |name| {
        serde_json::json!({ "slot": paths::short(name), "kind": kind.as_str(), "label": label })
    })
    .await
}

/// Removes the key slot whose id starts with `prefix`. The last slot cannot be removed.
/// Recorded in the audit log (`key.remove`).
pub async fn remove_key_slot(repo: &Repository, prefix: &str) -> Result<String> {
    Admin { repo }.remove_key_slot(prefix).await
}

/// Re-wraps the slot that `old` opens under `new` (same kind), then removes the old slot.
/// Returns (old slot name, new slot name).
/// Recorded in the audit log (`key.passwd`).
pub async fn change_passphrase(
    repo: &Repository,
    old: &drvault_keyring::Credential,
    new: &[u8],
    kdf: KdfParams,
) -> Result<(String, String)> {
    Admin { repo }.change_passphrase(old, new, kdf).await
}

/// Every data-key epoch with the number of objects still sealed under it.
pub async fn epochs(repo: &Repository) -> Result<Vec<EpochInfo>> {
    Admin { repo }.epochs().await
}

/// Whether `policy` says the active epoch is due for rotation at `now` (Unix seconds): it
/// is as old as `max_age`, or seals `max_blobs` blobs. What `key rotate --if-due` and the
/// agent's rotation jobs both decide on.
pub async fn rotation_due(
    repo: &Repository,
    policy: &RotationPolicy,
    now: i64,
) -> Result<RotationCheck> {
    Admin { repo }.rotation_due(policy, now).await
}

/// The active epoch: (id, created, blobs sealed under it, read from the index and the packs'
/// headers). What an automatic rotation policy decides on.
pub async fn active_epoch_usage(repo: &Repository) -> Result<(u32, i64, u64)> {
    Admin { repo }.active_epoch_usage().await
}

/// Starts a new data-key epoch; new data is sealed under it from the next opening of the
/// repository on. Returns the new epoch's id.
/// Recorded in the audit log (`key.rotate`).
pub async fn rotate_epoch(repo: &Repository) -> Result<u32> {
    Admin { repo }.rotate_epoch().await
}

/// Replaces the master key after a suspected compromise: the keyring is sealed under a new
/// master key, the slot `passphrase` opens is wrapped again, every other slot and every
/// older keyring object is deleted, and a new data-key epoch starts (the old master key
/// opened the old epochs' keys; re-encrypt and retire them next). Returns (new epoch, the
/// number of other slots removed).
/// Recorded in the audit log (`key.rotate_master`).
pub async fn rotate_master(
    repo: &Repository,
    credential: &drvault_keyring::Credential,
    kdf: KdfParams,
) -> Result<(u32, usize)> {
    Admin { repo }.rotate_master(credential, kdf).await
}

impl Admin<'_> {
    /// Writes a keyring generation with the audit log's head (see
    /// [`Repository::save_keyring`]); a keyring without host keys records none.
    async fn save_keyring(&self, kr: &drvault_keyring::Keyring) -> Result<Vec<String>> {
        let head = if kr.takes_hosts() {
            self.repo.audit().head_anchor().await?
        } else {
            None
        };
        self.repo.save_keyring(kr, head).await
    }

    async fn remove_key_slot(&self, prefix: &str) -> Result<String> {
        self.repo.keyring()?;
        self.repo
            .store()
            .ensure_deletable("key remove", &[paths::KEYS])
            .await?;
        self.repo.audit().ready("key.remove").await?;
        let removed = self.delete_key_slot(prefix).await;
        self.repo
            .audit()
            .record_outcome(
                "key.remove",
                removed,
                |name| serde_json::json!({ "slot": paths::short(name) }),
            )
            .await
    }

    async fn delete_key_slot(&self, prefix: &str) -> Result<String> {
        let slots = self.repo.key_slots().await?;
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
        if self.repo.opened_slot() == Some(name.as_str()) {
            return Err(Error::NotPermitted(
                "refusing to remove the key slot this passphrase opened: the next command would \
                 find no key. Remove it with another slot's passphrase, or change it with `drvault \
                 key passwd`"
                    .into(),
            ));
        }
        self.repo.store().delete(&name).await?;
        Ok(name)
    }

    async fn change_passphrase(
        &self,
        old: &drvault_keyring::Credential,
        new: &[u8],
        kdf: KdfParams,
    ) -> Result<(String, String)> {
        self.repo.keyring()?;
        self.repo
            .store()
            .ensure_deletable("key passwd", &[paths::KEYS])
            .await?;
        self.repo.audit().ready("key.passwd").await?;
        let changed = self.rewrap_slot(old, new, kdf).await;
        self.repo.audit().record_outcome("key.passwd",
            changed,
            |(old, new)| serde_json::json!({ "old_slot": paths::short(old), "new_slot": paths::short(new) }),
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
        let slots = self.repo.key_slots().await?;
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
            .repo
            .create_key_slot(old_slot.kind, new, kdf, &old_slot.label)
            .await?;
        self.repo.store().delete(&old_name).await?;
        Ok((old_name, new_name))
    }

    async fn epochs(&self) -> Result<Vec<EpochInfo>> {
        self.repo.keyring()?;
        let kr = self.repo.current_keyring().await?;
        let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
        for epoch in self
            .repo
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

    async fn rotation_due(&self, policy: &RotationPolicy, now: i64) -> Result<RotationCheck> {
        let (epoch, created, blobs) = self.active_epoch_usage().await?;
        let age = Duration::from_secs((now - created).max(0) as u64);
        Ok(RotationCheck {
            epoch,
            age_days: age.as_secs() / 86_400,
            blobs,
            due: age >= policy.max_age || blobs >= policy.max_blobs,
        })
    }

    async fn active_epoch_usage(&self) -> Result<(u32, i64, u64)> {
        self.repo.keyring()?;
        let kr = self.repo.current_keyring().await?;
        let (id, _) = kr.active_epoch()?;
        let created = kr
            .epochs()
            .iter()
            .find(|e| e.id == id)
            .map_or(0, |e| e.created);
        let epochs = self.repo.object_epochs(&[paths::DATA], None).await?;
        let names: Vec<String> = self.repo.store().list_names(paths::INDEX).await?;
        let mut seen = HashSet::new();
        let mut blobs = 0u64;
        for (_, f) in self.repo.fetch_indexes(names).await? {
            for p in &f.packs {
                if seen.insert(p.pack) && epochs.get(&paths::pack(&p.pack)) == Some(&id) {
                    blobs += p.blobs.len() as u64;
                }
            }
        }
        Ok((id, created, blobs))
    }

    async fn rotate_epoch(&self) -> Result<u32> {
        self.repo.keyring()?;
        self.repo.audit().ready("key.rotate").await?;
        let rotated = self.start_epoch().await;
        self.repo
            .audit()
            .record_outcome(
                "key.rotate",
                rotated,
                |e| serde_json::json!({ "new_epoch": e }),
            )
            .await
    }

    async fn start_epoch(&self) -> Result<u32> {
        let lease = Lease::acquire(self.repo.store(), "key rotation", LEASE_TTL).await?;
        let result = async {
            let mut kr = self.repo.current_keyring().await?;
            let id = kr.rotate(unix_now())?;
            self.save_keyring(&kr).await?;
            Ok(id)
        }
        .await;
        lease.release(self.repo.store()).await?;
        result
    }

    async fn rotate_master(
        &self,
        credential: &drvault_keyring::Credential,
        kdf: KdfParams,
    ) -> Result<(u32, usize)> {
        self.repo.keyring()?;
        self.repo
            .store()
            .ensure_deletable("key rotate --master", &[paths::KEYS, paths::KEYRING])
            .await?;
        self.repo.audit().ready("key.rotate_master").await?;
        let rotated = self.replace_master(credential, kdf).await;
        self.repo.audit().record_outcome("key.rotate_master", rotated, |(epoch, removed)| {
            serde_json::json!({ "new_epoch": epoch, "other_slots_removed": removed })
        })
        .await
    }

    async fn replace_master(
        &self,
        credential: &drvault_keyring::Credential,
        kdf: KdfParams,
    ) -> Result<(u32, usize)> {
        let lease = Lease::acquire(self.repo.store(), "master key rotation", LEASE_TTL).await?;
        let result = async {
            let slots = self.repo.key_slots_complete().await?;
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
            let mut kr = self.repo.current_keyring().await?;
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
            self.repo
                .store()
                .put_new(&new_slot, bytes.into(), true)
                .await?;
            let mut removed = 0;
            for (name, _) in &slots {
                if *name != new_slot {
                    self.repo.store().delete(name).await?;
                    if *name != in_use {
                        removed += 1;
                    }
                }
            }
            self.repo.delete_other_keyrings(&keep).await?;
            Ok((epoch, removed))
        }
        .await;
        lease.release(self.repo.store()).await?;
        result
    }
}
