//! An audit log entry, `audit/<seq>` (docs/FORMAT.md), sealed under the audit epoch; the chain
//! and its hashing are `crate::audit`'s.

use serde::{Deserialize, Serialize};

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
