//! Checking and repairing the copies of the repository on its targets, without keys.
//!
//! Every object but `config` is named by the BLAKE3 hash of its bytes, and every target holds
//! the same objects under the same names, so a verifier that holds no decryption key can tell
//! an intact copy from a damaged one (`drvault check --no-key`).

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;

use crate::format::paths;
use crate::store::{content_matches_name, Store};
use crate::sync::copy_verified;
use crate::target::Target;
use crate::{Error, Result};

/// Objects read at once while verifying copies.
const PARALLEL_READS: usize = 8;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TargetCopies {
    pub name: String,
    pub reachable: bool,
    pub error: Option<String>,
    pub objects: u64,
    /// Objects another target holds that this one lacks.
    pub missing: Vec<String>,
    /// Copies whose bytes do not match their name (with `read_data`), or whose size differs
    /// from the other targets' copies.
    pub corrupt: Vec<String>,
    /// Copies that could not be read (the target failed mid-check).
    pub unreadable: Vec<String>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplicaReport {
    pub read_data: bool,
    /// Distinct objects across all targets.
    pub objects: u64,
    pub targets: Vec<TargetCopies>,
    /// Objects of which no target holds a copy known to be intact.
    pub lost: Vec<String>,
    /// Audit entries whose copies differ between targets: two records under one number (a log
    /// forked by a drvault before 0.7). Never repaired by overwriting; both are kept.
    pub audit_conflicts: Vec<String>,
}

impl ReplicaReport {
    /// True when every reachable target holds an intact copy of every object.
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty()
            && self.audit_conflicts.is_empty()
            && self.targets.iter().all(|t| {
                t.reachable
                    && t.missing.is_empty()
                    && t.corrupt.is_empty()
                    && t.unreadable.is_empty()
            })
    }

    /// True when some copy is damaged or some object has no intact copy at all.
    pub fn has_damage(&self) -> bool {
        !self.lost.is_empty()
            || !self.audit_conflicts.is_empty()
            || self.targets.iter().any(|t| !t.corrupt.is_empty())
    }
}

/// Compares the targets' object lists and sizes; with `read_data`, reads every copy on every
/// target and checks it against its name.
pub async fn check_copies(store: &Store, read_data: bool) -> Result<ReplicaReport> {
    let targets = store.targets();
    let listings = futures::future::join_all(targets.iter().map(|t| t.list(""))).await;
    let mut sizes: Vec<Option<BTreeMap<String, u64>>> = Vec::new();
    let mut errors = Vec::new();
    for r in listings {
        errors.push(r.as_ref().err().map(ToString::to_string));
        sizes.push(
            // Leases and sessions are one process's bookkeeping, never copied (see `sync`).
            r.ok().map(|l| {
                l.into_iter()
                    .filter(|o| !o.name.starts_with("locks/"))
                    .map(|o| (o.name, o.size))
                    .collect()
            }),
        );
    }
    if sizes.iter().all(Option::is_none) {
        return Err(Error::Unavailable {
            target: "every target".into(),
            reason: "none could be listed".into(),
        });
    }
    let all: BTreeSet<String> = sizes
        .iter()
        .flatten()
        .flat_map(|m| m.keys().cloned())
        .collect();
    // The size most copies agree on; a copy of another size is damaged (truncated, padded).
    let mut usual_size: BTreeMap<&str, u64> = BTreeMap::new();
    for name in &all {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for m in sizes.iter().flatten() {
            if let Some(s) = m.get(name) {
                *votes.entry(*s).or_default() += 1;
            }
        }
        if let Some((s, _)) = votes.into_iter().max_by_key(|(_, n)| *n) {
            usual_size.insert(name, s);
        }
    }
    let mut report = ReplicaReport {
        read_data,
        objects: all.len() as u64,
        ..Default::default()
    };
    for ((t, error), listed) in targets.iter().zip(errors).zip(&sizes) {
        let mut copies = TargetCopies {
            name: t.name().to_string(),
            reachable: listed.is_some(),
            error,
            ..Default::default()
        };
        if let Some(listed) = listed {
            copies.objects = listed.len() as u64;
            copies.missing = all
                .iter()
                .filter(|n| !listed.contains_key(*n))
                .cloned()
                .collect();
            copies.corrupt = listed
                .iter()
                .filter(|(n, s)| usual_size.get(n.as_str()).is_some_and(|u| u != *s))
                .map(|(n, _)| n.clone())
                .collect();
        }
        report.targets.push(copies);
    }
    if read_data {
        let jobs: Vec<(usize, String)> = sizes
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.as_ref().map(|m| (i, m)))
            .flat_map(|(i, m)| m.keys().map(move |n| (i, n.clone())))
            .collect();
        let results: Vec<(usize, String, Result<bool>)> = futures::stream::iter(jobs)
            .map(|(i, name)| async move {
                let r = targets[i]
                    .get(&name)
                    .await
                    .map(|b| content_matches_name(&name, &b));
                (i, name, r)
            })
            .buffer_unordered(PARALLEL_READS)
            .collect()
            .await;
        for (i, name, r) in results {
            let copies = &mut report.targets[i];
            match r {
                Ok(true) => {}
                Ok(false) => copies.corrupt.push(name),
                Err(e) => {
                    tracing::warn!("target {}: cannot read {name}: {e}", copies.name);
                    copies.unreadable.push(name);
                }
            }
        }
        for c in &mut report.targets {
            c.corrupt.sort();
            c.corrupt.dedup();
            c.unreadable.sort();
        }
    }
    report.audit_conflicts = audit_conflicts(targets, &sizes).await;
    // An object is lost when no reachable target holds a copy not known to be bad. Without
    // read_data, "not known to be bad" means listed with the usual size.
    for name in &all {
        let intact = report.targets.iter().zip(&sizes).any(|(c, m)| {
            m.as_ref().is_some_and(|m| m.contains_key(name))
                && !c.corrupt.contains(name)
                && !c.unreadable.contains(name)
        });
        if !intact {
            report.lost.push(name.clone());
        }
    }
    Ok(report)
}

