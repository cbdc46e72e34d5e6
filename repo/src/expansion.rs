//! A bound on walking a snapshot's trees path by path. Trees are deduplicated: a tree whose
//! entries all name one subtree, nested 64 levels deep, is a few kilobytes stored and 2^64
//! entries walked. `check` and `prune` visit each tree once; a restore or a listing must visit
//! every path, so they count what they walk against what is distinct.

use crate::{Error, Id, IdSet, Result};

/// Entries walked beyond this many, and beyond [`RATIO`] times the distinct trees' entries,
/// mean a forged snapshot. A real tree repeats subtrees (identical directories, empty ones) a
/// few times, not a hundred times over.
pub const BASE: u64 = 100_000;
pub const RATIO: u64 = 100;

#[derive(Default)]
pub struct Expansion {
    seen: IdSet,
    distinct: u64,
    walked: u64,
}

/// What walking a tree costs: its entries, and the content IDs and attributes they hold (one
/// file node can name a million blobs; a restore copies them for every path it walks).
pub fn weight(tree: &crate::format::Tree) -> usize {
    tree.entries
        .iter()
        .map(|n| 1 + n.content.len() + n.xattrs.len())
        .sum()
}

impl Expansion {
    /// Counts a visit of `tree`, which weighs `entries` ([`weight`]).
    pub fn visit(&mut self, tree: &Id, entries: usize) -> Result<()> {
        let entries = entries as u64;
        self.walked += entries;
        if self.seen.insert(*tree) {
            self.distinct += entries;
        }
        if self.walked > BASE + RATIO * self.distinct {
            return Err(Error::Integrity {
                object: format!("tree {tree}"),
                reason: format!(
                    "the snapshot's trees name the same subtrees so often that walking them \
                     passes {} entries from {} distinct ones: a forged snapshot, not restored",
                    self.walked, self.distinct
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subtree_named_by_every_entry_at_every_level_is_refused() {
        let mut e = Expansion::default();
        let trees: Vec<Id> = (0..64u8).map(|i| Id([i; 32])).collect();
        // Level k is visited 2^k times, each visit holding two entries naming level k+1.
        let refused = (|| {
            for (level, t) in trees.iter().enumerate() {
                for _ in 0..(1u64 << level.min(40)) {
                    e.visit(t, 2)?;
                }
            }
            Ok::<_, Error>(())
        })();
        assert!(matches!(refused, Err(Error::Integrity { .. })));
        // A real snapshot: distinct trees, and a few identical directories.
        let mut e = Expansion::default();
        for i in 0..10_000u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            e.visit(&Id(id), 300).expect("distinct trees");
        }
        for _ in 0..50 {
            e.visit(&Id([9; 32]), 300).expect("repeated directories");
        }
    }
}
