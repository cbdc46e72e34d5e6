//! Reading past hidden versions: on a locked, versioned target a delete or an overwrite by
//! someone else only hides the good version, and every object is named by the hash of its bytes,
//! so a read may fall back to the newest version whose bytes match the name. What was read that
//! way is noted for `check` to name and `repair` to restore.

use bytes::Bytes;

use super::{locked, Store};
use crate::target::Target;

impl Store {
    /// The newest intact version of `name` on a locked target, noted in [`Self::hidden`].
    pub(super) async fn read_history(&self, name: &str) -> Option<Bytes> {
        if !self.targets.iter().any(|t| t.lock().is_some())
            || locked(&self.no_history).contains(name)
        {
            return None;
        }
        let mut failed = false;
        for t in self.read_order() {
            let Some(lock) = t.lock() else { continue };
            match lock.intact_version(name).await {
                Ok(Some((version, bytes))) => {
                    tracing::warn!(
                        "{name} on target {}: the current version is damaged or deleted; read \
                         the intact version {version} (run `drvault repair`)",
                        t.name()
                    );
                    let mut h = locked(&self.hidden);
                    if !h.iter().any(|(_, n, _)| n == name) {
                        h.push((t.name().to_string(), name.to_string(), version));
                    }
                    return Some(bytes);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::info!("versions of {name} on target {}: {e}", t.name());
                    failed = true;
                }
            }
        }
        if !failed {
            locked(&self.no_history).insert(name.to_string());
        }
        None
    }

    /// Forgets what [`Self::hidden`] noted (a check starting a pass of its own).
    pub fn clear_hidden(&self) {
        locked(&self.hidden).clear();
        locked(&self.no_history).clear();
    }

    /// The target and version an earlier read of `name` found intact in the history.
    pub(super) fn known_hidden(&self, name: &str) -> Option<(&Target, String)> {
        let hidden = locked(&self.hidden);
        let (target, _, version) = hidden.iter().find(|(_, n, _)| n == name)?;
        let t = self.targets.iter().find(|t| t.name() == target)?;
        Some((t, version.clone()))
    }

    /// (target, object, version) of the objects read from a locked target's history in this
    /// process because their current version was damaged or deleted: what `check` names and
    /// `repair` restores.
    pub fn hidden(&self) -> Vec<(String, String, String)> {
        locked(&self.hidden).clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A thread that panicked while noting a hidden version poisons the lock; what it noted
    /// must still be reported (an empty answer would let `check` pass over the damage).
    #[test]
    fn hidden_versions_survive_a_poisoned_lock() {
        let store = std::sync::Arc::new(crate::testing::memory_store());
        locked(&store.hidden).push(("t".into(), "data/ab/abc".into(), "v1".into()));
        let poisoner = store.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.hidden.lock().unwrap();
            panic!("a job thread panics holding the lock");
        })
        .join();
        assert!(store.hidden.is_poisoned());
        assert_eq!(store.hidden().len(), 1);
        store.owe("t", "index/x");
        assert_eq!(store.owed().len(), 1);
        store.clear_hidden();
        assert!(store.hidden().is_empty());
    }
}
