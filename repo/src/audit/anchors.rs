//! What the snapshots say about the audit log (docs/FORMAT.md section 17, "Anchors"): every
//! snapshot written since 0.7 carries the entry that recorded its commit. From the snapshots
//! alone, any machine can then tell
//! - that the log was cut or rewritten: an anchor names an entry the log lacks, or one whose
//!   hash differs (the chain's own links cannot show a cut tail: the shorter chain is intact);
//! - that a snapshot was deleted outside `forget`: a commit entry no snapshot anchors, that no
//!   recorded `forget` removed and no `snapshot.abandoned` entry withdrew.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::format::{AuditEntry, AuditRef, Snapshot};
use crate::{Id, Result};

/// An anchor the log does not honour: the log was cut or rewritten at `seq`.
#[derive(Debug, Clone, Serialize)]
pub struct BrokenAnchor {
    /// The snapshot holding the anchor (short ID), its host and time.
    pub snapshot: String,
    pub host: String,
    pub time: String,
    /// The entry it names.
    pub seq: u64,
    pub reason: String,
}

/// A snapshot the log says was committed, that is not in the repository and was not forgotten.
#[derive(Debug, Clone, Serialize)]
pub struct MissingSnapshot {
    /// The `snapshot.commit` entry.
    pub commit: u64,
    pub host: String,
    pub time: String,
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AnchorReport {
    /// Snapshots carrying an anchor (all were checked).
    pub anchored: u64,
    /// Snapshots without one: written before 0.7, or while the log's sequencer was down.
    pub unanchored: u64,
    pub broken_anchors: Vec<BrokenAnchor>,
    pub missing_snapshots: Vec<MissingSnapshot>,
    /// Commits without their snapshot whose backup session is still live: a backup between
    /// its two writes (a later verify judges them).
    pub pending_commits: u64,
    /// Why the snapshots were not compared with the log, when they were not (a target that
    /// could not be listed: what it holds is unknown).
    pub anchors_skipped: Option<String>,
    /// What the keyring's anchor says (repositories that take host keys).
    pub keyring_anchor: Option<KeyringAnchor>,
}

/// The audit head the keyring recorded when a key operation last wrote it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyringAnchor {
    pub generation: u64,
    pub seq: u64,
    /// Why the log does not honour it: cut or rewritten.
    pub broken: Option<String>,
}

/// Checks the keyring's anchor (generation, anchor) against the log.
pub fn check_keyring(
    entries: &BTreeMap<u64, Result<AuditEntry>>,
    generation: u64,
    anchor: AuditRef,
) -> KeyringAnchor {
    KeyringAnchor {
        generation,
        seq: anchor.seq,
        broken: broken(entries, &anchor),
    }
}

/// Why the log does not hold the entry `anchor` names, if it does not.
fn broken(entries: &BTreeMap<u64, Result<AuditEntry>>, anchor: &AuditRef) -> Option<String> {
    match entries.get(&anchor.seq) {
        None => Some(format!(
            "the log has no entry {}: entries were deleted from it",
            anchor.seq
        )),
        Some(Err(e)) => Some(format!("entry {} does not open: {e}", anchor.seq)),
        Some(Ok(e)) if e.anchor().hash != anchor.hash => Some(format!(
            "entry {} is not the one recorded here: the log was rewritten",
            anchor.seq
        )),
        Some(Ok(_)) => None,
    }
}

/// How long after its entry a commit may wait for its snapshot while its session lives: the
/// session staleness bound plus the clock-skew bound (FORMAT.md section 16).
pub const PENDING_FOR: chrono::Duration = chrono::Duration::seconds(15 * 60 + 300);

fn str_of(e: &AuditEntry, key: &str) -> String {
    e.details
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

fn seqs_of(v: Option<&serde_json::Value>) -> Vec<u64> {
    match v {
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_u64()).collect(),
        Some(x) => x.as_u64().into_iter().collect(),
        None => Vec::new(),
    }
}

