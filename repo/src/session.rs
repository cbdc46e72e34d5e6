//! Backup sessions: how a running backup tells maintenance on other hosts that it exists
//! (docs/FORMAT.md §16 and §18).
//!
//! A backup announces itself with `locks/session-<random>` (host, pid, start, the epoch it
//! seals under) before it reads prune marks or the index, renews the object's `heartbeat` every
//! [`SESSION_HEARTBEAT`], and removes it when it ends. Liveness never rests on a process id
//! alone: a session is live while its heartbeat is younger than [`SESSION_STALE_AFTER`] plus
//! the clock-skew bound, and is taken for dead sooner only by a process of the same host, boot
//! and PID namespace that finds no such pid. A backup whose own heartbeat lapsed for that long
//! (it was stopped, or cut off from storage) may have been taken for dead, so it refuses to
//! commit ([`Session::confirm`]).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::format::{PlainFile, CLOCK_SKEW_BOUND};
use crate::host::{hostname, is_known_dead, pid_scope};
use crate::store::Store;
use crate::{Error, Result};

const SESSION_PREFIX: &str = "locks/session-";
/// How often a running backup renews its session.
pub const SESSION_HEARTBEAT: Duration = Duration::from_secs(60);
/// A session whose heartbeat is older than this (plus the clock-skew bound) is the leftover of
/// a backup that crashed or lost its storage.
pub const SESSION_STALE_AFTER: Duration = Duration::from_secs(15 * 60);
/// Sessions of older drvaults carry no heartbeat: they count as live for this long.
const LEGACY_STALE_AFTER: Duration = Duration::from_secs(7 * 86_400);

pub use crate::format::SessionBody;

