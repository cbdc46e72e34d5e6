//! The maintenance lease's objects, `locks/lease-<seq>` (docs/FORMAT.md section 16), stored as
//! JSON in the clear: every host must read them before it can open anything.

use serde::{Deserialize, Serialize};

/// Who holds (or last held) the maintenance lease, and until when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseBody {
    pub purpose: String,
    pub host: String,
    pub pid: u32,
    /// Unix seconds.
    pub acquired: i64,
    pub expires: i64,
    /// Random; tells the holder its own lease from another process's.
    pub token: String,
    /// Boot id and PID namespace of the holder (`host::pid_scope`): its pid is only checked by
    /// processes that share both. Empty in leases of older drvaults.
    #[serde(default)]
    pub pid_scope: String,
}
