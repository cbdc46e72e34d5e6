//! Prune: deleting the packs no snapshot needs, safely while other hosts back up, in two
//! phases (docs/FORMAT.md §18, docs/DECISIONS.md "Prune").
//!
//! 1. **Mark.** Every snapshot's trees are walked to find the blobs in use. Packs holding none
//!    are marked; packs holding mostly unused bytes have their used blobs copied into new packs
//!    first (repacked) and are marked too. The marked packs are listed in a new `prune/<id>`
//!    object. A backup that starts after the mark exists drops the marked packs from its
//!    in-memory index ([`Repository::forget_marked_packs`]), so it uploads such blobs again
//!    instead of referring to them.
//! 2. **Sweep.** A mark is *ripe* once it is older than the grace period and every running
//!    backup started after it (plus a clock-skew margin): no backup that could have referred to
//!    its packs is still running. A later prune (or the same one, with a zero grace period)
//!    writes the index again without the ripe marks' packs, deletes the index objects it
//!    replaced, then the packs, then the marks. A marked pack still holding the only copy of a
//!    blob some snapshot uses is kept back instead.
//!
//! Duplicates: hosts backing up the same data at once each upload it. For every used blob with
//! copies in several packs one pack is chosen to keep it; its other copies count as unused, so
//! packs holding only duplicates are marked and packs holding mostly duplicates are repacked.
//!
//! Memory: the index of every copy of every blob (52 bytes an entry), one bit per entry for the
//! blobs in use, 4 bytes per entry for the keeper of duplicated blobs while the plan is made,
//! and per pack a few counters. No pack is held longer than its repacking.

use std::collections::HashSet;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use crate::format::{
    paths, BlobKind, IndexPack, PackEntry, PruneMark, Snapshot, PRUNE_MARK_VERSION,
};
use crate::index::{Index, Location, Slot, INDEX_ENTRIES_PER_OBJECT};
use crate::lease::Lease;
use crate::packer::{FinishedPack, PackBuilder};
use crate::repository::LEASE_TTL;
use crate::session::{live_sessions, SessionBody};
use crate::store::Store;
use crate::{Error, Id, IdMap, IdSet, Repository, Result};
use bits::Bits;
use duplicates::{keepers, NO_KEEPER};

mod bits;
mod consolidate;
mod duplicates;
mod planning;
mod repack;
#[cfg(test)]
mod tests;
mod usage;

/// How far apart the clocks of two hosts may be (enforced when leases and sessions are written).
/// A mark is ripe only when every running backup started at least this long after the mark
/// was created, by the backup host's clock.
pub const CLOCK_SKEW_MARGIN: i64 = crate::lease::CLOCK_SKEW_BOUND;
/// What the refusal on an incomplete listing names.
const PRUNE_ACTION: &str = "prune (it deletes packs and index objects)";
/// Repacked packs between index flushes: what a crash can make the next run redo.
const FLUSH_EVERY: usize = 32;

/// What `prune` is asked to do.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// How old a mark must be before its packs are deleted.
    pub grace: Duration,
    /// A pack whose unused bytes exceed this fraction of its size is repacked (0 to 1).
    pub repack_threshold: f64,
    /// Report what would be marked and swept; write nothing.
    pub dry_run: bool,
    /// Checked at the clean points: before the mark is written and before the sweep.
    pub cancel: crate::cancel::Cancel,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            grace: Duration::from_secs(3600),
            repack_threshold: 0.2,
            dry_run: false,
            cancel: crate::cancel::Cancel::new(),
        }
    }
}

/// A mark that was not swept, and when it may be.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PendingMark {
    /// `prune/<id>`, or empty for the mark a dry run would write.
    pub name: String,
    /// RFC 3339.
    pub created: String,
    pub packs: u64,
    pub bytes: u64,
    /// The mark is older than the grace period from this time on (RFC 3339).
    pub ripens: String,
    /// Running backups that began before the mark (plus the clock-skew margin): the mark
    /// waits for them to end.
    pub waiting_for: Vec<String>,
}

