//! An audit log entry, `audit/<seq>` (docs/FORMAT.md), sealed under the audit epoch, and its
//! canonical encoding, which the chain hashes; appending and verifying the chain are
//! `crate::audit`'s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::AuditRef;

/// One entry of the hash-chained audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// RFC 3339, UTC.
    pub time: String,
    /// `user@host` of the process that acted.
    pub actor: String,
    /// What was done, e.g. `key.rotate`, `key.reencrypt`, `drill.run`.
    pub action: String,
    /// What it concerned (epochs, slots, figures); never key material.
    pub details: serde_json::Value,
    /// `ok`, or `failed: <reason>`.
    pub result: String,
    /// Hex BLAKE3 of the previous entry's canonical encoding (`crate::audit::GENESIS` for the first).
    pub prev: String,
    /// Written by full keys in a repository that takes host keys: hex keyed BLAKE3 of the entry
    /// without this field, under a key hosts do not hold. Only such entries may withdraw
    /// commits (`snapshots.forget`): a host key appends entries too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
}

/// JSON with object keys sorted at every level and no insignificant whitespace. Numbers must
/// survive a decode and re-encode unchanged (serde_json's `float_roundtrip`), since the chain
/// hashes re-encoded entries.
pub fn canonical_json(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let sorted: BTreeMap<&String, serde_json::Value> =
                m.iter().map(|(k, v)| (k, canonical_json(v))).collect();
            serde_json::Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.iter().map(canonical_json).collect())
        }
        other => other.clone(),
    }
}

impl AuditEntry {
    /// The canonical encoding the chain hashes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let v = serde_json::to_value(self).unwrap_or_default();
        serde_json::to_vec(&canonical_json(&v)).unwrap_or_default()
    }

    pub fn hash(&self) -> String {
        blake3::hash(&self.canonical_bytes()).to_hex().to_string()
    }

    /// What a snapshot (or any object anchoring the chain) records of this entry.
    pub fn anchor(&self) -> AuditRef {
        AuditRef {
            seq: self.seq,
            hash: *blake3::hash(&self.canonical_bytes()).as_bytes(),
        }
    }
}
