//! `audit verify`: the whole chain from entry 1, the snapshots' and the keyring's anchors
//! against it (a cut tail, a rewritten entry, a snapshot deleted outside `forget`), and the
//! local catalog's copy against the repository's. It reads the repository's snapshots, so it
//! sits above `Repository`, while the log itself (`crate::audit`) sits below it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::audit::{anchors, object_name, AnchorReport, AuditEntry, GENESIS, PREFIX};
use crate::catalog::Catalog;
use crate::format::AuditRef;
use crate::{Error, Repository, Result};

const VERIFY_ACTION: &str = "compare the snapshots with the audit log";

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub entries: u64,
    /// Hash of the newest entry: anchor it elsewhere to detect truncation.
    pub head: Option<String>,
    /// The first entry that breaks the chain, and why.
    pub first_broken: Option<(u64, String)>,
    /// Entries whose catalog copy differs from the repository's.
    pub catalog_mismatches: Vec<(u64, String)>,
    pub catalog_entries: u64,
    /// What the snapshots' anchors say: a cut or rewritten log, snapshots deleted outside
    /// `forget`.
    #[serde(flatten)]
    pub anchors: AnchorReport,
}

/// Checks the whole chain in the repository, the snapshots' anchors against it (a cut tail,
/// a deleted snapshot), and the catalog's copy against it.
pub async fn verify(repo: &Repository) -> Result<VerifyReport> {
    // Sessions, then snapshots, then the log: a backup committing meanwhile shows as a pending
    // commit (its session is live), never as a snapshot whose entry is missing. What still
    // looks missing is read once more from the start (a backup or a forget that ran between
    // the reads has finished by then).
    let mut pass = 0;
    let (entries, anchors) = loop {
        pass += 1;
        let live: std::collections::BTreeSet<String> =
            match crate::session::live_sessions_named(repo.store()).await {
                Ok(l) => l.into_iter().map(|(name, _)| name).collect(),
                Err(e) => {
                    tracing::info!("backup sessions not read ({e}); none counts as running");
                    Default::default()
                }
            };
        let complete = async {
            let store = repo.store();
            store
                .list_complete(crate::format::paths::SNAPSHOTS, VERIFY_ACTION)
                .await?;
            store.list_complete(PREFIX, VERIFY_ACTION).await
        }
        .await;
        let snapshots = repo.snapshots().await?;
        let entries = repo.audit().read_stored().await?;
        let auth_key = repo.keys().keyring().and_then(|kr| kr.audit_auth_key());
        // Entries before the first one sealed to the audit public key were written before the
        // repository took host keys: only full keys could write them.
        let first_public = entries
            .iter()
            .find(|(_, s)| s.as_ref().is_ok_and(|s| s.links_to_stored))
            .map_or(u64::MAX, |(seq, _)| *seq);
        let opened: BTreeMap<u64, Result<AuditEntry>> = entries
            .iter()
            .map(|(seq, s)| {
                let e = match s {
                    Ok(s) => {
                        let mut e = s.entry.clone();
                        // A forget withdraws commits only when full keys wrote it: a host key
                        // could otherwise excuse the snapshots it deletes.
                        if e.action == "snapshots.forget"
                            && *seq > first_public
                            && !e.is_authentic(auth_key.as_ref())
                        {
                            tracing::warn!(
                                "audit entry {seq} records a forget that full keys did not write; \
                                 the commits it lists count as not withdrawn"
                            );
                            e.details = serde_json::json!({});
                        }
                        Ok(e)
                    }
                    Err(e) => Err(Error::integrity(object_name(*seq), e)),
                };
                (*seq, e)
            })
            .collect();
        let mut anchors = match &complete {
            Ok(_) => anchors::check(&opened, &snapshots, &live, chrono::Utc::now()),
            Err(e) => AnchorReport {
                anchors_skipped: Some(e.to_string()),
                ..Default::default()
            },
        };
        if let (Ok(_), Ok(kr)) = (&complete, repo.keyring()) {
            if let Some((seq, hash)) = kr.audit_anchor() {
                anchors.keyring_anchor = Some(anchors::check_keyring(
                    &opened,
                    kr.generation(),
                    AuditRef { seq, hash },
                ));
            }
        }
        if anchors.missing_snapshots.is_empty() || pass == 2 {
            break (entries, anchors);
        }
    };
    let mut report = VerifyReport {
        entries: entries.len() as u64,
        anchors,
        ..Default::default()
    };
    // The previous entry's canonical hash and the hash of its stored bytes.
    let mut prev = (GENESIS.to_string(), GENESIS.to_string());
    let mut hashes = BTreeMap::new();
    for (expected, (seq, stored)) in (1u64..).zip(entries.iter()) {
        let problem = if *seq != expected {
            Some(format!(
                "entry {expected} is missing (the next one is {seq})"
            ))
        } else {
            match stored {
                Err(e) => Some(format!("cannot be opened: {e}")),
                Ok(s) if s.entry.seq != *seq => Some(format!("claims to be entry {}", s.entry.seq)),
                Ok(s) if s.links_to_stored && s.entry.prev != prev.1 => {
                    Some("its link to the previous entry's stored bytes does not match".into())
                }
                Ok(s) if !s.links_to_stored && s.entry.prev != prev.0 => {
                    Some("its link to the previous entry does not match".into())
                }
                Ok(_) => None,
            }
        };
        if let Some(why) = problem {
            report.first_broken = Some((expected.min(*seq), why));
            break;
        }
        if let Ok(s) = stored {
            prev = (s.entry.hash(), s.stored_hash.clone());
            hashes.insert(*seq, prev.0.clone());
        }
    }
    let entries: BTreeMap<u64, Result<AuditEntry>> = entries
        .into_iter()
        .map(|(seq, s)| (seq, s.map(|s| s.entry)))
        .collect();
    report.head = hashes.values().last().cloned();
    if let Some(dir) = repo.catalog_dir() {
        // The catalog gets a copy of every verified entry it lacks (a new host, a lost catalog).
        let verified: Vec<AuditEntry> = entries
            .values()
            .filter_map(|e| e.as_ref().ok())
            .filter(|e| hashes.contains_key(&e.seq))
            .cloned()
            .collect();
        let copies = tokio::task::spawn_blocking(move || {
            let mut catalog = Catalog::open(&dir)?;
            let before = catalog.audit_entries()?;
            for e in &verified {
                if !before.iter().any(|(seq, _, _)| *seq == e.seq) {
                    catalog.add_audit(e)?;
                }
            }
            Ok::<_, Error>(before)
        })
        .await
        .map_err(Error::task)??;
        report.catalog_entries = copies.len() as u64;
        for (seq, stored_hash, entry) in copies {
            let own = entry.as_ref().map(AuditEntry::hash);
            let why = match (own, hashes.get(&seq)) {
                (Err(e), _) => Some(format!("the catalog copy is unreadable: {e}")),
                (Ok(h), _) if h != stored_hash => Some("the catalog copy was edited".into()),
                (Ok(h), Some(repo_hash)) if &h != repo_hash => {
                    Some("the catalog copy differs from the repository's".into())
                }
                (Ok(_), None) if report.first_broken.is_none() => {
                    Some("the repository has no such entry".into())
                }
                _ => None,
            };
            if let Some(why) = why {
                report.catalog_mismatches.push((seq, why));
            }
        }
    }
    Ok(report)
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.first_broken.is_none()
            && self.catalog_mismatches.is_empty()
            && self.anchors.broken_anchors.is_empty()
            && self.anchors.missing_snapshots.is_empty()
            && self
                .anchors
                .keyring_anchor
                .as_ref()
                .is_none_or(|k| k.broken.is_none())
    }
}
