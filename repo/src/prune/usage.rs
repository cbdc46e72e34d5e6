//! The blobs in use: every copy of every blob from the index objects, and a walk of every
//! snapshot's trees marking the blobs reached.

use super::*;

impl Pruner<'_> {
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
            keep_alive(self.repo.store(), lease).await?;
            let pos = self
                .repo
                .index()?
                .first_position(&t)
                .ok_or_else(|| Error::integrity(name, format!("tree {t} is in no index")))?;
            if !used.set(pos) {
                continue;
            }
            let tree = self.repo.load_tree(&t).await.map_err(|e| match e {
                Error::Integrity { .. } | Error::NotFound { .. } => {
                    Error::integrity(name, format!("tree {t} cannot be read: {e}"))
                }
                other => other,
            })?;
            let idx = self.repo.index()?;
            for n in &tree.entries {
                if let Some(sub) = n.subtree {
                    stack.push(sub);
                }
                for c in &n.content {
                    let p = idx.first_position(c).ok_or_else(|| {
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
            .repo
            .store()
            .list_names_complete(paths::SNAPSHOTS, PRUNE_ACTION)
            .await?;
        self.repo.load_full_index(PRUNE_ACTION).await?;
        let mut usage = Usage {
            used: Bits::new(self.repo.index()?.positions()),
            walked: HashSet::new(),
        };
        for (name, snap) in self.repo.load_snapshots(names).await? {
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
            .repo
            .store()
            .list_names_complete(paths::SNAPSHOTS, PRUNE_ACTION)
            .await?;
        let new: Vec<String> = names
            .into_iter()
            .filter(|n| !usage.walked.contains(n))
            .collect();
        let snaps = self.repo.load_snapshots(new).await?;
        if snaps.is_empty() {
            return Ok(false);
        }
        tracing::info!(
            "{} snapshots were added during the prune; walking them",
            snaps.len()
        );
        // Positions change with the new index: carry the used blobs over by ID.
        let ids: Vec<Id> = {
            let idx = self.repo.index()?;
            (0..idx.positions())
                .filter(|i| usage.used.get(*i))
                .filter_map(|i| idx.at(i).map(|(id, _)| *id))
                .collect()
        };
        usage.used = Bits::new(0);
        self.repo.load_full_index(PRUNE_ACTION).await?;
        {
            let idx = self.repo.index()?;
            usage.used = Bits::new(idx.positions());
            for id in &ids {
                let p = idx.first_position(id).ok_or_else(|| {
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
