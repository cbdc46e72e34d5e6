//! The in-memory index (which pack holds each blob, at what offset) and its life: loading
//! every index object, adding the packs this process uploads, writing index objects, and the
//! local catalog's copy of it.

use super::*;

impl Repository {
    /// Reads the index again (another process may have changed it since it was loaded).
    pub async fn reload_index(&self) -> Result<()> {
        self.load_index().await
    }

    /// Loads the index. An index object listed but gone when read was replaced meanwhile (prune
    /// and re-encryption write the new objects before deleting the old ones), so the listing is
    /// taken again.
    pub(super) async fn load_index(&self) -> Result<()> {
        let mut attempt = 0;
        loop {
            match self.load_index_once().await {
                Err(Error::NotFound { name }) if attempt < 3 && name.starts_with(paths::INDEX) => {
                    tracing::info!(
                        "{name} was replaced while the index was read; reading it again"
                    );
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    pub(super) async fn load_index_once(&self) -> Result<()> {
        let names: Vec<String> = self.store.list_names(paths::INDEX).await?;
        let Some(dir) = self.state_dir.clone() else {
            let mut idx = Index::default();
            for (_, file) in self.fetch_indexes(names).await? {
                for p in &file.packs {
                    for b in &p.blobs {
                        idx.load(p.pack, *b);
                    }
                }
            }
            idx.seal();
            *self
                .index
                .write()
                .map_err(|_| Error::Internal("index lock poisoned".into()))? = idx;
            return Ok(());
        };
        let wanted: std::collections::HashSet<String> = names.iter().cloned().collect();
        let mut catalog = tokio::task::spawn_blocking(move || Catalog::open(&dir))
            .await
            .map_err(Error::task)??;
        let known = catalog.known_indexes()?;
        let missing: Vec<String> = names
            .iter()
            .filter(|n| !known.contains(*n))
            .cloned()
            .collect();
        let mut fetched = self.fetch_indexes(missing).await?;
        // Cached objects gone from the repository: when the objects that remain or are new
        // name every pack they named (a consolidation), the cached locations stay valid and
        // only their names are dropped; otherwise (packs were deleted) the cache starts over.
        let vanished: Vec<String> = known.difference(&wanted).cloned().collect();
        // Dropped only after the objects that replace them are recorded: a crash in between
        // leaves both, and the next opening decides again.
        let mut forget = Vec::new();
        if !vanished.is_empty() {
            let packs = catalog.index_packs()?;
            let mut still: IdSet = fetched
                .iter()
                .flat_map(|(_, f)| f.packs.iter().map(|p| p.pack))
                .collect();
            for (object, ps) in &packs {
                if wanted.contains(object) {
                    still.extend(ps.iter().copied());
                }
            }
            let covered = vanished.iter().all(|o| {
                packs
                    .get(o)
                    .is_some_and(|ps| ps.iter().all(|p| still.contains(p)))
            });
            if covered {
                forget = vanished;
            } else {
                catalog.reset()?;
                let cached: Vec<String> = names
                    .iter()
                    .filter(|n| known.contains(*n))
                    .cloned()
                    .collect();
                fetched.extend(self.fetch_indexes(cached).await?);
            }
        }
        let catalog = tokio::task::spawn_blocking(move || -> Result<Catalog> {
            catalog.add_indexes(fetched.iter().map(|(n, f)| (n.as_str(), f)))?;
            catalog.forget_indexes(&forget)?;
            Ok(catalog)
        })
        .await
        .map_err(Error::task)??;
        let mut idx = Index::default();
        catalog.for_each_blob(|pack, entry| idx.load(pack, entry))?;
        idx.seal();
        *self
            .index
            .write()
            .map_err(|_| Error::Internal("index lock poisoned".into()))? = idx;
        *self
            .catalog
            .lock()
            .map_err(|_| Error::Internal("catalog lock poisoned".into()))? = Some(catalog);
        Ok(())
    }

    pub async fn fetch_indexes(&self, names: Vec<String>) -> Result<Vec<(String, IndexFile)>> {
        let fetched: Vec<Option<(String, IndexFile)>> = futures::stream::iter(names)
            .map(|name| async move {
                match self.fetch_index(name.clone()).await {
                    // A host key reads only index objects sealed under an index key: one from
                    // before the repository took host keys (`drvault migrate` rewrites them) is
                    // left out, and this host stores again what only it lists.
                    Err(Error::NotPermitted(why)) if self.keys.host_name().is_some() => {
                        tracing::warn!("{name} skipped: {why}");
                        Ok(None)
                    }
                    other => other.map(Some),
                }
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        Ok(fetched.into_iter().flatten().collect())
    }

    /// Reads, verifies and opens one index object.
    pub async fn fetch_index(&self, name: String) -> Result<(String, IndexFile)> {
        let bytes = self.store.get(&name).await?;
        let file: IndexFile = self.open_file(&name, &bytes)?;
        Ok((name, file))
    }

    /// The index for a query. A lock poisoned by a panicking writer still holds a whole index
    /// (writers replace it or add entries, never leave one half-made), so it is read rather
    /// than taken for empty: "no blobs" would make a check pass and a backup re-upload.
    pub(super) fn index_query(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The in-memory index, for reading; an error if a writer panicked (maintenance must not
    /// work from an index it cannot trust).
    pub fn index(&self) -> Result<std::sync::RwLockReadGuard<'_, Index>> {
        self.index
            .read()
            .map_err(|_| Error::Internal("index lock poisoned".into()))
    }

    pub fn has_blob(&self, id: &Id) -> bool {
        self.index_query().contains(id)
    }

    pub fn locate(&self, id: &Id) -> Option<Location> {
        let idx = self.index_query();
        idx.get(id).map(|s| idx.location(id, s))
    }

    /// Every indexed blob with its pack.
    pub fn index_entries(&self) -> Vec<Location> {
        self.index_query().locations().collect()
    }

    /// Uploads a finished pack and records its blobs for the next index object.
    pub async fn upload_pack(&self, pack: FinishedPack) -> Result<u64> {
        let size = pack.bytes.len() as u64;
        self.store
            .put_new(&paths::pack(&pack.id), pack.bytes, true)
            .await?;
        {
            let mut idx = self
                .index
                .write()
                .map_err(|_| Error::Internal("index lock poisoned".into()))?;
            for e in &pack.entries {
                idx.insert(pack.id, *e);
            }
        }
        self.pending
            .lock()
            .map_err(|_| Error::Internal("pending index lock poisoned".into()))?
            .push(IndexPack {
                pack: pack.id,
                blobs: pack.entries,
            });
        Ok(size)
    }

    /// Fails when this process runs a backup whose session lapsed.
    pub(super) fn confirm_backup_session(&self) -> Result<()> {
        match self
            .backup_liveness
            .lock()
            .map_err(|_| Error::Internal("session lock poisoned".into()))?
            .as_ref()
        {
            Some(l) => l.confirm(),
            None => Ok(()),
        }
    }

    /// Writes one index object listing `packs` (for tools and benchmarks that build an index
    /// directly; a backup's packs are indexed through [`Self::upload_pack`] and
    /// [`Self::flush_index`]). The packs are not checked.
    pub async fn write_index_object(&self, packs: Vec<IndexPack>) -> Result<u64> {
        self.queue_index_packs(packs)?;
        self.flush_index().await
    }

    /// Queues packs for the next index object ([`Self::flush_index`]) without adding them to
    /// the in-memory index (maintenance copying blobs knows them by position, and reads the
    /// index again when it needs them).
    pub(crate) fn queue_index_packs(
        &self,
        packs: impl IntoIterator<Item = IndexPack>,
    ) -> Result<()> {
        self.pending
            .lock()
            .map_err(|_| Error::Internal("pending index lock poisoned".into()))?
            .extend(packs);
        Ok(())
    }

    /// Replaces the in-memory index by one read from every index object, keeping every copy of
    /// every blob (the catalog keeps one): what maintenance decides on. A pack listed by
    /// several objects is loaded once. `action` names the operation for the refusal on an
    /// incomplete listing.
    pub async fn load_full_index(&self, action: &str) -> Result<()> {
        let poisoned = || Error::Internal("index lock poisoned".into());
        // The old index goes first: the peak is one index, not two. Its size sizes the new
        // one, which saves the vector's doublings (up to twice the final size).
        let old = std::mem::take(&mut *self.index.write().map_err(|_| poisoned())?);
        let estimate = old.entries();
        drop(old);
        let names = self.store.list_names_complete(paths::INDEX, action).await?;
        let mut idx = Index::with_capacity(estimate + estimate / 16);
        let mut seen = IdSet::default();
        // Four objects in flight (a few MiB each) keep a remote target busy.
        let mut files = futures::stream::iter(names)
            .map(|name| self.fetch_index(name))
            .buffered(4);
        while let Some(r) = files.next().await {
            let (_, file) = r?;
            for p in file.packs {
                if seen.insert(p.pack) {
                    for b in p.blobs {
                        idx.load(p.pack, b);
                    }
                }
            }
        }
        idx.seal();
        *self.index.write().map_err(|_| poisoned())? = idx;
        Ok(())
    }

    /// Writes the pending entries as index objects once a full object's worth is pending (else
    /// nothing, and returns 0): a long backup neither holds an entry per blob until its end nor
    /// leaves everything it uploaded unindexed should it be killed. Returns bytes written. For a
    /// backup's pipeline only: it also moves the in-memory index's new entries into its sorted
    /// part, which renumbers positions.
    pub async fn flush_index_when_full(&self) -> Result<u64> {
        let pending: usize = self
            .pending
            .lock()
            .map_err(|_| Error::Internal("pending index lock poisoned".into()))?
            .iter()
            .map(|p| p.blobs.len())
            .sum();
        let written = if pending < INDEX_ENTRIES_PER_OBJECT {
            0
        } else {
            self.flush_index().await?
        };
        // Only while a backup runs (maintenance works by index position, which this moves):
        // its new entries join the sorted part once they are a quarter of it.
        let backing_up = self
            .backup_liveness
            .lock()
            .map_err(|_| Error::Internal("session lock poisoned".into()))?
            .is_some();
        let due = {
            let idx = self
                .index
                .read()
                .map_err(|_| Error::Internal("index lock poisoned".into()))?;
            idx.added_len() >= INDEX_ENTRIES_PER_OBJECT.max(idx.positions() / 4)
        };
        if !backing_up || !due {
            return Ok(written);
        }
        let mut idx = self
            .index
            .write()
            .map_err(|_| Error::Internal("index lock poisoned".into()))?;
        idx.absorb_added();
        Ok(written)
    }

    /// Writes index objects for every pack uploaded since the last flush. Returns bytes written.
    pub async fn flush_index(&self) -> Result<u64> {
        crate::failpoint::hit("index.before-flush").await;
        // An index written after the backup's session lapsed could name packs a prune deleted
        // meanwhile (taking the backup for dead); every later backup would refer to them.
        self.confirm_backup_session()?;
        let packs = std::mem::take(
            &mut *self
                .pending
                .lock()
                .map_err(|_| Error::Internal("lock poisoned".into()))?,
        );
        let mut written = 0;
        let mut batch: Vec<IndexPack> = Vec::new();
        let mut count = 0;
        let mut batches = Vec::new();
        for p in packs {
            count += p.blobs.len();
            batch.push(p);
            if count >= INDEX_ENTRIES_PER_OBJECT {
                batches.push(std::mem::take(&mut batch));
                count = 0;
            }
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        let mut written_files = Vec::new();
        for packs in batches {
            let file = IndexFile {
                version: INDEX_VERSION,
                packs,
            };
            let sealed = self.seal_file(&file)?;
            let id = Id::of_stored(&sealed);
            written += sealed.len() as u64;
            let name = paths::index(&id);
            self.store.put_new(&name, sealed.into(), true).await?;
            // Stopped between the check above and the write: withdrawn again.
            if let Err(e) = self.confirm_backup_session() {
                let _ = self.store.delete(&name).await;
                return Err(e);
            }
            written_files.push((name, file));
        }
        // The catalog is a cache: failing to update it must never fail the backup.
        if let Err(e) = self.remember_indexes(written_files).await {
            tracing::warn!("catalog not updated (it will catch up on the next run): {e}");
        }
        Ok(written)
    }

    /// Records in the catalog the objects targets missed in this process (the quorum held them).
    /// Returns the count per target. A catalog failure is logged, never fatal: a listing of
    /// the targets (`drvault targets`) finds the same objects.
    pub async fn remember_owed(&self) -> std::collections::BTreeMap<String, u64> {
        let owed = self.store.owed();
        let mut counts = std::collections::BTreeMap::new();
        for (t, _) in &owed {
            *counts.entry(t.clone()).or_insert(0) += 1;
        }
        if owed.is_empty() {
            return counts;
        }
        if let Some(dir) = self.state_dir.clone() {
            let r = tokio::task::spawn_blocking(move || Catalog::open(&dir)?.add_owed(&owed)).await;
            if let Err(e) = r.map_err(Error::task).and_then(|r| r) {
                tracing::warn!(
                    "owed objects not recorded in the catalog (a listing still finds them): {e}"
                );
            }
        }
        counts
    }

    /// Adds index objects this process wrote to the catalog, so the next run need not fetch them.
    pub(super) async fn remember_indexes(&self, files: Vec<(String, IndexFile)>) -> Result<()> {
        let poisoned = || Error::Internal("catalog lock poisoned".into());
        let Some(mut catalog) = self.catalog.lock().map_err(|_| poisoned())?.take() else {
            return Ok(());
        };
        let catalog = tokio::task::spawn_blocking(move || -> Result<Catalog> {
            catalog.add_indexes(files.iter().map(|(n, f)| (n.as_str(), f)))?;
            Ok(catalog)
        })
        .await
        .map_err(Error::task)??;
        *self.catalog.lock().map_err(|_| poisoned())? = Some(catalog);
        Ok(())
    }
}
