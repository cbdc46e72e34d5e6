use serde::{Deserialize, Serialize};

use crate::Id;

pub const SNAPSHOT_VERSION: u32 = 1;

/// A snapshot: the root of one backup. Its ID is the name of its object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    /// Nanoseconds since the Unix epoch (UTC) at which the backup started.
    pub time_ns: i64,
    pub host: String,
    pub username: String,
    /// The backed-up paths as given (bytes: not necessarily UTF-8).
    pub paths: Vec<Vec<u8>>,
    pub tags: Vec<String>,
    pub parent: Option<Id>,
    /// Root tree: one entry per backed-up path, named by the path with '/' replaced (see FORMAT.md).
    pub tree: Id,
    pub summary: Summary,
    pub program_version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unchanged: u64,
    pub dirs: u64,
    pub other_entries: u64,
    pub bytes_read: u64,
    /// Bytes of the entries' content, as in the source.
    pub bytes_total: u64,
    /// Bytes added to the repository after deduplication, compression and encryption.
    pub bytes_added: u64,
    pub blobs_added: u64,
    pub errors: u64,
    pub duration_ms: u64,
}
