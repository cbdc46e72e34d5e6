//! The maintenance lease: how exclusive work (prune, re-encryption, key changes, sync, repair)
//! stays exclusive across hosts (docs/FORMAT.md §16).
//!
//! The lease is a sequence of objects `locks/lease-<seq>` (20 decimal digits), each created
//! with a create-only put on more than half the targets; the one with the highest sequence
//! number in a listing of more than half the targets is the current lease (two majorities
//! share a target, so that listing sees the newest lease whatever the write quorum). Taking an
//! expired lease over, or renewing one's own, means creating the next number: of two processes
//! racing for it, exactly one create succeeds. No object is ever overwritten, and no delete is
//! needed for correctness.
//!
//! A held lease is renewed by a task of its own every third of its time to live, so it stays
//! held through long steps (index fetches, epoch surveys) that do not call back. Before every
//! destructive step the holder calls [`Lease::keep_alive`], which fails once the lease was lost
//! or is too close to expiring for a reader whose clock is ahead by the skew bound.
//!
//! Backup sessions, the other half of the protocol, are in [`crate::session`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::format::PlainFile;
use crate::host::{hostname, is_known_dead, pid_scope};
use crate::store::Store;
use crate::{Error, Result};

const LEASE_PREFIX: &str = "locks/lease-";
pub use crate::format::CLOCK_SKEW_BOUND;

pub use crate::format::LeaseBody;

struct Held {
    seq: u64,
    body: LeaseBody,
    /// Set by `release`: the renewal task stops.
    released: bool,
}

/// What [`Lease::keep_alive`] reads, without waiting for a renewal in flight.
#[derive(Default)]
struct Status {
    expires: i64,
    /// Why the lease was lost, once it was.
    lost: Option<String>,
}

/// A held lease, renewed in the background until released.
pub struct Lease {
    held: Arc<tokio::sync::Mutex<Held>>,
    status: Arc<std::sync::Mutex<Status>>,
    renewer: tokio::task::JoinHandle<()>,
}

/// How soon a failed renewal is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn lease_name(seq: u64) -> String {
    format!("{LEASE_PREFIX}{seq:020}")
}

/// The current lease: (sequence number, body), if any lease object exists.
async fn current(store: &Store) -> Result<Option<(u64, LeaseBody)>> {
    current_from(store, store.targets().len() / 2 + 1).await
}

/// Whether the lease is held, for a reader that only needs to *see* a held lease: a held lease
/// is on more than half the targets, so any `n - n/2` targets include one of them (one of
/// two, two of three). A backup that cannot reach every target asks this.
pub async fn held_lease_visible(store: &Store) -> Result<Option<LeaseBody>> {
    let n = store.targets().len();
    Ok(current_from(store, n - n / 2)
        .await?
        .map(|(_, b)| b)
        .filter(LeaseBody::is_held))
}

async fn current_from(store: &Store, min_answers: usize) -> Result<Option<(u64, LeaseBody)>> {
    let mut seqs: Vec<u64> = store
        .list_at_least("locks/", min_answers)
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
    let body = LeaseBody::decode(&name, &bytes)?;
    Ok(Some((seq, body)))
}

/// The current maintenance lease (sequence number, body) when one was ever taken; readers that
/// must notice maintenance running alongside them (check) compare two readings.
pub async fn current_lease(store: &Store) -> Result<Option<(u64, LeaseBody)>> {
    current(store).await
}

impl LeaseBody {
    /// Held now, by this host's clock.
    pub fn is_held(&self) -> bool {
        self.expires > now()
    }
}

/// The next lease number (a number at the end of the range, planted or damaged, is refused).
fn next_seq(seq: u64) -> Result<u64> {
    seq.checked_add(1)
        .ok_or_else(|| Error::integrity(lease_name(seq), "lease number at the end of its range"))
}

