//! The hash-chained audit log (docs/FORMAT.md §17): every key operation, and later every
//! drill, appends one entry. Each entry holds the BLAKE3 hash of the previous entry's canonical
//! encoding, so editing, removing or reordering any entry breaks the chain from there on. In a
//! repository that takes host keys, entries are sealed to the audit log's public key (hosts
//! append but cannot read) and link to the BLAKE3 hash of the previous entry's stored bytes,
//! which a host can compute without opening it.
//!
//! Entries live in the repository (`audit/<seq>`, encrypted under the audit key, replicated to
//! every target like any object), so the evidence survives the loss of the host, and in the
//! local catalog, a second copy to compare against.

use std::path::Path;

use bytes::Bytes;
use drvault_keyring::{Header, Keys, ObjectKind, AUDIT_EPOCH};

pub(crate) mod anchors;
mod read;

pub use anchors::{AnchorReport, BrokenAnchor, KeyringAnchor, MissingSnapshot};
use read::{seqs_after, seqs_from};

use crate::catalog::Catalog;
use crate::store::Store;
use crate::target::Target;
use crate::{Error, Result};

pub(crate) const PREFIX: &str = crate::format::paths::AUDIT;
/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub use crate::format::AuditEntry;
use crate::format::AuditRef;

impl AuditEntry {
    /// The authentication full keys give an entry (over its canonical bytes without it).
    fn authentication(&self, key: &drvault_keyring::Key) -> blake3::Hash {
        let bare = AuditEntry {
            auth: None,
            ..self.clone()
        };
        blake3::keyed_hash(key.expose(), &bare.canonical_bytes())
    }

    /// True when full keys wrote the entry: always in a repository without host keys (`key`
    /// `None`: no one else can write entries), else when its authentication verifies.
    pub fn is_authentic(&self, key: Option<&drvault_keyring::Key>) -> bool {
        let Some(key) = key else { return true };
        self.auth
            .as_deref()
            .and_then(|a| blake3::Hash::from_hex(a).ok())
            // blake3::Hash compares in constant time.
            .is_some_and(|h| h == self.authentication(key))
    }
}

pub(crate) fn object_name(seq: u64) -> String {
    format!("{PREFIX}{seq:020}")
}

/// Checks the clear header of an entry: what a host, which cannot open entries, can check.
fn header_of_entry(name: &str, bytes: &[u8]) -> Result<()> {
    let header = Header::parse(bytes).map_err(|e| Error::integrity(name, e))?;
    if header.kind != ObjectKind::AuditEntry || header.epoch != AUDIT_EPOCH {
        return Err(Error::integrity(name, "not an audit entry"));
    }
    Ok(())
}
/// The audit log as its writers and readers see it: the targets that hold it, the keys that
/// seal and open its entries, and the local catalog's copy. It knows nothing of the repository
/// around it (`Repository::audit` hands one out), so the repository's own protocols (init, a
/// snapshot's commit) can record themselves without the log reaching back into them.
#[derive(Clone, Copy)]
pub struct AuditLog<'a> {
    store: &'a Store,
    keys: &'a Keys,
    catalog_dir: Option<&'a Path>,
}

impl<'a> AuditLog<'a> {
    pub fn new(store: &'a Store, keys: &'a Keys, catalog_dir: Option<&'a Path>) -> Self {
        AuditLog {
            store,
            keys,
            catalog_dir,
        }
    }

    fn seal(self, name: &str, entry: &AuditEntry) -> Result<Vec<u8>> {
        let (kind, sealer) = self.keys.sealer_for(ObjectKind::AuditEntry)?;
        let mut out = Vec::new();
        // The object name is the context: an entry cannot be moved to another position.
        sealer.seal(
            kind,
            false,
            name.as_bytes(),
            &entry.canonical_bytes(),
            &mut out,
        )?;
        Ok(out)
    }

    fn open(self, name: &str, bytes: &[u8]) -> Result<AuditEntry> {
        header_of_entry(name, bytes)?;
        crate::error::full_keyring(self.keys)?;
        let (_, plain) = self
            .keys
            .open(name.as_bytes(), bytes)
            .map_err(|e| Error::integrity(name, e))?;
        serde_json::from_slice(&plain).map_err(|e| Error::integrity(name, e))
    }

    /// True when the entry opens (full keys) or, for a host that cannot open entries, when its
    /// header is an audit entry's.
    fn opens_or_plausible(self, name: &str, bytes: &[u8]) -> bool {
        if self.keys.keyring().is_none() {
            return header_of_entry(name, bytes).is_ok();
        }
        self.open(name, bytes).is_ok()
    }
}

