//! The backup side of the session/mark protocol (docs/FORMAT.md §18): what every front end
//! that writes snapshots goes through, so none can skip a step.
//!
//! [`Repository::begin_backup`] makes the session durable, then reads the prune marks, then
//! loads the index, and only then drops the marked packs from it. The order is the invariant
//! the sweep's safety rests on: a sweep deletes a mark only after it replaced the index objects
//! naming the mark's packs, so a backup that no longer finds a mark reads an index without its
//! packs; and a mark created after the session is durable waits for the session to end.
//! [`Repository::commit_snapshot`] writes the snapshot only while the session is still
//! provably live.

use super::*;
use crate::failpoint;
use crate::format::{Snapshot, SNAPSHOT_VERSION};
use crate::session::Session;
use crate::IdSet;

const MARKS_ACTION: &str = "start a backup that honours prune marks";

impl Repository {
    /// Opens a repository without reading its index: for a backup, whose index must be read
    /// after its session exists ([`Self::begin_backup`] reads it), and for check, which reads
    /// it after noting the maintenance lease.
    pub async fn open_without_index(
        store: Store,
        credential: &drvault_keyring::Credential,
        state_dir: Option<PathBuf>,
    ) -> Result<Self> {
        Self::open_inner(store, credential, state_dir, false).await
    }

    /// Announces a backup and prepares the index it deduplicates against (see the module
    /// documentation). Fails with [`Error::KeyringChanged`] when a rotation happened since the
    /// repository was opened: open it again and retry. End the session with
    /// [`Session::end`] after [`Self::commit_snapshot`] (or after a failure).
    pub async fn begin_backup(&self) -> Result<Session> {
        failpoint::hit("backup.before-session").await;
        // A backup that cannot list every target's marks (one is down, and the write quorum
        // lets backups go on) says so in its session, which then holds every sweep.
        let sees_every_mark = !self.store.targets().iter().any(|t| t.is_degraded())
            && self
                .store
                .list_names_complete(paths::PRUNE, MARKS_ACTION)
                .await
                .is_ok();
        if !sees_every_mark {
            tracing::warn!(
                "not every target lists its prune marks: this backup holds every prune sweep until it ends"
            );
        }
        let session =
            Session::start_with(&self.store, self.keys.active_epoch_id()?, sees_every_mark).await?;
        failpoint::hit("backup.session-started").await;
        if !sees_every_mark {
            // This session holds every sweep that reads the sessions from now on, but not one
            // that read them before it existed: wait for such a prune (it holds the lease to
            // its end) before reading the index.
            if let Err(e) = self.wait_for_maintenance().await {
                session.end(&self.store).await;
                return Err(e);
            }
        }
        match self.prepare_backup_index(sees_every_mark).await {
            Ok(()) => {
                *self
                    .backup_liveness
                    .lock()
                    .map_err(|_| Error::Internal("session lock poisoned".into()))? =
                    Some(session.liveness());
                Ok(session)
            }
            Err(e) => {
                session.end(&self.store).await;
                Err(e)
            }
        }
    }

    /// Waits (up to an hour) until no maintenance lease is held.
    async fn wait_for_maintenance(&self) -> Result<()> {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(3600);
        loop {
            match crate::lease::held_lease_visible(&self.store).await? {
                Some(held) => {
                    if std::time::Instant::now() > until {
                        return Err(Error::Locked {
                            holder: format!(
                                "{} (pid {}) for {}",
                                held.host, held.pid, held.purpose
                            ),
                            until: held.expires.to_string(),
                        });
                    }
                    tracing::info!(
                        "waiting for {} on {} to end (this backup cannot see every target's prune marks)",
                        held.purpose,
                        held.host
                    );
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                }
                _ => return Ok(()),
            }
        }
    }

    async fn prepare_backup_index(&self, sees_every_mark: bool) -> Result<()> {
        // New objects are sealed under this process's keyring: a rotation after the session
        // started is seen here, one before it is seen by re-encryption in the session.
        if !self.keyring_is_current().await? {
            return Err(Error::KeyringChanged);
        }
        let marked = self.marked_packs(sees_every_mark).await?;
        failpoint::hit("backup.marks-read").await;
        self.load_index().await?;
        failpoint::hit("backup.index-loaded").await;
        self.drop_packs(&marked)?;
        Ok(())
    }