/// What a prune did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: u64,
    /// Distinct data and tree blobs the snapshots use.
    pub used_blobs: u64,
    /// Packs in `data/`.
    pub packs: u64,
    /// Packs marked by this run (fully unused, repacked, or left by interrupted backups).
    pub packs_marked: u64,
    pub bytes_marked: u64,
    /// Of the packs marked: those no index names (left by interrupted backups).
    pub packs_unindexed: u64,
    /// Of the packs marked: those whose used blobs were copied into new packs first.
    pub packs_repacked: u64,
    pub blobs_repacked: u64,
    /// Bytes of blob envelopes copied into new packs.
    pub bytes_repacked: u64,
    /// The mark this run wrote.
    pub mark: Option<String>,
    pub packs_deleted: u64,
    /// Bytes of the deleted packs.
    pub bytes_freed: u64,
    /// Index objects replaced by the consolidated index.
    pub indexes_rewritten: u64,
    /// Small index objects merged into full ones (after the sweep).
    pub indexes_consolidated: u64,
    /// Session objects of backups that are over (ended on append-only hosts, or crashed).
    pub sessions_removed: usize,
    /// Object versions on locked targets whose retention was renewed (docs/OPERATIONS.md).
    pub locks_renewed: u64,
    /// Versions on locked targets without a lock (someone else's writes), left alone.
    pub unlocked_versions: u64,
    /// Locked targets whose locks could not be renewed, and why.
    pub lock_failures: Vec<String>,
    /// Marks whose packs were deleted (and which were then deleted themselves).
    pub marks_swept: Vec<String>,
    /// Marks left for a later prune.
    pub marks_pending: Vec<PendingMark>,
    /// Marked packs not deleted because they hold the only copy of a blob a snapshot uses
    /// (a backup that began before the mark referred to it); they are no longer marked.
    pub kept_back: Vec<String>,
}

#[derive(Default, Clone, Copy)]
struct PackStat {
    used_blobs: u64,
    unused_bytes: u64,
}

/// The blobs in use: one bit per position of the loaded index (the first copy of each blob),
/// and the snapshots walked.
struct Usage {
    used: Bits,
    walked: HashSet<String>,
}

/// What the mark phase decided.
#[derive(Default)]
struct Plan {
    /// Every pack to mark, sorted.
    to_mark: Vec<Id>,
    repacked: u64,
    unindexed: u64,
    /// (pack number, position in the loaded index) of each used blob to copy, by pack.
    copies: Vec<(u32, u32)>,
    copied_bytes: u64,
    /// The blobs copied (positions of their first copy).
    covered: Bits,
}

/// A pack in `data/`: size and last-modified time.
type PackListing = IdMap<(u64, i64)>;

/// What becomes of a pack in the mark phase.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Stays (in use, or little waste).
    Stays,
    /// No index names it, or the index says it exists but `data/` lacks it.
    Absent,
    /// Already listed by a mark.
    Pending,
    /// No blob in it is used.
    Unused,
    /// Its used blobs are copied into new packs, then it is marked.
    Repack,
}

/// The bytes of those of `packs` that exist.
fn sizes(listing: &PackListing, packs: &[Id]) -> u64 {
    packs
        .iter()
        .filter_map(|p| listing.get(p).map(|(s, _)| *s))
        .sum()
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn describe(s: &SessionBody) -> String {
    format!(
        "a backup on {} (pid {}) that started at {}",
        s.host,
        s.pid,
        rfc3339(s.started)
    )
}

async fn keep_alive(store: &Store, lease: &mut Option<&mut Lease>) -> Result<()> {
    if let Some(l) = lease {
        l.keep_alive(store).await?;
    }
    Ok(())
}

/// Removes the packs no snapshot needs: marks what is unused now, repacks packs that are
/// mostly unused, and deletes the packs of ripe marks (see the module documentation).
/// Holds the maintenance lease (a dry run takes none and writes nothing). What it marked
/// and deleted is recorded in the audit log (`data.prune`): deleting data is an event
/// auditors ask about.
pub async fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    Pruner { repo }.prune(opts).await
}

/// One prune over a repository's public API.
struct Pruner<'a> {
    repo: &'a Repository,
}

