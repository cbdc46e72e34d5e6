//! The repository's storage: one or more targets holding the same objects under the same names.
//!
//! Writes go to every target at once and succeed when a write quorum holds the object; targets
//! that missed it are recorded as owing it (and `sync` heals them). Reads try the targets in
//! order and fall back, per object, when a target lacks the object, fails, or returns bytes that
//! do not verify.

use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use object_store::ObjectStore;

use crate::target::Target;
use crate::{Error, Id, Result};

pub use crate::target::Listed;

mod history;
mod listing;

#[derive(Debug)]
pub struct Store {
    targets: Vec<Target>,
    write_quorum: usize,
    /// (target name, object name) pairs a quorum write left missing on a target.
    owed: Mutex<Vec<(String, String)>>,
    /// See [`Store::hidden`].
    hidden: Mutex<Vec<(String, String, String)>>,
    /// Objects whose history held no intact version in this process: not searched again (a
    /// restore reads a damaged pack once per blob).
    no_history: Mutex<std::collections::HashSet<String>>,
}

impl Clone for Store {
    fn clone(&self) -> Self {
        Store {
            targets: self.targets.clone(),
            write_quorum: self.write_quorum,
            owed: Mutex::new(self.owed()),
            hidden: Mutex::new(self.hidden()),
            no_history: Mutex::default(),
        }
    }
}

/// A failure a locked target's history may get around: the object is gone or damaged
/// everywhere (not a target that does not answer).
fn is_damage(e: &Error) -> bool {
    match e {
        Error::NotFound { .. } | Error::Integrity { .. } => true,
        Error::NoTarget { reasons, .. } => {
            reasons.contains("not found") || reasons.contains("integrity")
        }
        _ => false,
    }
}

/// True unless the object's name is a BLAKE3 hash its bytes do not match.
pub fn content_matches_name(name: &str, bytes: &[u8]) -> bool {
    let last = name.rsplit('/').next().unwrap_or(name);
    match Id::from_hex(last) {
        Some(id) => Id::of_stored(bytes) == id,
        None => true,
    }
}

/// [`content_matches_name`] for an object just read: a large one (a pack) is hashed on the
/// blocking pool rather than on the async worker that read it.
/// A hashing task that did not finish is an error of this process, not damage to the object.
async fn matches_name(name: &str, bytes: &Bytes) -> Result<bool> {
    if bytes.len() < 1 << 20 {
        return Ok(content_matches_name(name, bytes));
    }
    let (name, bytes) = (name.to_string(), bytes.clone());
    tokio::task::spawn_blocking(move || content_matches_name(&name, &bytes))
        .await
        .map_err(|e| Error::Internal(format!("hashing a read object failed: {e}")))
}

/// Logs a read that moves on to the next target: a missing object is routine on a target that
/// owes it; anything else is damage or an outage the operator should hear about.
fn note_fallback(targets: usize, t: &Target, name: &str, e: &Error) {
    if targets < 2 {
        return;
    }
    match e {
        Error::NotFound { .. } => tracing::info!(
            "target {}: {name} is missing; trying the next target",
            t.name()
        ),
        _ => tracing::warn!("target {}: {name}: {e}; trying the next target", t.name()),
    }
}

/// The error of a read that no target could serve. With one target, its own error. With
/// several: damage anywhere makes it an integrity error (no intact copy was found); absence
/// everywhere keeps it "not found"; otherwise the targets were unavailable. The message names
/// every target and its reason.
fn every_target_failed(name: &str, mut failures: Vec<(String, Error)>) -> Error {
    if failures.len() <= 1 {
        return failures
            .pop()
            .map(|(_, e)| e)
            .unwrap_or_else(|| Error::NotFound {
                name: name.to_string(),
            });
    }
    if failures
        .iter()
        .all(|(_, e)| matches!(e, Error::NotFound { .. }))
    {
        return Error::NotFound {
            name: name.to_string(),
        };
    }
    let reasons = failures
        .iter()
        .map(|(t, e)| format!("{t}: {e}"))
        .collect::<Vec<_>>()
        .join("; ");
    if failures
        .iter()
        .any(|(_, e)| matches!(e, Error::Integrity { .. }))
    {
        Error::Integrity {
            object: name.to_string(),
            reason: format!("no target holds an intact copy ({reasons})"),
        }
    } else {
        Error::Unavailable {
            target: "every target".into(),
            reason: reasons,
        }
    }
}