    /// Writes the snapshot of a backup whose packs and index are durable, after confirming
    /// that its session never lapsed (a lapsed session may have been taken for dead by a
    /// prune, which may then have deleted packs this backup refers to).
    ///
    /// The commit is recorded in the audit log first (`snapshot.commit`), and the snapshot
    /// carries that entry as its anchor (FORMAT.md section 17): a log cut after the entry, or a
    /// snapshot deleted outside `forget`, is then detected from any machine. When the log
    /// cannot take the entry (its sequencer is down), the snapshot is written without an
    /// anchor and `Committed::unrecorded` says why: a backup does not depend on one target.
    pub async fn commit_snapshot(
        &self,
        session: &Session,
        snapshot: &Snapshot,
    ) -> Result<Committed> {
        failpoint::hit("backup.before-commit").await;
        session.confirm()?;
        let mut snapshot = snapshot.clone();
        let (anchor, unrecorded) = match self
            .audit()
            .append("snapshot.commit", commit_details(&snapshot, session), "ok")
            .await
        {
            Ok(entry) => (Some(entry.anchor()), None),
            Err(e) => {
                tracing::warn!(
                    "the audit log did not take this backup's commit ({e}); the snapshot is \
                         written without its audit anchor"
                );
                (None, Some(e.to_string()))
            }
        };
        snapshot.audit = anchor;
        snapshot.version = if anchor.is_some() {
            SNAPSHOT_VERSION
        } else {
            1
        };
        snapshot.writer = None;
        if let Some(host) = self.keys.host_name() {
            // Written with a host key: the proof says which host's slot wrote it.
            let auth = self.keys.host_auth_key(host)?;
            snapshot.writer = Some(crate::format::HostProof {
                host: host.to_string(),
                mac: host_proof_mac(&auth, &snapshot),
            });
        }
        failpoint::hit("backup.after-commit-entry").await;
        let saved = match session.confirm() {
            Ok(()) => self.save_snapshot(&snapshot).await,
            Err(e) => Err(e),
        };
        match saved {
            Ok(id) => {
                if self.keys.host_name().is_some() {
                    self.remember_own_snapshot(&id, &snapshot).await;
                }
                Ok(Committed {
                    id,
                    snapshot,
                    unrecorded,
                })
            }
            Err(e) => {
                // The entry says a snapshot exists: say it does not, so verify does not look
                // for it (a crash here leaves the entry alone: see FORMAT.md section 17).
                if let Some(a) = anchor {
                    let details = serde_json::json!({ "commit": a.seq });
                    let failed = format!("failed: {e}");
                    if let Err(w) = self
                        .audit()
                        .append("snapshot.abandoned", details, &failed)
                        .await
                    {
                        tracing::warn!("entry {} stays without its snapshot: {w}", a.seq);
                    }
                }
                Err(e)
            }
        }
    }

    /// The packs listed by the prune marks that can be read. A damaged mark is skipped with a
    /// warning: prune refuses to run while it exists, so its packs are not deleted. Any other
    /// failure (an unreachable store) is an error: a backup that cannot see the marks must
    /// not run.
    ///
    /// With `complete`, every target must list `prune/` (a mark only a silent target holds
    /// would go unseen, and a sweep seeing the session begin after the mark would not wait for
    /// it); without, the targets that answer are enough (the session holds every sweep).
    pub async fn marked_packs(&self, complete: bool) -> Result<IdSet> {
        let mut marked = IdSet::default();
        let names = if complete {
            self.store
                .list_names_complete(paths::PRUNE, MARKS_ACTION)
                .await?
        } else {
            self.store.list_names(paths::PRUNE).await?
        };
        for name in names {
            match self.read_prune_mark(&name).await {
                Ok(m) => marked.extend(m.packs),
                Err(Error::NotFound { .. }) => {} // swept since the listing
                Err(e @ Error::Integrity { .. }) => {
                    tracing::warn!(
                        "{e}; ignored here, and prune refuses to run until it is removed"
                    )
                }
                // A mark a host key cannot open (one from before the repository took host
                // keys, or planted): it cannot list packs for this backup to avoid, so it does
                // not stop the backup; the maintenance host's prune names it.
                Err(e @ Error::NotPermitted(_)) if self.keys.host_name().is_some() => {
                    tracing::warn!("{name} skipped: {e}")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(marked)
    }

    /// Drops from the in-memory index every blob location in `packs`, so this process stores
    /// such blobs again rather than refer to packs about to be deleted. Returns the number of
    /// locations dropped.
    pub fn drop_packs(&self, packs: &IdSet) -> Result<usize> {
        if packs.is_empty() {
            return Ok(0);
        }
        let mut idx = self
            .index
            .write()
            .map_err(|_| Error::Internal("index lock poisoned".into()))?;
        let dropped = idx.drop_packs(packs);
        if dropped == 0 {
            return Ok(0);
        }
        tracing::info!("{dropped} blob locations in packs marked for deletion are not used");
        Ok(dropped)
    }
}

/// A snapshot as written by [`Repository::commit_snapshot`].
#[derive(Debug)]
pub struct Committed {
    pub id: Id,
    /// The snapshot as stored (with its audit anchor when the log took the commit).
    pub snapshot: Snapshot,
    /// Why the audit log did not take the commit, when it did not.
    pub unrecorded: Option<String>,
}

/// What a `snapshot.commit` entry says: enough to name the backup without its ID (which the
/// entry cannot hold: the snapshot's bytes include the entry's hash).
fn commit_details(s: &Snapshot, session: &Session) -> serde_json::Value {
    let time = chrono::DateTime::from_timestamp_nanos(s.time_ns)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    serde_json::json!({
        "host": s.host,
        "time": time,
        "paths": s.paths.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect::<Vec<_>>(),
        "tags": s.tags,
        "tree": s.tree.short(),
        "files": s.summary.files_new + s.summary.files_changed + s.summary.files_unchanged,
        "bytes_total": s.summary.bytes_total,
        "bytes_added": s.summary.bytes_added,
        "session": session.name(),
    })
}

/// The host proof of `snapshot` under a host's authentication key (FORMAT.md section 12).
pub(crate) fn host_proof_mac(auth: &drvault_keyring::Key, snapshot: &Snapshot) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(auth.expose());
    h.update(b"drvault 2026 snapshot host proof");
    h.update(&snapshot.proof_input());
    *h.finalize().as_bytes()
}
