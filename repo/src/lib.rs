//! The drvault repository: its on-disk format, the chunker, the blob store over `object_store`,
//! the local catalog and the integrity check. Nothing here knows about the CLI or the daemon.

pub mod audit;
pub mod audit_verify;
pub mod blob;
pub mod cancel;
pub mod catalog;
pub mod check;
pub mod chunker;
mod connection;
mod error;
pub mod expansion;
pub mod failpoint;
pub mod format;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod host;
mod id;
pub mod index;
pub mod keys;
pub mod lease;
pub mod lifecycle;
pub mod lock;
pub mod packer;
pub mod printable;
pub mod prune;
pub mod remote;
pub mod replicas;
pub mod repository;
pub mod retention;
pub mod session;
pub mod store;
pub mod sync;
pub mod target;
pub mod testing;

pub use error::Error;
pub use id::{Id, IdBuildHasher, IdMap, IdSet};
pub use repository::Repository;

pub type Result<T, E = Error> = std::result::Result<T, E>;