/// How an entry links to the one before it: by the previous entry's canonical hash, or (entries
/// sealed to the audit log's public key) by the hash of its stored bytes.
fn links_to_stored(bytes: &[u8]) -> bool {
    bytes.first() == Some(&drvault_keyring::SEALED_TO_PUBLIC_VERSION)
}

fn stored_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// The target that orders the log: the first by name. An entry exists once this target holds
/// it; the others get copies. Two writers (two hosts, or one that can reach only some targets)
/// therefore never commit two different entries under one sequence number: the second finds
/// the name taken on the sequencer and moves on to the next number (FORMAT.md section 17).
pub fn sequencer(store: &Store) -> Result<&Target> {
    store
        .targets()
        .iter()
        .min_by(|a, b| a.name().cmp(b.name()))
        .ok_or_else(|| Error::Invalid("the repository has no targets".into()))
}

/// Refuses to start an operation that must be recorded when the log cannot take an entry now
/// (its sequencer does not answer, or another target holds entries it cannot take), so the
/// operation is not done unrecorded. Call it before changing anything.
impl AuditLog<'_> {
    pub async fn ready(self, action: &str) -> Result<()> {
        let unaudited = |e: Error| Error::Unaudited {
            action: action.to_string(),
            reason: e.to_string(),
            done: false,
        };
        let store = self.store;
        let sequencer = sequencer(store).map_err(unaudited)?;
        let hint = self.listing_hint().await;
        let head = self
            .head_on(sequencer, hint)
            .await
            .map_err(|e| unaudited(unordered(sequencer, e)))?;
        let own = head.map_or(0, |(seq, _)| seq);
        refuse_if_behind(store, sequencer, own)
            .await
            .map_err(unaudited)
    }

    /// Appends the entry of an operation that has happened. An entry the log cannot take is the
    /// operation's failure (`Error::Unaudited` with `done`): what must be recorded is never done
    /// silently.
    pub async fn record(
        self,
        action: &str,
        details: serde_json::Value,
        result: &str,
    ) -> Result<AuditEntry> {
        self.append(action, details, result)
            .await
            .map_err(|e| Error::Unaudited {
                action: action.to_string(),
                reason: e.to_string(),
                done: true,
            })
    }

    /// Records an operation's outcome and returns it: its details when it succeeded (an entry the
    /// log cannot take turns the success into `Error::Unaudited`), its failure otherwise (recorded
    /// when the log takes it; the operation's own error is returned either way). The details name
    /// epochs, slots and counts, never key material.
    pub async fn record_outcome<T>(
        self,
        action: &str,
        outcome: Result<T>,
        details: impl FnOnce(&T) -> serde_json::Value,
    ) -> Result<T> {
        match outcome {
            Ok(t) => {
                self.record(action, details(&t), "ok").await?;
                Ok(t)
            }
            Err(e) => {
                if let Err(a) = self
                    .append(action, serde_json::json!({}), &format!("failed: {e}"))
                    .await
                {
                    tracing::warn!(
                        "the failure of {action} was not recorded in the audit log: {a}"
                    );
                }
                Err(e)
            }
        }
    }

    /// Appends one entry after the newest one: written create-only to the sequencer first, then
    /// copied to every other target (one that misses it owes it until `drvault sync`). When the
    /// sequencer cannot be written, nothing is written anywhere and the error says why.
    pub async fn append(
        self,
        action: &str,
        details: serde_json::Value,
        result: &str,
    ) -> Result<AuditEntry> {
        let store = self.store;
        let sequencer = sequencer(store)?;
        let hint = self.listing_hint().await;
        self.catch_up(sequencer, hint).await;
        let own = seqs_from(sequencer, hint)
            .await
            .map_err(|e| unordered(sequencer, e))?
            .last()
            .copied()
            .unwrap_or(0);
        refuse_if_behind(store, sequencer, own).await?;
        for attempt in 0..32u64 {
            if attempt > 0 {
                // Many hosts committing at once: spread the next tries out.
                let noise: [u8; 8] = drvault_keyring::random_bytes()?;
                let jitter = u64::from_le_bytes(noise) % (20 * attempt.min(10));
                tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
            }
            let head = self
                .head_on(sequencer, hint)
                .await
                .map_err(|e| unordered(sequencer, e))?;
            let entry = AuditEntry {
                seq: head.as_ref().map_or(1, |(seq, _)| seq + 1),
                time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                actor: crate::host::actor(),
                action: action.to_string(),
                details: crate::format::canonical_json(&details),
                result: result.to_string(),
                prev: head.map_or_else(|| GENESIS.to_string(), |(_, prev)| prev),
                auth: None,
            };
            let mut entry = entry;
            if let Some(key) = self.keys.keyring().and_then(|kr| kr.audit_auth_key()) {
                entry.auth = Some(entry.authentication(&key).to_hex().to_string());
            }
            let name = object_name(entry.seq);
            let sealed = Bytes::from(self.seal(&name, &entry)?);
            match sequencer.put_new(&name, sealed.clone(), false).await {
                Ok(()) => {}
                // Another writer took this number first (read the new head and try the next), or
                // a retried put of ours found its own first attempt: the bytes say which (the
                // nonce makes every sealing unique).
                Err(Error::AlreadyExists { .. }) => match sequencer.get(&name).await {
                    Ok(stored) if stored == sealed => {}
                    _ => continue,
                },
                Err(e) => return Err(unordered(sequencer, e)),
            }
            crate::failpoint::hit("audit.after-sequencer").await;
            replicate(store, sequencer, &name, &sealed).await;
            self.copy_to_catalog(&entry).await;
            return Ok(entry);
        }
        Err(Error::Unavailable {
            target: sequencer.name().to_string(),
            reason:
                "could not append to the audit log: too many concurrent writers; run the command \
                 again"
                    .into(),
        })
    }

    /// The anchor of the newest entry on the sequencer that opens: where the log stands, for a
    /// keyring written now to record (FORMAT.md section 17). `None` for an empty log.
    pub async fn head_anchor(self) -> Result<Option<AuditRef>> {
        let sequencer = sequencer(self.store)?;
        let hint = self.listing_hint().await;
        for seq in seqs_from(sequencer, hint).await?.into_iter().rev() {
            let name = object_name(seq);
            let bytes = sequencer.get(&name).await?;
            if let Ok(e) = self.open(&name, &bytes) {
                return Ok(Some(e.anchor()));
            }
        }
        Ok(None)
    }

    /// Gives the sequencer the entries other targets hold beyond its own newest (it was down when
    /// they were written, or they were written before it ordered the log), so the next entry
    /// follows them instead of forking from an older head. Only entries that open under the audit
    /// key are copied; failures leave the append to go on from the sequencer's own head.
    async fn catch_up(self, sequencer: &Target, hint: u64) {
        // A host key cannot open entries, so it cannot tell another target's entries from planted
        // ones: it copies nothing (the next append by full keys catches up).
        if self.keys.keyring().is_none() {
            return;
        }
        let Ok(own) = seqs_from(sequencer, hint).await else {
            return;
        };
        let own_head = own.last().copied().unwrap_or(0);
        let mut others: Vec<&Target> = self
            .store
            .targets()
            .iter()
            .filter(|t| t.name() != sequencer.name())
            .collect();
        others.sort_by(|a, b| a.name().cmp(b.name()));
        for t in others {
            let Ok(beyond) = seqs_after(t, own_head).await else {
                continue;
            };
            let mut beyond: Vec<(u64, String)> = beyond
                .into_iter()
                .map(|seq| (seq, object_name(seq)))
                .collect();
            beyond.sort();
            for (_, name) in beyond {
                let Ok(bytes) = t.get(&name).await else { break };
                if !self.opens_or_plausible(&name, &bytes) {
                    break;
                }
                match sequencer.put_new(&name, bytes.clone(), false).await {
                    Ok(()) => {}
                    // The same entry (copied already), or another one: a fork this target's later
                    // entries chain to. Nothing more is taken from it.
                    Err(Error::AlreadyExists { .. }) => match sequencer.get(&name).await {
                        Ok(own) if own == bytes => {}
                        _ => break,
                    },
                    Err(_) => return,
                }
            }
        }
    }
}

