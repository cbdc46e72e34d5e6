//! Prune marks (`prune/<id>`): reading and writing them, and the backups' side of the
//! protocol (dropping marked packs from the in-memory index).

use super::*;

impl Repository {
    /// Reads one prune mark, verifying its name and opening it.
    pub async fn read_prune_mark(&self, name: &str) -> Result<PruneMark> {
        let bytes = self.store.get(name).await?;
        let mark: PruneMark = self.open_object(name, ObjectKind::PruneMark, &bytes)?;
        if mark.version != PRUNE_MARK_VERSION {
            return Err(Error::UnsupportedVersion {
                object: name.to_string(),
                version: mark.version,
            });
        }
        Ok(mark)
    }

    /// Every prune mark; the first one that cannot be read is an error.
    pub async fn prune_marks(&self) -> Result<Vec<(String, PruneMark)>> {
        let mut out = Vec::new();
        for name in self.store.list_names(paths::PRUNE).await? {
            let mark = self.read_prune_mark(&name).await?;
            out.push((name, mark));
        }
        Ok(out)
    }

    /// Drops from the in-memory index every blob location in a pack that a prune mark lists,
    /// so that this process stores such blobs again rather than refer to packs about to be
    /// deleted. A backup calls this after announcing its session (docs/FORMAT.md §18).
    /// Returns the number of locations dropped.
    ///
    /// A damaged mark is skipped with a warning: prune refuses to run while it exists, so its
    /// packs are not deleted. Any other failure (an unreachable store) is an error, since a
    /// backup that cannot see the marks must not run.
    pub async fn forget_marked_packs(&self) -> Result<usize> {
        let mut marked = IdSet::default();
        for name in self.store.list_names(paths::PRUNE).await? {
            match self.read_prune_mark(&name).await {
                Ok(m) => marked.extend(m.packs),
                Err(Error::NotFound { .. }) => {} // swept since the listing
                Err(e @ Error::Integrity { .. }) => {
                    tracing::warn!(
                        "{e}; ignored here, and prune refuses to run until it is removed"
                    )
                }
                Err(e) => return Err(e),
            }
        }
        if marked.is_empty() {
            return Ok(0);
        }
        let mut idx = self
            .index
            .write()
            .map_err(|_| Error::Invalid("index lock poisoned".into()))?;
        let numbers: HashSet<u32> = marked
            .iter()
            .filter_map(|p| idx.pack_numbers.get(p).copied())
            .collect();
        if numbers.is_empty() {
            return Ok(0);
        }
        let before = idx.loaded.len() + idx.added.len();
        idx.loaded.retain(|(_, s)| !numbers.contains(&s.pack));
        idx.added.retain(|_, s| !numbers.contains(&s.pack));
        let dropped = before - idx.loaded.len() - idx.added.len();
        tracing::info!("{dropped} blob locations in packs marked for deletion are not used");
        Ok(dropped)
    }

    /// Seals and stores a mark; returns its name.
    pub(super) async fn write_mark(&self, mark: &PruneMark) -> Result<String> {
        let sealed = self.seal_object(ObjectKind::PruneMark, &encode(mark))?;
        let name = paths::prune_mark(&Id::of_stored(&sealed));
        self.store.put_new(&name, sealed.into(), true).await?;
        Ok(name)
    }
}
