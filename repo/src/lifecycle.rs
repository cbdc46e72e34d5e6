//! What happens to snapshots after they are written: forgetting them by a retention policy
//! or by name, and replacing their tags. Each change is recorded in the audit log here, so
//! every front end (the `forget` and `tag` commands, the agent's forget jobs) records it.

use serde::Serialize;

use crate::format::{paths, Snapshot};
use crate::retention::{apply, Candidate, Decision, Policy};
use crate::{failpoint, Id, Repository, Result};

/// A retention run.
pub struct ForgetOptions {
    pub policy: Policy,
    /// Remove every snapshot of a group (host and paths) when the policy keeps none of them.
    pub allow_empty: bool,
    /// Decide, remove nothing.
    pub dry_run: bool,
}

#[derive(Debug, Serialize)]
pub struct ForgetReport {
    pub dry_run: bool,
    /// One per snapshot considered, grouped by host and paths, newest first in each group.
    pub decisions: Vec<Decision>,
    /// Groups the policy keeps no snapshot of. Unless `allow_empty`, nothing was removed then:
    /// the caller should say which groups, and how to keep at least one.
    pub emptied: Vec<String>,
    /// Full hex IDs of the snapshots removed (would be removed, in a dry run).
    pub removed: Vec<String>,
}

/// The group a snapshot belongs to for retention: its host and paths.
pub fn group_of(s: &Snapshot) -> String {
    format!(
        "{} {}",
        s.host,
        s.paths
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// Applies `opts.policy` to `snapshots` (the caller's selection: a host, tags, paths) and
/// removes what it does not keep. Snapshots not to be trusted (`Snapshot::untrusted`: a host
/// key's snapshot without a valid proof of its host) take no part: a forgery dated in the future
/// must not count as a host's newest and push its real snapshots out. They are removed only by
/// ID.
pub async fn forget_by_policy(
    repo: &Repository,
    snapshots: &[(Id, Snapshot)],
    opts: &ForgetOptions,
) -> Result<ForgetReport> {
    for (id, s) in snapshots.iter().filter(|(_, s)| s.untrusted.is_some()) {
        tracing::warn!(
            "snapshot {} is left out of the retention policy: {}",
            id.short(),
            s.untrusted.as_deref().unwrap_or_default()
        );
    }
    let snapshots: Vec<(Id, Snapshot)> = snapshots
        .iter()
        .filter(|(_, s)| s.untrusted.is_none())
        .cloned()
        .collect();
    let snapshots = snapshots.as_slice();
    let candidates: Vec<Candidate> = snapshots
        .iter()
        .map(|(id, s)| Candidate {
            id: id.to_hex(),
            time: chrono::DateTime::from_timestamp_nanos(s.time_ns),
            group: group_of(s),
            tags: s.tags.clone(),
        })
        .collect();
    let decisions = apply(&opts.policy, &candidates);
    let mut emptied: Vec<String> = decisions.iter().map(|d| d.group.clone()).collect();
    emptied.dedup();
    emptied.retain(|grp| !decisions.iter().any(|d| d.group == *grp && d.keep));
    let removed: Vec<String> = decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.id.clone())
        .collect();
    let refused = !emptied.is_empty() && !opts.allow_empty;
    if !opts.dry_run && !refused && !removed.is_empty() {
        let kept = decisions.len() - removed.len();
        let doomed: Vec<(Id, Snapshot)> = snapshots
            .iter()
            .filter(|(id, _)| removed.contains(&id.to_hex()))
            .cloned()
            .collect();
        remove(repo, &doomed, kept, false).await?;
    }
    Ok(ForgetReport {
        dry_run: opts.dry_run,
        decisions,
        removed: if refused { Vec::new() } else { removed },
        emptied,
    })
}

/// Removes exactly the snapshots given (as read); `kept` is how many others remain (for the
/// record).
pub async fn forget_snapshots(
    repo: &Repository,
    snapshots: &[(Id, Snapshot)],
    kept: usize,
) -> Result<()> {
    remove(repo, snapshots, kept, true).await
}

/// Deletes the snapshot objects and records it in the audit log, with the commit entries of
/// the removed snapshots: `audit verify` then knows they were forgotten, not lost. Refused
/// before anything is deleted when the log cannot take the entry.
async fn remove(
    repo: &Repository,
    snapshots: &[(Id, Snapshot)],
    kept: usize,
    named: bool,
) -> Result<()> {
    repo.store()
        .ensure_deletable("forget", &[paths::SNAPSHOTS])
        .await?;
    repo.audit().ready("snapshots.forget").await?;
    failpoint::hit("forget.before-delete").await;
    let mut removed: Vec<&(Id, Snapshot)> = Vec::new();
    let mut failed = None;
    'snapshots: for s in snapshots {
        for object in objects_of(s) {
            if let Err(e) = repo.store().delete(&paths::snapshot(&object)).await {
                failed = Some(e);
                break 'snapshots;
            }
        }
        removed.push(s);
    }
    // What was removed is recorded, also when a delete failed part-way: `audit verify` must
    // not take those snapshots for deleted outside drvault.
    let details = serde_json::json!({
        "removed": removed.iter().map(|(id, _)| id.short()).collect::<Vec<_>>(),
        "commits": removed.iter().filter_map(|(_, s)| s.audit.map(|a| a.seq)).collect::<Vec<_>>(),
        "kept": kept + snapshots.len() - removed.len(),
        "named": named,
    });
    match failed {
        None => {
            repo.audit()
                .record("snapshots.forget", details, "ok")
                .await?;
            Ok(())
        }
        Some(e) => {
            let result = format!("failed: {e}");
            if let Err(a) = repo
                .audit()
                .record("snapshots.forget", details, &result)
                .await
            {
                tracing::warn!("{a}");
            }
            Err(e)
        }
    }
}