impl SessionBody {
    /// Whether maintenance must still count this backup as running, at `now` by the reader's
    /// clock.
    pub fn is_live(&self, now: i64) -> bool {
        if is_known_dead(&self.host, &self.pid_scope, self.pid) {
            return false;
        }
        if self.heartbeat == 0 {
            return self.started >= now.saturating_sub(LEGACY_STALE_AFTER.as_secs() as i64);
        }
        // A heartbeat further ahead than two skew bounds comes from a clock that jumped (or a
        // forged object): it would otherwise hold every sweep for ever.
        if self.heartbeat > now.saturating_add(2 * CLOCK_SKEW_BOUND) {
            return false;
        }
        now.saturating_sub(self.heartbeat)
            <= SESSION_STALE_AFTER.as_secs() as i64 + CLOCK_SKEW_BOUND
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The longest this process's own heartbeat may lapse before it must assume other hosts took
/// the session for dead: the staleness bound less the skew bound a reader's clock may run ahead.
fn own_lapse_bound() -> i64 {
    SESSION_STALE_AFTER.as_secs() as i64 - CLOCK_SKEW_BOUND
}

/// How a session's renewals went, shared with what must not outlive a lapse (the index
/// flush of the backup, `Repository::flush_index`).
#[derive(Debug)]
pub struct Liveness {
    /// The largest gap between two successful writes of the session, seconds (this host's clock).
    worst_gap: AtomicI64,
    last_written: AtomicI64,
}

impl Liveness {
    /// Fails when the renewals lapsed for longer than other hosts wait before taking the
    /// session for dead (see [`Session::confirm`]).
    pub fn confirm(&self) -> Result<()> {
        let since_last = now() - self.last_written.load(Ordering::Relaxed);
        let seconds = self.worst_gap.load(Ordering::Relaxed).max(since_last);
        if seconds > own_lapse_bound() {
            return Err(Error::SessionLapsed {
                seconds,
                bound: own_lapse_bound(),
            });
        }
        Ok(())
    }
}

/// A backup in progress, announced to prune and re-encryption; renewed until ended.
#[derive(Debug)]
pub struct Session {
    name: String,
    body: SessionBody,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    stop: Arc<tokio::sync::Notify>,
    liveness: Arc<Liveness>,
    store: Store,
}

impl Session {
    /// Writes the session (durable on the write quorum) and starts renewing it.
    pub async fn start(store: &Store, epoch: u32) -> Result<Session> {
        Self::start_with(store, epoch, true).await
    }

    /// With `honours_marks` false the session holds every prune sweep until it ends: for a
    /// backup that cannot see every target's prune marks.
    pub async fn start_with(store: &Store, epoch: u32, honours_marks: bool) -> Result<Session> {
        let name = format!(
            "{SESSION_PREFIX}{}",
            hex::encode(drvault_keyring::random_bytes::<16>()?)
        );
        let t = now();
        let body = SessionBody {
            host: hostname(),
            pid: std::process::id(),
            started: t,
            epoch,
            honours_marks,
            heartbeat: t,
            pid_scope: pid_scope(),
        };
        let bytes = body.encode();
        // A write below the quorum, or a clock out of bounds, leaves no session behind.
        let written = match store.put_new(&name, Bytes::from(bytes), false).await {
            Ok(()) => store.check_clock(&name, t, CLOCK_SKEW_BOUND).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            withdraw(store, &name, &body).await;
            return Err(e);
        }
        let liveness = Arc::new(Liveness {
            worst_gap: AtomicI64::new(0),
            last_written: AtomicI64::new(t),
        });
        let stop = Arc::new(tokio::sync::Notify::new());
        let heartbeat = tokio::spawn(renew(
            store.clone(),
            name.clone(),
            body.clone(),
            liveness.clone(),
            stop.clone(),
        ));
        Ok(Session {
            name,
            body,
            heartbeat: Some(heartbeat),
            stop,
            liveness,
            store: store.clone(),
        })
    }

    /// The renewals' record, for what must check it without holding the session.
    pub fn liveness(&self) -> Arc<Liveness> {
        self.liveness.clone()
    }

    /// The object's name (`locks/session-<random>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Fails when the session's renewals lapsed for longer than other hosts wait before taking
    /// it for dead: a prune may then have deleted what this backup refers to, so it must not
    /// commit. Call just before the snapshot is written.
    pub fn confirm(&self) -> Result<()> {
        self.liveness.confirm()
    }

    /// Stops the renewals (waiting for one in flight, which would otherwise bring the object
    /// back after its deletion) and removes the announcement; a target that failed during the
    /// backup may keep it, and [`live_sessions`] takes it for stale once its heartbeat is old.
    pub async fn end(mut self, store: &Store) {
        if let Some(h) = self.heartbeat.take() {
            stop_and_wait(&self.stop, h).await;
        }
        withdraw(store, &self.name, &self.body).await;
    }
}

/// Removes a session's object from every target that answers. A target whose credentials may
/// not delete (an append-only host) gets the object rewritten as ended instead, so maintenance
/// does not wait out the staleness bound for a backup that is over; a maintenance host's prune
/// removes it later.
async fn withdraw(store: &Store, name: &str, body: &SessionBody) {
    let live = store.targets().iter().filter(|t| !t.is_degraded());
    let deleted = futures::future::join_all(live.map(|t| async move { (t, t.delete(name).await) }));
    for (t, r) in deleted.await {
        match r {
            Ok(()) | Err(Error::NotFound { .. }) => {}
            Err(e) if e.is_not_permitted() => {
                let ended = SessionBody {
                    heartbeat: SessionBody::ENDED,
                    ..body.clone()
                };
                let bytes = ended.encode();
                if let Err(e) = t.put_replace(name, Bytes::from(bytes)).await {
                    tracing::info!("{name} stays until it is stale on target {}: {e}", t.name());
                }
            }
            Err(e) => tracing::info!("{name} not deleted on target {}: {e}", t.name()),
        }
    }
}

async fn stop_and_wait(stop: &tokio::sync::Notify, heartbeat: tokio::task::JoinHandle<()>) {
    stop.notify_one();
    let _ = heartbeat.await;
}

impl Drop for Session {
    /// A session dropped without [`Session::end`] (an error path, a panic) stops renewing and
    /// is removed in the background when a runtime is there; otherwise it goes stale.
    fn drop(&mut self) {
        let Some(h) = self.heartbeat.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let (store, name, stop) =
                    (self.store.clone(), self.name.clone(), self.stop.clone());
                let body = self.body.clone();
                rt.spawn(async move {
                    stop_and_wait(&stop, h).await;
                    withdraw(&store, &name, &body).await
                });
            }
            Err(_) => h.abort(),
        }
    }
}

