use serde::{Deserialize, Serialize};

use crate::Id;

pub const PRUNE_MARK_VERSION: u32 = 1;

/// The plaintext of a prune mark (`prune/<id>`, docs/FORMAT.md §18): packs that a prune found
/// unneeded at `created`, to be deleted by a later prune once no backup that began before the
/// mark can still be running.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneMark {
    pub version: u32,
    /// Unix seconds, taken just before the mark was sealed.
    pub created: i64,
    /// The marked packs, sorted.
    pub packs: Vec<Id>,
}
