use serde::{Deserialize, Serialize};

use super::PackEntry;
use crate::Id;

pub const INDEX_VERSION: u32 = 1;

/// The plaintext of an index object: which blobs each pack holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    pub version: u32,
    pub packs: Vec<IndexPack>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    pub pack: Id,
    pub blobs: Vec<PackEntry>,
}
