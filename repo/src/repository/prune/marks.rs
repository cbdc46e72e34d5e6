//! Prune marks (`prune/<id>`): reading and writing them, and the backups' side of the
//! protocol (dropping marked packs from the in-memory index).

use super::*;

impl Repository {
    /// Reads one prune mark, verifying its name and opening it.
    pub async fn read_prune_mark(&self, name: &str) -> Result<PruneMark> {
        let bytes = self.store.get(name).await?;
        self.open_file(name, &bytes)
    }

    /// Every prune mark; the first one that cannot be read is an error.
    pub async fn prune_marks(&self) -> Result<Vec<(String, PruneMark)>> {
        let mut out = Vec::new();
        for name in self
            .store
            .list_names_complete(paths::PRUNE, PRUNE_ACTION)
            .await?
        {
            let mark = self.read_prune_mark(&name).await?;
            out.push((name, mark));
        }
        Ok(out)
    }

    /// Drops from the in-memory index every blob location in a pack that a prune mark lists
    /// ([`Self::marked_packs`], then [`Self::drop_packs`]). Returns the number dropped.
    pub async fn forget_marked_packs(&self) -> Result<usize> {
        let marked = self.marked_packs(true).await?;
        self.drop_packs(&marked)
    }

    /// Seals and stores a mark; returns its name.
    pub(super) async fn write_mark(&self, mark: &PruneMark) -> Result<String> {
        let sealed = self.seal_file(mark)?;
        let name = paths::prune_mark(&Id::of_stored(&sealed));
        self.store.put_new(&name, sealed.into(), true).await?;
        Ok(name)
    }
}
