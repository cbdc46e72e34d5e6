//! Content-defined chunking: FastCDC (normalised chunking, level 2) over a keyed gear table.
//!
//! The gear table is derived from the repository's secret chunker seed, so chunk boundaries
//! (and therefore chunk sizes) do not let the storage provider fingerprint known files.

use std::io::Read;

/// The largest chunk any repository's chunker may make (FORMAT.md section 7).
pub const MAX_CHUNK: u32 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min_size: 256 * 1024,
            avg_size: 1024 * 1024,
            max_size: 4 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    pub fn validate(&self) -> Result<(), String> {
        let ok = self.min_size >= 64
            && self.min_size < self.avg_size
            && self.avg_size < self.max_size
            && self.avg_size.is_power_of_two()
            && self.max_size <= MAX_CHUNK;
        if ok {
            Ok(())
        } else {
            Err(format!("invalid chunker parameters {self:?}"))
        }
    }
}

/// Finds chunk boundaries. Cheap to clone; one per worker.
#[derive(Clone)]
pub struct Chunker {
    gear: Box<[u64; 256]>,
    params: ChunkerParams,
    mask_small: u64,
    mask_large: u64,
    /// The length of the chunk that starts a run of at least `max_size` zero bytes (a hole of a
    /// sparse file, a zeroed disk image): the same for every such run, so it is found once.
    zero_cut: usize,
}

impl Chunker {
    /// `params` must have passed [`ChunkerParams::validate`].
    pub fn new(seed: &[u8; 32], params: ChunkerParams) -> Self {
        let mut table = [0u8; 256 * 8];
        blake3::Hasher::new_keyed(seed)
            .update(b"drvault gear table v1")
            .finalize_xof()
            .fill(&mut table);
        let mut gear = Box::new([0u64; 256]);
        for (i, g) in gear.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&table[i * 8..i * 8 + 8]);
            *g = u64::from_le_bytes(b);
        }
        let bits = params.avg_size.trailing_zeros();
        // The hash shifts left, so its top bits depend on the last 64 bytes: test those.
        let top = |n: u32| {
            if n == 0 {
                0
            } else {
                u64::MAX << (64 - n.min(63))
            }
        };
        let mut chunker = Chunker {
            gear,
            params,
            mask_small: top(bits + 2),
            mask_large: top(bits.saturating_sub(2)),
            zero_cut: 0,
        };
        chunker.zero_cut = chunker.cut_by(params.max_size as usize, |_| 0);
        chunker
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the first chunk of `data`. When `data` is shorter than the maximum chunk
    /// size it is taken to end at end of file.
    pub fn cut(&self, data: &[u8]) -> usize {
        self.cut_by(data.len(), |i| data[i])
    }

    /// [`Chunker::cut`] over `len` bytes given by `byte` (inlined: this is the hot loop).
    #[inline(always)]
    fn cut_by(&self, len: usize, byte: impl Fn(usize) -> u8) -> usize {
        let (min, avg, max) = (
            self.params.min_size as usize,
            self.params.avg_size as usize,
            self.params.max_size as usize,
        );
        let n = len.min(max);
        if n <= min {
            return n;
        }
        let normal = avg.min(n);
        let mut h = 0u64;
        let mut i = min;
        while i < normal {
            h = (h << 1).wrapping_add(self.gear[byte(i) as usize]);
            if h & self.mask_small == 0 {
                return i + 1;
            }
            i += 1;
        }
        while i < n {
            h = (h << 1).wrapping_add(self.gear[byte(i) as usize]);
            if h & self.mask_large == 0 {
                return i + 1;
            }
            i += 1;
        }
        n
    }

    /// Splits a stream into chunks, holding at most two maximum-size chunks in `buf`, which
    /// callers reuse across files.
    pub fn stream<'a, R: Read>(&'a self, reader: R, buf: &'a mut Vec<u8>) -> ChunkStream<'a, R> {
        let cap = 2 * self.params.max_size as usize;
        if buf.len() < cap {
            buf.resize(cap, 0);
        }
        ChunkStream {
            chunker: self,
            reader,
            buf,
            start: 0,
            end: 0,
            zero_to: 0,
            eof: false,
            zeros: false,
        }
    }
}

/// True when every byte is zero; stops at the first 4 KiB block holding another byte (the fold
/// within a block vectorises).
fn all_zero(data: &[u8]) -> bool {
    data.chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

pub struct ChunkStream<'a, R> {
    chunker: &'a Chunker,
    reader: R,
    buf: &'a mut Vec<u8>,
    start: usize,
    end: usize,
    /// `buf[start..zero_to]` is known to be zeros (when `zero_to > start`).
    zero_to: usize,
    eof: bool,
    /// The last chunk returned was a run of zeros of the chunker's zero-run length.
    zeros: bool,
}

