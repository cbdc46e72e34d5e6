//! `check`: the repository's structure, and optionally every byte of its data.
//!
//! Problems are collected rather than stopping at the first, and each names its object.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;

use crate::blob::{verify_blob, BlobScratch};
use crate::cancel::Cancel;
use crate::format::{paths, BlobKind, NodeKind};
use crate::{Error, Id, Repository, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// A random share of the packs, in percent.
    Subset(f64),
}

/// What kind of problem a finding is: what a caller acts on (restore around it, repair from
/// another target, run a backup again, ignore).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// An object under `data/` whose name is not a pack's (a warning).
    StrayObject,
    /// A pack no index names and no prune mark lists: left by an interrupted backup (a warning;
    /// the next prune removes it).
    UnindexedPack,
    /// A pack the index names is not in storage.
    MissingPack,
    /// A pack is shorter than the index says.
    TruncatedPack,
    /// A pack's bytes do not match its name, or its header does not open.
    DamagedPack,
    /// A blob the index places in a pack is not in that pack's header (or lies outside it).
    BlobNotInPack,
    /// A blob does not decrypt or does not match its ID.
    DamagedBlob,
    /// A prune mark does not open (prune refuses to run until it is removed).
    DamagedMark,
    /// A snapshot object does not open.
    DamagedSnapshot,
    /// A tree a snapshot refers to cannot be read.
    DamagedTree,
    /// A file's data blob is in no index: the file cannot be restored whole.
    MissingBlob,
    /// The check itself failed to read something (a worker failed, storage refused).
    Unreadable,
    /// On a versioned, locked target, an object's current version is damaged or deleted and an
    /// older version is intact (read instead; `repair` makes it current again).
    HiddenVersion,
    /// On a locked target, an object is locked for less than `check --locked-until` asks (or
    /// not at all).
    NotLocked,
}

impl Problem {
    /// Whether the problem is damage (the check fails) rather than a harmless finding.
    pub fn is_damage(self) -> bool {
        !matches!(self, Problem::StrayObject | Problem::UnindexedPack)
    }
}

/// One problem, the object it concerns, and the message shown for it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub problem: Problem,
    pub object: String,
    pub message: String,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CheckReport {
    pub packs: u64,
    pub packs_read: u64,
    pub blobs: u64,
    pub snapshots: u64,
    pub trees: u64,
    /// Packs listed by prune marks (docs/FORMAT.md §18): deleted by a later prune.
    pub packs_marked: u64,
    /// Damage: missing or corrupt objects. Non-empty means the check failed.
    pub errors: Vec<String>,
    /// Harmless findings, e.g. packs no index references (left by an interrupted backup).
    pub warnings: Vec<String>,
    /// Every finding, typed: the errors and the warnings above, in the same order.
    pub findings: Vec<Finding>,
}

impl CheckReport {
    /// Adds findings made outside [`check`] (e.g. [`lock_findings`]).
    pub fn add(&mut self, findings: Vec<Finding>) {
        for f in findings {
            self.note(f.problem, f.object, f.message);
        }
    }

    fn note(&mut self, problem: Problem, object: impl Into<String>, message: String) {
        if problem.is_damage() {
            self.errors.push(message.clone());
        } else {
            self.warnings.push(message.clone());
        }
        self.findings.push(Finding {
            problem,
            object: object.into(),
            message,
        });
    }
}

