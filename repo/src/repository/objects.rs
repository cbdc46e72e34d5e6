//! Reading and writing the repository's sealed objects: the envelope around every object,
//! blobs (through whole tree packs cached in memory), trees, snapshots and pack headers.

use super::*;

/// Whole tree packs kept in memory: a walk reads thousands of small tree blobs from a handful
/// of packs, and one read per pack beats one ranged read per tree.
#[derive(Default)]
pub(super) struct TreePackCache {
    packs: std::collections::VecDeque<(Id, Bytes)>,
    bytes: usize,
    /// Packs no target holds intact as a whole: their trees are read one by one.
    damaged: crate::IdSet,
}

const TREE_CACHE_BYTES: usize = 32 * 1024 * 1024;

impl TreePackCache {
    pub(super) fn get(&self, pack: &Id) -> Option<Bytes> {
        self.packs
            .iter()
            .find(|(id, _)| id == pack)
            .map(|(_, b)| b.clone())
    }

    pub(super) fn insert(&mut self, pack: Id, bytes: Bytes) {
        if self.get(&pack).is_some() {
            return;
        }
        self.bytes += bytes.len();
        self.packs.push_back((pack, bytes));
        while self.bytes > TREE_CACHE_BYTES && self.packs.len() > 1 {
            if let Some((_, old)) = self.packs.pop_front() {
                self.bytes -= old.len();
            }
        }
    }
}

impl Repository {
    // ---- sealed objects ----

    /// Seals a [`RepoFile`] structure for storage under `T::DIR`; returns the sealed bytes
    /// (their BLAKE3 hash is the object's name).
    pub(crate) fn seal_file<T: RepoFile>(&self, file: &T) -> Result<Vec<u8>> {
        self.seal_object(T::KIND, &file.encode())
    }

    /// Verifies, opens and decodes a [`RepoFile`] object, refusing a version this drvault does
    /// not read.
    pub fn open_file<T: RepoFile>(&self, name: &str, bytes: &[u8]) -> Result<T> {
        T::decode(name, &self.open_plain(name, T::KIND, bytes)?)
    }

    /// Seals an object of `kind`: as the keys decide (index objects and prune marks under the
    /// epoch's index key once the repository takes host keys; a host seals to the epoch's
    /// public key).
    pub(crate) fn seal_object(&self, kind: ObjectKind, plain: &[u8]) -> Result<Vec<u8>> {
        let (kind, sealer) = self.keys.sealer_for(kind)?;
        let compressed = zstd::bulk::compress(plain, 3)
            .ok()
            .filter(|c| c.len() < plain.len());
        let mut out = Vec::new();
        sealer.seal(
            kind,
            compressed.is_some(),
            b"",
            compressed.as_deref().unwrap_or(plain),
            &mut out,
        )?;
        Ok(out)
    }

    /// Seals an object to the active epoch's public key, as a host key would (full keys only).
    pub(crate) fn seal_as_host(&self, kind: ObjectKind, plain: &[u8]) -> Result<Vec<u8>> {
        let kr = self.keyring()?;
        let epoch = kr.active_epoch()?.0;
        let sealer = drvault_keyring::SealingKey::new(epoch, &kr.epoch_public(epoch)?)?;
        let mut out = Vec::new();
        sealer.seal(kind, false, b"", plain, &mut out)?;
        Ok(out)
    }

    /// Verifies the object's name and kind and opens it: its plaintext.
    pub(super) fn open_plain(&self, name: &str, kind: ObjectKind, bytes: &[u8]) -> Result<Vec<u8>> {
        verify_name(name, bytes)?;
        let header = Header::parse(bytes).map_err(|e| Error::integrity(name, e))?;
        if header.kind != kind && Some(header.kind) != kind.shared() {
            return Err(Error::integrity(name, "wrong object kind"));
        }
        let (_, payload) = self.keys.open(b"", bytes).map_err(|e| key_error(name, e))?;
        if header.compressed {
            decompress_bounded(name, &payload)
        } else {
            Ok(payload)
        }
    }

