/// Errors of repository operations, shaped for what callers do about them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An object that should exist is absent.
    #[error("object {name} not found in the repository")]
    NotFound { name: String },
    /// No repository exists at the location.
    #[error("no drvault repository at {location}; create one with `drvault init`")]
    NoRepository { location: String },
    /// A repository already exists where `init` was asked to create one.
    #[error("a repository already exists at {location}")]
    AlreadyExists { location: String },
    /// The passphrase opens no key slot.
    #[error("wrong passphrase: no key slot of this repository opens with it")]
    WrongPassphrase,
    /// An object's bytes are damaged, truncated, forged or sealed with another key.
    #[error("integrity error in {object}: {reason}")]
    Integrity { object: String, reason: String },
    /// Storage failed in a way that may succeed when tried again (network, server, disk).
    #[error("storage error on {object}: {source}")]
    Storage {
        object: String,
        #[source]
        source: object_store::Error,
    },
    /// A target did not answer within drvault's limits, or was marked degraded earlier in
    /// this run after it failed; other targets carry on.
    #[error("target {target} is unavailable: {reason}")]
    Unavailable { target: String, reason: String },
    /// No target could serve a read: each was unavailable or lacked the object.
    #[error("no target could serve {object} ({reasons}); see `drvault targets`")]
    NoTarget { object: String, reasons: String },
    /// Fewer targets than the write quorum hold a new object: it is not durable.
    #[error("{object} reached {held} of the {needed} targets the write quorum needs ({reasons}); nothing that depends on it was committed; see `drvault targets`")]
    Quorum {
        object: String,
        held: usize,
        needed: usize,
        reasons: String,
    },
    /// Another process holds the maintenance lease.
    #[error("the repository is locked by {holder} until {until}; try again later")]
    Locked { holder: String, until: String },
    /// The repository was written by a newer drvault.
    #[error(
        "{object} uses format version {version}, newer than this drvault supports; upgrade drvault"
    )]
    UnsupportedVersion { object: String, version: u32 },
    /// The local catalog (a cache) failed.
    #[error("catalog {path}: {reason}")]
    Catalog { path: String, reason: String },
    /// A key operation failed.
    #[error(transparent)]
    Key(drvault_keyring::Error),
    /// Invalid argument from the caller (a bad URL, a path that cannot be a repository).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// True when the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Storage { .. }
                | Error::Quorum { .. }
                | Error::Unavailable { .. }
                | Error::NoTarget { .. }
        )
    }

    pub(crate) fn integrity(
        object: impl std::fmt::Display,
        reason: impl std::fmt::Display,
    ) -> Self {
        Error::Integrity {
            object: object.to_string(),
            reason: reason.to_string(),
        }
    }
}

impl From<drvault_keyring::Error> for Error {
    fn from(e: drvault_keyring::Error) -> Self {
        match e {
            drvault_keyring::Error::WrongPassphrase => Error::WrongPassphrase,
            other => Error::Key(other),
        }
    }
}
