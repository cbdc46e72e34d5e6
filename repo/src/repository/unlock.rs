//! Key slots and unlocking: writing and listing slots, trying them in order (skipping what does
//! not open), loading the newest keyring (or, for a host slot, the signed host keyring).

use super::*;

impl Repository {
    /// Writes a key slot wrapping this repository's master key under `passphrase` (or a key
    /// file, or a recovery key); returns its object name. No audit entry: the key operations
    /// that call it (`crate::keys`) record themselves.
    pub(crate) async fn create_key_slot(
        &self,
        kind: SlotKind,
        passphrase: &[u8],
        kdf: KdfParams,
        label: &str,
    ) -> Result<String> {
        if passphrase.is_empty() {
            return Err(Error::Invalid("refusing an empty passphrase".into()));
        }
        let master = self.keyring()?.master().clone();
        let pass = zeroize::Zeroizing::new(passphrase.to_vec());
        let now = unix_now();
        let label = label.to_string();
        let slot = tokio::task::spawn_blocking(move || {
            KeySlot::create(kind, now, kdf, &pass, &label, &master)
        })
        .await
        .map_err(Error::task)??;
        let bytes = slot.encode();
        let name = paths::key(&Id::of_stored(&bytes));
        self.store.put_new(&name, bytes.into(), true).await?;
        Ok(name)
    }

    /// The object name of the key slot that opened this repository.
    pub fn opened_slot(&self) -> Option<&str> {
        self.opened_slot.as_deref()
    }

    /// The key slots: (object name, slot).
    pub async fn key_slots(&self) -> Result<Vec<(String, KeySlot)>> {
        self.read_key_slots(self.store.list(paths::KEYS).await?)
            .await
    }

    /// The key slots from a listing of every target: what a master-key rotation deletes the
    /// old slots on (a compromised slot only a silent target holds would survive it, and sync
    /// would copy it back).
    pub async fn key_slots_complete(&self) -> Result<Vec<(String, KeySlot)>> {
        let listed = self
            .store
            .list_complete(
                paths::KEYS,
                "replace the master key (it deletes every other key slot)",
            )
            .await?;
        self.read_key_slots(listed).await
    }

    pub(super) async fn read_key_slots(
        &self,
        listed: Vec<crate::store::Listed>,
    ) -> Result<Vec<(String, KeySlot)>> {
        let mut out = Vec::new();
        for l in listed {
            let bytes = match self.store.get(&l.name).await {
                Ok(b) => b,
                Err(e @ Error::Integrity { .. }) => {
                    tracing::warn!(
                        "key slot skipped ({}): {e}",
                        self.store.holders(&l.name).await
                    );
                    continue;
                }
                Err(e) => return Err(e),
            };
            let decoded = verify_name(&l.name, &bytes)
                .and_then(|()| KeySlot::decode(&bytes).map_err(|e| Error::integrity(&l.name, e)));
            match decoded {
                Ok(slot) => out.push((l.name.clone(), slot)),
                Err(e) => tracing::warn!(
                    "key slot skipped ({}): {e}",
                    self.store.holders(&l.name).await
                ),
            }
        }
        Ok(out)
    }

