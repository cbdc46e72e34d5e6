//! Object lock (WORM) on S3 targets (docs/FORMAT.md section 15, "Object lock"): every object
//! drvault writes to a locked target carries a retention; maintenance extends the retention of
//! what snapshots still need before it runs out; reads fall back past versions an attacker put
//! on top of the good one.
//!
//! Writes go through object_store (the retention travels as `x-amz-object-lock-*` headers on
//! every request of that target's client). What object_store cannot do (read and extend one
//! object's retention, list and read an object's versions) is in [`s3api`], signed with
//! aws-sigv4 and sent with reqwest (docs/DECISIONS.md, "Object lock").

pub mod s3api;

use std::time::Duration;

use crate::{Error, Result};

/// The S3 object lock modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Nobody, not even the account's root, can shorten or remove the retention.
    Compliance,
    /// Principals with `s3:BypassGovernanceRetention` can.
    Governance,
}

impl LockMode {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "compliance" => Ok(LockMode::Compliance),
            "governance" => Ok(LockMode::Governance),
            other => Err(Error::Invalid(format!(
                "object_lock_mode {other:?}: use \"compliance\" or \"governance\""
            ))),
        }
    }

    /// The word S3 uses.
    pub fn as_s3(&self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }
}

/// The shortest retention drvault accepts: maintenance, run every quarter retention, must be
/// able to fail once and still renew in time.
pub const MIN_RETENTION: Duration = Duration::from_secs(2 * 86_400);
/// The longest: a typo in compliance mode would lock data (and its cost) for that long.
pub const MAX_RETENTION: Duration = Duration::from_secs(10 * 366 * 86_400);

/// A target's lock: every object written gets `retention` from the time of writing, and
/// maintenance renews it for what snapshots still need once less than half of it is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockPolicy {
    pub mode: LockMode,
    pub retention: Duration,
}

impl LockPolicy {
    /// The rule (docs/DECISIONS.md, "Object lock"): prune renews a kept object's lock when
    /// less than half the retention is left. An object that was not renewed has at least half
    /// left, so prune run at least every quarter retention may fail once and still renew it in
    /// time. A retention under [`MIN_RETENTION`] (a quarter is 12 hours) or over
    /// [`MAX_RETENTION`] is refused.
    pub fn new(mode: LockMode, retention: Duration) -> Result<Self> {
        if retention < MIN_RETENTION {
            return Err(Error::Invalid(format!(
                "object_lock_retention of {} s is too short: prune renews the lock of what is \
                 kept when less than half of it is left, and must run at least every quarter \
                 retention so that one failed run does no harm; use at least 2d (30d is usual)",
                retention.as_secs()
            )));
        }
        if retention > MAX_RETENTION {
            return Err(Error::Invalid(format!(
                "object_lock_retention of {} days is longer than 10 years: nothing could delete \
                 those objects (or stop paying for them) before then; check the value",
                retention.as_secs() / 86_400
            )));
        }
        Ok(LockPolicy { mode, retention })
    }

    /// The longest prune may wait between runs (one failed run included).
    pub fn renewal_interval(&self) -> Duration {
        self.retention / 4
    }

    /// Until when an object written at `now` is locked.
    pub fn until(&self, now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        chrono::Duration::from_std(self.retention)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
    }

