//! Blobs: a chunk of file data or a tree, compressed when it shrinks, sealed with its ID bound.

use drvault_keyring::{Header, Keys, Sealer};

use crate::format::BlobKind;
use crate::{Error, Id, Result};

/// Seals blobs under the active epoch; one per worker thread (it owns a zstd context and a
/// buffer for compressed output, reused from blob to blob).
pub struct BlobSealer {
    sealer: Sealer,
    compressor: zstd::bulk::Compressor<'static>,
    compressed: Vec<u8>,
}

impl BlobSealer {
    pub fn new(keys: &Keys, level: i32) -> Result<Self> {
        let sealer = keys.data_sealer()?;
        let compressor = zstd::bulk::Compressor::new(level)
            .map_err(|e| Error::Invalid(format!("zstd level {level}: {e}")))?;
        Ok(BlobSealer {
            sealer,
            compressor,
            compressed: Vec::new(),
        })
    }

    /// Returns the sealed envelope of `plain`, whose ID is `id`.
    pub fn seal(&mut self, kind: BlobKind, id: &Id, plain: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.seal_into(kind, id, plain, &mut out)?;
        Ok(out)
    }

    /// Appends the sealed envelope of `plain`, whose ID is `id`, to `out`. Compressed only
    /// when that makes it smaller.
    pub fn seal_into(
        &mut self,
        kind: BlobKind,
        id: &Id,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        self.compressed.clear();
        self.compressed.reserve(zstd::compress_bound(plain.len()));
        let compressed = self
            .compressor
            .compress_to_buffer(plain, &mut self.compressed)
            .is_ok_and(|n| n < plain.len());
        let payload = if compressed {
            &self.compressed[..]
        } else {
            plain
        };
        self.sealer
            .seal(kind.object_kind(), compressed, &id.0, payload, out)?;
        Ok(())
    }
}

/// Buffers reused across blobs by a caller that checks many without keeping their plaintext
/// (`check --read-data`): two fresh allocations per blob, each a new mapping as long as the
/// blob, cost more CPU in page faults than the decryption.
#[derive(Default)]
pub struct BlobScratch {
    payload: Vec<u8>,
    plain: Vec<u8>,
}

/// Opens a sealed blob and verifies that its plaintext hashes to `id` under the ID key.
pub fn open_blob(
    keys: &Keys,
    kind: BlobKind,
    id: &Id,
    raw_length: u32,
    sealed: &[u8],
) -> Result<Vec<u8>> {
    let mut s = BlobScratch::default();
    let compressed = open_into(keys, kind, id, raw_length, sealed, &mut s)?;
    Ok(if compressed { s.plain } else { s.payload })
}

/// Checks a sealed blob as [`open_blob`] does, in `scratch`, keeping nothing.
pub fn verify_blob(
    keys: &Keys,
    kind: BlobKind,
    id: &Id,
    raw_length: u32,
    sealed: &[u8],
    scratch: &mut BlobScratch,
) -> Result<()> {
    open_into(keys, kind, id, raw_length, sealed, scratch).map(|_| ())
}

/// Opens and verifies a blob in `s`. Returns whether it was compressed: its plaintext is then
/// in `s.plain`, otherwise in `s.payload`.
fn open_into(
    keys: &Keys,
    kind: BlobKind,
    id: &Id,
    raw_length: u32,
    sealed: &[u8],
    s: &mut BlobScratch,
) -> Result<bool> {
    let object = || format!("blob {id}");
    // A data blob is one chunk, and no chunker makes chunks above 64 MiB (ChunkerParams::
    // validate): an index entry claiming more is refused before anything is allocated for it.
    if kind == BlobKind::Data && raw_length > crate::chunker::MAX_CHUNK {
        return Err(Error::integrity(
            object(),
            format!(
                "the index says {raw_length} bytes, more than any chunk ({} bytes)",
                crate::chunker::MAX_CHUNK
            ),
        ));
    }
    let header = Header::parse(sealed).map_err(|e| Error::integrity(object(), e))?;
    if header.kind != kind.object_kind() {
        return Err(Error::integrity(
            object(),
            "blob kind does not match the index",
        ));
    }
    keys.open_into(&id.0, sealed, &mut s.payload)
        .map_err(|e| match e {
            // A key this process does not hold (retired epoch, host key) is not damage.
            e @ (drvault_keyring::Error::UnknownEpoch(_) | drvault_keyring::Error::HostKey(_)) => {
                Error::from(e)
            }
            e => Error::integrity(object(), e),
        })?;
    let plain = if header.compressed {
        // Bound the output by the indexed size so a hostile blob cannot balloon memory.
        decompress_into(&s.payload, raw_length as usize, &mut s.plain)
            .map_err(|e| Error::integrity(object(), e))?;
        &s.plain
    } else {
        &s.payload
    };
    if plain.len() != raw_length as usize {
        return Err(Error::integrity(
            object(),
            format!("{} bytes where the index says {raw_length}", plain.len()),
        ));
    }
    if Id::of_plaintext(keys.id_key(), plain) != *id {
        return Err(Error::integrity(
            object(),
            "plaintext does not hash to the blob ID",
        ));
    }
    Ok(header.compressed)
}

thread_local! {
    /// One zstd decompression context per thread: creating one per blob costs more than
    /// decompressing a small blob.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompresses `payload` into `out` (cleared first), writing at most `out`'s capacity: room
/// for `capacity` bytes, or for what the frame says it holds when that is less (a reused buffer
/// may have more room; a longer output is caught by the caller's length check). The room is
/// reserved fallibly: a hostile length that cannot be allocated is damage, not an abort.
fn decompress_into(payload: &[u8], capacity: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    out.clear();
    let declared = zstd::zstd_safe::get_frame_content_size(payload)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok());
    let room = declared.map_or(capacity, |n| n.min(capacity));
    out.try_reserve_exact(room)
        .map_err(|e| std::io::Error::other(format!("cannot allocate {room} bytes: {e}")))?;
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(d) => d.decompress_to_buffer(payload, out).map(|_| ()),
            None => Err(std::io::Error::other("no zstd decompression context")),
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_index_entry_claiming_a_huge_data_blob_is_refused_before_allocation() {
        let keys = Keys::full(drvault_keyring::Keyring::generate(0).unwrap());
        let id = Id([7; 32]);
        let e = open_blob(&keys, BlobKind::Data, &id, u32::MAX, b"whatever").unwrap_err();
        assert!(
            matches!(&e, Error::Integrity { reason, .. } if reason.contains("more than any chunk")),
            "{e}"
        );
    }
}
