//! One storage target: an `object_store` backend holding a full copy of the repository.
//!
//! Every repository byte goes through a target, so S3, GCS and Azure are further targets of
//! the same type, not new code paths. [`crate::store::Store`] combines several.

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::lock::s3api::S3Api;
use crate::lock::{Lock, LockPolicy};
use crate::remote::{self, Tuning};
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct Target {
    name: String,
    inner: Arc<dyn ObjectStore>,
    location: String,
    local: bool,
    /// drvault's own bound on one operation (remote targets), on top of object_store's limits.
    deadline: Option<Duration>,
    /// Set when an operation failed for want of the target (not for a missing object): later
    /// writes in this process skip it and reads try it last. Shared by clones.
    degraded: Arc<AtomicBool>,
    /// Object lock (S3 targets configured with it).
    lock: Option<Arc<Lock>>,
}

static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Storage requests this process made, over every target (a listing counts once, whatever
/// its pages): what the fleet benchmark reports per backup.
pub fn requests_made() -> u64 {
    REQUESTS.load(Ordering::Relaxed)
}

/// An object listed in a store.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub size: u64,
    /// When the target last wrote the object, Unix seconds (the target's clock).
    pub last_modified: i64,
}

fn map_err(object: &str, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::NotFound {
            name: object.to_string(),
        },
        object_store::Error::AlreadyExists { .. } => Error::AlreadyExists {
            location: object.to_string(),
        },
        other => Error::Storage {
            object: object.to_string(),
            source: other,
        },
    }
}

fn listed(metas: Vec<object_store::ObjectMeta>) -> Vec<Listed> {
    metas
        .into_iter()
        .map(|m| Listed {
            name: m.location.to_string(),
            size: m.size,
            last_modified: m.last_modified.timestamp(),
        })
        .collect()
}

impl Target {
    /// Opens a target from a local path or a `file://` URL. With `create`, the directory is made.
    pub fn open(name: &str, location: &str, create: bool) -> Result<Self> {
        let path = match location.strip_prefix("file://") {
            Some(p) => p.to_string(),
            None if location.contains("://") => {
                return Err(Error::Invalid(format!(
                    "unsupported repository URL {location}: this build supports local paths and file:// URLs"
                )))
            }
            None => location.to_string(),
        };
        if path.is_empty() {
            return Err(Error::Invalid("empty repository path".into()));
        }
        if create {
            // The root directory of a local target must exist before object_store can use it.
            std::fs::create_dir_all(&path).map_err(|e| {
                Error::Invalid(format!("cannot create repository directory {path}: {e}"))
            })?;
        } else if !std::path::Path::new(&path).is_dir() {
            let detail = if std::path::Path::new(&path).exists() {
                "it is not a directory"
            } else {
                "the directory does not exist"
            };
            return Err(Error::NoRepository {
                location: location.to_string(),
                detail: detail.into(),
            });
        }
        let fs = LocalFileSystem::new_with_prefix(&path)
            .map_err(|e| Error::Invalid(format!("cannot open repository directory {path}: {e}")))?;
        Ok(Target {
            name: name.to_string(),
            inner: Arc::new(fs),
            location: location.to_string(),
            local: true,
            deadline: None,
            degraded: Arc::default(),
            lock: None,
        })
    }

    /// A local target of a multi-target repository whose directory is missing (a lost disk,
    /// an unmounted volume): an empty target, so reads fall back to other targets and it owes
    /// everything until `drvault sync` fills it again.
    pub fn open_missing_local(name: &str, location: &str) -> Result<Self> {
        let path = location.strip_prefix("file://").unwrap_or(location);
        let relative = path.trim_start_matches('/');
        if !path.starts_with('/') || relative.is_empty() {
            return Err(Error::Invalid(format!(
                "target {name}: {location} is not an absolute path"
            )));
        }
        tracing::warn!("target {name}: {location} does not exist; it counts as an empty target");
        let inner = object_store::prefix::PrefixStore::new(LocalFileSystem::new(), relative);
        Ok(Target {
            name: name.to_string(),
            inner: Arc::new(inner),
            location: location.to_string(),
            local: true,
            deadline: None,
            degraded: Arc::default(),
            lock: None,
        })
    }