    /// Whether an object locked until `until` needs renewing at `now`.
    pub fn needs_renewal(
        &self,
        until: Option<chrono::DateTime<chrono::Utc>>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> bool {
        let half = chrono::Duration::from_std(self.retention / 2).unwrap_or_default();
        until.is_none_or(|u| u < now + half)
    }
}

/// A locked target's policy and the S3 calls that keep it.
#[derive(Debug)]
pub struct Lock {
    pub policy: LockPolicy,
    pub api: s3api::S3Api,
}

impl Lock {
    /// The newest version of `name` (current one included) whose bytes hash to its name, with
    /// its version id: on a versioned, locked bucket an overwrite or a delete by someone else
    /// only hides the good version. `None` when no version is intact, and for every object not
    /// named by its hash (`config`, audit entries, bookkeeping): nothing could tell a good old
    /// version from a stale one, and a released lease would come back.
    pub async fn intact_version(&self, name: &str) -> Result<Option<(String, bytes::Bytes)>> {
        let last = name.rsplit('/').next().unwrap_or(name);
        let Some(id) = crate::Id::from_hex(last) else {
            return Ok(None);
        };
        let accept = |b: &[u8]| crate::Id::of_stored(b) == id;
        for v in self.api.versions(name).await? {
            if v.delete_marker {
                continue;
            }
            match self.api.get_version(name, &v.id, None).await {
                Ok(b) if accept(&b) => return Ok(Some((v.id, b))),
                Ok(_) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// S3's timestamp format for retention dates.
pub fn s3_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_refuses_a_retention_too_short_to_renew() {
        let mode = LockMode::parse("Compliance").unwrap();
        assert!(LockPolicy::new(mode, Duration::from_secs(86_400)).is_err());
        let p = LockPolicy::new(mode, Duration::from_secs(30 * 86_400)).unwrap();
        assert_eq!(p.renewal_interval(), Duration::from_secs(30 * 86_400 / 4));
        assert!(LockPolicy::new(mode, Duration::from_secs(20 * 366 * 86_400)).is_err());
        let now = chrono::Utc::now();
        assert!(p.needs_renewal(None, now));
        assert!(p.needs_renewal(Some(now + chrono::Duration::days(10)), now));
        assert!(!p.needs_renewal(Some(now + chrono::Duration::days(20)), now));
        assert!(LockMode::parse("forever").is_err());
    }
}

/// The objects of a locked target that keep the repository: everything but the bookkeeping
/// under `locks/` (sessions, leases), which is rewritten and removed by design.
async fn kept_objects(target: &crate::target::Target) -> Result<Vec<String>> {
    Ok(target
        .list("")
        .await?
        .into_iter()
        .map(|l| l.name)
        .filter(|n| !n.starts_with("locks/"))
        .collect())
}

/// What a locked target's retentions look like now.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Survey {
    pub objects: u64,
    /// The object whose lock ends first, and when.
    pub shortest: Option<(String, chrono::DateTime<chrono::Utc>)>,
    /// Objects locked for less than asked (or not at all: `None`).
    pub short: Vec<(String, Option<chrono::DateTime<chrono::Utc>>)>,
}

/// Reads every kept object's retention (one HEAD each, 16 at a time); objects locked until
/// before `at_least` (or not locked) are listed in `short`.
pub async fn survey(
    target: &crate::target::Target,
    lock: &Lock,
    at_least: chrono::DateTime<chrono::Utc>,
) -> Result<Survey> {
    use futures::{StreamExt, TryStreamExt};
    let names = kept_objects(target).await?;
    let found: Vec<(String, Option<chrono::DateTime<chrono::Utc>>)> = futures::stream::iter(names)
        .map(|n| async move {
            match lock.api.retention(&n, None).await {
                Ok(r) => Ok(Some((n, r.map(|(_, u)| u)))),
                // Deleted since the listing (a forget, a prune): nothing to survey.
                Err(Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?
        .into_iter()
        .flatten()
        .collect();
    let mut s = Survey {
        objects: found.len() as u64,
        ..Default::default()
    };
    for (name, until) in found {
        if until.is_none_or(|u| u < at_least) {
            s.short.push((name.clone(), until));
        }
        if let Some(u) = until {
            if s.shortest.as_ref().is_none_or(|(_, best)| u < *best) {
                s.shortest = Some((name, u));
            }
        }
    }
    s.short.sort();
    Ok(s)
}

/// What a renewal did.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Renewal {
    /// Locked versions whose retention was extended.
    pub renewed: u64,
    /// Versions without any lock (not written through drvault's locked client: an
    /// overwrite by someone else, or an object from before the lock), left as they are.
    pub unlocked: u64,
}

/// Renews every locked version of every object outside `locks/`, current or not, whose
/// retention ends within half the policy's retention, to a full retention from now. Every
/// version, not only the current one: when someone put a version on top of the good one, the
/// good one must stay locked (it is what reads fall back to and `repair` restores), and an
/// object hidden by a delete marker keeps its versions. Versions without a lock are not ours
/// and are left alone. Maintenance runs this under its lease.
pub async fn renew(lock: &Lock) -> Result<Renewal> {
    use futures::{StreamExt, TryStreamExt};
    let now = chrono::Utc::now();
    let until = lock.policy.until(now);
    let versions: Vec<(String, s3api::Version)> = lock
        .api
        .versions_under("")
        .await?
        .into_iter()
        .filter(|(n, v)| !v.delete_marker && !n.starts_with("locks/"))
        .collect();
    let outcomes: Vec<Option<bool>> = futures::stream::iter(versions)
        .map(|(n, v)| async move {
            let current = match lock.api.retention(&n, Some(&v.id)).await {
                Ok(r) => r,
                Err(Error::NotFound { .. }) => return Ok(Some(false)),
                Err(e) => return Err(e),
            };
            let Some((_, current)) = current else {
                return Ok(None);
            };
            if !lock.policy.needs_renewal(Some(current), now) {
                return Ok(Some(false));
            }
            lock.api
                .extend(&n, Some(&v.id), lock.policy.mode.as_s3(), until)
                .await?;
            Ok::<_, Error>(Some(true))
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    Ok(Renewal {
        renewed: outcomes.iter().filter(|o| **o == Some(true)).count() as u64,
        unlocked: outcomes.iter().filter(|o| o.is_none()).count() as u64,
    })
}