    // ---- blobs and trees ----

    /// Reads and verifies one blob.
    pub async fn read_blob(&self, kind: BlobKind, id: &Id) -> Result<Vec<u8>> {
        let loc = self.locate(id).ok_or_else(|| Error::NotFound {
            name: format!("blob {id} (not in any index)"),
        })?;
        if loc.entry.kind != kind {
            return Err(Error::integrity(
                format!("blob {id}"),
                "indexed with another kind",
            ));
        }
        self.read_located(&loc).await
    }

    /// Reads and verifies the blob at one location (its kind, ID and size as the index says).
    pub async fn read_located(&self, loc: &Location) -> Result<Vec<u8>> {
        let (kind, id) = (loc.entry.kind, &loc.entry.id);
        let name = paths::pack(&loc.pack);
        let start = u64::from(loc.entry.offset);
        let end = start + u64::from(loc.entry.length);
        let open = |sealed: &[u8]| {
            open_blob(&self.keys, kind, id, loc.entry.raw_length, sealed).map_err(|e| match e {
                Error::Integrity { reason, .. } => {
                    Error::integrity(format!("{name} (blob {id})"), reason)
                }
                other => other,
            })
        };
        if kind == BlobKind::Tree {
            match self.tree_pack(&loc.pack, &name).await {
                Ok(pack) => {
                    let sealed = pack.get(start as usize..end as usize).ok_or_else(|| {
                        Error::integrity(&name, format!("blob {id} lies outside the pack"))
                    })?;
                    return open(sealed);
                }
                // No target holds the whole pack intact, yet each blob is sealed on its own:
                // read this one alone, so one damaged byte costs one tree, not all in the pack.
                Err(Error::Integrity { reason, .. }) => tracing::debug!(
                    "{name}: no intact copy of the whole pack ({reason}); reading tree {id} alone"
                ),
                Err(e) => return Err(e),
            }
        }
        // Verify inside the read so a damaged copy falls back to the next target.
        self.store
            .get_range_with(&name, start..end, |b| {
                let open = &open;
                async move { open(&b) }
            })
            .await
    }

    pub(super) async fn tree_pack(&self, pack: &Id, name: &str) -> Result<Bytes> {
        let poisoned = || Error::Internal("tree cache lock poisoned".into());
        {
            let cache = self.tree_packs.lock().map_err(|_| poisoned())?;
            if let Some(b) = cache.get(pack) {
                return Ok(b);
            }
            if cache.damaged.contains(pack) {
                return Err(Error::integrity(
                    name,
                    "damaged on every target (seen earlier)",
                ));
            }
        }
        let bytes = match self.store.get(name).await {
            Err(e @ Error::Integrity { .. }) => {
                self.tree_packs
                    .lock()
                    .map_err(|_| poisoned())?
                    .damaged
                    .insert(*pack);
                return Err(e);
            }
            other => other?,
        };
        self.tree_packs
            .lock()
            .map_err(|_| poisoned())?
            .insert(*pack, bytes.clone());
        Ok(bytes)
    }

    pub async fn load_tree(&self, id: &Id) -> Result<Tree> {
        let bytes = self.read_blob(BlobKind::Tree, id).await?;
        let object = format!("tree {id}");
        let tree: Tree = decode(&object, &bytes)?;
        tree.validate(&object)?;
        Ok(tree)
    }

    // ---- snapshots ----

    /// A snapshot's ID: the keyed BLAKE3 of its plaintext under a key derived from the ID key
    /// (FORMAT.md section 12). Re-encryption keeps the plaintext, so it keeps the ID; a new tag
    /// makes a new snapshot, with a new ID.
    pub fn snapshot_id(&self, snapshot: &Snapshot) -> Id {
        let key = blake3::derive_key("drvault 2026 snapshot id", self.keys.id_key());
        Id(*blake3::keyed_hash(&key, &snapshot.encode()).as_bytes())
    }

