//! The one codec of the structures stored as sealed objects of their own (index objects,
//! snapshots, prune marks): each names its envelope kind, its directory and the format version
//! this drvault writes and reads. `Repository::seal_file` and `Repository::open_file` are the
//! only ways they are written and read, so a new kind cannot forget the version check.

use drvault_keyring::ObjectKind;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{IndexFile, PruneMark, Snapshot, INDEX_VERSION, PRUNE_MARK_VERSION, SNAPSHOT_VERSION};

/// A structure stored as `<DIR><BLAKE3 of the sealed bytes>`, postcard-encoded in an envelope
/// of kind `KIND` (docs/FORMAT.md sections 2 and 5).
pub trait RepoFile: Serialize + DeserializeOwned {
    /// The envelope's object kind.
    const KIND: ObjectKind;
    /// The directory its objects live in, with the trailing slash.
    const DIR: &'static str;
    /// The version this drvault writes; a reader refuses any other.
    const VERSION: u32;
    /// The version the object says it has.
    fn version(&self) -> u32;
    /// The plaintext bytes (postcard).
    fn encode(&self) -> Vec<u8> {
        super::encode(self)
    }
    /// Decodes the plaintext, refusing a version this drvault does not read.
    fn decode(object: &str, bytes: &[u8]) -> crate::Result<Self> {
        let file: Self = super::decode(object, bytes)?;
        if file.version() != Self::VERSION {
            return Err(crate::Error::UnsupportedVersion {
                object: object.to_string(),
                version: file.version(),
            });
        }
        Ok(file)
    }
}

impl RepoFile for IndexFile {
    const KIND: ObjectKind = ObjectKind::Index;
    const DIR: &'static str = super::paths::INDEX;
    const VERSION: u32 = INDEX_VERSION;
    fn version(&self) -> u32 {
        self.version
    }
}

impl RepoFile for Snapshot {
    const KIND: ObjectKind = ObjectKind::Snapshot;
    const DIR: &'static str = super::paths::SNAPSHOTS;
    const VERSION: u32 = SNAPSHOT_VERSION;
    fn version(&self) -> u32 {
        self.version
    }
    // Two layouts: version 1 (no audit anchor) and 2.
    fn encode(&self) -> Vec<u8> {
        Snapshot::encode(self)
    }
    fn decode(object: &str, bytes: &[u8]) -> crate::Result<Self> {
        Snapshot::decode(object, bytes)
    }
}

impl RepoFile for PruneMark {
    const KIND: ObjectKind = ObjectKind::PruneMark;
    const DIR: &'static str = super::paths::PRUNE;
    const VERSION: u32 = PRUNE_MARK_VERSION;
    fn version(&self) -> u32 {
        self.version
    }
}
