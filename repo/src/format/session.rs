//! A backup session's object, `locks/session-<random>` (docs/FORMAT.md sections 16 and 18),
//! stored as JSON in the clear: maintenance on any host reads it without keys.

use serde::{Deserialize, Serialize};

/// A running backup, as it announces itself to prune and re-encryption.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionBody {
    pub host: String,
    pub pid: u32,
    pub started: i64,
    /// The data-key epoch this backup seals under.
    pub epoch: u32,
    /// The backup reads prune marks and does not refer to marked packs (drvault 0.4 on). A
    /// session without it, from an older drvault, holds every prune sweep until it ends.
    #[serde(default)]
    pub honours_marks: bool,
    /// Unix seconds of the last renewal, by the backup host's clock; 0 in sessions of
    /// drvaults without heartbeats; [`SessionBody::ENDED`] in a session whose host may not
    /// delete it (an append-only host) and rewrote it when the backup ended.
    #[serde(default)]
    pub heartbeat: i64,
    /// Boot id and PID namespace of the backup (`host::pid_scope`).
    #[serde(default)]
    pub pid_scope: String,
}

impl SessionBody {
    /// The heartbeat of an ended session that could not be deleted: older than any staleness
    /// bound, so every reader (drvault 0.5 on) takes it for dead.
    pub const ENDED: i64 = 1;
}