/// How often a check is taken again when maintenance on another host explains its findings.
const MAX_RECHECKS: u32 = 3;
/// How long a recheck waits for running maintenance to end.
const MAINTENANCE_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Checks the repository. Findings made while maintenance (a prune, a re-encryption, a sync)
/// ran on another host may be its work, not damage: an object deleted after this check listed
/// or indexed it. So when a check finds damage and the maintenance lease was held or changed
/// hands during it, the check waits for the lease to be free, reads the index again and runs
/// again; damage that remains is reported.
///
/// Stops between two packs once `cancel` is set ([`Error::Interrupted`]): a check changes
/// nothing, so any point is clean.
pub async fn check(repo: Arc<Repository>, read: ReadData, cancel: &Cancel) -> Result<CheckReport> {
    // A host key opens no snapshot, tree or pack header: nothing here could be checked.
    repo.keyring()?;
    let mut rechecks = 0;
    loop {
        // The lease before the index: maintenance that ends between the two is seen as a
        // change of hands, not missed.
        let before = crate::lease::current_lease(repo.store()).await?;
        repo.reload_index().await?;
        repo.store().clear_hidden();
        let mut report = check_once(repo.clone(), read, cancel).await?;
        for (target, name, version) in repo.store().hidden() {
            report.note(
                Problem::HiddenVersion,
                name.clone(),
                format!(
                    "{name} on target {target}: the current version is damaged or deleted; the \
                     older version {version} is intact and was read instead (someone overwrote \
                     or deleted it). Run `drvault repair` to make the intact version current"
                ),
            );
        }
        if report.errors.is_empty() {
            return Ok(report);
        }
        let after = crate::lease::current_lease(repo.store()).await?;
        let seq = |l: &Option<(u64, crate::lease::LeaseBody)>| l.as_ref().map(|(s, _)| *s);
        let held = |l: &Option<(u64, crate::lease::LeaseBody)>| {
            l.as_ref().is_some_and(|(_, b)| b.is_held())
        };
        let concurrent = seq(&before) != seq(&after) || held(&before) || held(&after);
        if !concurrent || rechecks == MAX_RECHECKS {
            return Ok(report);
        }
        rechecks += 1;
        let holder = after
            .as_ref()
            .map(|(_, b)| format!("{} on {} (pid {})", b.purpose, b.host, b.pid))
            .unwrap_or_default();
        tracing::info!(
            "{} findings while maintenance ran ({holder}); checking again once it is done",
            report.errors.len()
        );
        wait_for_maintenance(repo.store()).await?;
    }
}

