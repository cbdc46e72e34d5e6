//! Positions in the loaded index: the used-blob bit set, and walking every copy of a blob.

use super::*;

/// A set of positions in the loaded index.
#[derive(Default)]
pub(super) struct Bits(Vec<u64>);

impl Bits {
    pub(super) fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }

    pub(super) fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Sets bit `i`; true when it was not set before.
    pub(super) fn set(&mut self, i: usize) -> bool {
        match self.0.get_mut(i / 64) {
            Some(w) => {
                let was = *w & (1 << (i % 64)) != 0;
                *w |= 1 << (i % 64);
                !was
            }
            None => false,
        }
    }

    pub(super) fn count(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

impl MemIndex {
    /// The position of the first entry of `id` in `loaded` (all copies of a blob are adjacent).
    pub(super) fn first_pos(&self, id: &Id) -> Option<usize> {
        let i = self.loaded.partition_point(|(k, _)| k < id);
        (self.loaded.get(i).is_some_and(|(k, _)| k == id)).then_some(i)
    }

    /// Calls `f(start, entries)` for every blob: its first position and all its copies.
    pub(super) fn for_each_blob(&self, mut f: impl FnMut(usize, &[(Id, Slot)])) {
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
