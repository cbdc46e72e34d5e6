//! Prune marks (`prune/<id>`): reading and writing them, and the backups' side of the
//! protocol (dropping marked packs from the in-memory index).

use super::*;
use crate::format::PruneMark;

/// What the refusal on an incomplete listing of marks names.
const PRUNE_ACTION: &str = "prune (it deletes packs and index objects)";

impl Repository {
    /// Reads one prune mark, verifying its name and opening it. With full keys, a mark under an
    /// index key (which hosts hold too) must carry the authentication only full keys make: a
    /// host could otherwise plant a backdated mark and have packs deleted under a running backup.
    pub async fn read_prune_mark(&self, name: &str) -> Result<PruneMark> {
        let bytes = self.store.get(name).await?;
        let header = Header::parse(&bytes).map_err(|e| Error::integrity(name, e))?;
        let mut plain = self.open_plain(name, ObjectKind::PruneMark, &bytes)?;
        if header.kind == ObjectKind::SharedPruneMark {
            if let Some(key) = self.mark_key() {
                let Some(at) = plain.len().checked_sub(32) else {
                    return Err(Error::integrity(name, "shorter than its authentication"));
                };
                let tag = blake3::Hash::from_slice(&plain[at..])
                    .map_err(|e| Error::integrity(name, e))?;
                if tag != blake3::keyed_hash(key.expose(), &plain[..at]) {
                    return Err(Error::integrity(
                        name,
                        "its authentication does not verify: not written by full keys (a host key \
                         cannot write prune marks; remove it after finding out who planted it)",
                    ));
                }
                plain.truncate(at);
            }
        }
        PruneMark::decode(name, &plain)
    }

    /// The key authenticating prune marks under index keys (full keys of a repository that
    /// takes host keys only).
    fn mark_key(&self) -> Option<drvault_keyring::Key> {
        self.keys.keyring()?.prune_mark_key()
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

    /// Seals and stores a mark; returns its name. Only prune and key migration write marks:
    /// a mark's packs are deleted once it is ripe (docs/FORMAT.md §18).
    pub(crate) async fn write_prune_mark(&self, mark: &PruneMark) -> Result<String> {
        let mut plain = mark.encode();
        if let Some(key) = self.mark_key() {
            let tag = blake3::keyed_hash(key.expose(), &plain);
            plain.extend_from_slice(tag.as_bytes());
        }
        let sealed = self.seal_object(ObjectKind::PruneMark, &plain)?;
        let name = paths::prune_mark(&Id::of_stored(&sealed));
        self.store.put_new(&name, sealed.into(), true).await?;
        Ok(name)
    }
}
