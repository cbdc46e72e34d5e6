//! Index consolidation: every backup writes at least one small index object, so a fleet's
//! index grows into thousands of objects that each opening lists and, on a new host, fetches.
//! Prune merges the small ones into full-sized objects (LSM-style: full objects are left as
//! they are, so each consolidation rewrites only what was added since the last one, and the
//! hosts' catalogs keep their cached locations, docs/FORMAT.md §10).

use super::*;

/// An index object under this many bytes is small (a full one holds
/// `INDEX_ENTRIES_PER_OBJECT` entries, a few MiB).
pub(super) const SMALL_INDEX_BYTES: u64 = 512 * 1024;
/// Small index objects tolerated before prune merges them.
pub(super) const CONSOLIDATE_AFTER: usize = 32;

impl Pruner<'_> {
    /// Merges the small index objects into full ones when there are more than
    /// [`CONSOLIDATE_AFTER`]: writes the new objects, then deletes the merged ones (a reader
    /// that lists in between sees both, and a pack twice counts once). Returns how many
    /// objects were merged. Runs under the lease, after the sweep.
    pub(super) async fn consolidate_index(&self, lease: &mut Option<&mut Lease>) -> Result<u64> {
        let small: Vec<String> = self
            .repo
            .store()
            .list_complete(paths::INDEX, PRUNE_ACTION)
            .await?
            .into_iter()
            .filter(|l| l.size < SMALL_INDEX_BYTES)
            .map(|l| l.name)
            .collect();
        if small.len() <= CONSOLIDATE_AFTER {
            return Ok(0);
        }
        tracing::info!("merging {} small index objects", small.len());
        let merged = self
            .replace_index_objects(lease, small, &IdSet::default())
            .await?;
        crate::failpoint::hit("prune.consolidated").await;
        Ok(merged)
    }
}