async fn renew(
    store: Store,
    name: String,
    mut body: SessionBody,
    liveness: Arc<Liveness>,
    stop: Arc<tokio::sync::Notify>,
) {
    let (worst_gap, last_written) = (&liveness.worst_gap, &liveness.last_written);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SESSION_HEARTBEAT) => {}
            _ = stop.notified() => return,
        }
        crate::failpoint::hit("session.heartbeat").await;
        body.heartbeat = now();
        let bytes = body.encode();
        match store.put_replace(&name, Bytes::from(bytes)).await {
            Ok(()) => {
                let t = now();
                let gap = t - last_written.swap(t, Ordering::Relaxed);
                worst_gap.fetch_max(gap, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!("backup session {name} not renewed ({e}); retrying"),
        }
    }
}

/// Live backup sessions, from a listing of every target (a session only a silent target holds
/// would otherwise look absent, and maintenance would act as if no backup ran).
pub async fn live_sessions(store: &Store) -> Result<Vec<SessionBody>> {
    Ok(live_sessions_named(store)
        .await?
        .into_iter()
        .map(|(_, s)| s)
        .collect())
}

/// [`live_sessions`] with each session's object name.
pub async fn live_sessions_named(store: &Store) -> Result<Vec<(String, SessionBody)>> {
    let mut out = Vec::new();
    let listed = store
        .list_complete("locks/", "judge which backups are running")
        .await?;
    let t = now();
    for l in listed {
        if !l.name.starts_with(SESSION_PREFIX) {
            continue;
        }
        // Every target's copy: one that missed renewals (a target that failed during the
        // backup) would make a running backup look dead. The newest heartbeat counts.
        let (copies, failure) = store.get_each_lenient(&l.name).await;
        let newest = copies
            .iter()
            .filter_map(|b| match SessionBody::decode(&l.name, b) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("{e}; ignored");
                    None
                }
            })
            .max_by_key(|s| s.heartbeat);
        match (newest.filter(|s| s.is_live(t)), failure) {
            (Some(s), _) => out.push((l.name, s)),
            // A copy that could not be read may be the live one.
            (None, Some(e)) => return Err(e),
            // Stale, or ended between the listing and the reads.
            (None, None) => {}
        }
    }
    Ok(out)
}

/// Deletes the session objects of backups that are over: rewritten as ended by an append-only
/// host, or stale (a crash) on every copy. For maintenance holding the lease, whose credentials
/// may delete; returns how many it removed. A session some copy of which still looks live, or
/// that cannot be read, stays.
pub async fn remove_ended_sessions(store: &Store) -> Result<usize> {
    let t = now();
    let mut removed = 0;
    for l in store.list("locks/").await? {
        if !l.name.starts_with(SESSION_PREFIX) {
            continue;
        }
        let (copies, failure) = store.get_each_lenient(&l.name).await;
        let bodies: Vec<SessionBody> = copies
            .iter()
            .filter_map(|b| SessionBody::decode(&l.name, b).ok())
            .collect();
        if failure.is_some() || bodies.len() != copies.len() || bodies.iter().any(|s| s.is_live(t))
        {
            continue;
        }
        store.delete(&l.name).await?;
        removed += 1;
    }
    Ok(removed)
}
