/// Errors of repository operations, shaped for what callers do about them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An object that should exist is absent.
    #[error("object {name} not found in the repository")]
    NotFound { name: String },
    /// No repository exists at the location.
    #[error(
        "no drvault repository at {location} ({detail}). If the location is mistyped, name \
             the repository with --repo or $DRVAULT_REPO (or the targets in the config file); to \
             create one there, run `drvault init`"
    )]
    NoRepository { location: String, detail: String },
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
    /// This process's maintenance lease was lost or could not be renewed (or released): the
    /// operation stopped before its next destructive step. Running it again is safe.
    #[error("the maintenance lease was lost ({0}); stopped before the next destructive step; run it again")]
    LeaseLost(String),
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
    /// The local catalog's SQLite database failed; the source says how.
    #[error("catalog {path}: {source}")]
    CatalogDb {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    /// A key operation failed.
    #[error(transparent)]
    Key(drvault_keyring::Error),
    /// A target's listing failed (or the target failed earlier in this run), so a decision
    /// that deletes objects or destroys keys would rest on a partial view: it is refused.
    #[error("refusing to {action}: target {target} could not be listed ({reason}); nothing was deleted by this step; run it again when every target answers (`drvault targets`)")]
    Incomplete {
        action: String,
        target: String,
        reason: String,
    },
    /// This host's clock and a target's clock differ by more than the bound the protocols
    /// assume (docs/FORMAT.md section 16).
    #[error("the clock of this host and target {target}'s clock differ by {seconds} s, more than the {bound} s drvault allows; fix the time (NTP) and run again")]
    ClockSkew {
        target: String,
        seconds: i64,
        bound: i64,
    },
    /// Another process changed the keyring (a rotation) after this one opened it.
    #[error("the keyring changed since the repository was opened; run the command again")]
    KeyringChanged,
    /// A backup's session was not renewed for longer than its staleness bound (the process was
    /// stopped or cut off from storage), so maintenance may have taken it for dead.
    #[error("this backup's session was not renewed for {seconds} s (more than the {bound} s after which other hosts take it for dead); nothing was committed; run the backup again")]
    SessionLapsed { seconds: i64, bound: i64 },
    /// The keys or credentials in use do not permit this (removing the slot that opened the
    /// repository; a write the storage refuses).
    #[error("not permitted: {0}")]
    NotPermitted(String),
    /// The operation stopped at a clean point because its [`crate::cancel::Cancel`] was
    /// set (SIGTERM, Ctrl-C, the agent's shutdown); what it finished is durable.
    #[error("stopped on request at a clean point; what was done is kept, and running it again continues from there")]
    Interrupted,
    /// An operation that must be recorded in the audit log could not be: refused before it
    /// changed anything (`done: false`), or done but its entry could not be written.
    #[error("{}", unaudited_message(action, reason, *done))]
    Unaudited {
        action: String,
        reason: String,
        done: bool,
    },
    /// A bug or a broken invariant inside drvault (a poisoned lock, a panicked task): not
    /// the caller's input, not worth a retry; please report it.
    #[error("internal error: {0}; this is a bug in drvault, please report it")]
    Internal(String),
    /// Invalid argument from the caller (a bad URL, a path that cannot be a repository).
    #[error("{0}")]
    Invalid(String),
    /// The request names nothing or several things (a key slot prefix), or asks for what a
    /// rule refuses (removing the last key slot, an empty passphrase). Nothing was changed;
    /// say it again differently (the CLI's exit code 2).
    #[error("{0}")]
    Usage(String),
}

fn unaudited_message(action: &str, reason: &str, done: bool) -> String {
    if done {
        format!(
            "{action} was done, but the audit log did not take its entry ({reason}): the change \
             stands unrecorded. Run `drvault audit verify`, fix what it names, and note the change \
             in your own records"
        )
    } else {
        format!(
            "refusing {action}: the audit log cannot take its entry now ({reason}); nothing was \
             changed. Fix the audit log (`drvault audit verify`, `drvault targets`) and run it again"
        )
    }
}

impl Error {
    /// True when the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        if self.is_not_permitted() {
            return false;
        }
        matches!(
            self,
            Error::Storage { .. }
                | Error::Quorum { .. }
                | Error::Unavailable { .. }
                | Error::NoTarget { .. }
                | Error::Incomplete { .. }
                | Error::KeyringChanged
                | Error::SessionLapsed { .. }
                | Error::LeaseLost(_)
        )
    }

    /// True when the storage provider refused the credentials or the operation (HTTP 401/403,
    /// EACCES): another key or policy is needed, not another try.
    pub fn is_not_permitted(&self) -> bool {
        matches!(
            self,
            Error::NotPermitted(_)
                | Error::Storage {
                    source: object_store::Error::PermissionDenied { .. }
                        | object_store::Error::Unauthenticated { .. },
                    ..
                }
        )
    }

    /// True for a refusal of this request by a provider that accepted the credentials (HTTP
    /// 403): the policy forbids it, other requests may be allowed.
    pub fn is_refused(&self) -> bool {
        matches!(
            self,
            Error::NotPermitted(_)
                | Error::Storage {
                    source: object_store::Error::PermissionDenied { .. },
                    ..
                }
        )
    }

    /// A blocking task that panicked or was cancelled: a bug, not the caller's input.
    pub(crate) fn task(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("a worker task failed: {e}"))
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

/// The full keyring, or the refusal a process a host key opened gets (not permitted).
pub(crate) fn full_keyring(
    keys: &drvault_keyring::Keys,
) -> crate::Result<&drvault_keyring::Keyring> {
    keys.keyring().ok_or_else(|| {
        Error::NotPermitted(format!(
            "this repository was opened with host {}'s key, which backs up only; key \
            operations, restores, listings and data checks need a passphrase, key file or \
            recovery key (run them from a maintenance host)",
            keys.host_name().unwrap_or("?")
        ))
    })
}

impl From<drvault_keyring::Error> for Error {
    fn from(e: drvault_keyring::Error) -> Self {
        match e {
            drvault_keyring::Error::WrongPassphrase => Error::WrongPassphrase,
            e @ drvault_keyring::Error::HostKey(_) => Error::NotPermitted(e.to_string()),
            other => Error::Key(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_credentials_are_not_permitted_and_not_retried() {
        let denied = Error::Storage {
            object: "keys/x".into(),
            source: object_store::Error::PermissionDenied {
                path: "keys/x".into(),
                source: "403 Forbidden".into(),
            },
        };
        assert!(denied.is_not_permitted());
        assert!(!denied.is_retryable());
        let timeout = Error::Storage {
            object: "keys/x".into(),
            source: object_store::Error::Generic {
                store: "S3",
                source: "timed out".into(),
            },
        };
        assert!(!timeout.is_not_permitted());
        assert!(timeout.is_retryable());
    }
}