    /// Opens a target by URL: a local path or `file://` URL, or a remote store (`s3://`,
    /// `gs://`, `az://`) configured by object_store `options`. `create` only matters locally:
    /// buckets are never created by drvault.
    pub fn open_url(
        name: &str,
        url: &str,
        options: &BTreeMap<String, String>,
        tuning: &Tuning,
        create: bool,
    ) -> Result<Self> {
        Self::open_url_locked(name, url, options, tuning, create, None)
    }

    /// [`Self::open_url`] for a target with object lock (S3 only, docs/OPERATIONS.md).
    pub fn open_url_locked(
        name: &str,
        url: &str,
        options: &BTreeMap<String, String>,
        tuning: &Tuning,
        create: bool,
        lock: Option<LockPolicy>,
    ) -> Result<Self> {
        if !remote::is_remote(url) {
            if lock.is_some() {
                return Err(Error::Invalid(format!(
                    "target {name}: object lock is for s3:// targets; a local directory cannot \
                     enforce it"
                )));
            }
            if !options.is_empty() {
                return Err(Error::Invalid(format!(
                    "target {name}: a local target takes no options"
                )));
            }
            return Self::open(name, url, create);
        }
        let inner = remote::open(url, options, tuning, lock.as_ref())?;
        let mut t = Self::from_object_store(name, inner, url.to_string());
        t.deadline = Some(tuning.operation_deadline());
        if let Some(policy) = lock {
            let api = S3Api::new(url, options, tuning)?;
            t.lock = Some(Arc::new(Lock { policy, api }));
        }
        Ok(t)
    }

    /// The target's object lock, when it has one.
    pub fn lock(&self) -> Option<&Lock> {
        self.lock.as_deref()
    }

    /// One cheap request (the `config` object's metadata) under a short deadline: a target that
    /// does not answer, or answers with a failure other than "not found", is marked degraded
    /// before the run starts. Local targets are not probed.
    pub async fn probe(&self, deadline: Duration) {
        if self.local {
            return;
        }
        let config = crate::format::paths::CONFIG;
        // A missing `config` still means the target answered.
        let _ = self
            .guard_within(Some(deadline), config, self.size_unguarded(config))
            .await;
    }

    /// Wraps any object store (used by tests and later targets).
    pub fn from_object_store(name: &str, inner: Arc<dyn ObjectStore>, location: String) -> Self {
        Target {
            name: name.to_string(),
            inner,
            location,
            local: false,
            deadline: None,
            degraded: Arc::default(),
            lock: None,
        }
    }

    /// True once an operation failed for want of this target in this process.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Runs one operation under the deadline and records a failure of the target itself.
    /// Every storage request goes through here and is counted ([`requests_made`]).
    async fn guard<T>(&self, object: &str, op: impl Future<Output = Result<T>>) -> Result<T> {
        self.guard_within(self.deadline, object, op).await
    }