/// Replaces snapshot `old_id` (whose content is `snap`) by a copy with `tags`; returns the
/// new snapshot's ID (a snapshot's ID is the hash of its bytes). The new one is written before
/// the old one is deleted, so a crash leaves both, never neither.
pub async fn retag(
    repo: &Repository,
    old_id: &Id,
    snap: &Snapshot,
    tags: Vec<String>,
) -> Result<(Id, Snapshot)> {
    repo.store()
        .ensure_deletable("tag", &[paths::SNAPSHOTS])
        .await?;
    repo.audit().ready("snapshots.tag").await?;
    // Retagging with full keys would seal a doubtful snapshot under the data key and so launder
    // it into one the full keys vouch for.
    if let Some(why) = &snap.untrusted {
        return Err(crate::Error::NotPermitted(format!(
            "snapshot {} is not to be trusted ({why}); it cannot be retagged (forget it by ID, or \
             restore it with --trust-host)",
            old_id.short()
        )));
    }
    let mut new = snap.clone();
    new.tags = tags;
    // A host key's proof covers the tags: it is dropped, and the full keys writing the copy
    // vouch for it from now on (it was verified above).
    new.writer = None;
    // The copy keeps the commit's audit anchor: it is the same backup.
    let new_id = repo.save_snapshot(&new).await?;
    for object in objects_of(&(*old_id, snap.clone())) {
        repo.store().delete(&paths::snapshot(&object)).await?;
    }
    let details = serde_json::json!({
        "old": old_id.short(), "new": new_id.short(),
        "tags_before": snap.tags, "tags_after": new.tags,
    });
    repo.audit().record("snapshots.tag", details, "ok").await?;
    Ok((new_id, new))
}

/// The objects holding a snapshot as read (its ID is not an object name).
fn objects_of(s: &(Id, Snapshot)) -> Vec<Id> {
    if s.1.stored_as.is_empty() {
        vec![s.0]
    } else {
        s.1.stored_as.clone()
    }
}