    /// Unwraps the master key from the first slot the passphrase opens. The slot that opened
    /// last time (remembered in the state directory) is tried first; slots that do not decode,
    /// or whose name is not their hash (planted by a target), are skipped with a warning.
    pub(super) async fn unlock(
        store: &Store,
        credential: &Credential,
        state_dir: Option<&std::path::Path>,
    ) -> Result<(String, Unlocked)> {
        let listed = store.list(paths::KEYS).await?;
        if listed.is_empty() {
            return Err(Error::integrity("keys/", "the repository has no key slots"));
        }
        let remembered = state_dir.map(|d| d.join("last-key-slot"));
        let last = remembered
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim().to_string());
        let mut slots = Vec::new();
        for l in &listed {
            let bytes = match store.get(&l.name).await {
                Ok(b) => b,
                Err(e @ Error::Integrity { .. }) => {
                    tracing::warn!("key slot skipped ({}): {e}", store.holders(&l.name).await);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let decoded = verify_name(&l.name, &bytes)
                .and_then(|()| KeySlot::decode(&bytes).map_err(|e| Error::integrity(&l.name, e)));
            match decoded {
                Ok(slot) if slot.kdf.affordable() => slots.push((l.name.clone(), slot)),
                Ok(slot) => tracing::warn!(
                    "{}: key slot skipped: its KDF parameters ({:?}) cost more than a reader pays \
                     (FORMAT.md section 6)",
                    l.name,
                    slot.kdf
                ),
                Err(e) => {
                    tracing::warn!("key slot skipped ({}): {e}", store.holders(&l.name).await)
                }
            }
        }
        if slots.is_empty() {
            return Err(Error::integrity("keys/", "no key slot decodes"));
        }
        if let Some(last) = &last {
            if let Some(i) = slots.iter().position(|(n, _)| n == last) {
                let first = slots.remove(i);
                slots.insert(0, first);
            }
        }
        let credential = credential.clone();
        // Argon2 is deliberately slow CPU work: keep it off the async workers.
        let (name, master) = tokio::task::spawn_blocking(move || {
            for (name, slot) in &slots {
                let unwrapped = if slot.kind == SlotKind::Host {
                    slot.unwrap_host_with(&credential)
                        .map(|keys| Unlocked::Host {
                            host: slot.label.clone(),
                            slot: keys,
                        })
                } else {
                    slot.unwrap_with(&credential).map(Unlocked::Master)
                };
                match unwrapped {
                    Ok(unlocked) => return Ok((name.clone(), unlocked)),
                    Err(drvault_keyring::Error::WrongPassphrase) => continue,
                    Err(e) => {
                        tracing::warn!("{name}: key slot skipped: {e}");
                        continue;
                    }
                }
            }
            Err(Error::WrongPassphrase)
        })
        .await
        .map_err(Error::task)??;
        if let Some(p) = remembered {
            if last.as_deref() != Some(name.as_str())
                && p.parent()
                    .is_some_and(|d| std::fs::create_dir_all(d).is_ok())
            {
                let _ = std::fs::write(p, &name);
            }
        }
        Ok((name, master))
    }

    pub(super) async fn load_keyring(
        store: &Store,
        master: drvault_keyring::Key,
    ) -> Result<Keyring> {
        let mut best: Option<Keyring> = None;
        for (name, bytes) in Self::keyring_objects(store, ObjectKind::Keyring).await? {
            // A keyring sealed under another master key (left by an interrupted master-key
            // rotation, or planted) is not this master key's; another object is.
            let kr = match Keyring::open(master.clone(), &bytes) {
                Ok(kr) => kr,
                Err(drvault_keyring::Error::Authentication) => {
                    tracing::info!("{name} is sealed under another master key; skipped");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(
                        "{name}: keyring object skipped ({}): {e}",
                        store.holders(&name).await
                    );
                    continue;
                }
            };
            if best
                .as_ref()
                .is_none_or(|b| kr.generation() > b.generation())
            {
                best = Some(kr);
            }
        }
        best.ok_or_else(|| Error::integrity("keyring/", "the repository has no keyring object"))
    }

    /// The newest host keyring the host key opens.
    pub(super) async fn load_host_keyring(
        store: &Store,
        slot: &drvault_keyring::HostSlotKeys,
    ) -> Result<HostKeyring> {
        let mut best: Option<HostKeyring> = None;
        for (name, bytes) in Self::keyring_objects(store, ObjectKind::HostKeyring).await? {
            match HostKeyring::open(&slot.host_key, &slot.verifier, &bytes) {
                Ok(ring) => {
                    if best
                        .as_ref()
                        .is_none_or(|b| ring.generation() > b.generation())
                    {
                        best = Some(ring);
                    }
                }
                // Sealed under an earlier host key (a master-key rotation replaced it).
                Err(drvault_keyring::Error::Authentication) => {
                    tracing::info!("{name} is sealed under another host key; skipped")
                }
                Err(e) => tracing::warn!("{name}: host keyring skipped: {e}"),
            }
        }
        best.ok_or_else(|| {
            Error::NotPermitted(
                "this host key no longer opens the repository: no host keyring opens with it \
                (the master key was replaced, which removes every host key; add a new one with \
                `drvault key add --kind host`)"
                    .into(),
            )
        })
    }

    /// The objects under `keyring/` of `kind` (the full keyring or the host keyring) whose name
    /// is their hash; others are skipped with a warning.
    pub(super) async fn keyring_objects(
        store: &Store,
        kind: ObjectKind,
    ) -> Result<Vec<(String, Bytes)>> {
        let mut out = Vec::new();
        for l in store.list(paths::KEYRING).await? {
            let bytes = match store.get(&l.name).await {
                Ok(b) => b,
                Err(e @ Error::Integrity { .. }) => {
                    tracing::warn!(
                        "keyring object skipped ({}): {e}",
                        store.holders(&l.name).await
                    );
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Err(e) = verify_name(&l.name, &bytes) {
                tracing::warn!(
                    "keyring object skipped ({}): {e}",
                    store.holders(&l.name).await
                );
                continue;
            }
            match Header::parse(&bytes) {
                Ok(h) if h.kind == kind => out.push((l.name, bytes)),
                // The other kind (keyring or host keyring): not this reader's.
                Ok(h) if matches!(h.kind, ObjectKind::Keyring | ObjectKind::HostKeyring) => {}
                Ok(h) => tracing::warn!(
                    "keyring object skipped ({}): {}: an envelope of kind {:?}",
                    store.holders(&l.name).await,
                    l.name,
                    h.kind
                ),
                Err(e) => tracing::warn!(
                    "keyring object skipped ({}): {}: {e}",
                    store.holders(&l.name).await,
                    l.name
                ),
            }
        }
        Ok(out)
    }
}
