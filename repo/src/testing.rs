//! An in-memory repository for unit tests of this crate and of the crates built on it (backup,
//! restore, drills): one way to make one, so a change to what `init` needs is made once.
//! Insecure by design (the cheapest key derivation): never for real data.

use std::sync::Arc;

use drvault_keyring::{Credential, KdfParams};

use crate::repository::{InitOptions, Repository};
use crate::store::Store;
use crate::Result;

/// The passphrase of every repository made here.
pub const PASSPHRASE: &[u8] = b"pw";

/// What opens a repository made here.
pub fn credential() -> Credential {
    Credential::passphrase(PASSPHRASE)
}

/// A store in memory: it lives as long as its last clone.
pub fn memory_store() -> Store {
    Store::from_object_store(
        Arc::new(object_store::memory::InMemory::new()),
        "memory".into(),
    )
}

/// A new repository in `store`: format 2, 1 MiB packs (a few blobs already fill one), the
/// test key derivation.
pub async fn init(store: Store) -> Result<Repository> {
    let opts = InitOptions {
        kdf: KdfParams::INSECURE_TEST,
        pack_size: 1 << 20,
        ..Default::default()
    };
    Repository::init(store, PASSPHRASE, opts).await
}

/// A new repository in a new in-memory store.
pub async fn memory_repository() -> Result<Repository> {
    init(memory_store()).await
}
