//! The in-memory index: which pack holds each blob, at what offset and length.
//!
//! What was loaded from the index objects is kept sorted by blob ID (binary search, no hash-table
//! slack at millions of entries; every copy of a blob is adjacent, so a blob has a *first
//! position* and its copies follow); what this process uploads since goes into a hash map.
//! [`crate::Repository::index`] lends it for reading; maintenance (prune) reads it through
//! the positions and [`Index::for_each_blob`], never through its fields.

use crate::format::{BlobKind, PackEntry};
use crate::{Id, IdMap, IdSet};

/// Index entries per index object; keeps each object a few MiB.
pub const INDEX_ENTRIES_PER_OBJECT: usize = 50_000;

/// Where a blob lives.
#[derive(Debug, Clone, Copy)]
pub struct Location {
    pub pack: Id,
    pub entry: PackEntry,
}

/// An index entry without the blob ID (the map key): 20 bytes instead of 52, which matters
/// at millions of blobs. The pack is a number ([`Index::pack`] names it).
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
    kind: BlobKind,
}

impl Slot {
    /// The number of the pack holding the blob ([`Index::pack`] gives its ID).
    pub fn pack_number(&self) -> u32 {
        self.pack
    }

    /// The sealed blob's length in its pack.
    pub fn length(&self) -> u32 {
        self.length
    }

    pub fn kind(&self) -> BlobKind {
        self.kind
    }
}

/// The in-memory index: what was loaded, sorted, plus what this process added since.
#[derive(Default)]
pub struct Index {
    packs: Vec<Id>,
    pack_numbers: IdMap<u32>,
    loaded: Vec<(Id, Slot)>,
    /// `fanout[p]..fanout[p + 1]` are the loaded entries whose IDs begin with the two bytes `p`
    /// (empty until sealed): a lookup searches ~1/65,536 of the entries. A binary search over a
    /// million entries made 20 scattered comparisons, a fifth of an unchanged backup's CPU.
    fanout: Vec<u32>,
    added: IdMap<Slot>,
}

/// The fan-out bucket of `id`: its first two bytes.
fn bucket(id: &Id) -> usize {
    usize::from(u16::from_be_bytes([id.0[0], id.0[1]]))
}

impl Index {
    /// An empty index with room for `entries` loaded entries (saves the vector's doublings).
    pub(crate) fn with_capacity(entries: usize) -> Self {
        Index {
            loaded: Vec::with_capacity(entries),
            ..Index::default()
        }
    }

    fn slot(&mut self, pack: Id, entry: &PackEntry) -> Slot {
        let n = *self.pack_numbers.entry(pack).or_insert_with(|| {
            self.packs.push(pack);
            (self.packs.len() - 1) as u32
        });
        Slot {
            pack: n,
            offset: entry.offset,
            length: entry.length,
            raw_length: entry.raw_length,
            kind: entry.kind,
        }
    }

    /// Adds an entry during loading; call [`Index::seal`] when done.
    pub(crate) fn load(&mut self, pack: Id, entry: PackEntry) {
        let slot = self.slot(pack, &entry);
        self.loaded.push((entry.id, slot));
        self.fanout.clear();
    }

    /// Sorts what was loaded; queries before this miss loaded entries.
    pub(crate) fn seal(&mut self) {
        self.loaded.sort_unstable_by_key(|(id, _)| *id);
        self.loaded.shrink_to_fit();
        self.build_fanout();
    }

    fn build_fanout(&mut self) {
        self.fanout.clear();
        // Index positions fit in u32: an index of four billion entries is not held in memory.
        if u32::try_from(self.loaded.len()).is_err() {
            return;
        }
        self.fanout.reserve_exact(65_537);
        let mut i = 0usize;
        for p in 0..=65_536usize {
            while i < self.loaded.len() && bucket(&self.loaded[i].0) < p {
                i += 1;
            }
            self.fanout.push(i as u32);
        }
    }

    /// The loaded entries that may hold `id`: its fan-out bucket, or all when not sealed.
    fn candidates(&self, id: &Id) -> (usize, &[(Id, Slot)]) {
        let b = bucket(id);
        match (self.fanout.get(b), self.fanout.get(b + 1)) {
            (Some(&lo), Some(&hi)) => {
                let (lo, hi) = (lo as usize, hi as usize);
                (lo, self.loaded.get(lo..hi).unwrap_or(&[]))
            }
            _ => (0, &self.loaded),
        }
    }

