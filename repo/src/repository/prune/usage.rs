//! The blobs in use: every copy of every blob from the index objects, and a walk of every
//! snapshot's trees marking the blobs reached.

use super::*;

impl Repository {
    /// Replaces the in-memory index by one read from every index object, keeping every copy of
    /// every blob (the catalog keeps one). A pack listed by several objects is loaded once.
    pub(super) async fn load_full_index(&self) -> Result<()> {
        let poisoned = || Error::Internal("index lock poisoned".into());
        // The old index goes first: the peak is one index, not two. Its size sizes the new
        // one, which saves the vector's doublings (up to twice the final size).
        let old = std::mem::take(&mut *self.index.write().map_err(|_| poisoned())?);
        let estimate = old.loaded.len() + old.added.len();
        drop(old);
        let names = self
            .store
            .list_names_complete(paths::INDEX, PRUNE_ACTION)
            .await?;
        let mut idx = MemIndex::default();
        idx.loaded.reserve(estimate + estimate / 16);
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

    /// Snapshots by name; one deleted since the listing (a concurrent `forget`) is left out.
    pub(super) async fn load_snapshots(
        &self,
        names: Vec<String>,
    ) -> Result<Vec<(String, Snapshot)>> {
        let loaded: Vec<Option<(String, Snapshot)>> = futures::stream::iter(names)
            .map(|name| async move {
                match self.load_snapshot(&name).await {
                    Ok(s) => Ok(Some((name, s))),
                    Err(Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        let mut out: Vec<(String, Snapshot)> = loaded.into_iter().flatten().collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Marks in `used` every tree and data blob `snapshot` refers to. Trees already marked are
    /// not read again. Anything that cannot be read or is in no index is an error naming the
    /// snapshot: prune never deletes on incomplete knowledge.
    pub(super) async fn mark_used(
        &self,
        lease: &mut Option<&mut Lease>,
        used: &mut Bits,
        name: &str,
        snap: &Snapshot,
    ) -> Result<()> {
        let mut stack = vec![snap.tree];
        while let Some(t) = stack.pop() {
            // A walk of millions of directories on a remote target takes a while.
            keep_alive(&self.store, lease).await?;
            let pos = self
                .index_read()?
                .first_pos(&t)
                .ok_or_else(|| Error::integrity(name, format!("tree {t} is in no index")))?;
            if !used.set(pos) {
                continue;
            }
            let tree = self.load_tree(&t).await.map_err(|e| match e {
                Error::Integrity { .. } | Error::NotFound { .. } => {
                    Error::integrity(name, format!("tree {t} cannot be read: {e}"))
                }
                other => other,
            })?;
            let idx = self.index_read()?;
            for n in &tree.entries {
                if let Some(sub) = n.subtree {
                    stack.push(sub);
                }
                for c in &n.content {
                    let p = idx.first_pos(c).ok_or_else(|| {
                        Error::integrity(
                            name,
                            format!(
                                "data blob {c} of {:?} is in no index; run `drvault check`",
                                String::from_utf8_lossy(&n.name)
                            ),
                        )
                    })?;
                    used.set(p);
                }
            }
        }
        Ok(())
    }

    /// Reads the whole index and walks every snapshot.
    pub(super) async fn usage(&self, lease: &mut Option<&mut Lease>) -> Result<Usage> {
        // Snapshots first: a snapshot is written after its index objects, so the index read
        // next covers every snapshot listed.
        let names = self
            .store
            .list_names_complete(paths::SNAPSHOTS, PRUNE_ACTION)
            .await?;
        self.load_full_index().await?;
        let mut usage = Usage {
            used: Bits::new(self.index_read()?.loaded.len()),
            walked: HashSet::new(),
        };
        for (name, snap) in self.load_snapshots(names).await? {
            self.mark_used(lease, &mut usage.used, &name, &snap).await?;
            usage.walked.insert(name);
        }
        Ok(usage)
    }

    /// Walks the snapshots committed since [`Self::usage`] (by backups that ended meanwhile).
    /// Their trees are in index objects written after the first reading, so the index is read
    /// again first. Returns whether it was.
    pub(super) async fn walk_new_snapshots(
        &self,
        lease: &mut Option<&mut Lease>,
        usage: &mut Usage,
    ) -> Result<bool> {
        let names = self
            .store
            .list_names_complete(paths::SNAPSHOTS, PRUNE_ACTION)
            .await?;
        let new: Vec<String> = names
            .into_iter()
            .filter(|n| !usage.walked.contains(n))
            .collect();
        let snaps = self.load_snapshots(new).await?;
        if snaps.is_empty() {
            return Ok(false);
        }
        tracing::info!(
            "{} snapshots were added during the prune; walking them",
            snaps.len()
        );
        // Positions change with the new index: carry the used blobs over by ID.
        let ids: Vec<Id> = {
            let idx = self.index_read()?;
            (0..idx.loaded.len())
                .filter(|i| usage.used.get(*i))
                .map(|i| idx.loaded[i].0)
                .collect()
        };
        usage.used = Bits::new(0);
        self.load_full_index().await?;
        {
            let idx = self.index_read()?;
            usage.used = Bits::new(idx.loaded.len());
            for id in &ids {
                let p = idx.first_pos(id).ok_or_else(|| {
                    Error::integrity(format!("blob {id}"), "left the index during the prune")
                })?;
                usage.used.set(p);
            }
        }
        drop(ids);
        for (name, snap) in snaps {
            self.mark_used(lease, &mut usage.used, &name, &snap).await?;
            usage.walked.insert(name);
        }
        Ok(true)
    }
}
