//! One storage target: an `object_store` backend holding a full copy of the repository.
//!
//! Every repository byte goes through a target, so S3, GCS and Azure are further targets of
//! the same type, not new code paths. [`crate::store::Store`] combines several.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct Target {
    name: String,
    inner: Arc<dyn ObjectStore>,
    location: String,
    local: bool,
}

/// An object listed in a store.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub size: u64,
}

fn map_err(object: &str, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::NotFound {
            name: object.to_string(),
        },
        other => Error::Storage {
            object: object.to_string(),
            source: other,
        },
    }
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
            return Err(Error::NoRepository {
                location: location.to_string(),
            });
        }
        let fs = LocalFileSystem::new_with_prefix(&path)
            .map_err(|e| Error::Invalid(format!("cannot open repository directory {path}: {e}")))?;
        Ok(Target {
            name: name.to_string(),
            inner: Arc::new(fs),
            location: location.to_string(),
            local: true,
        })
    }

    /// Wraps any object store (used by tests and later targets).
    pub fn from_object_store(name: &str, inner: Arc<dyn ObjectStore>, location: String) -> Self {
        Target {
            name: name.to_string(),
            inner,
            location,
            local: false,
        }
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
        match self
            .inner
            .put_opts(&Path::from(name), PutPayload::from_bytes(bytes), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) if idempotent => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(Error::AlreadyExists {
                location: format!("{}/{}", self.location, name),
            }),
            Err(e) => Err(map_err(name, e)),
        }
    }

    pub async fn get(&self, name: &str) -> Result<Bytes> {
        let r = self
            .inner
            .get(&Path::from(name))
            .await
            .map_err(|e| map_err(name, e))?;
        r.bytes().await.map_err(|e| map_err(name, e))
    }

    pub async fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes> {
        let want = range.end - range.start;
        let b = self
            .inner
            .get_range(&Path::from(name), range)
            .await
            .map_err(|e| map_err(name, e))?;
        if b.len() as u64 != want {
            return Err(Error::integrity(
                name,
                format!("short read: {} of {want} bytes", b.len()),
            ));
        }
        Ok(b)
    }

    pub async fn size(&self, name: &str) -> Result<u64> {
        let m = self
            .inner
            .head(&Path::from(name))
            .await
            .map_err(|e| map_err(name, e))?;
        Ok(m.size)
    }

    /// Lists the objects under a prefix such as `snapshots/`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let trimmed = prefix.trim_end_matches('/');
        let p = Path::from(trimmed);
        let metas: Vec<_> = self
            .inner
            .list(if trimmed.is_empty() { None } else { Some(&p) })
            .try_collect()
            .await
            .map_err(|e| map_err(prefix, e))?;
        Ok(metas
            .into_iter()
            .map(|m| Listed {
                name: m.location.to_string(),
                size: m.size,
            })
            .collect())
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        self.inner
            .delete(&Path::from(name))
            .await
            .map_err(|e| map_err(name, e))
    }
}
