//! Comparing targets and healing them: what each target holds, what it owes, and copying the
//! missing objects from a target that has an intact copy.
//!
//! Everything here works from object listings and object names alone, so it needs no keys and
//! no catalog: a lost catalog loses no record of what a target owes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use futures::StreamExt;

use crate::catalog::Catalog;
use crate::format::Config;
use crate::lease::Lease;
use crate::repository::LEASE_TTL;
use crate::store::{content_matches_name, Store};
use crate::target::Target;
use crate::{Error, Result};

#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetStatus {
    pub name: String,
    pub location: String,
    pub reachable: bool,
    pub error: Option<String>,
    /// Time to list the target's objects.
    pub latency_ms: f64,
    pub objects: u64,
    pub bytes: u64,
    /// Objects other targets hold that this one lacks.
    pub owes: u64,
    /// Object lock: mode and retention (`compliance 30d`), when configured.
    pub lock: Option<String>,
    /// The earliest end of any kept object's lock (RFC 3339), and how many kept objects are
    /// not locked at all, on a locked target.
    pub lock_shortest: Option<String>,
    pub unlocked: u64,
}

/// What each target holds: (status per target, object names per target).
pub async fn survey(store: &Store) -> (Vec<TargetStatus>, Vec<Option<BTreeSet<String>>>) {
    let listings = futures::future::join_all(store.targets().iter().map(|t| async move {
        let started = Instant::now();
        let r = t.list("").await;
        (r, started.elapsed().as_secs_f64() * 1000.0)
    }))
    .await;
    let mut all = BTreeSet::new();
    let mut names = Vec::new();
    let mut statuses = Vec::new();
    for (t, (r, ms)) in store.targets().iter().zip(listings) {
        let mut st = TargetStatus {
            name: t.name().to_string(),
            location: t.location().to_string(),
            reachable: r.is_ok(),
            error: None,
            latency_ms: ms,
            objects: 0,
            bytes: 0,
            owes: 0,
            lock: t.lock().map(|l| {
                format!(
                    "{} {}d",
                    l.policy.mode.as_s3().to_ascii_lowercase(),
                    l.policy.retention.as_secs() / 86_400
                )
            }),
            lock_shortest: None,
            unlocked: 0,
        };
        if let (Some(lock), true) = (t.lock(), r.is_ok()) {
            match crate::lock::survey(t, lock, chrono::Utc::now()).await {
                Ok(s) => {
                    st.lock_shortest = s.shortest.map(|(_, u)| crate::lock::s3_time(u));
                    st.unlocked = s.short.iter().filter(|(_, u)| u.is_none()).count() as u64;
                }
                Err(e) => st.error = Some(format!("object lock: {e}")),
            }
        }
        match r {
            Ok(list) => {
                st.objects = list.len() as u64;
                st.bytes = list.iter().map(|l| l.size).sum();
                // Leases and sessions are one process's bookkeeping, not repository data: a
                // copy of an ended session would look like a running backup.
                let set: BTreeSet<String> = list
                    .into_iter()
                    .map(|l| l.name)
                    .filter(|n| !n.starts_with("locks/"))
                    .collect();
                all.extend(set.iter().cloned());
                names.push(Some(set));
            }
            Err(e) => {
                st.error = Some(e.to_string());
                names.push(None);
            }
        }
        statuses.push(st);
    }
    for (st, set) in statuses.iter_mut().zip(&names) {
        if let Some(set) = set {
            st.owes = all.difference(set).count() as u64;
        }
    }
    (statuses, names)
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SyncReport {
    pub copied: u64,
    pub bytes: u64,
    /// Per target, the objects copied to it.
    pub per_target: BTreeMap<String, u64>,
    /// Objects that could not be healed, with the reason.
    pub failed: Vec<String>,
}

/// Copies every object a reachable target lacks from a target holding an intact copy.
/// Each copy is verified against its name before it is written and after. Safe to interrupt
/// and run again: it only ever adds objects.
///
/// Runs under the maintenance lease: a copy made while a prune deletes the same object on every
/// target would bring it back (an index object naming deleted packs, say).
pub async fn sync(store: &Store) -> Result<SyncReport> {
    let lease = Lease::acquire(store, "sync", LEASE_TTL).await?;
    let result = sync_leased(store, &lease).await;
    let released = lease.release(store).await;
    let report = result?;
    released?;
    Ok(report)
}

async fn sync_leased(store: &Store, lease: &Lease) -> Result<SyncReport> {
    crate::failpoint::hit("sync.before-survey").await;
    let (statuses, names) = survey(store).await;
    if names.iter().all(Option::is_none) {
        return Err(Error::Unavailable {
            target: "every target".into(),
            reason: "none could be listed".into(),
        });
    }
    let mut holders: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, set) in names.iter().enumerate() {
        for n in set.iter().flatten() {
            holders.entry(n.as_str()).or_default().push(i);
        }
    }
    let mut jobs = Vec::new();
    for (i, set) in names.iter().enumerate() {
        let Some(set) = set else { continue };
        for (name, from) in &holders {
            if !set.contains(*name) {
                jobs.push((i, name.to_string(), from.clone()));
            }
        }
    }
    crate::failpoint::hit("sync.before-copy").await;
    let targets = store.targets();
    let results: Vec<(usize, String, Result<u64>)> = futures::stream::iter(jobs)
        .map(|(to, name, from)| async move {
            // A copy made after the lease lapsed could undo a prune that took it over.
            let r = match lease.keep_alive(store).await {
                Ok(()) => copy_one(targets, &name, &from, &targets[to]).await,
                Err(e) => Err(e),
            };
            (to, name, r)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut report = SyncReport::default();
    for (to, name, r) in results {
        match r {
            Ok(bytes) => {
                report.copied += 1;
                report.bytes += bytes;
                *report
                    .per_target
                    .entry(statuses[to].name.clone())
                    .or_default() += 1;
            }
            Err(e) => report
                .failed
                .push(format!("{} on {}: {e}", name, statuses[to].name)),
        }
    }
    Ok(report)
}

async fn copy_one(targets: &[Target], name: &str, from: &[usize], to: &Target) -> Result<u64> {
    copy_verified(from.iter().map(|&i| &targets[i]), name, to, false).await
}

/// Puts an intact copy of `name` on `to`, read from the first of `sources` whose copy matches
/// its name, and reads it back to check it. With `replace`, the copy on `to` (damaged) is
/// deleted first, since objects are written create-only; an intact copy has been read by then,
/// so nothing is lost if this stops in between. Returns the object's size.
pub(crate) async fn copy_verified<'a>(
    sources: impl IntoIterator<Item = &'a Target>,
    name: &str,
    to: &Target,
    replace: bool,
) -> Result<u64> {
    let mut bytes = None;
    let mut reasons = Vec::new();
    for source in sources {
        match source.get(name).await {
            Ok(b) if content_matches_name(name, &b) => {
                bytes = Some(b);
                break;
            }
            Ok(_) => reasons.push(format!("{}: damaged too", source.name())),
            Err(e) => reasons.push(format!("{}: {e}", source.name())),
        }
    }
    let bytes = bytes.ok_or_else(|| Error::Integrity {
        object: name.to_string(),
        reason: format!("no target holds an intact copy ({})", reasons.join("; ")),
    })?;
    let len = bytes.len() as u64;
    if replace {
        to.delete(name).await?;
    }
    to.put_new(name, bytes, true).await?;
    let back = to.get(name).await?;
    if !content_matches_name(name, &back) {
        return Err(Error::Integrity {
            object: format!("{name} on {}", to.name()),
            reason: "the new copy does not match its name after writing".into(),
        });
    }
    Ok(len)
}

/// Replaces the catalog's record of what each reachable target owes with what a survey's
/// listings found. Needs no key: the repository id is in the plaintext `config` object.
pub async fn record_survey(
    store: &Store,
    state_dir: &std::path::Path,
    names: &[Option<BTreeSet<String>>],
) -> Result<()> {
    let config = Config::decode(&store.get(crate::format::paths::CONFIG).await?)?;
    let all: BTreeSet<&String> = names.iter().flatten().flatten().collect();
    let mut per_target = Vec::new();
    for (t, set) in store.targets().iter().zip(names) {
        if let Some(set) = set {
            let missing: Vec<String> = all
                .iter()
                .filter(|n| !set.contains(**n))
                .map(|n| n.to_string())
                .collect();
            per_target.push((t.name().to_string(), missing));
        }
    }
    let dir = state_dir.join(&config.id);
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut catalog = Catalog::open(&dir)?;
        for (t, missing) in per_target {
            catalog.replace_owed(&t, &missing)?;
        }
        Ok(())
    })
    .await
    .map_err(Error::task)?
}
