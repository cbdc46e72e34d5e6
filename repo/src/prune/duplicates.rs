//! Duplicates: backups running at once on several hosts each upload the same blobs (there is
//! no coordinator). Prune keeps one copy of each used blob, chosen here; the others count as
//! waste, so the ordinary mark and repack rules remove them (docs/FORMAT.md §18, step 3).

use super::*;

pub(super) const NO_KEEPER: u32 = u32::MAX;

/// For each used blob stored in more than one pack (by its first position in the loaded
/// index), the number of the pack that keeps it: among the copies in existing packs not already marked, a
/// pack young enough to stay anyway first, then the pack holding the most used blobs, then
/// the lowest pack id (so that concurrent uploads of the same data converge on few packs).
/// Blobs with a single candidate are left out.
pub(super) fn keepers(
    idx: &Index,
    used: &Bits,
    listing: &PackListing,
    pending: &IdSet,
    young_after: Option<i64>,
) -> Vec<u32> {
    let candidate: Vec<Option<bool>> = idx
        .packs()
        .iter()
        .map(|id| match listing.get(id) {
            Some((_, modified)) if !pending.contains(id) => {
                Some(young_after.is_some_and(|t| *modified > t))
            }
            _ => None,
        })
        .collect();
    let mut used_in = vec![0u64; idx.packs().len()];
    idx.for_each_blob(|start, entries| {
        if used.get(start) {
            let mut packs: Vec<u32> = entries.iter().map(|(_, s)| s.pack_number()).collect();
            packs.dedup();
            for p in packs {
                used_in[p as usize] += 1;
            }
        }
    });
    // 4 bytes per index entry; NO_KEEPER where every copy counts.
    let mut out = vec![NO_KEEPER; idx.positions()];
    idx.for_each_blob(|start, entries| {
        if !used.get(start) || entries.len() < 2 {
            return;
        }
        let best = entries
            .iter()
            .map(|(_, s)| s.pack_number())
            .filter_map(|p| candidate[p as usize].map(|young| (p, young)))
            .max_by(|(a, ya), (b, yb)| {
                ya.cmp(yb)
                    .then(used_in[*a as usize].cmp(&used_in[*b as usize]))
                    .then(idx.pack(*b).cmp(&idx.pack(*a)))
            });
        if let Some((p, _)) = best {
            out[start] = p;
        }
    });
    out
}
