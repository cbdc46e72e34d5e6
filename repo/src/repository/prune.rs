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
//! Memory: the index of every copy of every blob (52 bytes an entry), one bit per entry for the
//! blobs in use, and per pack a few counters. No pack is held longer than its repacking.

use std::collections::HashSet;
use std::time::Duration;

use super::*;
use crate::format::{PruneMark, PRUNE_MARK_VERSION};
use crate::lease::{live_sessions, Lease, SessionBody};
use crate::packer::PackBuilder;
use crate::IdSet;

/// How far apart the clocks of two hosts may be. A mark is ripe only when every running backup
/// started at least this long after the mark was created, by the backup host's clock.
pub const CLOCK_SKEW_MARGIN: i64 = 300;
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
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            grace: Duration::from_secs(3600),
            repack_threshold: 0.2,
            dry_run: false,
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
    /// Marks whose packs were deleted (and which were then deleted themselves).
    pub marks_swept: Vec<String>,
    /// Marks left for a later prune.
    pub marks_pending: Vec<PendingMark>,
    /// Marked packs not deleted because they hold the only copy of a blob a snapshot uses
    /// (a backup that began before the mark referred to it); they are no longer marked.
    pub kept_back: Vec<String>,
}

/// A set of positions in the loaded index.
#[derive(Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }

    fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Sets bit `i`; true when it was not set before.
    fn set(&mut self, i: usize) -> bool {
        match self.0.get_mut(i / 64) {
            Some(w) => {
                let was = *w & (1 << (i % 64)) != 0;
                *w |= 1 << (i % 64);
                !was
            }
            None => false,
        }
    }

    fn count(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

impl MemIndex {
    /// The position of the first entry of `id` in `loaded` (all copies of a blob are adjacent).
    fn first_pos(&self, id: &Id) -> Option<usize> {
        let i = self.loaded.partition_point(|(k, _)| k < id);
        (self.loaded.get(i).is_some_and(|(k, _)| k == id)).then_some(i)
    }

    /// Calls `f(start, entries)` for every blob: its first position and all its copies.
    fn for_each_blob(&self, mut f: impl FnMut(usize, &[(Id, Slot)])) {
        let mut i = 0;
        while i < self.loaded.len() {
            let id = self.loaded[i].0;
            let mut j = i + 1;
            while j < self.loaded.len() && self.loaded[j].0 == id {
                j += 1;
            }
            f(i, &self.loaded[i..j]);
            i = j;
        }
    }
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

impl Repository {
    fn index_read(&self) -> Result<std::sync::RwLockReadGuard<'_, MemIndex>> {
        self.index
            .read()
            .map_err(|_| Error::Invalid("index lock poisoned".into()))
    }

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

    /// Replaces the in-memory index by one read from every index object, keeping every copy of
    /// every blob (the catalog keeps one). A pack listed by several objects is loaded once.
    async fn load_full_index(&self) -> Result<()> {
        let poisoned = || Error::Invalid("index lock poisoned".into());
        // The old index goes first: the peak is one index, not two. Its size sizes the new
        // one, which saves the vector's doublings (up to twice the final size).
        let old = std::mem::take(&mut *self.index.write().map_err(|_| poisoned())?);
        let estimate = old.loaded.len() + old.added.len();
        drop(old);
        let names = self.store.list_names(paths::INDEX).await?;
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
    async fn load_snapshots(&self, names: Vec<String>) -> Result<Vec<(String, Snapshot)>> {
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
    async fn mark_used(
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

    /// Every pack in `data/` with its size and time.
    async fn pack_listing(&self) -> Result<PackListing> {
        let mut out = PackListing::default();
        for l in self.store.list(paths::DATA).await? {
            if let Some(id) = l.name.rsplit('/').next().and_then(Id::from_hex) {
                if paths::pack(&id) == l.name {
                    out.insert(id, (l.size, l.last_modified));
                }
            }
        }
        Ok(out)
    }

    /// Removes the packs no snapshot needs: marks what is unused now, repacks packs that are
    /// mostly unused, and deletes the packs of ripe marks (see the module documentation).
    /// Holds the maintenance lease (a dry run takes none and writes nothing).
    pub async fn prune(&self, opts: &PruneOptions) -> Result<PruneReport> {
        if !(0.0..=1.0).contains(&opts.repack_threshold) {
            return Err(Error::Invalid(format!(
                "the repack threshold is a fraction of a pack from 0 to 1, not {}",
                opts.repack_threshold
            )));
        }
        if opts.dry_run {
            return self.prune_locked(None, opts).await;
        }
        let mut lease = Lease::acquire(&self.store, "prune", LEASE_TTL).await?;
        let result = async {
            // New objects are sealed under this process's keyring: one retired since it was
            // opened would leave them unreadable.
            if !self.keyring_is_current().await? {
                return Err(Error::Invalid(
                    "the keyring changed since the repository was opened; run the command again"
                        .into(),
                ));
            }
            self.prune_locked(Some(&mut lease), opts).await
        }
        .await;
        let released = lease.release(&self.store).await;
        let report = result?;
        released?;
        Ok(report)
    }

    async fn prune_locked(
        &self,
        mut lease: Option<&mut Lease>,
        opts: &PruneOptions,
    ) -> Result<PruneReport> {
        let dry = opts.dry_run;
        let grace = i64::try_from(opts.grace.as_secs()).unwrap_or(i64::MAX);
        let mut report = PruneReport {
            dry_run: dry,
            ..Default::default()
        };
        let started = unix_now();
        // Every mark must open: a damaged one stops prune before it changes anything.
        let marks = self.prune_marks().await?;
        let pending: IdSet = marks.iter().flat_map(|(_, m)| m.packs.clone()).collect();
        let sessions_at_start = live_sessions(&self.store).await?;

        let mut usage = self.usage(&mut lease).await?;
        report.snapshots = usage.walked.len() as u64;
        report.used_blobs = usage.used.count();

        // ---- mark ----
        let mut listing = self.pack_listing().await?;
        report.packs = listing.len() as u64;
        // Packs no index names are left by backups that did not finish, unless a backup was
        // running at the start (its packs precede its index). Only packs written before this
        // run and before the grace period are taken.
        let unindexed_before = sessions_at_start
            .is_empty()
            .then(|| started.min(unix_now().saturating_sub(grace)));
        let plan = self.plan(
            &usage,
            &listing,
            &pending,
            opts.repack_threshold,
            unindexed_before,
        )?;
        let mut covered = plan.covered;
        report.packs_marked = plan.to_mark.len() as u64;
        report.bytes_marked = sizes(&listing, &plan.to_mark);
        report.packs_unindexed = plan.unindexed;
        report.packs_repacked = plan.repacked;
        report.blobs_repacked = plan.copies.len() as u64;
        report.bytes_repacked = plan.copied_bytes;
        if !dry && !plan.copies.is_empty() {
            self.copy_used_blobs(&mut lease, &plan.copies).await?;
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
                keep_alive(&self.store, &mut lease).await?;
                let name = self.write_mark(&mark).await?;
                report.mark = Some(name.clone());
                name
            };
            all_marks.push((name, mark));
        }

        // ---- sweep ----
        // Sessions are read after every mark considered exists, and snapshots after that: a
        // backup that ended before this point has committed its snapshot, one that starts
        // after it sees the marks.
        let now = unix_now();
        let sessions = live_sessions(&self.store).await?;
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
            return Ok(report);
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
        let kept = self.sole_copies(&usage, &covered, &listing, &sweep)?;
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
            return Ok(report);
        }

        // The index without the doomed packs first, then the index objects it replaces, then
        // the packs, then the marks: a crash between any two steps leaves a state the next
        // prune completes (docs/FORMAT.md §18).
        let indexed = {
            let idx = self.index_read()?;
            doomed.iter().any(|p| idx.pack_numbers.contains_key(p))
        };
        if indexed {
            report.indexes_rewritten = self.rewrite_index_without(&mut lease, &sweep).await?;
        }
        let mut deletions = futures::stream::iter(doomed.iter())
            .map(|p| async move { self.store.delete(&paths::pack(p)).await })
            .buffer_unordered(8);
        while let Some(r) = deletions.next().await {
            r?;
            keep_alive(&self.store, &mut lease).await?;
        }
        drop(deletions);
        for (name, _) in &ripe {
            self.store.delete(name).await?;
        }
        Ok(report)
    }

    /// Reads the whole index and walks every snapshot.
    async fn usage(&self, lease: &mut Option<&mut Lease>) -> Result<Usage> {
        // Snapshots first: a snapshot is written after its index objects, so the index read
        // next covers every snapshot listed.
        let names = self.store.list_names(paths::SNAPSHOTS).await?;
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
    async fn walk_new_snapshots(
        &self,
        lease: &mut Option<&mut Lease>,
        usage: &mut Usage,
    ) -> Result<bool> {
        let names = self.store.list_names(paths::SNAPSHOTS).await?;
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

    /// Decides what to mark: indexed packs holding no used blob, packs with more unused bytes
    /// than `threshold` (their used blobs are copied first unless a pack that stays holds
    /// them), and unindexed packs older than `unindexed_before`. Packs already marked are left.
    fn plan(
        &self,
        usage: &Usage,
        listing: &PackListing,
        pending: &IdSet,
        threshold: f64,
        unindexed_before: Option<i64>,
    ) -> Result<Plan> {
        let idx = self.index_read()?;
        let used = &usage.used;
        let mut stats = vec![PackStat::default(); idx.packs.len()];
        let mut seen: Vec<u32> = Vec::new();
        idx.for_each_blob(|start, entries| {
            seen.clear();
            for (_, s) in entries {
                // A pack listing a blob twice counts it once.
                if seen.contains(&s.pack) {
                    continue;
                }
                seen.push(s.pack);
                let st = &mut stats[s.pack as usize];
                if used.get(start) {
                    st.used_blobs += 1;
                } else {
                    st.unused_bytes += u64::from(s.length);
                }
            }
        });
        let fates: Vec<Fate> = idx
            .packs
            .iter()
            .zip(&stats)
            .map(|(id, st)| match listing.get(id) {
                None => Fate::Absent,
                Some(_) if pending.contains(id) => Fate::Pending,
                Some(_) if st.used_blobs == 0 => Fate::Unused,
                Some((size, _)) if st.unused_bytes as f64 / (*size).max(1) as f64 > threshold => {
                    Fate::Repack
                }
                Some(_) => Fate::Stays,
            })
            .collect();
        let mut plan = Plan {
            covered: Bits::new(idx.loaded.len()),
            ..Default::default()
        };
        idx.for_each_blob(|start, entries| {
            let fate = |s: &Slot| fates[s.pack as usize];
            if !used.get(start) || entries.iter().any(|(_, s)| fate(s) == Fate::Stays) {
                return;
            }
            if let Some(i) = entries.iter().position(|(_, s)| fate(s) == Fate::Repack) {
                plan.copies.push((entries[i].1.pack, (start + i) as u32));
                plan.copied_bytes += u64::from(entries[i].1.length);
                plan.covered.set(start);
            }
        });
        plan.copies.sort_unstable();
        for (id, fate) in idx.packs.iter().zip(&fates) {
            match fate {
                Fate::Unused => plan.to_mark.push(*id),
                Fate::Repack => {
                    plan.to_mark.push(*id);
                    plan.repacked += 1;
                }
                _ => {}
            }
        }
        if let Some(before) = unindexed_before {
            for (id, (_, modified)) in listing {
                if !idx.pack_numbers.contains_key(id)
                    && !pending.contains(id)
                    && *modified <= before
                {
                    plan.to_mark.push(*id);
                    plan.unindexed += 1;
                }
            }
        }
        plan.to_mark.sort_unstable();
        Ok(plan)
    }

    /// Seals and stores a mark; returns its name.
    async fn write_mark(&self, mark: &PruneMark) -> Result<String> {
        let sealed = self.seal_object(ObjectKind::PruneMark, &encode(mark))?;
        let name = paths::prune_mark(&Id::of_stored(&sealed));
        self.store.put_new(&name, sealed.into(), true).await?;
        Ok(name)
    }

    /// The packs of `sweep` holding a used blob that no other existing pack holds (a blob
    /// copied in this run, `covered`, has a copy elsewhere).
    fn sole_copies(
        &self,
        usage: &Usage,
        covered: &Bits,
        listing: &PackListing,
        sweep: &IdSet,
    ) -> Result<IdSet> {
        let idx = self.index_read()?;
        let in_sweep: Vec<bool> = idx.packs.iter().map(|p| sweep.contains(p)).collect();
        let exists: Vec<bool> = idx.packs.iter().map(|p| listing.contains_key(p)).collect();
        let mut kept = IdSet::default();
        idx.for_each_blob(|start, entries| {
            if !usage.used.get(start) || covered.get(start) {
                return;
            }
            let n = |s: &Slot| s.pack as usize;
            let swept = entries.iter().any(|(_, s)| in_sweep[n(s)]);
            let elsewhere = entries.iter().any(|(_, s)| !in_sweep[n(s)] && exists[n(s)]);
            if swept && !elsewhere {
                for (_, s) in entries.iter().filter(|(_, s)| in_sweep[n(s)]) {
                    kept.insert(idx.packs[n(s)]);
                }
            }
        });
        Ok(kept)
    }

    /// Copies the listed blob envelopes (as they are: same epoch, same bytes) into new packs,
    /// verifying each blob first, uploads them and indexes them.
    async fn copy_used_blobs(
        &self,
        lease: &mut Option<&mut Lease>,
        copies: &[(u32, u32)],
    ) -> Result<()> {
        let mut builders = Builders::new(self.config.pack_size as usize);
        let mut uploaded = 0usize;
        // One source pack at a time (its entries are looked up when it comes), the next one
        // downloading while this one is verified and copied.
        let mut packs = futures::stream::iter(copies.chunk_by(|a, b| a.0 == b.0))
            .map(|group| async move {
                let (pack, entries) = {
                    let idx = self.index_read()?;
                    let entries: Vec<PackEntry> = group
                        .iter()
                        .map(|(_, pos)| {
                            let (id, slot) = &idx.loaded[*pos as usize];
                            idx.location(id, slot).entry
                        })
                        .collect();
                    (idx.packs[group[0].0 as usize], entries)
                };
                let bytes = self.store.get(&paths::pack(&pack)).await?;
                Ok::<_, Error>((pack, bytes, entries))
            })
            .buffered(2);
        while let Some(r) = packs.next().await {
            let (pack, bytes, entries) = r?;
            keep_alive(&self.store, lease).await?;
            let keyring = self.keyring.clone();
            let mut taken = std::mem::replace(&mut builders, Builders::new(0));
            let (back, finished) = tokio::task::spawn_blocking(move || {
                let finished = taken.copy(&keyring, &pack, &bytes, &entries)?;
                Ok::<_, Error>((taken, finished))
            })
            .await
            .map_err(|e| Error::Invalid(e.to_string()))??;
            builders = back;
            for p in finished {
                self.upload_copy(p).await?;
                uploaded += 1;
                if uploaded.is_multiple_of(FLUSH_EVERY) {
                    self.flush_index().await?;
                }
            }
        }
        drop(packs);
        for mut b in builders.open {
            if !b.1.is_empty() {
                self.upload_copy(b.1.finish(&self.keyring)?).await?;
            }
        }
        self.flush_index().await?;
        Ok(())
    }

    /// Uploads a pack of copies and queues its entries for the next index object. Unlike
    /// [`Repository::upload_pack`] it leaves the in-memory index alone (a hash-map entry per
    /// copied blob): prune knows the copied blobs by position, and reads the index again when
    /// it needs the new packs.
    async fn upload_copy(&self, pack: FinishedPack) -> Result<()> {
        self.store
            .put_new(&paths::pack(&pack.id), Bytes::from(pack.bytes), true)
            .await?;
        self.pending
            .lock()
            .map_err(|_| Error::Invalid("pending index lock poisoned".into()))?
            .push(IndexPack {
                pack: pack.id,
                blobs: pack.entries,
            });
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
        let names = self.store.list_names(paths::INDEX).await?;
        let mut seen = IdSet::default();
        let mut queued = 0usize;
        let mut files = futures::stream::iter(names.clone())
            .map(|name| self.fetch_index(name))
            .buffered(4);
        while let Some(r) = files.next().await {
            let (_, file) = r?;
            keep_alive(&self.store, lease).await?;
            let keep: Vec<IndexPack> = file
                .packs
                .into_iter()
                .filter(|p| !without.contains(&p.pack) && seen.insert(p.pack))
                .collect();
            queued += keep.iter().map(|p| p.blobs.len()).sum::<usize>();
            self.pending
                .lock()
                .map_err(|_| Error::Invalid("pending index lock poisoned".into()))?
                .extend(keep);
            // Bounded memory: written as it fills.
            if queued >= INDEX_ENTRIES_PER_OBJECT {
                self.flush_index().await?;
                queued = 0;
            }
        }
        drop(files);
        self.flush_index().await?;
        for name in &names {
            keep_alive(&self.store, lease).await?;
            self.store.delete(name).await?;
        }
        Ok(names.len() as u64)
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
        keyring: &Keyring,
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::blob::BlobSealer;
    use crate::check::{check, ReadData};
    use crate::format::{Node, NodeKind, Summary, TREE_VERSION};
    use crate::lease::Session;

    async fn repository() -> Repository {
        let store = Store::from_object_store(
            Arc::new(object_store::memory::InMemory::new()),
            "memory".into(),
        );
        let opts = InitOptions {
            kdf: KdfParams::INSECURE_TEST,
            pack_size: 1 << 20,
            ..Default::default()
        };
        Repository::init(store, b"pw", opts).await.unwrap()
    }

    /// Another process opening the same repository.
    async fn reopen(repo: &Repository) -> Repository {
        Repository::open(repo.store().clone(), b"pw", None)
            .await
            .unwrap()
    }

    /// Stores `blobs` in one new pack of `kind` and indexes it; returns the ids and the pack.
    async fn put_pack(repo: &Repository, kind: BlobKind, blobs: &[Vec<u8>]) -> (Vec<Id>, Id) {
        let mut sealer = BlobSealer::new(repo.keyring(), 1).unwrap();
        let mut b = PackBuilder::new(1 << 30);
        let mut ids = Vec::new();
        for plain in blobs {
            let id = repo.blob_id(plain);
            let sealed = sealer.seal(kind, &id, plain).unwrap();
            b.add(kind, id, plain.len() as u32, &sealed);
            ids.push(id);
        }
        let pack = b.finish(repo.keyring()).unwrap();
        let pid = pack.id;
        repo.upload_pack(pack).await.unwrap();
        repo.flush_index().await.unwrap();
        (ids, pid)
    }

    fn file(name: &str, content: Vec<Id>) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            kind: NodeKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            atime_ns: 0,
            ctime_ns: 0,
            size: 0,
            inode: 0,
            device: 0,
            rdev: 0,
            content,
            subtree: None,
            target: Vec::new(),
            xattrs: Vec::new(),
        }
    }

    /// A snapshot of one directory holding `files`; returns its object name and tree pack.
    async fn snapshot(repo: &Repository, tag: &str, files: &[(&str, Vec<Id>)]) -> (String, Id) {
        let tree = Tree {
            version: TREE_VERSION,
            entries: files.iter().map(|(n, c)| file(n, c.clone())).collect(),
        };
        let (t, pack) = put_pack(repo, BlobKind::Tree, &[encode(&tree)]).await;
        let snap = Snapshot {
            version: crate::format::SNAPSHOT_VERSION,
            time_ns: 0,
            host: "h".into(),
            username: "u".into(),
            paths: vec![b"/x".to_vec()],
            tags: vec![tag.into()],
            parent: None,
            tree: t[0],
            summary: Summary::default(),
            program_version: "test".into(),
        };
        let name = paths::snapshot(&repo.save_snapshot(&snap).await.unwrap());
        (name, pack)
    }

    fn blob(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    async fn exists(repo: &Repository, pack: &Id) -> bool {
        repo.store().get(&paths::pack(pack)).await.is_ok()
    }

    fn grace(secs: u64) -> PruneOptions {
        PruneOptions {
            grace: Duration::from_secs(secs),
            ..Default::default()
        }
    }

    async fn assert_clean(repo: &Repository) {
        let r = check(Arc::new(reopen(repo).await), ReadData::All)
            .await
            .unwrap();
        assert!(r.errors.is_empty() && r.warnings.is_empty(), "{r:?}");
    }

    #[test]
    fn bits() {
        let mut b = Bits::new(130);
        assert!(b.set(129) && !b.set(129) && b.get(129) && !b.get(128));
        assert!(!b.set(192) && !b.get(192), "out of range is ignored");
        assert_eq!(b.count(), 1);
    }

    #[tokio::test]
    async fn prune_marks_first_then_sweeps_but_keeps_what_a_late_snapshot_uses() {
        let repo = repository().await;
        let (a, pa) = put_pack(&repo, BlobKind::Data, &[blob(1, 5000), blob(2, 5000)]).await;
        let (sa, ta) = snapshot(&repo, "a", &[("f", a.clone())]).await;
        let (b, pb) = put_pack(&repo, BlobKind::Data, &[blob(3, 5000)]).await;
        snapshot(&repo, "b", &[("g", b.clone())]).await;
        repo.store().delete(&sa).await.unwrap();

        // The default grace only marks.
        let r = reopen(&repo).await.prune(&grace(3600)).await.unwrap();
        assert_eq!((r.snapshots, r.used_blobs), (1, 2));
        assert_eq!((r.packs_marked, r.packs_deleted), (2, 0), "{r:?}");
        assert_eq!(r.marks_pending.len(), 1);
        assert!(exists(&repo, &pa).await && exists(&repo, &ta).await);
        // A dry run changes nothing.
        let dry = reopen(&repo)
            .await
            .prune(&PruneOptions {
                dry_run: true,
                ..grace(0)
            })
            .await
            .unwrap();
        assert_eq!(dry.packs_deleted, 2, "{dry:?}");
        assert!(exists(&repo, &pa).await);

        // A backup that began before the mark deduplicated against pa and commits now.
        let late = reopen(&repo).await;
        let (_, tc) = snapshot(&late, "c", &[("f", a.clone())]).await;

        let r = reopen(&repo).await.prune(&grace(0)).await.unwrap();
        assert_eq!(r.kept_back, vec![paths::pack(&pa)], "{r:?}");
        assert_eq!(r.packs_deleted, 1);
        assert_eq!(r.marks_swept.len(), 1);
        assert!(exists(&repo, &pa).await && !exists(&repo, &ta).await);
        assert!(exists(&repo, &pb).await && exists(&repo, &tc).await);
        assert!(repo
            .store()
            .list_names(paths::PRUNE)
            .await
            .unwrap()
            .is_empty());
        let after = reopen(&repo).await;
        for id in a.iter().chain(&b) {
            after.read_blob(BlobKind::Data, id).await.unwrap();
        }
        assert_clean(&repo).await;
        // Nothing left to do.
        let r = reopen(&repo).await.prune(&grace(0)).await.unwrap();
        assert_eq!((r.packs_marked, r.packs_deleted), (0, 0), "{r:?}");
    }

    #[tokio::test]
    async fn a_mostly_unused_pack_is_repacked_and_its_used_blob_survives() {
        let repo = repository().await;
        let (x, px) = put_pack(&repo, BlobKind::Data, &[blob(7, 2000), blob(8, 50_000)]).await;
        snapshot(&repo, "s", &[("f", vec![x[0]])]).await;
        let r = reopen(&repo).await.prune(&grace(0)).await.unwrap();
        assert_eq!((r.packs_repacked, r.blobs_repacked), (1, 1), "{r:?}");
        assert_eq!(r.packs_deleted, 1);
        assert!(!exists(&repo, &px).await);
        let after = reopen(&repo).await;
        assert_eq!(
            after.read_blob(BlobKind::Data, &x[0]).await.unwrap(),
            blob(7, 2000)
        );
        assert!(!after.has_blob(&x[1]));
        assert_clean(&repo).await;
        // Above the threshold nothing is repacked.
        let (y, _) = put_pack(&repo, BlobKind::Data, &[blob(9, 2000), blob(10, 50_000)]).await;
        snapshot(&repo, "t", &[("f", vec![y[0]])]).await;
        let r = reopen(&repo)
            .await
            .prune(&PruneOptions {
                repack_threshold: 1.0,
                ..grace(0)
            })
            .await
            .unwrap();
        assert_eq!((r.packs_repacked, r.packs_marked), (0, 0), "{r:?}");
        let bad = reopen(&repo)
            .await
            .prune(&PruneOptions {
                repack_threshold: 1.5,
                ..grace(0)
            })
            .await;
        assert!(matches!(bad, Err(Error::Invalid(_))), "{bad:?}");
    }

    #[tokio::test]
    async fn backups_forget_marked_packs_and_a_running_one_holds_the_sweep() {
        let repo = repository().await;
        let (x, px) = put_pack(&repo, BlobKind::Data, &[blob(1, 3000)]).await;
        let (s, _) = snapshot(&repo, "s", &[("f", x.clone())]).await;
        repo.store().delete(&s).await.unwrap();
        // A backup running before the mark.
        let session = Session::start(repo.store(), 1).await.unwrap();
        let r = reopen(&repo).await.prune(&grace(0)).await.unwrap();
        assert_eq!((r.packs_marked, r.packs_deleted), (2, 0), "{r:?}");
        assert!(
            r.marks_pending[0].waiting_for[0].contains("backup"),
            "{r:?}"
        );
        // A backup starting now does not deduplicate against the marked pack.
        let backup = reopen(&repo).await;
        assert!(backup.has_blob(&x[0]));
        assert_eq!(backup.forget_marked_packs().await.unwrap(), 2);
        assert!(!backup.has_blob(&x[0]));
        session.end(repo.store()).await;
        let r = reopen(&repo).await.prune(&grace(0)).await.unwrap();
        assert_eq!(r.packs_deleted, 2, "{r:?}");
        assert!(!exists(&repo, &px).await);
        assert_clean(&repo).await;
    }

    #[tokio::test]
    async fn a_backup_from_a_drvault_that_ignores_marks_holds_every_sweep() {
        let repo = repository().await;
        let (x, px) = put_pack(&repo, BlobKind::Data, &[blob(1, 3000)]).await;
        let (s, _) = snapshot(&repo, "s", &[("f", x)]).await;
        repo.store().delete(&s).await.unwrap();
        let r = reopen(&repo).await.prune(&grace(3600)).await.unwrap();
        assert_eq!(r.packs_marked, 2, "{r:?}");
        // A 0.3 session (no honours_marks) that began well after the mark, on this host.
        let old = serde_json::json!({
            "host": crate::host::hostname(), "pid": std::process::id(),
            "started": unix_now() + 3 * CLOCK_SKEW_MARGIN, "epoch": 1,
        });
        let name = "locks/session-00000000000000000000000000000000";
        repo.store()
            .put_new(name, serde_json::to_vec(&old).unwrap().into(), false)
            .await
            .unwrap();
        let r = reopen(&repo).await.prune(&grace(0)).await.unwrap();
        assert_eq!(r.packs_deleted, 0, "{r:?}");
        assert!(exists(&repo, &px).await);
        repo.store().delete(name).await.unwrap();
        let r = reopen(&repo).await.prune(&grace(0)).await.unwrap();
        assert_eq!(r.packs_deleted, 2, "{r:?}");
    }

    #[tokio::test]
    async fn a_damaged_mark_stops_prune_and_a_mark_of_deleted_packs_is_swept() {
        let repo = repository().await;
        let (x, px) = put_pack(&repo, BlobKind::Data, &[blob(1, 3000)]).await;
        let (s, _) = snapshot(&repo, "s", &[("f", x.clone())]).await;
        repo.store().delete(&s).await.unwrap();
        let r = reopen(&repo).await.prune(&grace(3600)).await.unwrap();
        let mark = r.mark.unwrap();
        let mut bytes = repo.store().get(&mark).await.unwrap().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        repo.store().delete(&mark).await.unwrap();
        repo.store()
            .put_new(&mark, bytes.clone().into(), false)
            .await
            .unwrap();
        let err = reopen(&repo).await.prune(&grace(0)).await.unwrap_err();
        assert!(
            matches!(&err, Error::Integrity { object, .. } if *object == mark),
            "{err}"
        );
        assert!(exists(&repo, &px).await);
        // A backup goes on (prune will not delete what the damaged mark lists).
        assert_eq!(reopen(&repo).await.forget_marked_packs().await.unwrap(), 0);

        // An interrupted sweep: the packs are gone, the mark is left.
        repo.store().delete(&mark).await.unwrap();
        let ghost = PruneMark {
            version: PRUNE_MARK_VERSION,
            created: unix_now() - 10,
            packs: vec![Id([7; 32])],
        };
        let sealed = repo
            .seal_object(ObjectKind::PruneMark, &encode(&ghost))
            .unwrap();
        let name = paths::prune_mark(&Id::of_stored(&sealed));
        repo.store()
            .put_new(&name, sealed.into(), false)
            .await
            .unwrap();
        let r = reopen(&repo).await.prune(&grace(0)).await.unwrap();
        assert!(r.marks_swept.contains(&name), "{r:?}");
        assert!(repo
            .store()
            .list_names(paths::PRUNE)
            .await
            .unwrap()
            .is_empty());
        assert!(!exists(&repo, &px).await);
        assert_clean(&repo).await;
    }

    #[tokio::test]
    async fn snapshots_committed_during_a_prune_are_walked_before_the_sweep() {
        let repo = repository().await;
        let (a, pa) = put_pack(&repo, BlobKind::Data, &[blob(1, 4000)]).await;
        let (s, _) = snapshot(&repo, "a", &[("f", a.clone())]).await;
        repo.store().delete(&s).await.unwrap();
        let pruner = reopen(&repo).await;
        let mut lease: Option<&mut Lease> = None;
        let mut usage = pruner.usage(&mut lease).await.unwrap();
        assert_eq!(usage.used.count(), 0);
        // A backup that began before the mark commits meanwhile; its tree is in a new pack.
        snapshot(&reopen(&repo).await, "late", &[("f", a.clone())]).await;
        assert!(pruner
            .walk_new_snapshots(&mut lease, &mut usage)
            .await
            .unwrap());
        assert_eq!(usage.used.count(), 2, "its tree and its data blob");
        let listing = pruner.pack_listing().await.unwrap();
        let sweep: IdSet = [pa].into_iter().collect();
        let kept = pruner
            .sole_copies(&usage, &Bits::default(), &listing, &sweep)
            .unwrap();
        assert!(kept.contains(&pa));
        assert!(!pruner
            .walk_new_snapshots(&mut lease, &mut usage)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn repacked_packs_hold_one_epoch_each_so_reencryption_finds_them() {
        let repo = repository().await;
        let (x, _) = put_pack(&repo, BlobKind::Data, &[blob(1, 2000), blob(2, 40_000)]).await;
        repo.rotate_epoch().await.unwrap();
        let rotated = reopen(&repo).await;
        let (y, _) = put_pack(&rotated, BlobKind::Data, &[blob(3, 2000), blob(4, 40_000)]).await;
        snapshot(&rotated, "s", &[("f", vec![x[0], y[0]])]).await;
        let r = reopen(&repo).await.prune(&grace(0)).await.unwrap();
        assert_eq!((r.packs_repacked, r.packs_deleted), (2, 2), "{r:?}");
        let after = reopen(&repo).await;
        for name in after.store().list_names(paths::DATA).await.unwrap() {
            let bytes = after.store().get(&name).await.unwrap();
            let entries = after
                .read_pack_header(&name_id(&name).unwrap(), &bytes)
                .unwrap();
            let epochs: HashSet<u32> = entries
                .iter()
                .map(|e| Header::parse(&bytes[e.offset as usize..]).unwrap().epoch)
                .collect();
            assert_eq!(epochs.len(), 1, "{name} mixes epochs");
        }
        let report = after.reencrypt(&|_| {}).await.unwrap();
        assert_eq!(report.retired, vec![1], "{report:?}");
        let last = reopen(&repo).await;
        assert_eq!(
            last.read_blob(BlobKind::Data, &x[0]).await.unwrap(),
            blob(1, 2000)
        );
        assert_eq!(
            last.read_blob(BlobKind::Data, &y[0]).await.unwrap(),
            blob(3, 2000)
        );
        assert_clean(&repo).await;
    }
}
