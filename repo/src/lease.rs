//! The maintenance lease and backup sessions: how exclusive work (re-encryption, key changes)
//! and ordinary backups from other hosts stay out of each other's way (docs/FORMAT.md §16).
//!
//! The lease is a sequence of objects `locks/lease-<seq>` (20 decimal digits), each created
//! with a create-only put; the one with the highest sequence number is the current lease. Taking
//! an expired lease over, or renewing one's own, means creating the next number: of two
//! processes racing for it, exactly one create succeeds. No object is ever overwritten, and no
//! delete is needed for correctness.
//!
//! A backup announces itself with `locks/session-<random>` (host, pid, start, the epoch it
//! seals under) and removes it when it ends. Re-encryption does not retire an epoch while a
//! live session seals under it.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::host::hostname;
use crate::store::Store;
use crate::{Error, Result};

const LEASE_PREFIX: &str = "locks/lease-";
const SESSION_PREFIX: &str = "locks/session-";
/// A session older than this is taken for the leftover of a crashed backup.
pub const SESSION_STALE_AFTER: Duration = Duration::from_secs(7 * 86_400);

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
}

/// A held lease. Renew it before `expires`; release it when done.
#[derive(Debug)]
pub struct Lease {
    seq: u64,
    body: LeaseBody,
    ttl: Duration,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn lease_name(seq: u64) -> String {
    format!("{LEASE_PREFIX}{seq:020}")
}

/// The current lease: (sequence number, body), if any lease object exists.
async fn current(store: &Store) -> Result<Option<(u64, LeaseBody)>> {
    let mut seqs: Vec<u64> = store
        .list("locks/")
        .await?
        .into_iter()
        .filter_map(|l| {
            l.name
                .strip_prefix(LEASE_PREFIX)
                .and_then(|s| s.parse().ok())
        })
        .collect();
    seqs.sort_unstable();
    let Some(&seq) = seqs.last() else {
        return Ok(None);
    };
    let name = lease_name(seq);
    let bytes = store.get(&name).await?;
    let body: LeaseBody = serde_json::from_slice(&bytes)
        .map_err(|e| Error::integrity(&name, format!("not a lease: {e}")))?;
    Ok(Some((seq, body)))
}

impl Lease {
    /// Takes the lease for `purpose`, or fails with `Error::Locked` naming the holder.
    pub async fn acquire(store: &Store, purpose: &str, ttl: Duration) -> Result<Lease> {
        let next = match current(store).await? {
            Some((_, held)) if held.expires > now() && !holder_is_dead(&held) => {
                return Err(locked(&held))
            }
            Some((seq, _)) => seq + 1,
            None => 1,
        };
        let t = now();
        let lease = Lease {
            seq: next,
            body: LeaseBody {
                purpose: purpose.to_string(),
                host: hostname(),
                pid: std::process::id(),
                acquired: t,
                expires: t + ttl.as_secs() as i64,
                token: hex::encode(drvault_keyring::random_bytes::<16>()?),
            },
            ttl,
        };
        lease.create(store).await?;
        Ok(lease)
    }

    async fn create(&self, store: &Store) -> Result<()> {
        let bytes = serde_json::to_vec(&self.body).map_err(|e| Error::Invalid(e.to_string()))?;
        match store
            .put_new(&lease_name(self.seq), Bytes::from(bytes), false)
            .await
        {
            Ok(()) => Ok(()),
            // Another process created this number first: it holds the lease.
            Err(Error::AlreadyExists { .. }) => match current(store).await? {
                Some((_, held)) => Err(locked(&held)),
                None => Err(Error::Invalid("lost the race for the lease".into())),
            },
            Err(e) => Err(e),
        }
    }