/// The next number must follow every entry any target holds: when the sequencer is still behind
/// another target after catching up (that target's entries do not open, or fork from the
/// sequencer's), appending would put a second entry under a number already taken.
async fn refuse_if_behind(store: &Store, sequencer: &Target, own: u64) -> Result<()> {
    for t in store
        .targets()
        .iter()
        .filter(|t| t.name() != sequencer.name())
    {
        if let Ok(beyond) = seqs_after(t, own).await {
            if let Some(theirs) = beyond.last() {
                return Err(Error::Integrity {
                    object: format!("{PREFIX} on target {}", t.name()),
                    reason: format!(
                        "it holds audit entries up to {theirs} that the log's sequencer (target \
                         {}, at {own}) lacks and cannot take (they do not open, or they fork \
                         from its own); no entry was written. Run `drvault check --all-targets` \
                         and see docs/OPERATIONS.md",
                        sequencer.name()
                    ),
                });
            }
        }
    }
    Ok(())
}

fn unordered(sequencer: &Target, e: Error) -> Error {
    Error::Unavailable {
        target: sequencer.name().to_string(),
        reason: format!(
            "it orders the audit log (the first target by name) and cannot be read or written \
             now ({e}); no entry was written, so the log stays one chain. Run the command again \
             when it answers"
        ),
    }
}

