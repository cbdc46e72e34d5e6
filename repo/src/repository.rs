//! An open repository: configuration, unlocked keyring, in-memory index, and the operations
//! every command builds on.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use drvault_keyring::{Credential, Header, KdfParams, KeySlot, Keyring, ObjectKind, SlotKind};
use futures::{StreamExt, TryStreamExt};

use crate::blob::open_blob;
use crate::catalog::Catalog;
use crate::chunker::{Chunker, ChunkerParams};
use crate::format::{
    decode, encode, paths, BlobKind, Config, IndexFile, IndexPack, PackEntry, Snapshot, Tree,
    INDEX_VERSION, REPO_FORMAT_VERSION,
};
use crate::packer::FinishedPack;
use crate::store::Store;
use crate::{Error, Id, IdMap, IdSet, Result};

mod backup;
mod keys;
mod prune;
mod rollback;

pub use keys::{EpochInfo, Progress, ReencryptReport, LEASE_TTL};
pub use prune::{PendingMark, PruneOptions, PruneReport, CLOCK_SKEW_MARGIN};

/// Where a blob lives.
#[derive(Debug, Clone, Copy)]
pub struct Location {
    pub pack: Id,
    pub entry: PackEntry,
}

/// Index entries per index object; keeps each object a few MiB.
const INDEX_ENTRIES_PER_OBJECT: usize = 50_000;

/// An index entry without the blob ID (the map key): 20 bytes instead of 52, which matters
/// at millions of blobs.
#[derive(Clone, Copy)]
struct Slot {
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
    kind: BlobKind,
}

/// The in-memory index: what was loaded, sorted for binary search (exact size, no hash-table
/// slack at millions of entries), plus a hash map of what this process added since.
#[derive(Default)]
struct MemIndex {
    packs: Vec<Id>,
    pack_numbers: IdMap<u32>,
    loaded: Vec<(Id, Slot)>,
    added: IdMap<Slot>,
}

impl MemIndex {
    fn slot(&mut self, pack: Id, entry: &PackEntry) -> Slot {
        let n = *self.pack_numbers.entry(pack).or_insert_with(|| {
            self.packs.push(pack);
            (self.packs.len() - 1) as u32
        });
        Slot {
            pack: n,
            offset: entry.offset,
            length: entry.length,
            raw_length: entry.raw_length,
            kind: entry.kind,
        }
    }

    /// Adds an entry during loading; call [`MemIndex::seal`] when done.
    fn load(&mut self, pack: Id, entry: PackEntry) {
        let slot = self.slot(pack, &entry);
        self.loaded.push((entry.id, slot));
    }

    fn seal(&mut self) {
        self.loaded.sort_unstable_by_key(|(id, _)| *id);
        self.loaded.shrink_to_fit();
    }

    fn insert(&mut self, pack: Id, entry: PackEntry) {
        let slot = self.slot(pack, &entry);
        self.added.insert(entry.id, slot);
    }

    fn get(&self, id: &Id) -> Option<&Slot> {
        if let Ok(i) = self.loaded.binary_search_by_key(id, |(k, _)| *k) {
            return Some(&self.loaded[i].1);
        }
        self.added.get(id)
    }

    fn contains(&self, id: &Id) -> bool {
        self.get(id).is_some()
    }

    fn location(&self, id: &Id, s: &Slot) -> Location {
        Location {
            pack: self.packs[s.pack as usize],
            entry: PackEntry {
                kind: s.kind,
                id: *id,
                offset: s.offset,
                length: s.length,
                raw_length: s.raw_length,
            },
        }
    }
}

/// Options for `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub kdf: KdfParams,
    /// The first slot's label (who holds the passphrase, e.g. "root@db1").
    pub label: String,
    pub chunker: ChunkerParams,
    pub pack_size: u32,
    pub compression_level: i32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            kdf: KdfParams::SERVER,
            label: String::new(),
            chunker: ChunkerParams::default(),
            pack_size: 16 * 1024 * 1024,
            compression_level: 2,
        }
    }
}