    /// Writes a snapshot object; returns the snapshot's ID ([`Self::snapshot_id`]). Call only
    /// after every pack and index it needs is durable.
    pub async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<Id> {
        Ok(self.save_snapshot_object(snapshot).await?.0)
    }

    /// [`Self::save_snapshot`], also returning the object's name.
    pub(crate) async fn save_snapshot_object(&self, snapshot: &Snapshot) -> Result<(Id, String)> {
        let sealed = self.seal_file(snapshot)?;
        let id = self.snapshot_id(snapshot);
        let name = paths::snapshot(&Id::of_stored(&sealed));
        if let Err(e) = self.store.put_new(&name, sealed.into(), true).await {
            if matches!(e, Error::Quorum { .. }) {
                // Below the quorum the backup fails, so it must leave no snapshot behind.
                if let Err(d) = self.store.delete(&name).await {
                    tracing::warn!("could not withdraw {name} after the failed write ({d}); it is complete where it exists");
                }
            }
            return Err(e);
        }
        Ok((id, name))
    }

    /// Snapshots by name; one deleted since the listing (a concurrent `forget`) is left out.
    pub async fn load_snapshots(&self, names: Vec<String>) -> Result<Vec<(String, Snapshot)>> {
        let loaded: Vec<Option<(String, Snapshot)>> = futures::stream::iter(names)
            .map(|name| async move {
                match self.load_snapshot(&name).await {
                    Ok(s) => Ok(Some((name, s))),
                    Err(Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        let mut out: Vec<(String, Snapshot)> = loaded.into_iter().flatten().collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Reads one snapshot object by its name (`snapshots/<id>`), and says in
    /// `Snapshot::untrusted` when its writer is not what it claims.
    pub async fn load_snapshot(&self, name: &str) -> Result<Snapshot> {
        let bytes = self.store.get(name).await?;
        let mut snapshot: Snapshot = self.open_file(name, &bytes)?;
        snapshot.untrusted = self.writer_doubt(&bytes, &snapshot);
        snapshot.stored_as = vec![name_id(name)?];
        Ok(snapshot)
    }

    /// Why a snapshot's writer is not to be trusted, if it is not. Only a host key seals to a
    /// public key (full keys seal under the data key), and a host key's snapshot must carry a
    /// proof under that host's authentication key, for the host the snapshot names.
    fn writer_doubt(&self, sealed: &[u8], snapshot: &Snapshot) -> Option<String> {
        let by_host_key = sealed.first() == Some(&drvault_keyring::SEALED_TO_PUBLIC_VERSION);
        let proof = match (&snapshot.writer, by_host_key) {
            (None, false) => return None,
            (None, true) => {
                return Some("written with a host key, without the proof of which host".into())
            }
            (Some(p), _) => p,
        };
        let valid = self.keys.host_auth_key(&proof.host).is_ok_and(|auth| {
            // blake3::Hash compares in constant time.
            blake3::Hash::from(backup::host_proof_mac(&auth, snapshot))
                == blake3::Hash::from(proof.mac)
        });
        if !valid {
            return Some(format!(
                "its proof of being written by host {}'s key does not verify",
                proof.host
            ));
        }
        if proof.host != snapshot.host {
            return Some(format!(
                "it claims host {} but was written with host {}'s key",
                snapshot.host, proof.host
            ));
        }
        None
    }

    /// All snapshots, oldest first, by their IDs ([`Self::snapshot_id`]); objects holding the
    /// same snapshot (an interrupted re-encryption leaves two) are one entry naming both in
    /// `stored_as`. A snapshot listed but gone by the time it is read was removed meanwhile (a
    /// `forget` on this or another host) and is left out.
    /// The snapshots this machine wrote with its host key, from its local catalog (a host key
    /// cannot read any snapshot back from the repository). Empty without a catalog.
    pub async fn own_snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let Some(dir) = self.catalog_dir() else {
            return Ok(Vec::new());
        };
        tokio::task::spawn_blocking(move || crate::catalog::Catalog::open(&dir)?.own_snapshots())
            .await
            .map_err(Error::task)?
    }

    /// Keeps a snapshot this machine wrote with a host key in its local catalog; a failure is
    /// only a warning (the snapshot is in the repository).
    pub(crate) async fn remember_own_snapshot(&self, id: &Id, snapshot: &Snapshot) {
        let Some(dir) = self.catalog_dir() else {
            return;
        };
        let (id, snapshot) = (*id, snapshot.clone());
        let kept = tokio::task::spawn_blocking(move || {
            crate::catalog::Catalog::open(&dir)?.add_own_snapshot(&id, &snapshot)
        })
        .await
        .map_err(Error::task)
        .and_then(|r| r);
        if let Err(e) = kept {
            tracing::warn!(
                "snapshot {} is not listed in the local catalog: {e}",
                id.short()
            );
        }
    }

    pub async fn snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let listed = self.store.list(paths::SNAPSHOTS).await?;
        let read: Vec<Option<(Id, Snapshot)>> = futures::stream::iter(listed)
            .map(|l| async move {
                // One planted or damaged object must not hide every other snapshot: it is
                // skipped with a warning (check names it, repair brings back a good copy).
                if let Err(e) = name_id(&l.name) {
                    tracing::warn!("{e} ({}): skipped", self.store.holders(&l.name).await);
                    return Ok(None);
                }
                match self.load_snapshot(&l.name).await {
                    Ok(s) => Ok(Some((self.snapshot_id(&s), s))),
                    Err(Error::NotFound { .. }) => {
                        tracing::info!("{} was removed while the snapshots were read", l.name);
                        Ok(None)
                    }
                    Err(e @ Error::Integrity { .. }) => {
                        tracing::warn!(
                            "{e} ({}): snapshot skipped (run check; repair brings back an intact copy)",
                            self.store.holders(&l.name).await
                        );
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        let mut by_id: std::collections::BTreeMap<Id, Snapshot> = Default::default();
        for (id, s) in read.into_iter().flatten() {
            match by_id.get_mut(&id) {
                Some(seen) => {
                    seen.stored_as.extend(s.stored_as);
                    // One doubtful copy makes the snapshot doubtful.
                    if seen.untrusted.is_none() {
                        seen.untrusted = s.untrusted;
                    }
                }
                None => {
                    by_id.insert(id, s);
                }
            }
        }
        let mut out: Vec<(Id, Snapshot)> = by_id.into_iter().collect();
        out.sort_by_key(|(id, s)| (s.time_ns, *id));
        Ok(out)
    }

    /// Reads a pack's own header (used by check and index recovery).
    pub fn read_pack_header(&self, pack: &Id, bytes: &[u8]) -> Result<Vec<PackEntry>> {
        let name = paths::pack(pack);
        let len = bytes.len() as u64;
        if bytes.len() < crate::format::PACK_TRAILER_LEN {
            return Err(Error::integrity(&name, "shorter than its trailer"));
        }
        let range = crate::format::parse_pack_trailer(&name, len)(&bytes[bytes.len() - 4..])?;
        let sealed = &bytes[range.start as usize..range.end as usize];
        let header = Header::parse(sealed).map_err(|e| Error::integrity(&name, e))?;
        if header.kind != ObjectKind::PackHeader {
            return Err(Error::integrity(&name, "pack header has the wrong kind"));
        }
        let (_, plain) = self
            .keys
            .open(b"", sealed)
            .map_err(|e| key_error(&name, e))?;
        decode(&name, &plain)
    }
}

/// A failure to open a sealed object: a key this process does not hold (a retired epoch, a
/// host key) says so; anything else is damage to the object.
pub(crate) fn key_error(name: &str, e: drvault_keyring::Error) -> Error {
    match e {
        e @ (drvault_keyring::Error::UnknownEpoch(_) | drvault_keyring::Error::HostKey(_)) => {
            Error::from(e)
        }
        e => Error::integrity(name, e),
    }
}
