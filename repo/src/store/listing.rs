//! Listing the objects under a prefix across targets: the union of what answers, the complete
//! listing an operation that deletes or judges absence needs, and listings of a majority.

use super::{Listed, Store};
use crate::target::Target;
use crate::{Error, Result};

/// Adds one target's listing to the union of listings. An object listed by several targets
/// takes its newest copy's time: it is as young as its youngest copy.
fn add_listing(seen: &mut std::collections::BTreeMap<String, Listed>, list: Vec<Listed>) {
    for l in list {
        seen.entry(l.name.clone())
            .and_modify(|s| s.last_modified = s.last_modified.max(l.last_modified))
            .or_insert(l);
    }
}

impl Store {
    /// The union of the objects under `prefix` on every reachable target.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        // Targets that failed earlier in this run are left out while another target answers.
        let listed: Vec<&Target> = match self
            .targets
            .iter()
            .filter(|t| !t.is_degraded())
            .collect::<Vec<_>>()
        {
            healthy if !healthy.is_empty() => healthy,
            _ => self.targets.iter().collect(),
        };
        let results = futures::future::join_all(listed.iter().map(|t| t.list(prefix))).await;
        let mut seen = std::collections::BTreeMap::new();
        let mut last = None;
        let mut any = false;
        for (t, r) in listed.iter().zip(results) {
            match r {
                Ok(list) => {
                    any = true;
                    add_listing(&mut seen, list);
                }
                Err(e) => {
                    tracing::warn!("target {}: cannot list {prefix}: {e}", t.name());
                    last = Some(e);
                }
            }
        }
        match (any, last) {
            (false, Some(e)) => Err(e),
            _ => Ok(seen.into_values().collect()),
        }
    }

    /// The objects under `prefix` on every target, for decisions that delete objects or destroy
    /// keys: every target is asked (also those that failed earlier in this run), and one that
    /// cannot answer makes it an [`Error::Incomplete`] naming the target and `action`. A
    /// union of partial listings would let an object that only the silent target holds look
    /// absent, or unreferenced.
    pub async fn list_complete(&self, prefix: &str, action: &str) -> Result<Vec<Listed>> {
        let results = futures::future::join_all(self.targets.iter().map(|t| t.list(prefix))).await;
        let mut seen = std::collections::BTreeMap::new();
        for (t, r) in self.targets.iter().zip(results) {
            match r {
                Ok(list) => {
                    add_listing(&mut seen, list);
                }
                Err(e) => {
                    return Err(Error::Incomplete {
                        action: action.to_string(),
                        target: t.name().to_string(),
                        reason: e.to_string(),
                    })
                }
            }
        }
        Ok(seen.into_values().collect())
    }

    /// The names from [`Self::list_complete`].
    pub async fn list_names_complete(&self, prefix: &str, action: &str) -> Result<Vec<String>> {
        Ok(self
            .list_complete(prefix, action)
            .await?
            .into_iter()
            .map(|l| l.name)
            .collect())
    }

    /// The objects under `prefix` from a listing of more than half the targets (every target
    /// is asked). Two such listings share a target, which is what makes the lease exclusive
    /// (see [`Self::create_on_majority`]).
    pub async fn list_majority(&self, prefix: &str) -> Result<Vec<Listed>> {
        self.list_at_least(prefix, self.targets.len() / 2 + 1).await
    }

    /// The objects under `prefix` from a listing to which at least `min` targets answered.
    pub async fn list_at_least(&self, prefix: &str, min: usize) -> Result<Vec<Listed>> {
        let results = futures::future::join_all(self.targets.iter().map(|t| t.list(prefix))).await;
        let mut seen = std::collections::BTreeMap::new();
        let mut answered = 0;
        let mut reasons = Vec::new();
        for (t, r) in self.targets.iter().zip(results) {
            match r {
                Ok(list) => {
                    answered += 1;
                    add_listing(&mut seen, list);
                }
                Err(e) => reasons.push(format!("{}: {e}", t.name())),
            }
        }
        if answered < min {
            return Err(Error::Quorum {
                object: prefix.to_string(),
                held: answered,
                needed: min,
                reasons: reasons.join("; "),
            });
        }
        Ok(seen.into_values().collect())
    }
}