pub struct Repository {
    store: Store,
    config: Config,
    keyring: Arc<Keyring>,
    index: RwLock<MemIndex>,
    /// Entries of packs uploaded by this process and not yet written to an index object.
    pending: Mutex<Vec<IndexPack>>,
    state_dir: Option<PathBuf>,
    tree_packs: Mutex<TreePackCache>,
    /// The local catalog, when a state directory was given.
    catalog: Mutex<Option<Catalog>>,
    /// The backup session this process runs under ([`Repository::begin_backup`]): no index is
    /// written once it lapsed.
    backup_liveness: Mutex<Option<Arc<crate::session::Liveness>>>,
    /// The key slot that opened the repository (its object name).
    opened_slot: Option<String>,
}

/// Whole tree packs kept in memory: a walk reads thousands of small tree blobs from a handful
/// of packs, and one read per pack beats one ranged read per tree.
#[derive(Default)]
struct TreePackCache {
    packs: std::collections::VecDeque<(Id, Bytes)>,
    bytes: usize,
    /// Packs no target holds intact as a whole: their trees are read one by one.
    damaged: crate::IdSet,
}

const TREE_CACHE_BYTES: usize = 48 * 1024 * 1024;

impl TreePackCache {
    fn get(&self, pack: &Id) -> Option<Bytes> {
        self.packs
            .iter()
            .find(|(id, _)| id == pack)
            .map(|(_, b)| b.clone())
    }