/// More than half the targets hold lease object `seq` with `token` (and, with `exact`, with
/// exactly `body`): no other process can then hold that number.
async fn owns(store: &Store, seq: u64, body: &LeaseBody, exact: bool) -> Result<bool> {
    let copies = store.get_each(&lease_name(seq)).await?;
    let mine = copies
        .iter()
        .filter_map(|b| LeaseBody::decode("", b).ok())
        .filter(|c| {
            if exact {
                c == body
            } else {
                c.token == body.token
            }
        })
        .count();
    Ok(mine * 2 > store.targets().len())
}

/// Creates lease object `seq`; another process creating it first holds the lease. The number
/// held by a majority under this lease's token (with `exact`, this very body) is this
/// process's own earlier attempt, one that failed after it landed, and counts as created.
/// Afterwards the newest number must be `seq`: a superseded number that was deleted can be
/// created again by a process that paused, and is then not the lease.
async fn create(store: &Store, seq: u64, body: &LeaseBody, exact: bool) -> Result<()> {
    let bytes = body.encode();
    let name = lease_name(seq);
    let written_at = now();
    match store.create_on_majority(&name, Bytes::from(bytes)).await {
        Ok(()) => {}
        Err(Error::AlreadyExists { .. }) if owns(store, seq, body, exact).await? => {}
        Err(Error::AlreadyExists { .. }) => {
            return Err(match current(store).await? {
                Some((_, held)) => locked(&held),
                None => Error::Locked {
                    holder: "another process, whose lease is not readable yet".into(),
                    until: "it is written or given up".into(),
                },
            })
        }
        Err(e) => return Err(e),
    }
    store
        .check_clock(&name, written_at, CLOCK_SKEW_BOUND)
        .await?;
    match current(store).await? {
        Some((s, _)) if s == seq => Ok(()),
        Some((_, held)) => Err(locked(&held)),
        None => Err(Error::LeaseLost(
            "it disappeared right after it was taken".into(),
        )),
    }
}

impl Lease {
    /// Takes the lease for `purpose`, or fails with `Error::Locked` naming the holder.
    pub async fn acquire(store: &Store, purpose: &str, ttl: Duration) -> Result<Lease> {
        let next = match current(store).await? {
            Some((_, held)) if held.expires > now() && !holder_is_dead(&held) => {
                return Err(locked(&held))
            }
            Some((seq, _)) => next_seq(seq)?,
            None => 1,
        };
        let t = now();
        let body = LeaseBody {
            purpose: purpose.to_string(),
            host: hostname(),
            pid: std::process::id(),
            acquired: t,
            expires: t + ttl.as_secs() as i64,
            token: hex::encode(drvault_keyring::random_bytes::<16>()?),
            pid_scope: pid_scope(),
        };
        create(store, next, &body, false).await?;
        let status = Arc::new(std::sync::Mutex::new(Status {
            expires: body.expires,
            lost: None,
        }));
        let held = Arc::new(tokio::sync::Mutex::new(Held {
            seq: next,
            body,
            released: false,
        }));
        let renewer = tokio::spawn(renew_until_released(
            store.clone(),
            held.clone(),
            status.clone(),
            ttl,
        ));
        Ok(Lease {
            held,
            status,
            renewer,
        })
    }

    /// Confirms the lease before a destructive step: fails when it was lost (it expired and
    /// another process took it over), or when renewals have failed for so long that a process
    /// whose clock runs ahead by the skew bound could take it for expired. The caller must
    /// stop its exclusive work.
    pub async fn keep_alive(&self, _store: &Store) -> Result<()> {
        let status = self
            .status
            .lock()
            .map_err(|_| Error::Internal("lease status lock poisoned".into()))?;
        if let Some(why) = &status.lost {
            return Err(Error::LeaseLost(why.clone()));
        }
        if status.expires - now() <= CLOCK_SKEW_BOUND {
            return Err(Error::LeaseLost(format!(
                "it could not be renewed and expires at {}",
                rfc3339(status.expires)
            )));
        }
        Ok(())
    }

    /// Ends the lease at once: the next acquirer need not wait for it to expire. The object is
    /// not deleted (its number must stay taken); it is rewritten as expired under the next number.
    pub async fn release(self, store: &Store) -> Result<()> {
        let lost = self
            .status
            .lock()
            .map(|s| s.lost.is_some())
            .unwrap_or(false);
        let result = {
            let mut held = self.held.lock().await;
            held.released = true;
            if lost {
                Ok(())
            } else {
                release_held(store, &mut held).await
            }
        };
        self.renewer.abort();
        result
    }
}

