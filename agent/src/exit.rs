//! Exit codes (documented in README.md and docs/OPERATIONS.md).

use drvault_repo::Error as RepoError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    /// Any failure not listed below.
    Failure = 1,
    /// Usage error (clap's own code).
    #[allow(dead_code)]
    Usage = 2,
    /// The backup completed but some entries could not be read.
    Partial = 3,
    /// Wrong passphrase.
    WrongPassphrase = 10,
    /// Damaged, missing or forged repository data, or restored data that failed verification.
    Integrity = 11,
    /// No repository at the given location.
    NoRepository = 12,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// Maps an error to its exit code by the library error it carries.
pub fn classify(e: &anyhow::Error) -> Exit {
    for cause in e.chain() {
        if let Some(r) = cause.downcast_ref::<RepoError>() {
            return repo_exit(r);
        }
        if let Some(r) = cause.downcast_ref::<drvault_restore::Error>() {
            match r {
                drvault_restore::Error::Repo(r) => return repo_exit(r),
                drvault_restore::Error::Verify { .. } => return Exit::Integrity,
                _ => return Exit::Failure,
            }
        }
    }
    Exit::Failure
}

fn repo_exit(r: &RepoError) -> Exit {
    match r {
        RepoError::WrongPassphrase => Exit::WrongPassphrase,
        RepoError::Integrity { .. } | RepoError::NotFound { .. } => Exit::Integrity,
        // An object sealed under an epoch the keyring does not hold (retired, or forged).
        RepoError::Key(drvault_keyring::Error::UnknownEpoch(_)) => Exit::Integrity,
        RepoError::NoRepository { .. } => Exit::NoRepository,
        _ => Exit::Failure,
    }
}
