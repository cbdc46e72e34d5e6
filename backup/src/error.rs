//! What a backup's caller acts on.

/// Why a backup made no snapshot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The repository side failed (storage, quorum, integrity, keys, a lapsed session). A
    /// [`drvault_repo::Error::KeyringChanged`] here means nothing was written: open the
    /// repository again and run the backup again.
    #[error(transparent)]
    Repo(drvault_repo::Error),
    /// The caller's [`drvault_repo::cancel::Cancel`] was set: the backup stopped at a clean
    /// point, and what it uploaded is indexed.
    #[error("the backup was stopped on request; what it uploaded is indexed and the next backup continues from it")]
    Interrupted,
    /// The request cannot be carried out as given (a path that is not there or cannot be
    /// resolved).
    #[error("{0}")]
    Request(String),
    /// The request is malformed (an exclude pattern that does not parse, a stream file name
    /// that would leave the snapshot's root, no command to run): the CLI's exit code 2.
    #[error("{0}")]
    Usage(String),
    /// The source could not be read as a whole (a stream that failed, a command that exited
    /// with an error, the root directory that could not be opened): no snapshot was made.
    #[error("{0}")]
    Source(String),
    /// A bug inside drvault (a panicked worker, a pipeline used after it finished).
    #[error("internal error: {0}; this is a bug in drvault, please report it")]
    Internal(String),
}

impl From<drvault_repo::Error> for Error {
    fn from(e: drvault_repo::Error) -> Self {
        match e {
            drvault_repo::Error::Interrupted => Error::Interrupted,
            other => Error::Repo(other),
        }
    }
}

impl Error {
    /// True when running the same backup again may succeed (storage trouble, a rotation,
    /// a stop request).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Repo(e) => e.is_retryable(),
            Error::Interrupted => true,
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