impl Store {
    /// One target at `location`: a path, a `file://` URL, or a remote URL configured from the
    /// environment (e.g. `s3://bucket/prefix` with `AWS_ENDPOINT`, `AWS_REGION`).
    pub fn open(location: &str, create: bool) -> Result<Self> {
        let target = Target::open_url(
            "default",
            location,
            &Default::default(),
            &crate::remote::Tuning::default(),
            create,
        )?;
        Self::new(vec![target], 1)
    }

    /// Several targets; `write_quorum` of them must hold each write.
    pub fn new(targets: Vec<Target>, write_quorum: usize) -> Result<Self> {
        if targets.is_empty() {
            return Err(Error::Invalid(
                "a repository needs at least one target".into(),
            ));
        }
        if write_quorum == 0 || write_quorum > targets.len() {
            return Err(Error::Invalid(format!(
                "write_quorum {write_quorum} must be between 1 and the number of targets ({})",
                targets.len()
            )));
        }
        Ok(Store {
            targets,
            write_quorum,
            owed: Mutex::default(),
            hidden: Mutex::default(),
            no_history: Mutex::default(),
        })
    }

    /// Wraps any object store as a single target (tests, other backends).
    pub fn from_object_store(inner: Arc<dyn ObjectStore>, location: String) -> Self {
        Store {
            targets: vec![Target::from_object_store("default", inner, location)],
            write_quorum: 1,
            owed: Mutex::default(),
            hidden: Mutex::default(),
            no_history: Mutex::default(),
        }
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Probes every remote target at once (see `Target::probe`), so that a dead or stalled
    /// target costs one short deadline at the start of a run instead of stalling its first reads.
    pub async fn probe(&self, deadline: std::time::Duration) {
        futures::future::join_all(self.targets.iter().map(|t| t.probe(deadline))).await;
    }

    /// Targets in the order reads try them: the configured order, with targets that failed
    /// earlier in this run moved to the end.
    fn read_order(&self) -> Vec<&Target> {
        let (healthy, degraded): (Vec<&Target>, Vec<&Target>) =
            self.targets.iter().partition(|t| !t.is_degraded());
        healthy.into_iter().chain(degraded).collect()
    }

    pub fn write_quorum(&self) -> usize {
        self.write_quorum
    }

    /// Where the repository lives, for messages.
    pub fn location(&self) -> &str {
        self.targets[0].location()
    }

    /// True when every target is a local directory.
    pub fn is_local(&self) -> bool {
        self.targets.iter().all(Target::is_local)
    }

    /// Objects that targets missed during quorum writes in this process.
    pub fn owed(&self) -> Vec<(String, String)> {
        locked(&self.owed).clone()
    }

    /// Writes a new object to every target; durable once `write_quorum` targets hold it.
    pub async fn put_new(&self, name: &str, bytes: Bytes, idempotent: bool) -> Result<()> {
        let results = futures::future::join_all(self.targets.iter().map(|t| {
            let bytes = bytes.clone();
            async move {
                if t.is_degraded() {
                    // Waiting on a target that already failed in this run would stall every write.
                    return Err(Error::Unavailable {
                        target: t.name().to_string(),
                        reason: "it failed earlier in this run".into(),
                    });
                }
                t.put_new(name, bytes, idempotent).await
            }
        }))
        .await;
        let mut held = 0;
        let mut failures = Vec::new();
        for (t, r) in self.targets.iter().zip(results) {
            match r {
                Ok(()) => held += 1,
                // A create-only write that must not find the object (init's config) fails outright.
                Err(e @ Error::AlreadyExists { .. }) => return Err(e),
                Err(e) => failures.push((t.name().to_string(), e)),
            }
        }
        if held < self.write_quorum {
            let reasons: Vec<String> = failures.iter().map(|(t, e)| format!("{t}: {e}")).collect();
            return Err(Error::Quorum {
                object: name.to_string(),
                held,
                needed: self.write_quorum,
                reasons: reasons.join("; "),
            });
        }
        if !failures.is_empty() {
            let mut owed = locked(&self.owed);
            for (t, e) in failures {
                tracing::warn!(
                    "target {t} missed {name} ({e}); it owes the object until `drvault sync`"
                );
                owed.push((t, name.to_string()));
            }
        }
        Ok(())
    }

    /// Notes that target `target` lacks `name` until `drvault sync` copies it.
    pub(crate) fn owe(&self, target: &str, name: &str) {
        locked(&self.owed).push((target.to_string(), name.to_string()));
    }

    /// Reads a whole object from the first target that has an intact copy; when none has,
    /// from the history of a locked target (see [`Self::hidden`]).
    pub async fn get(&self, name: &str) -> Result<Bytes> {
        let current = self
            .first_served(name, |t| async move {
                let b = t.get(name).await?;
                if matches_name(name, &b).await? {
                    Ok(b)
                } else {
                    Err(Error::Integrity {
                        object: name.to_string(),
                        reason: "content does not match its name".into(),
                    })
                }
            })
            .await;
        match current {
            Err(e) if is_damage(&e) => self.read_history(name).await.ok_or(e),
            other => other,
        }
    }

    /// Every target's copy of `name` (bookkeeping objects whose copies may differ: a session's
    /// heartbeat).
    /// A target lacking it is skipped; one that cannot answer is an error.
    pub async fn get_each(&self, name: &str) -> Result<Vec<Bytes>> {
        match self.get_each_lenient(name).await {
            (_, Some(e)) => Err(e),
            (copies, None) => Ok(copies),
        }
    }

    /// The copies that could be read, and the first failure of a target that could not answer
    /// (a target lacking the object is no failure).
    pub async fn get_each_lenient(&self, name: &str) -> (Vec<Bytes>, Option<Error>) {
        let mut out = Vec::new();
        let mut failure = None;
        for r in futures::future::join_all(self.targets.iter().map(|t| t.get(name))).await {
            match r {
                Ok(b) => out.push(b),
                Err(Error::NotFound { .. }) => {}
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        (out, failure)
    }

    /// Reads a byte range from the first target that has it.
    pub async fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes> {
        self.get_range_with(name, range, |b| async move { Ok(b) })
            .await
    }

    /// Reads a byte range and hands it to `use_bytes`; an integrity error there moves on to the
    /// next target, so a corrupt copy on one target does not fail the read.
    pub async fn get_range_with<T, F, Fut>(
        &self,
        name: &str,
        range: Range<u64>,
        use_bytes: F,
    ) -> Result<T>
    where
        F: Fn(Bytes) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let use_bytes = &use_bytes;
        let current = self
            .first_served(name, |t| {
                let range = range.clone();
                async move { use_bytes(t.get_range(name, range).await?).await }
            })
            .await;
        match current {
            Err(e) if is_damage(&e) => {
                // Packs are read by ranges: once a version was found intact, its ranges.
                if let Some((t, version)) = self.known_hidden(name) {
                    if let Some(lock) = t.lock() {
                        let bytes = lock.api.get_version(name, &version, Some(range)).await?;
                        return use_bytes(bytes).await;
                    }
                }
                match self.read_history(name).await {
                    Some(b) => {
                        let (start, end) = (range.start as usize, range.end as usize);
                        match b.get(start..end) {
                            Some(_) => use_bytes(b.slice(start..end)).await,
                            None => Err(e),
                        }
                    }
                    None => Err(e),
                }
            }
            other => other,
        }
    }

    /// The object's size on the first target that has it.
    pub async fn size(&self, name: &str) -> Result<u64> {
        self.first_served(name, |t| t.size(name)).await
    }

    /// Tries `read` on each target in read order and returns the first success; every failure
    /// is logged and, when all fail, summed up by [`every_target_failed`].
    async fn first_served<'a, T, Fut>(
        &'a self,
        name: &str,
        read: impl Fn(&'a Target) -> Fut,
    ) -> Result<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        let mut failures = Vec::new();
        for t in self.read_order() {
            match read(t).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    note_fallback(self.targets.len(), t, name, &e);
                    failures.push((t.name().to_string(), e));
                }
            }
        }
        Err(every_target_failed(name, failures))
    }

    /// The targets holding `name`, for a warning about it ("on a, b"): one target can plant
    /// what the others do not have.
    pub async fn holders(&self, name: &str) -> String {
        let mut on = Vec::new();
        for t in &self.targets {
            if t.size(name).await.is_ok() {
                on.push(t.name().to_string());
            }
        }
        if on.is_empty() {
            "no target answers for it now".to_string()
        } else {
            format!("on target {}", on.join(", "))
        }
    }

    /// Creates `name` with a create-only put on every target. It is created when more than
    /// half the targets took it and none already held it: two such creates of one name cannot
    /// both succeed, whatever the write quorum. `AlreadyExists` when a target held it; a
    /// quorum error when too few answered (copies that landed are removed again).
    pub async fn create_on_majority(&self, name: &str, bytes: Bytes) -> Result<()> {
        let results = futures::future::join_all(
            self.targets
                .iter()
                .map(|t| t.put_new(name, bytes.clone(), false)),
        )
        .await;
        let mut created = Vec::new();
        let mut exists = false;
        let mut reasons = Vec::new();
        for (t, r) in self.targets.iter().zip(results) {
            match r {
                Ok(()) => created.push(t),
                Err(Error::AlreadyExists { .. }) => exists = true,
                Err(e) => reasons.push(format!("{}: {e}", t.name())),
            }
        }
        if exists {
            return Err(Error::AlreadyExists {
                location: name.to_string(),
            });
        }
        if created.len() * 2 <= self.targets.len() {
            for t in &created {
                let _ = t.delete(name).await;
            }
            return Err(Error::Quorum {
                object: name.to_string(),
                held: created.len(),
                needed: self.targets.len() / 2 + 1,
                reasons: reasons.join("; "),
            });
        }
        Ok(())
    }

    /// Overwrites a bookkeeping object on every target (also those that failed earlier in this
    /// run: a copy left stale would tell its readers something old); durable when the write
    /// quorum holds it.
    pub async fn put_replace(&self, name: &str, bytes: Bytes) -> Result<()> {
        let live: Vec<&Target> = self.targets.iter().collect();
        let results =
            futures::future::join_all(live.iter().map(|t| t.put_replace(name, bytes.clone())))
                .await;
        let held = results.iter().filter(|r| r.is_ok()).count();
        if held < self.write_quorum {
            let reasons: Vec<String> = live
                .iter()
                .zip(&results)
                .filter_map(|(t, r)| r.as_ref().err().map(|e| format!("{}: {e}", t.name())))
                .collect();
            return Err(Error::Quorum {
                object: name.to_string(),
                held,
                needed: self.write_quorum,
                reasons: reasons.join("; "),
            });
        }
        Ok(())
    }

    /// Checks that this host's clock and every reachable target's clock agree within `bound`
    /// seconds, from the `Last-Modified` time of `name`, an object this process just wrote.
    pub async fn check_clock(&self, name: &str, written_at: i64, bound: i64) -> Result<()> {
        let live = self.targets.iter().filter(|t| !t.is_degraded());
        let results =
            futures::future::join_all(live.map(|t| async move { (t, t.modified(name).await) }))
                .await;
        for (t, r) in results {
            // A target that missed the write, or cannot answer now, has no clock to compare.
            if let Ok(modified) = r {
                let seconds = (modified - written_at).abs();
                if seconds > bound {
                    return Err(Error::ClockSkew {
                        target: t.name().to_string(),
                        seconds,
                        bound,
                    });
                }
            }
        }
        Ok(())
    }

    /// Deletes a bookkeeping object (a backup session, a superseded lease) where it can be done
    /// now: targets that failed earlier in this run are skipped and failures are only logged,
    /// so a dead or stalled target never holds up the end of a run. What stays behind is
    /// recognised as stale by its readers.
    pub async fn delete_best_effort(&self, name: &str) {
        let live = self.targets.iter().filter(|t| !t.is_degraded());
        for r in futures::future::join_all(live.map(|t| t.delete(name))).await {
            match r {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => tracing::info!("{name} not deleted everywhere: {e}"),
            }
        }
    }

    /// Refuses at once, before anything is done, an operation that deletes objects under
    /// `prefixes` when a target's credentials may not delete there (an append-only host:
    /// docs/OPERATIONS.md). Each target is asked to delete an object that does not exist under
    /// each prefix, which a provider that allows it answers with success or "not found", and
    /// one that does not with "access denied" (HTTP 403). Targets that are down are skipped.
    pub async fn ensure_deletable(&self, action: &str, prefixes: &[&str]) -> Result<()> {
        let probe = hex::encode(drvault_keyring::random_bytes::<8>()?);
        for t in self.targets.iter().filter(|t| !t.is_degraded()) {
            for prefix in prefixes {
                let name = format!("{prefix}delete-probe-{probe}");
                match t.delete(&name).await {
                    Err(e) if e.is_refused() => {
                        return Err(Error::NotPermitted(format!(
                            "{action} deletes objects under {prefix}, and target {} refuses that \
                             with these credentials (an append-only host, as intended). Run it \
                             from a maintenance host whose credentials may delete \
                             (docs/OPERATIONS.md, \"Append-only hosts\")",
                            t.name()
                        )))
                    }
                    // A target that does not answer cannot say; the operation's own complete
                    // listings decide what to do without it.
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The names of the objects under `prefix` (see [`Self::list`]).
    pub async fn list_names(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .list(prefix)
            .await?
            .into_iter()
            .map(|l| l.name)
            .collect())
    }

    /// Deletes an object from every target (absent counts as deleted). Every target is tried;
    /// the first failure is returned.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let results = futures::future::join_all(self.targets.iter().map(|t| t.delete(name))).await;
        for r in results {
            match r {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The value behind `m`, also after a thread panicked holding it: these lists only grow or are
/// cleared whole, so what they hold stays true, and an empty answer would hide damage from
/// `check` (issue: "lock poisoning must not turn into nothing").
fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
