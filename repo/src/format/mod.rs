//! Every structure stored in a repository, in one place (docs/FORMAT.md specifies the bytes).
//!
//! Binary structures are encoded with postcard 1.x (varint integers, length-prefixed sequences)
//! and then sealed in a keyring envelope; `config` and key slots are stored in the clear.

/// How far apart the clocks of two hosts, or of a host and a target, may be (FORMAT.md section
/// 16). Enforced when a lease or a session is written (the target's `Last-Modified` of the new
/// object is compared with this host's clock); every comparison of times from different clocks
/// allows for it.
pub const CLOCK_SKEW_BOUND: i64 = 300;

mod audit;
mod config;
mod file;
mod index;
mod lease;
mod mark;
mod pack;
mod session;
mod snapshot;
mod tree;

pub use audit::{canonical_json, AuditEntry};
pub use file::{PlainFile, RepoFile};
pub use lease::LeaseBody;
pub use session::SessionBody;

pub use config::{Config, REPO_FORMAT_VERSION};
pub use index::{IndexFile, IndexPack, INDEX_VERSION};
pub use mark::{PruneMark, PRUNE_MARK_VERSION};
pub use pack::{parse_pack_trailer, PackEntry, PACK_TRAILER_LEN};
pub use snapshot::{
    AuditRef, HostProof, Snapshot, Summary, SNAPSHOT_VERSION, SNAPSHOT_VERSION_HOST,
};
pub use tree::{validate_name, Node, NodeKind, Tree, TREE_VERSION};

use crate::{Error, Result};

/// Object paths inside a repository (relative to the target's root).
pub mod paths {
    /// The first eight characters of an object's id (of a key slot, as the audit log names
    /// slots).
    pub fn short(name: &str) -> &str {
        let id = name.rsplit('/').next().unwrap_or(name);
        &id[..8.min(id.len())]
    }

    use crate::Id;
    pub const CONFIG: &str = "config";
    pub const KEYS: &str = "keys/";
    pub const KEYRING: &str = "keyring/";
    pub const DATA: &str = "data/";
    pub const INDEX: &str = "index/";
    pub const SNAPSHOTS: &str = "snapshots/";
    pub const PRUNE: &str = "prune/";
    pub const AUDIT: &str = "audit/";

    pub fn pack(id: &Id) -> String {
        let h = id.to_hex();
        format!("data/{}/{}", &h[..2], h)
    }
    pub fn index(id: &Id) -> String {
        format!("index/{id}")
    }
    /// The largest object of each kind a reader reads whole (FORMAT.md section 2).
    pub fn max_size(name: &str) -> u64 {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        match name.split_once('/').map_or(name, |(dir, _)| dir) {
            "config" => 64 * KIB,
            "keys" | "locks" => 64 * KIB,
            "keyring" => 4 * MIB,
            "snapshots" | "audit" => 16 * MIB,
            // Packs: at most `pack_size` (512 MiB) plus one largest blob and a header.
            "data" => 640 * MIB,
            // Index objects and prune marks: lists of blobs or packs.
            _ => 1024 * MIB,
        }
    }

    pub fn snapshot(id: &Id) -> String {
        format!("snapshots/{id}")
    }
    pub fn key(id: &Id) -> String {
        format!("keys/{id}")
    }
    pub fn keyring(id: &Id) -> String {
        format!("keyring/{id}")
    }
    pub fn prune_mark(id: &Id) -> String {
        format!("prune/{id}")
    }
}

/// Kinds of blob stored in packs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BlobKind {
    Data,
    Tree,
}

impl BlobKind {
    pub fn object_kind(self) -> drvault_keyring::ObjectKind {
        match self {
            BlobKind::Data => drvault_keyring::ObjectKind::DataBlob,
            BlobKind::Tree => drvault_keyring::ObjectKind::TreeBlob,
        }
    }
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // postcard cannot fail on these plain structures except on allocation failure.
    postcard::to_stdvec(value).unwrap_or_default()
}

pub fn decode<'a, T: serde::Deserialize<'a>>(object: &str, bytes: &'a [u8]) -> Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| Error::integrity(object, format!("does not decode: {e}")))
}