    /// [`Self::guard`] with an explicit deadline (the probe's is shorter).
    async fn guard_within<T>(
        &self,
        deadline: Option<Duration>,
        object: &str,
        op: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        let r = match deadline {
            Some(d) => tokio::time::timeout(d, op).await.unwrap_or_else(|_| {
                Err(Error::Unavailable {
                    target: self.name.clone(),
                    reason: format!("no answer for {object} within {} s", d.as_secs()),
                })
            }),
            None => op.await,
        };
        // A refusal (HTTP 403: an append-only host's delete) comes from a target that works;
        // credentials it does not accept at all (401) are the target failing.
        if let Err(e @ (Error::Storage { .. } | Error::Unavailable { .. })) = &r {
            if e.is_refused() {
                return r;
            }
            if !self.degraded.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "target {} is degraded for the rest of this run: {e}",
                    self.name
                );
            }
        }
        r
    }

    /// The target's name in the configuration.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True for a directory on this machine, where a write is a copy into the page cache and
    /// one upload in flight keeps up with the pipeline.
    pub fn is_local(&self) -> bool {
        self.local
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// Writes an object that must not exist yet. Content-addressed objects that already exist
    /// hold the same bytes, so `AlreadyExists` counts as success when `idempotent`.
    pub async fn put_new(&self, name: &str, bytes: Bytes, idempotent: bool) -> Result<()> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let put = async {
            self.inner
                .put_opts(&Path::from(name), PutPayload::from_bytes(bytes), opts)
                .await
                .map_err(|e| map_err(name, e))
        };
        match self.guard(name, put).await {
            Ok(_) => Ok(()),
            Err(Error::AlreadyExists { .. }) if idempotent => Ok(()),
            Err(Error::AlreadyExists { .. }) => Err(Error::AlreadyExists {
                location: format!("{}/{}", self.location, name),
            }),
            Err(e) => Err(e),
        }
    }

    /// Writes an object, replacing any earlier version. Only bookkeeping objects whose names
    /// are not hashes use this (a backup session's heartbeat).
    pub async fn put_replace(&self, name: &str, bytes: Bytes) -> Result<()> {
        let put = async {
            self.inner
                .put(&Path::from(name), PutPayload::from_bytes(bytes))
                .await
                .map_err(|e| map_err(name, e))
        };
        self.guard(name, put).await.map(|_| ())
    }

    /// Reads a whole object, refusing one larger than its kind can be (FORMAT.md section 2)
    /// before reading its body: a hostile target cannot make a reader allocate gigabytes for a
    /// key slot or a lock.
    pub async fn get(&self, name: &str) -> Result<Bytes> {
        let limit = crate::format::paths::max_size(name);
        self.guard(name, async {
            let r = self
                .inner
                .get(&Path::from(name))
                .await
                .map_err(|e| map_err(name, e))?;
            let too_large = |size: u64| Error::Integrity {
                object: name.to_string(),
                reason: format!("{size} bytes, more than the {limit} such an object can hold"),
            };
            if r.meta.size > limit {
                return Err(too_large(r.meta.size));
            }
            let b = r.bytes().await.map_err(|e| map_err(name, e))?;
            if b.len() as u64 > limit {
                return Err(too_large(b.len() as u64));
            }
            Ok(b)
        })
        .await
    }

    pub async fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes> {
        let want = range.end - range.start;
        let b = self
            .guard(name, async {
                self.inner
                    .get_range(&Path::from(name), range)
                    .await
                    .map_err(|e| map_err(name, e))
            })
            .await?;
        if b.len() as u64 != want {
            return Err(Error::integrity(
                name,
                format!("short read: {} of {want} bytes", b.len()),
            ));
        }
        Ok(b)
    }

    pub async fn size(&self, name: &str) -> Result<u64> {
        self.guard(name, self.size_unguarded(name)).await
    }

    /// When the target last wrote the object, Unix seconds by the target's clock.
    pub async fn modified(&self, name: &str) -> Result<i64> {
        self.guard(name, async {
            let m = self
                .inner
                .head(&Path::from(name))
                .await
                .map_err(|e| map_err(name, e))?;
            Ok(m.last_modified.timestamp())
        })
        .await
    }

    async fn size_unguarded(&self, name: &str) -> Result<u64> {
        let m = self
            .inner
            .head(&Path::from(name))
            .await
            .map_err(|e| map_err(name, e))?;
        Ok(m.size)
    }

    /// Lists the objects under a prefix such as `snapshots/`.
    /// The objects under `prefix` whose names sort after `after` (a listing that starts there).
    pub async fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<Listed>> {
        let trimmed = prefix.trim_end_matches('/');
        let (p, offset) = (Path::from(trimmed), Path::from(after));
        let metas: Vec<_> = self
            .guard(prefix, async {
                self.inner
                    .list_with_offset(Some(&p), &offset)
                    .try_collect()
                    .await
                    .map_err(|e| map_err(prefix, e))
            })
            .await?;
        Ok(listed(metas))
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let trimmed = prefix.trim_end_matches('/');
        let p = Path::from(trimmed);
        let metas: Vec<_> = self
            .guard(prefix, async {
                self.inner
                    .list(if trimmed.is_empty() { None } else { Some(&p) })
                    .try_collect()
                    .await
                    .map_err(|e| map_err(prefix, e))
            })
            .await?;
        Ok(listed(metas))
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        self.guard(name, async {
            self.inner
                .delete(&Path::from(name))
                .await
                .map_err(|e| match e {
                    // object_store deletes through S3's DeleteObjects, whose per-key refusal
                    // comes back as a generic error carrying S3's code: a refusal all the same.
                    e if e.to_string().contains("(code: AccessDenied)") => Error::Storage {
                        object: name.to_string(),
                        source: object_store::Error::PermissionDenied {
                            path: name.to_string(),
                            source: Box::new(e),
                        },
                    },
                    e => map_err(name, e),
                })
        })
        .await
    }
}