/// Writes the held lease again as expired under the next number. A number our own renewal
/// took after all (it reported a failure but landed) is skipped for the one after it. Older
/// numbers are deleted only once the release is written.
async fn release_held(store: &Store, held: &mut Held) -> Result<()> {
    let mut last = Err(Error::LeaseLost("it could not be released".into()));
    for _ in 0..3 {
        held.seq = next_seq(held.seq)?;
        let mut body = held.body.clone();
        body.expires = 0;
        last = create(store, held.seq, &body, true).await;
        match &last {
            Ok(()) => {
                for seq in held.seq.saturating_sub(2)..held.seq {
                    store.delete_best_effort(&lease_name(seq)).await;
                }
                return Ok(());
            }
            Err(Error::Locked { .. }) if owns(store, held.seq, &held.body, false).await? => {
                continue
            }
            Err(_) => break,
        }
    }
    last
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// The renewal task: every third of the time to live (sooner after a failure), the next lease
/// object under the same token, after checking that the current one is still this process's.
async fn renew_until_released(
    store: Store,
    held: Arc<tokio::sync::Mutex<Held>>,
    status: Arc<std::sync::Mutex<Status>>,
    ttl: Duration,
) {
    let every = (ttl / 3).max(Duration::from_secs(1));
    let mut wait = every;
    let lose = |why: String| {
        if let Ok(mut s) = status.lock() {
            s.lost = Some(why);
        }
    };
    loop {
        tokio::time::sleep(wait).await;
        let mut h = held.lock().await;
        if h.released {
            return;
        }
        crate::failpoint::hit("lease.renew").await;
        wait = RETRY_AFTER.min(every);
        match current(&store).await {
            // Our token: ours, also when an attempt that reported failure had landed.
            Ok(Some((seq, cur))) if cur.token == h.body.token && seq >= h.seq => {
                match owns(&store, seq, &cur, false).await {
                    Ok(true) => {
                        h.seq = seq;
                        h.body = cur;
                    }
                    Ok(false) => {
                        return lose(format!("{} is not held by a majority", lease_name(seq)))
                    }
                    Err(e) => {
                        tracing::warn!("the maintenance lease was not renewed ({e}); retrying");
                        continue;
                    }
                }
            }
            Ok(Some((_, other))) => return lose(locked(&other).to_string()),
            Ok(None) => return lose("the lease disappeared".into()),
            Err(e) => {
                // Storage trouble: try again soon; keep_alive refuses once the lease is close
                // to expiring.
                tracing::warn!("the maintenance lease was not renewed ({e}); retrying");
                continue;
            }
        }
        let mut body = h.body.clone();
        body.expires = now() + ttl.as_secs() as i64;
        let Ok(next) = next_seq(h.seq) else {
            return lose("lease number at the end of its range".into());
        };
        match create(&store, next, &body, false).await {
            Ok(()) => {
                h.seq += 1;
                h.body = body;
                if let Ok(mut s) = status.lock() {
                    s.expires = h.body.expires;
                }
                wait = every;
                // The superseded lease object is clutter, not state.
                store.delete_best_effort(&lease_name(h.seq - 1)).await;
            }
            Err(e @ Error::Locked { .. }) => return lose(e.to_string()),
            Err(e) => tracing::warn!("the maintenance lease was not renewed ({e}); retrying"),
        }
    }
}

/// A lease held by a process that is known to be gone (same host, boot and PID namespace,
/// no such pid) is stale; one that cannot be judged that way lasts until it expires.
fn holder_is_dead(held: &LeaseBody) -> bool {
    held.pid != std::process::id() && is_known_dead(&held.host, &held.pid_scope, held.pid)
}

fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

fn locked(held: &LeaseBody) -> Error {
    Error::Locked {
        holder: format!("{} (pid {}) for {}", held.host, held.pid, held.purpose),
        until: rfc3339(held.expires),
    }
}