/// Audit entries held by several targets whose bytes differ. Entries are small and named by
/// number, not hash, so equal sizes prove nothing: every copy is read.
async fn audit_conflicts(
    targets: &[Target],
    listings: &[Option<BTreeMap<String, u64>>],
) -> Vec<String> {
    let mut held: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, m) in listings.iter().enumerate() {
        for name in m.iter().flat_map(|m| m.keys()) {
            if name.starts_with(paths::AUDIT) {
                held.entry(name).or_default().push(i);
            }
        }
    }
    let mut conflicts = Vec::new();
    for (name, on) in held.into_iter().filter(|(_, on)| on.len() > 1) {
        let copies = futures::future::join_all(on.iter().map(|&i| targets[i].get(name))).await;
        let read: Vec<_> = copies.into_iter().filter_map(|c| c.ok()).collect();
        if read.windows(2).any(|w| w[0] != w[1]) {
            conflicts.push(name.to_string());
        }
    }
    conflicts
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairReport {
    /// Damaged copies replaced, per target.
    pub replaced: BTreeMap<String, Vec<String>>,
    /// Missing copies added, per target.
    pub copied: BTreeMap<String, u64>,
    /// Objects that could not be repaired, with the reason.
    pub failed: Vec<String>,
}

/// Reads every copy on every target, replaces each damaged copy with an intact one, and copies
/// each missing object to the targets that lack it. Every copy written is read back and checked
/// against its name. Running it again after an interruption finishes the job.
/// Runs under the maintenance lease, as `sync` does.
pub async fn repair(store: &Store) -> Result<(ReplicaReport, RepairReport)> {
    store.ensure_deletable("repair", &["locks/"]).await?;
    let lease = crate::lease::Lease::acquire(store, "repair", crate::repository::LEASE_TTL).await?;
    let result = repair_leased(store, &lease).await;
    let released = lease.release(store).await;
    let reports = result?;
    released?;
    Ok(reports)
}

async fn repair_leased(
    store: &Store,
    lease: &crate::lease::Lease,
) -> Result<(ReplicaReport, RepairReport)> {
    let before = check_copies(store, true).await?;
    crate::failpoint::hit("repair.before-copy").await;
    let targets = store.targets();
    let mut out = RepairReport::default();
    let mut jobs: Vec<(usize, String, bool)> = Vec::new();
    for (i, c) in before.targets.iter().enumerate() {
        if !c.reachable {
            continue;
        }
        jobs.extend(c.corrupt.iter().map(|n| (i, n.clone(), true)));
        jobs.extend(c.missing.iter().map(|n| (i, n.clone(), false)));
    }
    let results: Vec<(usize, String, bool, Result<()>)> = futures::stream::iter(jobs)
        .map(|(i, name, replace)| {
            let before = &before;
            async move {
                // A copy made after the lease lapsed could undo a prune that took it over.
                let r = match lease.keep_alive(store).await {
                    Ok(()) => heal_one(targets, before, i, &name, replace).await,
                    Err(e) => Err(e),
                };
                (i, name, replace, r)
            }
        })
        .buffer_unordered(PARALLEL_READS)
        .collect()
        .await;
    for name in &before.audit_conflicts {
        out.failed.push(format!(
            "{name} differs between targets: both copies are kept (evidence is never \
             overwritten); the copy on the first target by name is the log's (docs/OPERATIONS.md)"
        ));
    }
    for (i, name, replace, r) in results {
        let t = targets[i].name().to_string();
        match r {
            Ok(()) if replace => out.replaced.entry(t).or_default().push(name),
            Ok(()) => *out.copied.entry(t).or_default() += 1,
            Err(e) => out.failed.push(format!("{name} on {t}: {e}")),
        }
    }
    Ok((before, out))
}

/// Puts an intact copy of `name` on target `to`, from the first target whose copy verifies.
async fn heal_one(
    targets: &[Target],
    report: &ReplicaReport,
    to: usize,
    name: &str,
    replace: bool,
) -> Result<()> {
    if replace && name.starts_with(paths::AUDIT) {
        // Audit entries are named by number, not hash: copies that differ are two records,
        // and replacing one would destroy evidence.
        return Err(Error::Invalid(format!(
            "{name} differs between targets: both copies are kept (evidence is never \
             overwritten); the copy on the first target by name is the log's (docs/OPERATIONS.md)"
        )));
    }
    if name == paths::CONFIG {
        // `config` is not named by its hash; only a byte-identical majority could vouch for it.
        return Err(Error::Invalid(
            "config differs between targets; compare the copies by hand".into(),
        ));
    }
    let sources = report.targets.iter().enumerate().filter_map(|(i, c)| {
        let intact = i != to
            && c.reachable
            && !c.missing.iter().any(|n| n == name)
            && !c.corrupt.iter().any(|n| n == name);
        intact.then(|| &targets[i])
    });
    let copied = copy_verified(sources, name, &targets[to], replace).await;
    match (copied, targets[to].lock()) {
        (Ok(_), _) => Ok(()),
        // No other target has it intact: a locked target's own history may.
        (Err(e), Some(lock)) => match lock.intact_version(name).await? {
            Some((version, bytes)) => {
                targets[to].put_replace(name, bytes).await?;
                tracing::info!(
                    "{name} on {}: version {version} made current",
                    targets[to].name()
                );
                Ok(())
            }
            None => Err(e),
        },
        (Err(e), None) => Err(e),
    }
}
