//! Exit codes (documented in README.md and docs/OPERATIONS.md). Where restic (0.17 and later)
//! gives a code a meaning, drvault's code means the same, so a wrapper written for one reads the
//! other; 20 and 21 are drvault's own (restic does not use them).

use drvault_repo::Error as RepoError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    /// Any failure not listed below.
    Failure = 1,
    /// Usage error: a bad option or argument (clap's own code for what it catches).
    Usage = 2,
    /// The command completed but some entries could not be read (or some copies are missing).
    Partial = 3,
    /// No repository at the given location.
    NoRepository = 10,
    /// Another process holds the repository's lease.
    Locked = 11,
    /// Wrong passphrase or key file.
    WrongPassphrase = 12,
    /// Damaged, missing or forged repository data, or restored data that failed verification.
    Integrity = 20,
    /// The keys or storage credentials in use do not permit the operation.
    NotPermitted = 21,
    /// Stopped by SIGINT or SIGTERM (the shell's 128 + 2).
    Interrupted = 130,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// A stable word for the code, for `--json` errors.
pub fn kind(code: Exit) -> &'static str {
    match code {
        Exit::Ok => "ok",
        Exit::Failure => "failure",
        Exit::Usage => "usage",
        Exit::Partial => "partial",
        Exit::NoRepository => "no_repository",
        Exit::Locked => "locked",
        Exit::WrongPassphrase => "wrong_passphrase",
        Exit::Integrity => "integrity",
        Exit::NotPermitted => "not_permitted",
        Exit::Interrupted => "interrupted",
    }
}

/// A mistake in how the command was called that clap cannot see (a missing rule, a value out
/// of range): exits 2 like clap's own errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A command-line value that does not parse is a usage error (exit 2) naming its option.
pub fn option_value<T>(option: &str, parsed: anyhow::Result<T>) -> anyhow::Result<T> {
    parsed.map_err(|e| UsageError(format!("{option}: {e:#}")).into())
}

/// `anyhow::bail!` for usage errors.
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err(crate::exit::UsageError(format!($($arg)*)).into())
    };
}
pub(crate) use usage;

/// Maps an error to its exit code by the library error it carries.
pub fn classify(e: &anyhow::Error) -> Exit {
    for cause in e.chain() {
        if cause.is::<UsageError>() {
            return Exit::Usage;
        }
        if let Some(b) = cause.downcast_ref::<drvault_backup::Error>() {
            match b {
                drvault_backup::Error::Interrupted => return Exit::Interrupted,
                drvault_backup::Error::Usage(_) => return Exit::Usage,
                drvault_backup::Error::Repo(r) => return repo_exit(r),
                _ => return Exit::Failure,
            }
        }
        if let Some(r) = cause.downcast_ref::<RepoError>() {
            return repo_exit(r);
        }
        if let Some(r) = cause.downcast_ref::<drvault_restore::Error>() {
            match r {
                drvault_restore::Error::Repo(r) => return repo_exit(r),
                drvault_restore::Error::Verify { .. } | drvault_restore::Error::Damaged(_) => {
                    return Exit::Integrity
                }
                drvault_restore::Error::NoSnapshot(_)
                | drvault_restore::Error::Ambiguous(_)
                | drvault_restore::Error::NothingSelected { .. } => return Exit::Usage,
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
        RepoError::Locked { .. } => Exit::Locked,
        RepoError::Usage(_) => Exit::Usage,
        RepoError::Interrupted => Exit::Interrupted,
        r if r.is_not_permitted() => Exit::NotPermitted,
        _ => Exit::Failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_restic_where_it_has_one() {
        let code = |e: anyhow::Error| classify(&e) as u8;
        assert_eq!(code(RepoError::WrongPassphrase.into()), 12);
        assert_eq!(
            code(
                RepoError::NoRepository {
                    location: "x".into(),
                    detail: "y".into()
                }
                .into()
            ),
            10
        );
        assert_eq!(
            code(
                RepoError::Locked {
                    holder: "h".into(),
                    until: "t".into()
                }
                .into()
            ),
            11
        );
        let damaged = RepoError::Integrity {
            object: "pack".into(),
            reason: "bad tag".into(),
        };
        assert_eq!(code(damaged.into()), 20);
        assert_eq!(code(drvault_backup::Error::Interrupted.into()), 130);
        assert_eq!(code(RepoError::Interrupted.into()), 130);
        assert_eq!(
            code(drvault_backup::Error::Request("gone".into()).into()),
            1
        );
        assert_eq!(code(UsageError("no rule".into()).into()), 2);
        assert_eq!(code(drvault_backup::Error::Usage("a{".into()).into()), 2);
        assert_eq!(code(RepoError::Usage("zzzz".into()).into()), 2);
        assert_eq!(code(anyhow::anyhow!("other")), 1);
    }
}
