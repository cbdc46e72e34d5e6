//! An open repository: creating and opening it (config, key slots, unlocking, the keyring) and
//! the accessors every operation builds on. Its other jobs are submodules over the same type:
//! `index.rs` (the in-memory index, pack upload, index objects), `objects.rs` (sealed objects,
//! blobs, trees, snapshots), `backup.rs` (the backup side of the session protocol), `keyring.rs`
//! (the keyring in storage: newest generation, writing one, object epochs), `unlock.rs` (key
//! slots, unlocking, loading the keyring), `marks.rs` (prune marks, read by backups and check)
//! and `rollback.rs`. Prune (`crate::prune`) and key management (`crate::keys`) work over the
//! public API.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use drvault_keyring::{
    Credential, Header, HostKeyring, KdfParams, KeySlot, Keyring, Keys, ObjectKind, SlotKind,
};
use futures::{StreamExt, TryStreamExt};

use crate::blob::open_blob;
use crate::catalog::Catalog;
use crate::chunker::{Chunker, ChunkerParams};
use crate::format::{
    decode, paths, BlobKind, Config, IndexFile, IndexPack, PackEntry, RepoFile, Snapshot, Tree,
    INDEX_VERSION, REPO_FORMAT_VERSION,
};
use crate::packer::FinishedPack;
use crate::store::Store;
use crate::{Error, Id, IdSet, Result};

mod backup;
mod index;
mod keyring;
mod marks;
mod objects;
mod rollback;
mod unlock;

pub use backup::Committed;
pub use keyring::LEASE_TTL;

use crate::index::INDEX_ENTRIES_PER_OBJECT;
pub use crate::index::{Index, Location};
pub(crate) use objects::key_error;
use objects::TreePackCache;

/// Options for `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub kdf: KdfParams,
    /// The first slot's label (who holds the passphrase, e.g. "root@db1").
    pub label: String,
    pub chunker: ChunkerParams,
    pub pack_size: u32,
    pub compression_level: i32,
    /// Take host keys from the start (format version 2). False makes a version 1 repository,
    /// as drvault before 0.7 did (for tests of the upgrade).
    pub host_keys: bool,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            kdf: KdfParams::SERVER,
            label: String::new(),
            chunker: ChunkerParams::default(),
            pack_size: 16 * 1024 * 1024,
            compression_level: 2,
            host_keys: true,
        }
    }
}

pub struct Repository {
    store: Store,
    config: Config,
    /// Every key, or a host's put-only keys (`Keys`).
    keys: Arc<Keys>,
    index: RwLock<Index>,
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

/// What a key slot unwrapped.
enum Unlocked {
    Master(drvault_keyring::Key),
    Host {
        host: String,
        slot: drvault_keyring::HostSlotKeys,
    },
}

impl Repository {
    /// An open repository of these parts, with nothing loaded yet.
    pub(super) fn assemble(
        store: Store,
        config: Config,
        keys: Arc<Keys>,
        state_dir: Option<PathBuf>,
        opened_slot: Option<String>,
    ) -> Self {
        Repository {
            store,
            config,
            keys,
            index: RwLock::default(),
            pending: Mutex::default(),
            state_dir,
            tree_packs: Mutex::default(),
            catalog: Mutex::default(),
            backup_liveness: Mutex::default(),
            opened_slot,
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
        if opts.host_keys {
            keyring.enable_hosts()?;
        }
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
        if let Some(sealed) = keyring.seal_host_keyring()? {
            store
                .put_new(
                    &paths::keyring(&Id::of_stored(&sealed)),
                    sealed.into(),
                    true,
                )
                .await?;
        }
        let sealed = keyring.seal()?;
        store
            .put_new(
                &paths::keyring(&Id::of_stored(&sealed)),
                sealed.into(),
                true,
            )
            .await?;
        Ok(Repository::assemble(
            store,
            config,
            Arc::new(Keys::full(keyring)),
            None,
            Some(slot_name),
        ))
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
        let (opened_slot, unlocked) =
            Self::unlock(&store, credential, state_dir.as_deref()).await?;
        let keys = match unlocked {
            Unlocked::Master(master) => Keys::full(Self::load_keyring(&store, master).await?),
            Unlocked::Host { host, slot } => {
                Keys::host(Self::load_host_keyring(&store, &slot).await?, host, slot)
            }
        };
        if let Some(root) = &state_root {
            rollback::check_and_remember(root, &keys)?;
        }
        // The config is clear text anyone with write access could edit (chunk sizes that
        // reveal file structure, another id): the keyring, which only key holders can write,
        // holds its hash. Keyrings from before the binding get it at their next key operation.
        if let Some(bound) = keys.config_hash() {
            if *bound != config.binding() {
                return Err(Error::integrity(
                    paths::CONFIG,
                    "it is not the config this repository's keyring was written for: someone \
                     without the keys changed it (restore it from another target or a copy)",
                ));
            }
        }
        let repo =
            Repository::assemble(store, config, Arc::new(keys), state_dir, Some(opened_slot));
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
        // The repository and its recovery key exist now: a log that cannot take the entry must
        // not cost the user the key (it is shown only once), so this one is a warning.
        if let Err(e) = repo.audit().record("repository.init", details, "ok").await {
            tracing::warn!("{e}");
        }
        Ok((repo, recovery))
    }

    /// True when the repository takes host keys (format version 2).
    pub fn takes_host_keys(&self) -> bool {
        self.keys.takes_hosts()
    }

    /// This repository sealing with `keyring` (full keys), without a catalog: for an operation
    /// that must seal under a keyring it has just written (the migration to host keys).
    pub(crate) fn with_keyring(&self, keyring: Keyring) -> Repository {
        Repository::assemble(
            self.store.clone(),
            self.config.clone(),
            Arc::new(Keys::full(keyring)),
            None,
            self.opened_slot.clone(),
        )
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The keys this process opened the repository with.
    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    /// The full keyring; refused (not permitted) when a host key opened the repository.
    pub fn keyring(&self) -> Result<&Keyring> {
        crate::error::full_keyring(&self.keys)
    }

    /// The audit log, to append to or read (`crate::audit::AuditLog`).
    pub fn audit(&self) -> crate::audit::AuditLog<'_> {
        crate::audit::AuditLog::new(&self.store, &self.keys, self.state_dir.as_deref())
    }

    /// The host whose put-only key opened the repository, if one did.
    pub fn opened_by_host(&self) -> Option<&str> {
        self.keys.host_name()
    }

    pub fn chunker(&self) -> Chunker {
        Chunker::new(self.keys.chunker_seed(), self.config.chunker)
    }

    pub fn blob_id(&self, plain: &[u8]) -> Id {
        Id::of_plaintext(self.keys.id_key(), plain)
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

/// The ID an object name ends in.
pub fn name_id(name: &str) -> Result<Id> {
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