/// Checks `snapshots` (every snapshot the repository holds) against `entries` (the log, by
/// sequence number; an entry that does not open is an `Err`).
/// `live_sessions` are the object names of the backup sessions live now: a commit whose
/// session is among them may still get its snapshot.
pub fn check(
    entries: &BTreeMap<u64, Result<AuditEntry>>,
    snapshots: &[(Id, Snapshot)],
    live_sessions: &BTreeSet<String>,
    now: chrono::DateTime<chrono::Utc>,
) -> AnchorReport {
    let mut r = AnchorReport::default();
    let mut anchored_commits = BTreeSet::new();
    for (id, s) in snapshots {
        let Some(anchor) = s.audit else {
            r.unanchored += 1;
            continue;
        };
        r.anchored += 1;
        anchored_commits.insert(anchor.seq);
        let reason = broken(entries, &anchor).or_else(|| match entries.get(&anchor.seq) {
            Some(Ok(e)) if e.action != "snapshot.commit" => Some(format!(
                "entry {} records {}, not a snapshot commit",
                anchor.seq, e.action
            )),
            _ => None,
        });
        if let Some(reason) = reason {
            r.broken_anchors.push(BrokenAnchor {
                snapshot: id.short(),
                host: s.host.clone(),
                time: chrono::DateTime::from_timestamp_nanos(s.time_ns)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                seq: anchor.seq,
                reason,
            });
        }
    }
    // A commit is withdrawn only by a later entry: a forget (its `commits`, also when the
    // forget failed part-way), or its own backup's `snapshot.abandoned` (same actor).
    let mut gone = BTreeSet::new();
    for e in entries.values().filter_map(|e| e.as_ref().ok()) {
        let later = |seq: &u64| *seq < e.seq;
        match e.action.as_str() {
            "snapshots.forget" => {
                gone.extend(seqs_of(e.details.get("commits")).into_iter().filter(later));
            }
            "snapshot.abandoned" => gone.extend(
                seqs_of(e.details.get("commit"))
                    .into_iter()
                    .filter(later)
                    .filter(|seq| matches!(entries.get(seq), Some(Ok(c)) if c.actor == e.actor)),
            ),
            _ => {}
        }
    }
    for e in entries.values().filter_map(|e| e.as_ref().ok()) {
        if e.action == "snapshot.commit"
            && e.result == "ok"
            && !anchored_commits.contains(&e.seq)
            && !gone.contains(&e.seq)
        {
            // Its backup writes the snapshot right after the entry: a live session makes the
            // commit pending only while the entry is young (a planted session kept alive
            // must not hide a deleted snapshot for ever).
            let young = chrono::DateTime::parse_from_rfc3339(&e.time)
                .map(|t| now - t.with_timezone(&chrono::Utc) < PENDING_FOR)
                .unwrap_or(false);
            if young && live_sessions.contains(&str_of(e, "session")) {
                r.pending_commits += 1;
                continue;
            }
            r.missing_snapshots.push(MissingSnapshot {
                commit: e.seq,
                host: str_of(e, "host"),
                time: str_of(e, "time"),
                paths: e
                    .details
                    .get("paths")
                    .and_then(|p| p.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
    }
    r
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::format::Summary;

    fn entry(seq: u64, action: &str, details: serde_json::Value) -> AuditEntry {
        AuditEntry {
            seq,
            time: "2026-12-03T00:00:00.000Z".into(),
            actor: "root@web-1".into(),
            action: action.into(),
            details,
            result: "ok".into(),
            prev: super::super::GENESIS.into(),
            auth: None,
        }
    }

    fn snapshot(anchor: Option<AuditRef>) -> Snapshot {
        Snapshot {
            version: 2,
            time_ns: 0,
            host: "web-1".into(),
            username: String::new(),
            paths: vec![b"/etc".to_vec()],
            tags: vec![],
            parent: None,
            tree: Id([1; 32]),
            summary: Summary::default(),
            program_version: String::new(),
            audit: anchor,
            writer: None,
            untrusted: None,
            stored_as: Vec::new(),
        }
    }

    fn log(entries: &[AuditEntry]) -> BTreeMap<u64, Result<AuditEntry>> {
        entries.iter().map(|e| (e.seq, Ok(e.clone()))).collect()
    }

    #[test]
    fn an_intact_log_and_its_snapshots_agree() {
        let c1 = entry(1, "snapshot.commit", serde_json::json!({"host": "web-1"}));
        let c2 = entry(2, "snapshot.commit", serde_json::json!({"host": "web-1"}));
        let f = entry(3, "snapshots.forget", serde_json::json!({"commits": [1]}));
        let snaps = vec![(Id([2; 32]), snapshot(Some(c2.anchor())))];
        let r = check(
            &log(&[c1, c2, f]),
            &snaps,
            &BTreeSet::new(),
            chrono::Utc::now(),
        );
        assert_eq!(r.anchored, 1);
        assert!(
            r.broken_anchors.is_empty() && r.missing_snapshots.is_empty(),
            "{r:?}"
        );
    }

    #[test]
    fn a_cut_tail_a_rewritten_entry_and_a_deleted_snapshot_are_named() {
        let c1 = entry(
            1,
            "snapshot.commit",
            serde_json::json!({"host": "db-1", "time": "t1"}),
        );
        let c2 = entry(2, "snapshot.commit", serde_json::json!({"host": "web-1"}));
        let c3 = entry(3, "snapshot.commit", serde_json::json!({"host": "web-1"}));
        let snaps = vec![
            (Id([2; 32]), snapshot(Some(c2.anchor()))),
            (Id([3; 32]), snapshot(Some(c3.anchor()))),
        ];
        // Entry 3 cut, entry 2 replaced by another: both anchors break; snapshot 1 is gone.
        let forged = entry(2, "snapshot.commit", serde_json::json!({"host": "evil"}));
        let r = check(
            &log(&[c1, forged]),
            &snaps,
            &BTreeSet::new(),
            chrono::Utc::now(),
        );
        let seqs: Vec<u64> = r.broken_anchors.iter().map(|b| b.seq).collect();
        assert_eq!(seqs, vec![2, 3], "{r:?}");
        assert!(r.broken_anchors[1].reason.contains("deleted"));
        assert!(r.broken_anchors[0].reason.contains("rewritten"));
        assert_eq!(r.missing_snapshots.len(), 1);
        assert_eq!(r.missing_snapshots[0].commit, 1);
        assert_eq!(r.missing_snapshots[0].host, "db-1");
    }

    #[test]
    fn the_keyring_anchor_names_a_cut_or_rewritten_log() {
        let e1 = entry(1, "key.add", serde_json::json!({}));
        let e2 = entry(2, "key.rotate", serde_json::json!({}));
        let anchor = e2.anchor();
        let intact = check_keyring(&log(&[e1.clone(), e2]), 4, anchor);
        assert_eq!((intact.generation, intact.seq, intact.broken), (4, 2, None));
        let cut = check_keyring(&log(std::slice::from_ref(&e1)), 4, anchor);
        assert!(cut.broken.unwrap().contains("deleted"));
        let forged = entry(2, "key.rotate", serde_json::json!({"epoch": 9}));
        let rewritten = check_keyring(&log(&[e1, forged]), 4, anchor);
        assert!(rewritten.broken.unwrap().contains("rewritten"));
    }

    #[test]
    fn an_abandoned_commit_is_not_missing() {
        let c1 = entry(1, "snapshot.commit", serde_json::json!({}));
        let a = entry(2, "snapshot.abandoned", serde_json::json!({"commit": 1}));
        let r = check(
            &log(&[c1.clone(), a]),
            &[],
            &BTreeSet::new(),
            chrono::Utc::now(),
        );
        assert!(r.missing_snapshots.is_empty());
        // Not by another actor, and not before the commit.
        let mut other = entry(2, "snapshot.abandoned", serde_json::json!({"commit": 1}));
        other.actor = "root@elsewhere".into();
        let r = check(
            &log(&[c1.clone(), other]),
            &[],
            &BTreeSet::new(),
            chrono::Utc::now(),
        );
        assert_eq!(r.missing_snapshots.len(), 1);
        let early = entry(1, "snapshots.forget", serde_json::json!({"commits": [2]}));
        let c2 = entry(2, "snapshot.commit", serde_json::json!({}));
        let r = check(
            &log(&[early, c2]),
            &[],
            &BTreeSet::new(),
            chrono::Utc::now(),
        );
        assert_eq!(r.missing_snapshots.len(), 1);
    }

    #[test]
    fn a_commit_whose_backup_still_runs_is_pending_not_missing() {
        let c1 = entry(
            1,
            "snapshot.commit",
            serde_json::json!({"session": "locks/session-1"}),
        );
        let live: BTreeSet<String> = ["locks/session-1".to_string()].into();
        let written = chrono::DateTime::parse_from_rfc3339(&c1.time)
            .unwrap()
            .with_timezone(&chrono::Utc);
        let soon = written + chrono::Duration::minutes(1);
        let r = check(&log(std::slice::from_ref(&c1)), &[], &live, soon);
        assert_eq!((r.pending_commits, r.missing_snapshots.len()), (1, 0));
        let r = check(&log(std::slice::from_ref(&c1)), &[], &BTreeSet::new(), soon);
        assert_eq!((r.pending_commits, r.missing_snapshots.len()), (0, 1));
        // A session kept alive for a day does not keep a commit pending.
        let r = check(&log(&[c1]), &[], &live, written + chrono::Duration::days(1));
        assert_eq!((r.pending_commits, r.missing_snapshots.len()), (0, 1));
    }
}