impl<R: Read> ChunkStream<'_, R> {
    /// The next chunk, or `None` at end of stream.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> std::io::Result<Option<&[u8]>> {
        Ok(self.next_chunk()?.map(|(chunk, _)| chunk))
    }

    /// The next chunk and whether it is the chunker's run of zeros (every such chunk has the
    /// same bytes, so its ID can be computed once), or `None` at end of stream.
    pub fn next_chunk(&mut self) -> std::io::Result<Option<(&[u8], bool)>> {
        let max = self.chunker.params.max_size as usize;
        if self.end - self.start < max && !self.eof {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.zero_to = self.zero_to.saturating_sub(self.start);
            self.start = 0;
            while self.end < self.buf.len() {
                match self.reader.read(&mut self.buf[self.end..]) {
                    Ok(0) => {
                        self.eof = true;
                        break;
                    }
                    Ok(n) => self.end += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if self.start == self.end {
            return Ok(None);
        }
        // A full window of zeros (a hole, a zeroed region) is cut where every such window is,
        // without running the rolling hash over it: the boundaries are exactly `cut`'s.
        let window_end = self.start + max;
        self.zeros = window_end <= self.end
            && self.buf[self.start] == 0
            && all_zero(&self.buf[self.zero_to.max(self.start)..window_end]);
        let len = if self.zeros {
            self.zero_to = window_end;
            self.chunker.zero_cut
        } else {
            self.chunker.cut(&self.buf[self.start..self.end])
        };
        let chunk = &self.buf[self.start..self.start + len];
        self.start += len;
        Ok(Some((chunk, self.zeros)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> ChunkerParams {
        ChunkerParams {
            min_size: 1024,
            avg_size: 4096,
            max_size: 16384,
        }
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut out = vec![0u8; n];
        blake3::Hasher::new()
            .update(&seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut out);
        out
    }

    fn lengths(c: &Chunker, data: &[u8]) -> Vec<usize> {
        let mut buf = Vec::new();
        let mut s = c.stream(data, &mut buf);
        let mut v = Vec::new();
        while let Some(ch) = s.next().expect("read") {
            v.push(ch.len());
        }
        v
    }

    /// Chunk boundaries are part of the format: they must never change silently.
    #[test]
    fn golden_boundaries() {
        let c = Chunker::new(&[7u8; 32], small());
        let data = pseudo_random(64 * 1024, 1);
        assert_eq!(
            lengths(&c, &data),
            vec![5804, 4421, 5783, 5011, 5890, 3619, 1722, 4146, 4813, 6744, 6016, 6745, 4822]
        );
    }

    /// Zero runs take a shortcut; it must cut exactly where the rolling hash does, whether the
    /// run starts at a boundary or inside a chunk, is shorter or longer than a chunk, ends the
    /// stream or not.
    #[test]
    fn zero_runs_cut_where_the_rolling_hash_cuts() {
        let c = Chunker::new(&[9u8; 32], small());
        let mut data = pseudo_random(10_000, 4);
        data.extend(vec![0u8; 100_000]);
        data.extend(pseudo_random(3_000, 5));
        data.extend(vec![0u8; 15_000]);
        data.extend(pseudo_random(20_000, 6));
        data.extend(vec![0u8; 16_384 * 3 + 17]);
        let mut naive = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let len = c.cut(&data[pos..]);
            naive.push(len);
            pos += len;
        }
        assert_eq!(lengths(&c, &data), naive);
        let mut buf = Vec::new();
        let mut s = c.stream(&data[..], &mut buf);
        let mut shortcuts = 0;
        while let Some((chunk, zeros)) = s.next_chunk().expect("read") {
            if zeros {
                assert!(chunk.iter().all(|&b| b == 0));
                assert_eq!(chunk.len(), c.zero_cut);
                shortcuts += 1;
            }
        }
        assert!(shortcuts >= 4, "{shortcuts} zero chunks took the shortcut");
    }

    #[test]
    fn boundaries_depend_on_the_key() {
        let data = pseudo_random(256 * 1024, 2);
        let a = lengths(&Chunker::new(&[1u8; 32], small()), &data);
        let b = lengths(&Chunker::new(&[2u8; 32], small()), &data);
        assert_ne!(a, b);
    }

    #[test]
    fn insertion_only_changes_nearby_chunks() {
        let c = Chunker::new(&[3u8; 32], small());
        let data = pseudo_random(512 * 1024, 3);
        let mut edited = data.clone();
        edited.splice(200_000..200_000, b"inserted bytes".iter().copied());
        let chunks = |d: &[u8]| {
            let mut buf = Vec::new();
            let mut s = c.stream(d, &mut buf);
            let mut v = std::collections::HashSet::new();
            while let Some(ch) = s.next().expect("read") {
                v.insert(blake3::hash(ch));
            }
            v
        };
        let (a, b) = (chunks(&data), chunks(&edited));
        let shared = a.intersection(&b).count();
        assert!(
            shared + 3 >= a.len(),
            "only the chunks around the edit differ: {shared} of {}",
            a.len()
        );
    }
}
