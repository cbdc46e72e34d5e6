//! Repacking: the used blobs of wasteful packs, copied as they are into new packs.

use drvault_keyring::{Header, Keys};

use super::*;
use crate::blob::open_blob;

impl Pruner<'_> {
    /// Copies the listed blob envelopes (as they are: same epoch, same bytes) into new packs,
    /// verifying each blob first, uploads them and indexes them.
    pub(super) async fn copy_used_blobs(
        &self,
        lease: &mut Option<&mut Lease>,
        copies: &[(u32, u32)],
    ) -> Result<()> {
        let mut builders = Builders::new(self.repo.config().pack_size as usize);
        let mut uploaded = 0usize;
        // One source pack at a time (its entries are looked up when it comes), the next one
        // downloading while this one is verified and copied.
        let mut packs = futures::stream::iter(copies.chunk_by(|a, b| a.0 == b.0))
            .map(|group| async move {
                let (pack, entries) = {
                    let idx = self.repo.index()?;
                    let entries: Vec<PackEntry> = group
                        .iter()
                        .map(|(_, pos)| {
                            idx.at(*pos as usize)
                                .map(|(id, slot)| idx.location(id, slot).entry)
                                .ok_or_else(|| Error::Internal("a copy outside the index".into()))
                        })
                        .collect::<Result<_>>()?;
                    (idx.pack(group[0].0), entries)
                };
                let bytes = self.repo.store().get(&paths::pack(&pack)).await?;
                Ok::<_, Error>((pack, bytes, entries))
            })
            .buffered(2);
        while let Some(r) = packs.next().await {
            let (pack, bytes, entries) = r?;
            keep_alive(self.repo.store(), lease).await?;
            let keyring = self.repo.keys().clone();
            let mut taken = std::mem::replace(&mut builders, Builders::new(0));
            let (back, finished) = tokio::task::spawn_blocking(move || {
                let finished = taken.copy(&keyring, &pack, &bytes, &entries)?;
                Ok::<_, Error>((taken, finished))
            })
            .await
            .map_err(Error::task)??;
            builders = back;
            for p in finished {
                self.upload_copy(p).await?;
                uploaded += 1;
                if uploaded.is_multiple_of(FLUSH_EVERY) {
                    self.repo.flush_index().await?;
                }
            }
        }
        drop(packs);
        for mut b in builders.open {
            if !b.1.is_empty() {
                self.upload_copy(b.1.finish(self.repo.keys())?).await?;
            }
        }
        self.repo.flush_index().await?;
        Ok(())
    }

    /// Uploads a pack of copies and queues its entries for the next index object. Unlike
    /// [`Repository::upload_pack`] it leaves the in-memory index alone (a hash-map entry per
    /// copied blob): prune knows the copied blobs by position, and reads the index again when
    /// it needs the new packs.
    async fn upload_copy(&self, pack: FinishedPack) -> Result<()> {
        self.repo
            .store()
            .put_new(&paths::pack(&pack.id), pack.bytes, true)
            .await?;
        self.repo.queue_index_packs([IndexPack {
            pack: pack.id,
            blobs: pack.entries,
        }])?;
        Ok(())
    }
}

/// New packs being filled with copied blobs: one per blob kind and key epoch, so that every
/// pack holds blobs of one epoch only (re-encryption tells a pack's epoch by its first blob).
struct Builders {
    size: usize,
    open: Vec<((BlobKind, u32), PackBuilder)>,
}

impl Builders {
    fn new(size: usize) -> Self {
        Builders {
            size,
            open: Vec::new(),
        }
    }

    /// Verifies each listed blob of a pack and adds its envelope, unchanged, to the pack of
    /// its kind and epoch. Returns the packs that filled up.
    fn copy(
        &mut self,
        keyring: &Keys,
        pack: &Id,
        bytes: &[u8],
        entries: &[PackEntry],
    ) -> Result<Vec<FinishedPack>> {
        let name = paths::pack(pack);
        let mut finished = Vec::new();
        for e in entries {
            let object = format!("{name} (blob {})", e.id);
            let range = e.offset as usize..(e.offset as usize).saturating_add(e.length as usize);
            let sealed = bytes
                .get(range)
                .ok_or_else(|| Error::integrity(&object, "lies outside the pack"))?;
            open_blob(keyring, e.kind, &e.id, e.raw_length, sealed).map_err(|err| match err {
                Error::Integrity { reason, .. } => Error::integrity(&object, reason),
                other => other,
            })?;
            let epoch = Header::parse(sealed)
                .map_err(|err| Error::integrity(&object, err))?
                .epoch;
            let key = (e.kind, epoch);
            let i = match self.open.iter().position(|(k, _)| *k == key) {
                Some(i) => i,
                None => {
                    self.open.push((key, PackBuilder::new(self.size)));
                    self.open.len() - 1
                }
            };
            let b = &mut self.open[i].1;
            if b.add(e.kind, e.id, e.raw_length, sealed) {
                finished.push(b.finish(keyring)?);
            }
        }
        Ok(finished)
    }
}