/// Waits (bounded) until no maintenance lease is held.
async fn wait_for_maintenance(store: &crate::store::Store) -> Result<()> {
    let until = std::time::Instant::now() + MAINTENANCE_WAIT;
    while std::time::Instant::now() < until {
        match crate::lease::current_lease(store).await? {
            Some((_, b)) if b.is_held() => {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}

async fn check_once(repo: Arc<Repository>, read: ReadData, cancel: &Cancel) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let mut pack_sizes: HashMap<Id, u64> = HashMap::new();
    for l in repo.store().list(paths::DATA).await? {
        match l.name.rsplit('/').next().and_then(Id::from_hex) {
            Some(id) if paths::pack(&id) == l.name => {
                pack_sizes.insert(id, l.size);
            }
            _ => {
                let message = format!("{}: not a pack name, ignored", l.name);
                report.note(Problem::StrayObject, l.name, message)
            }
        }
    }
    report.packs = pack_sizes.len() as u64;
    crate::failpoint::hit("check.after-listing").await;

    let entries = repo.index_entries();
    report.blobs = entries.len() as u64;
    let mut indexed_packs: HashMap<Id, Vec<crate::format::PackEntry>> = HashMap::new();
    for loc in &entries {
        indexed_packs.entry(loc.pack).or_default().push(loc.entry);
    }
    for (pack, blobs) in &indexed_packs {
        match pack_sizes.get(pack) {
            None => report.note(
                Problem::MissingPack,
                paths::pack(pack),
                format!(
                    "{}: missing (the index lists {} blobs in it)",
                    paths::pack(pack),
                    blobs.len()
                ),
            ),
            Some(size) => {
                if blobs
                    .iter()
                    .any(|b| u64::from(b.offset) + u64::from(b.length) > *size)
                {
                    report.note(
                        Problem::TruncatedPack,
                        paths::pack(pack),
                        format!(
                            "{}: truncated ({size} bytes, the index expects more)",
                            paths::pack(pack)
                        ),
                    );
                }
            }
        }
    }
    // Prune marks: each must open; the packs they list are on their way out, so one that no
    // index names any more (an interrupted sweep) is expected.
    let mut marked = HashSet::new();
    for name in repo.store().list_names(paths::PRUNE).await? {
        match repo.read_prune_mark(&name).await {
            Ok(m) => marked.extend(m.packs),
            Err(e) => {
                let message = format!("{e} (prune refuses to run until this mark is removed)");
                report.note(Problem::DamagedMark, name, message)
            }
        }
    }
    report.packs_marked = marked
        .iter()
        .filter(|p| pack_sizes.contains_key(*p))
        .count() as u64;
    for pack in pack_sizes
        .keys()
        .filter(|p| !indexed_packs.contains_key(*p) && !marked.contains(*p))
    {
        report.note(
            Problem::UnindexedPack,
            paths::pack(pack),
            format!(
                "{}: not referenced by any index (left by an interrupted backup?)",
                paths::pack(pack)
            ),
        );
    }

    // Snapshots and their trees.
    let mut seen_trees = HashSet::new();
    for l in repo.store().list(paths::SNAPSHOTS).await? {
        match repo.load_snapshot(&l.name).await {
            Ok(s) => {
                report.snapshots += 1;
                let mut stack = vec![s.tree];
                while let Some(t) = stack.pop() {
                    if !seen_trees.insert(t) {
                        continue;
                    }
                    match repo.load_tree(&t).await {
                        Ok(tree) => {
                            report.trees += 1;
                            for n in tree.entries {
                                if let Some(sub) = n.subtree {
                                    stack.push(sub);
                                }
                                if n.kind == NodeKind::File {
                                    for id in n.content.iter().filter(|id| !repo.has_blob(id)) {
                                        let message = format!(
                                            "{}: data blob {id} of {:?} is in no index",
                                            l.name,
                                            String::from_utf8_lossy(&n.name)
                                        );
                                        report.note(Problem::MissingBlob, id.to_hex(), message);
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            let message = format!("{}: tree {t}: {e}", l.name);
                            report.note(Problem::DamagedTree, t.to_hex(), message)
                        }
                    }
                }
            }
            Err(e) => report.note(Problem::DamagedSnapshot, l.name, e.to_string()),
        }
    }

    // Data.
    let mut to_read: Vec<Id> = pack_sizes.keys().copied().collect();
    match read {
        ReadData::None => to_read.clear(),
        ReadData::All => {}
        ReadData::Subset(pct) => {
            let pct = pct.clamp(0.0, 100.0);
            let want = ((to_read.len() as f64) * pct / 100.0).ceil() as usize;
            // A random subset, different on each run, so repeated checks cover everything.
            let salt: [u8; 16] = drvault_keyring::random_bytes()?;
            to_read.sort_by_key(|id| {
                *blake3::Hasher::new()
                    .update(&salt)
                    .update(&id.0)
                    .finalize()
                    .as_bytes()
            });
            to_read.truncate(want);
        }
    }
    report.packs_read = to_read.len() as u64;
    crate::failpoint::hit("check.before-data").await;
    cancel.check()?;
    let results: Vec<Vec<(Problem, String, String)>> = futures::stream::iter(to_read)
        .take_while(|_| std::future::ready(!cancel.is_cancelled()))
        .map(|pack| {
            let repo = repo.clone();
            let expected = indexed_packs.get(&pack).cloned().unwrap_or_default();
            async move { read_pack(repo, pack, expected).await }
        })
        // Two whole packs in flight keep both cores busy with bounded memory.
        .buffer_unordered(2)
        .collect()
        .await;
    // A stopped check reports nothing rather than a clean bill for what it did not read.
    cancel.check()?;
    for (problem, object, message) in results.into_iter().flatten() {
        report.note(problem, object, message);
    }
    Ok(report)
}

async fn read_pack(
    repo: Arc<Repository>,
    pack: Id,
    expected: Vec<crate::format::PackEntry>,
) -> Vec<(Problem, String, String)> {
    let name = paths::pack(&pack);
    // The store hands out a pack only when its bytes hash to its name (on some target).
    let bytes = match repo.store().get(&name).await {
        Ok(b) => b,
        Err(e @ Error::Integrity { .. }) => {
            return vec![(Problem::DamagedPack, name, e.to_string())]
        }
        Err(e) => return vec![(Problem::Unreadable, name, e.to_string())],
    };
    let repo2 = repo.clone();
    let object = name.clone();
    let verified = tokio::task::spawn_blocking(move || -> Vec<(Problem, String, String)> {
        let header = match repo2.read_pack_header(&pack, &bytes) {
            Ok(h) => h,
            Err(e) => return vec![(Problem::DamagedPack, name, e.to_string())],
        };
        let mut errors = Vec::new();
        let mut scratch = BlobScratch::default();
        let in_header: HashSet<Id> = header.iter().map(|e| e.id).collect();
        for e in &expected {
            if !in_header.contains(&e.id) {
                errors.push((
                    Problem::BlobNotInPack,
                    name.clone(),
                    format!(
                        "{name}: blob {} listed by the index is not in the pack header",
                        e.id
                    ),
                ));
            }
        }
        for e in &header {
            let (s, l) = (e.offset as usize, e.length as usize);
            let Some(sealed) = bytes.get(s..s.saturating_add(l)) else {
                errors.push((
                    Problem::BlobNotInPack,
                    name.clone(),
                    format!("{name}: blob {} lies outside the pack", e.id),
                ));
                continue;
            };
            if let Err(err) = verify_blob(
                repo2.keys(),
                e.kind,
                &e.id,
                e.raw_length,
                sealed,
                &mut scratch,
            ) {
                let reason = match err {
                    Error::Integrity { reason, .. } => reason,
                    other => other.to_string(),
                };
                errors.push((
                    Problem::DamagedBlob,
                    name.clone(),
                    format!(
                        "{name}: blob {} ({}) is damaged: {reason}",
                        e.id,
                        kind_name(e.kind)
                    ),
                ));
            }
        }
        errors
    })
    .await;
    verified.unwrap_or_else(|e| {
        vec![(
            Problem::Unreadable,
            object,
            format!("check worker failed: {e}"),
        )]
    })
}

fn kind_name(k: BlobKind) -> &'static str {
    match k {
        BlobKind::Data => "data",
        BlobKind::Tree => "tree",
    }
}

/// Every kept object on every locked target must be locked until at least `at_least`
/// (`check --locked-until`): one finding per object that is not. A repository without locked
/// targets is a finding too: nothing is locked.
pub async fn lock_findings(
    store: &crate::store::Store,
    at_least: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    let locked: Vec<_> = store
        .targets()
        .iter()
        .filter(|t| t.lock().is_some())
        .collect();
    if locked.is_empty() {
        out.push(Finding {
            problem: Problem::NotLocked,
            object: String::new(),
            message: "no target has object lock configured (object_lock_mode and \
                      object_lock_retention in its [[targets]] entry)"
                .into(),
        });
    }
    for t in locked {
        let Some(lock) = t.lock() else { continue };
        let survey = crate::lock::survey(t, lock, at_least).await?;
        for (name, until) in survey.short {
            let message = match until {
                Some(u) => format!(
                    "{name} on target {} is locked only until {} (asked: {})",
                    t.name(),
                    crate::lock::s3_time(u),
                    crate::lock::s3_time(at_least)
                ),
                None => format!("{name} on target {} is not locked", t.name()),
            };
            out.push(Finding {
                problem: Problem::NotLocked,
                object: name,
                message,
            });
        }
    }
    Ok(out)
}
