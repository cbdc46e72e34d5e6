//! The codecs of the structures stored as objects of their own. Sealed ones (index objects,
//! snapshots, prune marks) are [`RepoFile`]s: each names its envelope kind, its directory and
//! the format version this drvault writes and reads; `Repository::seal_file` and
//! `Repository::open_file` are the only ways they are written and read, so a new kind cannot
//! forget the version check. Clear-text ones every host reads without keys (the config, the
//! maintenance lease, backup sessions) are [`PlainFile`]s: JSON, decoded in one place each.
//! Key slots and keyrings are the keyring crate's (docs/FORMAT.md §6), which knows nothing of
//! storage. Audit entries are named by sequence number, not by hash, and stored in their
//! canonical JSON form, which the chain hashes (`AuditEntry::canonical_bytes` in `audit.rs`
//! beside this file, §17).

use drvault_keyring::ObjectKind;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{
    Config, IndexFile, LeaseBody, PruneMark, SessionBody, Snapshot, INDEX_VERSION,
    PRUNE_MARK_VERSION, SNAPSHOT_VERSION,
};

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

/// A structure stored in the clear as JSON, which hosts read without keys (docs/FORMAT.md
/// sections 4 and 16).
pub trait PlainFile: Serialize + DeserializeOwned {
    /// What it is, for the error that names an object that is not one.
    const WHAT: &'static str;
    /// The stored bytes.
    fn encode(&self) -> Vec<u8> {
        // A struct of strings and integers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }
    /// Decodes the stored bytes of `object`; anything else is damage to it.
    fn decode(object: &str, bytes: &[u8]) -> crate::Result<Self> {
        serde_json::from_slice(bytes)
            .map_err(|e| crate::Error::integrity(object, format!("not {}: {e}", Self::WHAT)))
    }
}

impl PlainFile for LeaseBody {
    const WHAT: &'static str = "a maintenance lease";
}

impl PlainFile for SessionBody {
    const WHAT: &'static str = "a backup session";
}

impl PlainFile for Config {
    const WHAT: &'static str = "a repository config";
    // Pretty-printed (the binding hashes these bytes), and checked field by field.
    fn encode(&self) -> Vec<u8> {
        Config::encode(self)
    }
    fn decode(_object: &str, bytes: &[u8]) -> crate::Result<Self> {
        Config::decode(bytes)
    }
}