    /// Adds an entry of a pack this process uploaded.
    pub(crate) fn insert(&mut self, pack: Id, entry: PackEntry) {
        let slot = self.slot(pack, &entry);
        self.added.insert(entry.id, slot);
    }

    /// Entries added by this process and not yet moved into the sorted part.
    pub(crate) fn added_len(&self) -> usize {
        self.added.len()
    }

    /// Moves the entries this process added into the sorted part, merging in place: 52 bytes
    /// an entry there against 80 to 170 in the hash map (its slack and its doublings), which at
    /// millions of new blobs is most of a first backup's memory. Positions change, so only a
    /// process that holds none calls this (a backup; never maintenance, which works by
    /// position). Does nothing on an index that was loaded but not sealed.
    pub(crate) fn absorb_added(&mut self) {
        if self.added.is_empty() || (self.fanout.is_empty() && !self.loaded.is_empty()) {
            return;
        }
        let mut add: Vec<(Id, Slot)> = std::mem::take(&mut self.added).into_iter().collect();
        add.sort_unstable_by_key(|(id, _)| *id);
        let old = self.loaded.len();
        self.loaded.reserve_exact(add.len());
        self.loaded.extend_from_slice(&add);
        // From the back: the larger of the two remaining tails goes last. On equal IDs the
        // added entry goes after the loaded one, so a blob's first position stays the loaded.
        let (mut i, mut j) = (old, add.len());
        let mut k = old + add.len();
        while j > 0 {
            k -= 1;
            if i > 0 && self.loaded[i - 1].0 > add[j - 1].0 {
                self.loaded[k] = self.loaded[i - 1];
                i -= 1;
            } else {
                self.loaded[k] = add[j - 1];
                j -= 1;
            }
        }
        self.build_fanout();
    }

    /// Drops every entry in one of `packs`; returns how many.
    pub(crate) fn drop_packs(&mut self, packs: &IdSet) -> usize {
        let numbers: std::collections::HashSet<u32> = packs
            .iter()
            .filter_map(|p| self.pack_numbers.get(p).copied())
            .collect();
        if numbers.is_empty() {
            return 0;
        }
        let before = self.entries();
        self.loaded.retain(|(_, s)| !numbers.contains(&s.pack));
        if !self.fanout.is_empty() {
            self.build_fanout();
        }
        self.added.retain(|_, s| !numbers.contains(&s.pack));
        before - self.entries()
    }

    /// Entries, loaded and added.
    pub fn entries(&self) -> usize {
        self.loaded.len() + self.added.len()
    }

    /// A location of `id` (the first copy loaded, else the one added).
    pub fn get(&self, id: &Id) -> Option<&Slot> {
        let (_, near) = self.candidates(id);
        if let Ok(i) = near.binary_search_by_key(id, |(k, _)| *k) {
            return Some(&near[i].1);
        }
        self.added.get(id)
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.get(id).is_some()
    }

    /// The location `slot` of blob `id` describes.
    pub fn location(&self, id: &Id, s: &Slot) -> Location {
        Location {
            pack: self.pack(s.pack),
            entry: PackEntry {
                kind: s.kind,
                id: *id,
                offset: s.offset,
                length: s.length,
                raw_length: s.raw_length,
            },
        }
    }

