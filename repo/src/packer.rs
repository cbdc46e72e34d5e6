//! Packs: many sealed blobs in one large object, followed by a sealed header listing them.
//!
//! ```text
//! blob envelope 0 | blob envelope 1 | ... | sealed header (postcard Vec<PackEntry>) | u32 LE header length
//! ```

use drvault_keyring::{Keys, ObjectKind};

use crate::format::{encode, BlobKind, PackEntry};
use crate::{Id, Result};

/// A pack ready to upload.
pub struct FinishedPack {
    pub id: Id,
    pub bytes: Vec<u8>,
    pub entries: Vec<PackEntry>,
}

/// Collects sealed blobs of one kind until the target size is reached.
pub struct PackBuilder {
    bytes: Vec<u8>,
    entries: Vec<PackEntry>,
    target: usize,
}

impl PackBuilder {
    pub fn new(target: usize) -> Self {
        PackBuilder {
            bytes: Vec::new(),
            entries: Vec::new(),
            target,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a sealed blob; returns true when the pack has reached its target size.
    pub fn add(&mut self, kind: BlobKind, id: Id, raw_length: u32, sealed: &[u8]) -> bool {
        if self.bytes.capacity() == 0 {
            self.bytes.reserve(self.target + self.target / 8);
        }
        self.entries.push(PackEntry {
            kind,
            id,
            offset: self.bytes.len() as u32,
            length: sealed.len() as u32,
            raw_length,
        });
        self.bytes.extend_from_slice(sealed);
        self.bytes.len() >= self.target
    }

    /// Seals the header, appends the trailer and names the pack by the hash of its bytes.
    pub fn finish(&mut self, keys: &Keys) -> Result<FinishedPack> {
        let mut bytes = std::mem::take(&mut self.bytes);
        let entries = std::mem::take(&mut self.entries);
        let start = bytes.len();
        keys.data_sealer()?.seal(
            ObjectKind::PackHeader,
            false,
            b"",
            &encode(&entries),
            &mut bytes,
        )?;
        let header_len = (bytes.len() - start) as u32;
        bytes.extend_from_slice(&header_len.to_le_bytes());
        Ok(FinishedPack {
            id: Id::of_stored(&bytes),
            bytes,
            entries,
        })
    }
}