    fn insert(&mut self, pack: Id, bytes: Bytes) {
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

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Repository {
    /// Creates a repository: config, one passphrase slot, the keyring.
    pub async fn init(store: Store, passphrase: &[u8], opts: InitOptions) -> Result<Self> {
        let label = opts.label.clone();
        opts.chunker.validate().map_err(Error::Invalid)?;
        let now = unix_now();
        let config = Config {
            version: REPO_FORMAT_VERSION,
            id: hex::encode(drvault_keyring::random_bytes::<16>()?),
            created: now,
            chunker: opts.chunker,
            pack_size: opts.pack_size,
            compression_level: opts.compression_level,
        };
        let mut keyring = Keyring::generate(now)?;
        keyring.bind_config(config.binding());
        let kdf = opts.kdf;
        let master = keyring.master().clone();
        let pass = zeroize::Zeroizing::new(passphrase.to_vec());
        let slot = tokio::task::spawn_blocking(move || {
            KeySlot::create(SlotKind::Passphrase, now, kdf, &pass, &label, &master)
        })
        .await
        .map_err(Error::task)??;
        // The config is written first with a create-only put: a second init on the same
        // location fails here, before anything else is written.
        store
            .put_new(paths::CONFIG, Bytes::from(config.encode()), false)
            .await
            .map_err(|e| match e {
                Error::AlreadyExists { .. } => Error::AlreadyExists {
                    location: store.location().to_string(),
                },
                other => other,
            })?;
        let slot_bytes = slot.encode();
        let slot_name = paths::key(&Id::of_stored(&slot_bytes));
        store.put_new(&slot_name, slot_bytes.into(), true).await?;
        let sealed = keyring.seal()?;
        store
            .put_new(
                &paths::keyring(&Id::of_stored(&sealed)),
                sealed.into(),
                true,
            )
            .await?;
        Ok(Repository {
            store,
            config,
            keyring: Arc::new(keyring),
            index: RwLock::default(),
            pending: Mutex::default(),
            state_dir: None,
            tree_packs: Mutex::default(),
            catalog: Mutex::default(),
            backup_liveness: Mutex::default(),
            opened_slot: Some(slot_name),
        })
    }

    /// Opens a repository with a passphrase, key file or recovery key; `state_dir` holds the
    /// catalog (a cache).
    pub async fn open(
        store: Store,
        credential: &Credential,
        state_dir: Option<PathBuf>,
    ) -> Result<Self> {
        Self::open_inner(store, credential, state_dir, true).await
    }

    async fn open_inner(
        store: Store,
        credential: &Credential,
        state_dir: Option<PathBuf>,
        with_index: bool,
    ) -> Result<Self> {
        let config_bytes = store.get(paths::CONFIG).await.map_err(|e| match e {
            Error::NotFound { .. } => Error::NoRepository {
                location: store.location().to_string(),
                detail: "it holds no `config` object".into(),
            },
            other => other,
        })?;
        let config = Config::decode(&config_bytes)?;
        let state_root = state_dir;
        let state_dir = state_root.as_ref().map(|d| d.join(&config.id));
        let (opened_slot, master) = Self::unlock(&store, credential, state_dir.as_deref()).await?;
        let keyring = Self::load_keyring(&store, master).await?;
        if let Some(root) = &state_root {
            rollback::check_and_remember(root, &keyring)?;
        }
        // The config is clear text anyone with write access could edit (chunk sizes that
        // reveal file structure, another id): the keyring, which only key holders can write,
        // holds its hash. Keyrings from before the binding get it at their next key operation.
        if let Some(bound) = keyring.config_hash() {
            if *bound != config.binding() {
                return Err(Error::integrity(
                    paths::CONFIG,
                    "it is not the config this repository's keyring was written for: someone \
                     without the keys changed it (restore it from another target or a copy)",
                ));
            }
        }
        let repo = Repository {
            store,
            config,
            keyring: Arc::new(keyring),
            index: RwLock::default(),
            pending: Mutex::default(),
            state_dir,
            tree_packs: Mutex::default(),
            catalog: Mutex::default(),
            backup_liveness: Mutex::default(),
            opened_slot: Some(opened_slot),
        };
        if with_index {
            repo.load_index().await?;
        }
        Ok(repo)
    }

    /// Creates a repository as `drvault init` does: the passphrase slot, a generated
    /// recovery-key slot, and the audit log's first entry (`repository.init`, naming the
    /// repository, its `location` and its first keys). Returns the recovery key, to be shown
    /// once.
    pub async fn create(
        store: Store,
        passphrase: &[u8],
        opts: InitOptions,
        location: &str,
    ) -> Result<(Self, zeroize::Zeroizing<String>)> {
        let kdf = opts.kdf;
        let repo = Self::init(store, passphrase, opts).await?;
        let recovery = drvault_keyring::generate_recovery_key()?;
        repo.create_key_slot(SlotKind::Recovery, recovery.as_bytes(), kdf, "recovery")
            .await?;
        // The evidence starts with the repository: its first keys and who made them.
        let details = serde_json::json!({
            "repository": repo.config().id,
            "location": location,
            "slots": ["passphrase", "recovery"],
            "kdf_memory_kib": kdf.m_cost_kib,
        });
        crate::audit::record(&repo, "repository.init", details, "ok").await;
        Ok((repo, recovery))
    }

    /// Adds a key slot wrapping this repository's master key under another passphrase (or key
    /// file, or recovery key). Returns the slot's object name.
    /// Recorded in the audit log (`key.add`).
    pub async fn add_key_slot(
        &self,
        kind: SlotKind,
        passphrase: &[u8],
        kdf: KdfParams,
        label: &str,
    ) -> Result<String> {
        let added = self.create_key_slot(kind, passphrase, kdf, label).await;
        crate::audit::record_outcome(self, "key.add", &added, |name| {
            serde_json::json!({ "slot": keys::short(name), "kind": kind.as_str(), "label": label })
        })
        .await;
        added
    }

    async fn create_key_slot(
        &self,
        kind: SlotKind,
        passphrase: &[u8],
        kdf: KdfParams,
        label: &str,
    ) -> Result<String> {
        if passphrase.is_empty() {
            return Err(Error::Invalid("refusing an empty passphrase".into()));
        }
        let master = self.keyring.master().clone();
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

    async fn read_key_slots(
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
    async fn unlock(
        store: &Store,
        credential: &Credential,
        state_dir: Option<&std::path::Path>,
    ) -> Result<(String, drvault_keyring::Key)> {
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
                match slot.unwrap_with(&credential) {
                    Ok(master) => return Ok((name.clone(), master)),
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

    async fn load_keyring(store: &Store, master: drvault_keyring::Key) -> Result<Keyring> {
        let mut best: Option<Keyring> = None;
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
            // A keyring sealed under another master key (left by an interrupted master-key
            // rotation, or planted) is not this master key's; another object is.
            let kr = match Keyring::open(master.clone(), &bytes) {
                Ok(kr) => kr,
                Err(drvault_keyring::Error::Authentication) => {
                    tracing::info!("{} is sealed under another master key; skipped", l.name);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(
                        "{}: keyring object skipped ({}): {e}",
                        l.name,
                        store.holders(&l.name).await
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

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    pub fn chunker(&self) -> Chunker {
        Chunker::new(self.keyring.chunker_seed(), self.config.chunker)
    }

    pub fn blob_id(&self, plain: &[u8]) -> Id {
        Id::of_plaintext(self.keyring.id_key(), plain)
    }

    // ---- index ----

    /// Reads the index again (another process may have changed it since it was loaded).
    pub async fn reload_index(&self) -> Result<()> {
        self.load_index().await
    }

    /// Loads the index. An index object listed but gone when read was replaced meanwhile (prune
    /// and re-encryption write the new objects before deleting the old ones), so the listing is
    /// taken again.
    async fn load_index(&self) -> Result<()> {
        let mut attempt = 0;
        loop {
            match self.load_index_once().await {
                Err(Error::NotFound { name }) if attempt < 3 && name.starts_with(paths::INDEX) => {
                    tracing::info!(
                        "{name} was replaced while the index was read; reading it again"
                    );
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn load_index_once(&self) -> Result<()> {
        let names: Vec<String> = self.store.list_names(paths::INDEX).await?;
        let Some(dir) = self.state_dir.clone() else {
            let mut idx = MemIndex::default();
            for (_, file) in self.fetch_indexes(names).await? {
                for p in &file.packs {
                    for b in &p.blobs {
                        idx.load(p.pack, *b);
                    }
                }
            }
            idx.seal();
            *self
                .index
                .write()
                .map_err(|_| Error::Internal("index lock poisoned".into()))? = idx;
            return Ok(());
        };
        let wanted: std::collections::HashSet<String> = names.iter().cloned().collect();
        let mut catalog = tokio::task::spawn_blocking(move || Catalog::open(&dir))
            .await
            .map_err(Error::task)??;
        let known = catalog.known_indexes()?;
        let missing: Vec<String> = names
            .iter()
            .filter(|n| !known.contains(*n))
            .cloned()
            .collect();
        let mut fetched = self.fetch_indexes(missing).await?;
        // Cached objects gone from the repository: when the objects that remain or are new
        // name every pack they named (a consolidation), the cached locations stay valid and
        // only their names are dropped; otherwise (packs were deleted) the cache starts over.
        let vanished: Vec<String> = known.difference(&wanted).cloned().collect();
        // Dropped only after the objects that replace them are recorded: a crash in between
        // leaves both, and the next opening decides again.
        let mut forget = Vec::new();
        if !vanished.is_empty() {
            let packs = catalog.index_packs()?;
            let mut still: IdSet = fetched
                .iter()
                .flat_map(|(_, f)| f.packs.iter().map(|p| p.pack))
                .collect();
            for (object, ps) in &packs {
                if wanted.contains(object) {
                    still.extend(ps.iter().copied());
                }
            }
            let covered = vanished.iter().all(|o| {
                packs
                    .get(o)
                    .is_some_and(|ps| ps.iter().all(|p| still.contains(p)))
            });
            if covered {
                forget = vanished;
            } else {
                catalog.reset()?;
                let cached: Vec<String> = names
                    .iter()
                    .filter(|n| known.contains(*n))
                    .cloned()
                    .collect();
                fetched.extend(self.fetch_indexes(cached).await?);
            }
        }
        let catalog = tokio::task::spawn_blocking(move || -> Result<Catalog> {
            catalog.add_indexes(fetched.iter().map(|(n, f)| (n.as_str(), f)))?;
            catalog.forget_indexes(&forget)?;
            Ok(catalog)
        })
        .await
        .map_err(Error::task)??;
        let mut idx = MemIndex::default();
        catalog.for_each_blob(|pack, entry| idx.load(pack, entry))?;
        idx.seal();
        *self
            .index
            .write()
            .map_err(|_| Error::Internal("index lock poisoned".into()))? = idx;
        *self
            .catalog
            .lock()
            .map_err(|_| Error::Internal("catalog lock poisoned".into()))? = Some(catalog);
        Ok(())
    }

    async fn fetch_indexes(&self, names: Vec<String>) -> Result<Vec<(String, IndexFile)>> {
        futures::stream::iter(names)
            .map(|name| self.fetch_index(name))
            .buffer_unordered(8)
            .try_collect()
            .await
    }

    /// Reads, verifies and opens one index object.
    async fn fetch_index(&self, name: String) -> Result<(String, IndexFile)> {
        let bytes = self.store.get(&name).await?;
        let file: IndexFile = self.open_object(&name, ObjectKind::Index, &bytes)?;
        if file.version != INDEX_VERSION {
            return Err(Error::UnsupportedVersion {
                object: name,
                version: file.version,
            });
        }
        Ok((name, file))
    }

    /// The index for a query. A lock poisoned by a panicking writer still holds a whole index
    /// (writers replace it or add entries, never leave one half-made), so it is read rather
    /// than taken for empty: "no blobs" would make a check pass and a backup re-upload.
    fn index_query(&self) -> std::sync::RwLockReadGuard<'_, MemIndex> {
        self.index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn has_blob(&self, id: &Id) -> bool {
        self.index_query().contains(id)
    }

    pub fn locate(&self, id: &Id) -> Option<Location> {
        let idx = self.index_query();
        idx.get(id).map(|s| idx.location(id, s))
    }

    /// Every indexed blob with its pack.
    pub fn index_entries(&self) -> Vec<Location> {
        let idx = self.index_query();
        idx.loaded
            .iter()
            .map(|(id, s)| (id, s))
            .chain(idx.added.iter())
            .map(|(id, s)| idx.location(id, s))
            .collect()
    }

    /// Uploads a finished pack and records its blobs for the next index object.
    pub async fn upload_pack(&self, pack: FinishedPack) -> Result<u64> {
        let size = pack.bytes.len() as u64;
        self.store
            .put_new(&paths::pack(&pack.id), Bytes::from(pack.bytes), true)
            .await?;
        {
            let mut idx = self
                .index
                .write()
                .map_err(|_| Error::Internal("index lock poisoned".into()))?;
            for e in &pack.entries {
                idx.insert(pack.id, *e);
            }
        }
        self.pending
            .lock()
            .map_err(|_| Error::Internal("pending index lock poisoned".into()))?
            .push(IndexPack {
                pack: pack.id,
                blobs: pack.entries,
            });
        Ok(size)
    }

    /// Fails when this process runs a backup whose session lapsed.
    fn confirm_backup_session(&self) -> Result<()> {
        match self
            .backup_liveness
            .lock()
            .map_err(|_| Error::Internal("session lock poisoned".into()))?
            .as_ref()
        {
            Some(l) => l.confirm(),
            None => Ok(()),
        }
    }

    /// Writes one index object listing `packs` (for tools and benchmarks that build an index
    /// directly; a backup's packs are indexed through [`Self::upload_pack`] and
    /// [`Self::flush_index`]). The packs are not checked.
    pub async fn write_index_object(&self, packs: Vec<IndexPack>) -> Result<u64> {
        self.pending
            .lock()
            .map_err(|_| Error::Internal("pending index lock poisoned".into()))?
            .extend(packs);
        self.flush_index().await
    }

    /// Writes index objects for every pack uploaded since the last flush. Returns bytes written.
    pub async fn flush_index(&self) -> Result<u64> {
        crate::failpoint::hit("index.before-flush").await;
        // An index written after the backup's session lapsed could name packs a prune deleted
        // meanwhile (taking the backup for dead); every later backup would refer to them.
        self.confirm_backup_session()?;
        let packs = std::mem::take(
            &mut *self
                .pending
                .lock()
                .map_err(|_| Error::Internal("lock poisoned".into()))?,
        );
        let mut written = 0;
        let mut batch: Vec<IndexPack> = Vec::new();
        let mut count = 0;
        let mut batches = Vec::new();
        for p in packs {
            count += p.blobs.len();
            batch.push(p);
            if count >= INDEX_ENTRIES_PER_OBJECT {
                batches.push(std::mem::take(&mut batch));
                count = 0;
            }
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        let mut written_files = Vec::new();
        for packs in batches {
            let file = IndexFile {
                version: INDEX_VERSION,
                packs,
            };
            let sealed = self.seal_object(ObjectKind::Index, &encode(&file))?;
            let id = Id::of_stored(&sealed);
            written += sealed.len() as u64;
            let name = paths::index(&id);
            self.store.put_new(&name, sealed.into(), true).await?;
            // Stopped between the check above and the write: withdrawn again.
            if let Err(e) = self.confirm_backup_session() {
                let _ = self.store.delete(&name).await;
                return Err(e);
            }
            written_files.push((name, file));
        }
        // The catalog is a cache: failing to update it must never fail the backup.
        if let Err(e) = self.remember_indexes(written_files).await {
            tracing::warn!("catalog not updated (it will catch up on the next run): {e}");
        }
        Ok(written)
    }

    /// Records in the catalog the objects targets missed in this process (the quorum held them).
    /// Returns the count per target. A catalog failure is logged, never fatal: a listing of
    /// the targets (`drvault targets`) finds the same objects.
    pub async fn remember_owed(&self) -> std::collections::BTreeMap<String, u64> {
        let owed = self.store.owed();
        let mut counts = std::collections::BTreeMap::new();
        for (t, _) in &owed {
            *counts.entry(t.clone()).or_insert(0) += 1;
        }
        if owed.is_empty() {
            return counts;
        }
        if let Some(dir) = self.state_dir.clone() {
            let r = tokio::task::spawn_blocking(move || Catalog::open(&dir)?.add_owed(&owed)).await;
            if let Err(e) = r.map_err(Error::task).and_then(|r| r) {
                tracing::warn!(
                    "owed objects not recorded in the catalog (a listing still finds them): {e}"
                );
            }
        }
        counts
    }

    /// Adds index objects this process wrote to the catalog, so the next run need not fetch them.
    async fn remember_indexes(&self, files: Vec<(String, IndexFile)>) -> Result<()> {
        let poisoned = || Error::Internal("catalog lock poisoned".into());
        let Some(mut catalog) = self.catalog.lock().map_err(|_| poisoned())?.take() else {
            return Ok(());
        };
        let catalog = tokio::task::spawn_blocking(move || -> Result<Catalog> {
            catalog.add_indexes(files.iter().map(|(n, f)| (n.as_str(), f)))?;
            Ok(catalog)
        })
        .await
        .map_err(Error::task)??;
        *self.catalog.lock().map_err(|_| poisoned())? = Some(catalog);
        Ok(())
    }

    // ---- sealed objects ----

    fn seal_object(&self, kind: ObjectKind, plain: &[u8]) -> Result<Vec<u8>> {
        let (epoch, key) = self.keyring.active_epoch()?;
        let compressed = zstd::bulk::compress(plain, 3)
            .ok()
            .filter(|c| c.len() < plain.len());
        let header = Header {
            kind,
            compressed: compressed.is_some(),
            epoch,
        };
        let mut out = Vec::new();
        drvault_keyring::seal(
            &key,
            header,
            b"",
            compressed.as_deref().unwrap_or(plain),
            &mut out,
        )?;
        Ok(out)
    }

    /// Verifies the object's name, opens it and decodes its plaintext.
    fn open_object<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        kind: ObjectKind,
        bytes: &[u8],
    ) -> Result<T> {
        verify_name(name, bytes)?;
        let header = Header::parse(bytes).map_err(|e| Error::integrity(name, e))?;
        if header.kind != kind {
            return Err(Error::integrity(name, "wrong object kind"));
        }
        let key = self.keyring.epoch_key(header.epoch)?;
        let (_, payload) =
            drvault_keyring::open(&key, b"", bytes).map_err(|e| Error::integrity(name, e))?;
        let plain = if header.compressed {
            decompress_bounded(name, &payload)?
        } else {
            payload
        };
        decode(name, &plain)
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
        let name = paths::pack(&loc.pack);
        let start = u64::from(loc.entry.offset);
        let end = start + u64::from(loc.entry.length);
        let open = |sealed: &[u8]| {
            open_blob(&self.keyring, kind, id, loc.entry.raw_length, sealed).map_err(|e| match e {
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

    async fn tree_pack(&self, pack: &Id, name: &str) -> Result<Bytes> {
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

    /// Writes a snapshot object. Call only after every pack and index it needs is durable.
    pub async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<Id> {
        let sealed = self.seal_object(ObjectKind::Snapshot, &encode(snapshot))?;
        let id = Id::of_stored(&sealed);
        let name = paths::snapshot(&id);
        if let Err(e) = self.store.put_new(&name, sealed.into(), true).await {
            if matches!(e, Error::Quorum { .. }) {
                // Below the quorum the backup fails, so it must leave no snapshot behind.
                if let Err(d) = self.store.delete(&name).await {
                    tracing::warn!("could not withdraw {name} after the failed write ({d}); it is complete where it exists");
                }
            }
            return Err(e);
        }
        Ok(id)
    }

    /// Reads one snapshot object by its name (`snapshots/<id>`).
    pub async fn load_snapshot(&self, name: &str) -> Result<Snapshot> {
        let bytes = self.store.get(name).await?;
        let snap: Snapshot = self.open_object(name, ObjectKind::Snapshot, &bytes)?;
        if snap.version != crate::format::SNAPSHOT_VERSION {
            return Err(Error::UnsupportedVersion {
                object: name.to_string(),
                version: snap.version,
            });
        }
        Ok(snap)
    }

    /// All snapshots, oldest first.
    /// A snapshot listed but gone by the time it is read was removed meanwhile (a `forget` on
    /// this or another host) and is left out.
    pub async fn snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let listed = self.store.list(paths::SNAPSHOTS).await?;
        let read: Vec<Option<(Id, Snapshot)>> = futures::stream::iter(listed)
            .map(|l| async move {
                // One planted or damaged object must not hide every other snapshot: it is
                // skipped with a warning (check names it, repair brings back a good copy).
                let id = match name_id(&l.name) {
                    Ok(id) => id,
                    Err(e) => {
                        tracing::warn!("{e} ({}): skipped", self.store.holders(&l.name).await);
                        return Ok(None);
                    }
                };
                match self.load_snapshot(&l.name).await {
                    Ok(s) => Ok(Some((id, s))),
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
        let mut out: Vec<(Id, Snapshot)> = read.into_iter().flatten().collect();
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
        let key = self.keyring.epoch_key(header.epoch)?;
        let (_, plain) =
            drvault_keyring::open(&key, b"", sealed).map_err(|e| Error::integrity(&name, e))?;
        decode(&name, &plain)
    }
}

/// Object names end in the BLAKE3 hash of their bytes: anyone can check a copy without keys.
pub fn verify_name(name: &str, bytes: &[u8]) -> Result<()> {
    let id = name_id(name)?;
    if Id::of_stored(bytes) != id {
        return Err(Error::integrity(
            name,
            "content does not match its name (damaged or truncated)",
        ));
    }
    Ok(())
}

fn name_id(name: &str) -> Result<Id> {
    let last = name.rsplit('/').next().unwrap_or(name);
    Id::from_hex(last).ok_or_else(|| Error::integrity(name, "object name is not a BLAKE3 hash"))
}

/// Decompresses a sealed object's payload, refusing one that expands past 16 times the largest
/// object of its kind (at most 2 GiB): an expansion bomb from a writer with the keys.
fn decompress_bounded(name: &str, payload: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read;
    let limit = paths::max_size(name).saturating_mul(16).min(2 << 30);
    let mut out = Vec::new();
    zstd::stream::Decoder::new(payload)
        .map_err(|e| Error::integrity(name, e))?
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::integrity(name, e))?;
    if out.len() as u64 > limit {
        return Err(Error::integrity(
            name,
            format!("decompresses to more than {limit} bytes"),
        ));
    }
    Ok(out)
}