    /// Every entry with its pack, loaded then added.
    pub fn locations(&self) -> impl Iterator<Item = Location> + '_ {
        self.loaded
            .iter()
            .map(|(id, s)| (id, s))
            .chain(self.added.iter())
            .map(|(id, s)| self.location(id, s))
    }

    /// The packs the index names, by number.
    pub fn packs(&self) -> &[Id] {
        &self.packs
    }

    /// The ID of pack number `n` (numbers come from this index's slots).
    pub fn pack(&self, n: u32) -> Id {
        self.packs[n as usize]
    }

    /// Whether an entry names `pack` (or did before [`Index::drop_packs`]).
    pub fn names_pack(&self, pack: &Id) -> bool {
        self.pack_numbers.contains_key(pack)
    }

    /// Positions of loaded entries: `0..positions()`.
    pub fn positions(&self) -> usize {
        self.loaded.len()
    }

    /// The loaded entry at `position`.
    pub fn at(&self, position: usize) -> Option<&(Id, Slot)> {
        self.loaded.get(position)
    }

    /// The position of the first loaded entry of `id` (all copies of a blob are adjacent).
    pub fn first_position(&self, id: &Id) -> Option<usize> {
        let (start, near) = self.candidates(id);
        let i = start + near.partition_point(|(k, _)| k < id);
        (self.loaded.get(i).is_some_and(|(k, _)| k == id)).then_some(i)
    }

    /// Calls `f(start, copies)` for every loaded blob: its first position and all its entries.
    pub fn for_each_blob(&self, mut f: impl FnMut(usize, &[(Id, Slot)])) {
        let mut i = 0;
        while i < self.loaded.len() {
            let id = self.loaded[i].0;
            let mut j = i + 1;
            while j < self.loaded.len() && self.loaded[j].0 == id {
                j += 1;
            }
            f(i, &self.loaded[i..j]);
            i = j;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn id(n: u32) -> Id {
        Id(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    fn entry(n: u32) -> PackEntry {
        PackEntry {
            kind: BlobKind::Data,
            id: id(n),
            offset: n,
            length: 1,
            raw_length: 1,
        }
    }

    /// Lookups through the fan-out table find every loaded entry (first and copies, at both
    /// ends of the ID space) and nothing else, before and after packs are dropped.
    #[test]
    fn fanout_lookups_match_a_plain_search() {
        let (a, b) = (Id([1; 32]), Id([2; 32]));
        let mut index = Index::default();
        for n in 0..20_000 {
            index.load(if n % 2 == 0 { a } else { b }, entry(n));
        }
        // Copies of one blob in both packs, and IDs at the very ends of the ID space.
        index.load(b, entry(4));
        for edge in [Id([0; 32]), Id([0xff; 32])] {
            index.load(
                a,
                PackEntry {
                    id: edge,
                    ..entry(0)
                },
            );
        }
        // Before sealing nothing panics (loaded entries may be missed, as documented).
        let _ = index.get(&id(7));
        index.seal();
        for n in 0..20_000 {
            assert_eq!(index.get(&id(n)).unwrap().offset, n, "{n}");
            let first = index.first_position(&id(n)).unwrap();
            assert_eq!(index.loaded[first].0, id(n));
            assert!(first == 0 || index.loaded[first - 1].0 != id(n));
        }
        for edge in [Id([0; 32]), Id([0xff; 32])] {
            assert!(index.contains(&edge));
        }
        for n in 20_000..21_000 {
            assert!(index.get(&id(n)).is_none());
            assert!(index.first_position(&id(n)).is_none());
        }
        // Entries added since, absorbed into the sorted part: every lookup still answers,
        // and the part stays sorted with each blob's copies adjacent, loaded copy first.
        let mut absorbed = Index::default();
        for n in 0..20_000 {
            absorbed.load(a, entry(n * 2));
        }
        absorbed.seal();
        for n in 0..20_000 {
            absorbed.insert(b, entry(n * 2 + 1));
        }
        absorbed.insert(b, entry(10));
        assert_eq!(absorbed.added_len(), 20_001);
        absorbed.absorb_added();
        assert_eq!(absorbed.added_len(), 0);
        assert_eq!(absorbed.positions(), 40_001);
        assert!(absorbed.loaded.windows(2).all(|w| w[0].0 <= w[1].0));
        for n in 0..40_000 {
            assert_eq!(absorbed.get(&id(n)).unwrap().offset, n, "{n}");
        }
        let first = absorbed.first_position(&id(10)).unwrap();
        assert_eq!(absorbed.pack(absorbed.loaded[first].1.pack), a);
        assert_eq!(absorbed.pack(absorbed.loaded[first + 1].1.pack), b);
        let mut gone = IdSet::default();
        gone.insert(a);
        index.drop_packs(&gone);
        for n in 0..20_000 {
            // Blob 4 had a copy in pack b too.
            assert_eq!(index.contains(&id(n)), n % 2 == 1 || n == 4, "{n}");
        }
        assert!(!index.contains(&Id([0; 32])));
    }
}