/// Copies a committed entry to the targets other than the sequencer. A target holding another
/// entry under that number (written by a drvault before 0.7, which could fork the log) keeps
/// it: evidence is never overwritten; `drvault check --all-targets` reports the difference.
async fn replicate(store: &Store, sequencer: &Target, name: &str, sealed: &Bytes) {
    let others = store
        .targets()
        .iter()
        .filter(|t| t.name() != sequencer.name());
    for t in others {
        let outcome = match t.put_new(name, sealed.clone(), false).await {
            Ok(()) => Ok(()),
            Err(Error::AlreadyExists { .. }) => match t.get(name).await {
                Ok(b) if b == *sealed => Ok(()),
                Ok(_) => {
                    tracing::warn!(
                        "target {} holds another {name} than target {} (a forked audit log from \
                         before 0.7): both are kept; see docs/OPERATIONS.md",
                        t.name(),
                        sequencer.name()
                    );
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            tracing::warn!(
                "target {} missed {name} ({e}); it owes the entry until `drvault sync`",
                t.name()
            );
            store.owe(t.name(), name);
        }
    }
}

impl AuditLog<'_> {
    async fn copy_to_catalog(self, entry: &AuditEntry) {
        if let Some(dir) = self.catalog_dir.map(Path::to_path_buf) {
            let e = entry.clone();
            let r = tokio::task::spawn_blocking(move || Catalog::open(&dir)?.add_audit(&e)).await;
            if let Err(err) = r.map_err(Error::task).and_then(|r| r) {
                tracing::warn!("audit entry {} not copied to the catalog: {err}", entry.seq);
            }
        }
    }

    /// The newest entry on `target`: the one with the highest sequence number. When that one does
    /// not open (damaged, or planted by a target), the chain is broken there and `verify` says so;
    /// the next entry still takes the next number and links to the newest entry that opens, so one
    /// bad object cannot stop every later record.
    async fn head_on(self, target: &Target, hint: u64) -> Result<Option<(u64, String)>> {
        let seqs = seqs_from(target, hint).await?;
        let Some(&newest) = seqs.last() else {
            return Ok(None);
        };
        // Where entries link to stored bytes, the new one links to the newest entry's bytes; only
        // full keys can also see that it opens.
        let by_stored = self.keys.takes_hosts();
        for &seq in seqs.iter().rev() {
            let name = object_name(seq);
            let bytes = target.get(&name).await?;
            if by_stored {
                if self.opens_or_plausible(&name, &bytes) {
                    return Ok(Some((newest, stored_hash(&bytes))));
                }
                continue;
            }
            match self.open(&name, &bytes) {
                Ok(e) => {
                    if seq != newest {
                        tracing::warn!(
                            "audit entries {}..={newest} on target {} do not open; the next entry \
                         links to entry {seq} (`drvault audit verify` names the break)",
                            seq + 1,
                            target.name()
                        );
                    }
                    return Ok(Some((newest, e.hash())));
                }
                Err(Error::Integrity { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        if hint > 1 && seqs.first().is_some_and(|first| *first > 1) {
            // Nothing from the hint on opens: look at the whole log.
            return Box::pin(self.head_on(target, 0)).await;
        }
        tracing::warn!(
            "no audit entry on target {} opens; the next one starts a new chain after {newest}",
            target.name()
        );
        Ok(Some((newest, GENESIS.to_string())))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_hashes_the_same_after_a_round_trip_through_its_encoding() {
        // Floats that a best-effort parser would not give back exactly.
        for (i, x) in [
            0.1f64,
            1.0 / 3.0,
            0.036_017_34,
            2.220_446_049_250_313e-16,
            123_456.789_012_345_67,
        ]
        .iter()
        .enumerate()
        {
            let e = AuditEntry {
                seq: i as u64 + 1,
                time: "2026-11-25T00:00:00.000Z".into(),
                actor: "root@host".into(),
                action: "drill.run".into(),
                details: crate::format::canonical_json(
                    &serde_json::json!({ "z": x, "a": [x, { "y": x, "b": 1 }] }),
                ),
                result: "ok".into(),
                prev: GENESIS.into(),
                auth: None,
            };
            let back: AuditEntry = serde_json::from_slice(&e.canonical_bytes()).unwrap();
            assert_eq!(back.hash(), e.hash(), "{x}");
            assert_eq!(back.canonical_bytes(), e.canonical_bytes());
        }
    }
}
