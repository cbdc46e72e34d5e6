use serde::{Deserialize, Serialize};

use super::BlobKind;
use crate::{Error, Id, Result};

/// One blob inside a pack. The same record appears in the pack's own header and in indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    pub kind: BlobKind,
    pub id: Id,
    /// Offset of the blob's envelope in the pack.
    pub offset: u32,
    /// Length of the envelope.
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
}

/// A pack ends with its sealed header's length, u32 little endian.
pub const PACK_TRAILER_LEN: usize = 4;

/// Locates the sealed header of a pack from its last bytes; returns its byte range.
pub fn parse_pack_trailer(
    object: &str,
    pack_len: u64,
) -> impl Fn(&[u8]) -> Result<std::ops::Range<u64>> + '_ {
    move |trailer: &[u8]| {
        let arr: [u8; 4] = trailer
            .try_into()
            .map_err(|_| Error::integrity(object, "truncated pack trailer"))?;
        let header_len = u64::from(u32::from_le_bytes(arr));
        let end = pack_len
            .checked_sub(PACK_TRAILER_LEN as u64)
            .ok_or_else(|| Error::integrity(object, "pack shorter than its trailer"))?;
        let start = end
            .checked_sub(header_len)
            .ok_or_else(|| Error::integrity(object, "pack header length exceeds pack"))?;
        Ok(start..end)
    }
}