    /// Extends the lease by its time to live. Fails when the lease was lost (it expired and
    /// another process took it over): the caller must stop its exclusive work.
    pub async fn renew(&mut self, store: &Store) -> Result<()> {
        match current(store).await? {
            Some((seq, held)) if seq == self.seq && held.token == self.body.token => {}
            Some((_, held)) => return Err(locked(&held)),
            None => return Err(Error::Invalid("the lease disappeared".into())),
        }
        self.seq += 1;
        self.body.expires = now() + self.ttl.as_secs() as i64;
        self.create(store).await?;
        // The superseded lease objects are clutter, not state.
        store.delete_best_effort(&lease_name(self.seq - 1)).await;
        Ok(())
    }

    /// Renews when less than half the time to live is left.
    pub async fn keep_alive(&mut self, store: &Store) -> Result<()> {
        if self.body.expires - now() < (self.ttl.as_secs() / 2) as i64 {
            self.renew(store).await?;
        }
        Ok(())
    }

    /// Ends the lease at once: the next acquirer need not wait for it to expire. The object is
    /// not deleted (its number must stay taken); it is rewritten as expired under the next number.
    pub async fn release(mut self, store: &Store) -> Result<()> {
        self.seq += 1;
        self.body.expires = 0;
        self.create(store).await?;
        for seq in self.seq.saturating_sub(2)..self.seq {
            store.delete_best_effort(&lease_name(seq)).await;
        }
        Ok(())
    }
}

/// A lease held by a process of this host that no longer exists (killed, crashed) is stale.
fn holder_is_dead(held: &LeaseBody) -> bool {
    held.host == hostname() && held.pid != std::process::id() && !process_exists(held.pid)
}

fn session_is_dead(s: &SessionBody) -> bool {
    s.host == hostname() && !process_exists(s.pid)
}

/// Whether a process of this host exists. Asked of the kernel (signal 0), not of /proc: under
/// systemd's ProtectProc=invisible the agent cannot see other users' processes in /proc, and
/// a root backup that looked dead would let prune or re-encryption take its data away.
fn process_exists(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    // EPERM: it exists but belongs to another user. Anything unexpected counts as alive.
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(e) if e == rustix::io::Errno::SRCH
    )
}

fn locked(held: &LeaseBody) -> Error {
    Error::Locked {
        holder: format!("{} (pid {}) for {}", held.host, held.pid, held.purpose),
        until: chrono::DateTime::from_timestamp(held.expires, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
    }
}

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
}

/// A backup in progress, announced to re-encryption.
#[derive(Debug)]
pub struct Session {
    name: String,
}

impl Session {
    pub async fn start(store: &Store, epoch: u32) -> Result<Session> {
        let name = format!(
            "{SESSION_PREFIX}{}",
            hex::encode(drvault_keyring::random_bytes::<16>()?)
        );
        let body = SessionBody {
            host: hostname(),
            pid: std::process::id(),
            started: now(),
            epoch,
            honours_marks: true,
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| Error::Invalid(e.to_string()))?;
        store.put_new(&name, Bytes::from(bytes), false).await?;
        Ok(Session { name })
    }

    /// Removes the announcement; a target that failed during the backup may keep it, and
    /// [`live_sessions`] then takes it for stale.
    pub async fn end(self, store: &Store) {
        store.delete_best_effort(&self.name).await;
    }
}

/// Live backup sessions (younger than [`SESSION_STALE_AFTER`]).
pub async fn live_sessions(store: &Store) -> Result<Vec<SessionBody>> {
    let mut out = Vec::new();
    let cutoff = now() - SESSION_STALE_AFTER.as_secs() as i64;
    for l in store.list("locks/").await? {
        if !l.name.starts_with(SESSION_PREFIX) {
            continue;
        }
        match store.get(&l.name).await {
            Ok(bytes) => match serde_json::from_slice::<SessionBody>(&bytes) {
                Ok(s) if s.started >= cutoff && !session_is_dead(&s) => out.push(s),
                Ok(_) => {}
                Err(e) => tracing::warn!("{} is not a backup session ({e}); ignored", l.name),
            },
            // Ended between the listing and the read.
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