impl Pruner<'_> {
    /// Every pack in `data/` with its size and time.
    async fn pack_listing(&self) -> Result<PackListing> {
        let mut out = PackListing::default();
        for l in self
            .repo
            .store()
            .list_complete(paths::DATA, PRUNE_ACTION)
            .await?
        {
            if let Some(id) = l.name.rsplit('/').next().and_then(Id::from_hex) {
                if paths::pack(&id) == l.name {
                    out.insert(id, (l.size, l.last_modified));
                }
            }
        }
        Ok(out)
    }

    async fn prune(&self, opts: &PruneOptions) -> Result<PruneReport> {
        // A host key opens no snapshot: it could decide nothing, and must not take the lease.
        self.repo.keyring()?;
        let mut r = PruneReport {
            dry_run: opts.dry_run,
            ..Default::default()
        };
        if !opts.dry_run {
            self.repo
                .store()
                .ensure_deletable(
                    "prune",
                    &[paths::DATA, paths::INDEX, paths::PRUNE, "locks/"],
                )
                .await?;
            self.repo.audit().ready("data.prune").await?;
        }
        let outcome = self.prune_unrecorded(opts, &mut r).await;
        let details = |r: &PruneReport| {
            serde_json::json!({
                "packs_marked": r.packs_marked, "bytes_marked": r.bytes_marked,
                "packs_repacked": r.packs_repacked, "packs_deleted": r.packs_deleted,
                "bytes_freed": r.bytes_freed, "marks_swept": r.marks_swept.len(),
                "marks_pending": r.marks_pending.len(), "mark": r.mark,
            })
        };
        match &outcome {
            Ok(()) if !r.dry_run && (r.packs_marked > 0 || r.packs_deleted > 0) => {
                self.repo
                    .audit()
                    .record("data.prune", details(&r), "ok")
                    .await?;
            }
            // A prune that stopped (a stop request, a failure) after it wrote a mark or began a
            // sweep is recorded too, with what it set out to do: the mark is durable.
            Err(e) if !r.dry_run && (r.mark.is_some() || !r.marks_swept.is_empty()) => {
                let failed = format!("failed: {e}");
                if let Err(a) = self
                    .repo
                    .audit()
                    .record("data.prune", details(&r), &failed)
                    .await
                {
                    tracing::warn!("{a}");
                }
            }
            _ => {}
        }
        outcome.map(|()| r)
    }

    async fn prune_unrecorded(&self, opts: &PruneOptions, report: &mut PruneReport) -> Result<()> {
        if !(0.0..=1.0).contains(&opts.repack_threshold) {
            return Err(Error::Usage(format!(
                "the repack threshold is a fraction of a pack from 0 to 1, not {}",
                opts.repack_threshold
            )));
        }
        if opts.dry_run {
            return self.prune_locked(None, opts, report).await;
        }
        let mut lease = Lease::acquire(self.repo.store(), "prune", LEASE_TTL).await?;
        let result = async {
            // New objects are sealed under this process's keyring: one retired since it was
            // opened would leave them unreadable.
            if !self.repo.keyring_is_current().await? {
                return Err(Error::KeyringChanged);
            }
            // Locks first: whatever stops the prune below (a damaged mark, an unreadable
            // snapshot) must not stop the renewals that keep the repository locked.
            self.renew_locks(&lease, report).await;
            self.prune_locked(Some(&mut lease), opts, report).await?;
            match crate::session::remove_ended_sessions(self.repo.store()).await {
                Ok(n) => report.sessions_removed = n,
                Err(e) => tracing::info!("ended backup sessions not removed ({e}); next time"),
            }

            // What was deleted is reported (and audited) whatever becomes of the merge.
            match self.consolidate_index(&mut Some(&mut lease)).await {
                Ok(n) => report.indexes_consolidated = n,
                Err(e) => tracing::warn!(
                    "small index objects not merged ({e}); the next prune tries again"
                ),
            }
            Ok(())
        }
        .await;
        let released = lease.release(self.repo.store()).await;
        result?;
        released
    }

    /// Renews the locks on every locked target (docs/OPERATIONS.md, "Object lock"); a
    /// failure is reported, not the prune's.
    async fn renew_locks(&self, lease: &Lease, report: &mut PruneReport) {
        for t in self.repo.store().targets() {
            let Some(lock) = t.lock() else { continue };
            let renewed = match lease.keep_alive(self.repo.store()).await {
                Ok(()) => crate::lock::renew(lock).await,
                Err(e) => Err(e),
            };
            match renewed {
                Ok(r) => {
                    report.locks_renewed += r.renewed;
                    report.unlocked_versions += r.unlocked;
                }
                Err(e) => {
                    tracing::warn!("locks on target {} not renewed: {e}", t.name());
                    report
                        .lock_failures
                        .push(format!("target {}: {e}", t.name()));
                }
            }
        }
    }

    async fn prune_locked(
        &self,
        mut lease: Option<&mut Lease>,
        opts: &PruneOptions,
        report: &mut PruneReport,
    ) -> Result<()> {
        let dry = opts.dry_run;
        let grace = i64::try_from(opts.grace.as_secs()).unwrap_or(i64::MAX);
        let started = unix_now();
        // Every mark must open: a damaged one stops prune before it changes anything.
        let marks = self.repo.prune_marks().await?;
        let pending: IdSet = marks.iter().flat_map(|(_, m)| m.packs.clone()).collect();
        let sessions_at_start = live_sessions(self.repo.store()).await?;

        let mut usage = self.usage(&mut lease).await?;
        report.snapshots = usage.walked.len() as u64;
        report.used_blobs = usage.used.count();
        crate::failpoint::hit("prune.after-usage").await;

        // ---- mark ----
        let mut listing = self.pack_listing().await?;
        report.packs = listing.len() as u64;
        // Packs no index names are left by backups that did not finish, unless a backup was
        // running at the start (its packs precede its index). Only packs written before this
        // run and before the grace period are taken.
        // Listing times are the target's clock. A pack of a backup that began after the
        // sessions were read but carries an earlier time (the target's clock behind) may be
        // marked; the sweep then waits for that backup, and keeps the pack back if its
        // snapshot uses it.
        let unindexed_before = sessions_at_start
            .is_empty()
            .then(|| started.min(unix_now().saturating_sub(grace)));
        // A backup running now may have indexed packs its snapshot does not reference yet: they
        // look unused. Packs written since the oldest such backup began are left alone (sessions
        // are read after the index, and a backup writes its session before its first pack).
        let young_after = live_sessions(self.repo.store())
            .await?
            .iter()
            .map(|s| s.started.saturating_sub(CLOCK_SKEW_MARGIN))
            .min();
        let plan = self.plan(
            &usage,
            &listing,
            &pending,
            opts.repack_threshold,
            unindexed_before,
            young_after,
        )?;
        let mut covered = plan.covered;
        report.packs_marked = plan.to_mark.len() as u64;
        report.bytes_marked = sizes(&listing, &plan.to_mark);
        report.packs_unindexed = plan.unindexed;
        report.packs_repacked = plan.repacked;
        report.blobs_repacked = plan.copies.len() as u64;
        report.bytes_repacked = plan.copied_bytes;
        // Clean points: nothing is written yet; then the copies are indexed and no mark names
        // their originals yet (a later prune finds them again).
        opts.cancel.check()?;
        if !dry && !plan.copies.is_empty() {
            self.copy_used_blobs(&mut lease, &plan.copies).await?;
            opts.cancel.check()?;
        }
        let mut all_marks = marks;
        if !plan.to_mark.is_empty() {
            let mark = PruneMark {
                version: PRUNE_MARK_VERSION,
                // Taken after the repacking: the mark exists from (about) this time on.
                created: unix_now(),
                packs: plan.to_mark,
            };
            // A dry run considers the mark it would write.
            let name = if dry {
                String::new()
            } else {
                keep_alive(self.repo.store(), &mut lease).await?;
                let name = self.repo.write_prune_mark(&mark).await?;
                report.mark = Some(name.clone());
                name
            };
            all_marks.push((name, mark));
        }

        crate::failpoint::hit("prune.after-mark").await;
        // A clean point: the mark is durable and the next prune sweeps it.
        opts.cancel.check()?;
        // ---- sweep ----
        // Sessions are read after every mark considered exists, and snapshots after that: a
        // backup that ended before this point has committed its snapshot, one that starts
        // after it sees the marks.
        let now = unix_now();
        let sessions = live_sessions(self.repo.store()).await?;
        let mut ripe: Vec<(String, PruneMark)> = Vec::new();
        let mut unripe = IdSet::default();
        for (name, mark) in all_marks {
            let waiting_for: Vec<String> = sessions
                .iter()
                .filter(|s| {
                    !s.honours_marks || s.started <= mark.created.saturating_add(CLOCK_SKEW_MARGIN)
                })
                .map(describe)
                .collect();
            if now.saturating_sub(mark.created) >= grace && waiting_for.is_empty() {
                ripe.push((name, mark));
            } else {
                unripe.extend(mark.packs.iter().copied());
                report.marks_pending.push(PendingMark {
                    name,
                    created: rfc3339(mark.created),
                    packs: mark.packs.len() as u64,
                    bytes: sizes(&listing, &mark.packs),
                    ripens: rfc3339(mark.created.saturating_add(grace)),
                    waiting_for,
                });
            }
        }
        if ripe.is_empty() {
            return Ok(());
        }
        if self.walk_new_snapshots(&mut lease, &mut usage).await? {
            // The index was read again: it holds the copies made above, and new packs.
            covered = Bits::new(0);
            listing = self.pack_listing().await?;
        }
        let mut sweep: IdSet = ripe
            .iter()
            .flat_map(|(_, m)| m.packs.iter().copied())
            .filter(|p| !unripe.contains(p))
            .collect();
        let (mut kept, witnesses) = self.sole_copies(&usage, &covered, &listing, &sweep)?;
        kept.extend(self.unverified_witnesses(witnesses).await?);
        for p in &kept {
            sweep.remove(p);
            tracing::warn!(
                "{} is marked but holds the only copy of blobs a snapshot uses; kept",
                paths::pack(p)
            );
        }
        report.kept_back = kept.iter().map(paths::pack).collect();
        report.kept_back.sort();
        let mut doomed: Vec<Id> = sweep.iter().copied().collect();
        doomed.sort_unstable();
        report.packs_deleted = doomed.iter().filter(|p| listing.contains_key(*p)).count() as u64;
        report.bytes_freed = sizes(&listing, &doomed);
        report.marks_swept = ripe.iter().map(|(n, _)| n.clone()).collect();
        if dry {
            return Ok(());
        }

        // The index without the doomed packs first, then the index objects it replaces, then
        // the packs, then the marks: a crash between any two steps leaves a state the next
        // prune completes (docs/FORMAT.md §18).
        let indexed = {
            let idx = self.repo.index()?;
            doomed.iter().any(|p| idx.names_pack(p))
        };
        if indexed {
            report.indexes_rewritten = self.rewrite_index_without(&mut lease, &sweep).await?;
        }
        crate::failpoint::hit("prune.before-delete").await;
        let mut deletions = futures::stream::iter(doomed.iter())
            .map(|p| async move { self.repo.store().delete(&paths::pack(p)).await })
            .buffer_unordered(8);
        while let Some(r) = deletions.next().await {
            r?;
            keep_alive(self.repo.store(), &mut lease).await?;
        }
        drop(deletions);
        for (name, _) in &ripe {
            self.repo.store().delete(name).await?;
        }
        Ok(())
    }

    /// Writes the index again without the packs in `without`: every pack of the current index
    /// objects but those, each once, in new objects; then deletes the objects read. Returns
    /// how many were deleted.
    async fn rewrite_index_without(
        &self,
        lease: &mut Option<&mut Lease>,
        without: &IdSet,
    ) -> Result<u64> {
        let names = self
            .repo
            .store()
            .list_names_complete(paths::INDEX, PRUNE_ACTION)
            .await?;
        self.replace_index_objects(lease, names, without).await
    }

    /// Replaces the index objects `names` by new ones listing their packs but those in
    /// `without`, each once: the new objects are written before any of `names` is deleted, so a
    /// reader listing in between sees every pack that stays. Returns how many were replaced.
    pub(super) async fn replace_index_objects(
        &self,
        lease: &mut Option<&mut Lease>,
        names: Vec<String>,
        without: &IdSet,
    ) -> Result<u64> {
        let mut seen = IdSet::default();
        let mut queued = 0usize;
        let mut files = futures::stream::iter(names.clone())
            .map(|name| self.repo.fetch_index(name))
            .buffered(4);
        while let Some(r) = files.next().await {
            let (_, file) = r?;
            keep_alive(self.repo.store(), lease).await?;
            let keep: Vec<IndexPack> = file
                .packs
                .into_iter()
                .filter(|p| !without.contains(&p.pack) && seen.insert(p.pack))
                .collect();
            queued += keep.iter().map(|p| p.blobs.len()).sum::<usize>();
            self.repo.queue_index_packs(keep)?;
            // Bounded memory: written as it fills.
            if queued >= INDEX_ENTRIES_PER_OBJECT {
                self.repo.flush_index().await?;
                queued = 0;
            }
        }
        drop(files);
        self.repo.flush_index().await?;
        for name in &names {
            keep_alive(self.repo.store(), lease).await?;
            self.repo.store().delete(name).await?;
        }
        Ok(names.len() as u64)
    }
}
