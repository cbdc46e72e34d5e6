/// Errors of the key hierarchy. None of them carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No key slot opens with the given passphrase.
    #[error("wrong passphrase: no key slot of this repository opens with it")]
    WrongPassphrase,
    /// Authentication of sealed data failed: it was damaged or sealed with another key.
    #[error("authentication failed: the data is damaged or was sealed with another key")]
    Authentication,
    /// Bytes that do not parse as the structure expected.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// The data names a key epoch this keyring does not hold (retired or unknown).
    #[error("key epoch {0} is not in the keyring (retired or unknown)")]
    UnknownEpoch(u32),
    /// The format version is newer than this build understands.
    #[error("unsupported format version {0}; upgrade drvault")]
    UnsupportedVersion(u8),
    /// Argon2 rejected its parameters.
    #[error("key derivation failed: {0}")]
    Kdf(String),
    /// Authenticated under a shared key but not signed by the full keys: written by someone
    /// who holds only what every host holds.
    #[error("{0} is not signed by the repository's full keys: forged by a host key or planted")]
    Forged(&'static str),
    /// A host key (put-only) was asked to open what only full key holders read.
    #[error("a host key cannot open {0}: host keys back up only; run this with a passphrase, key file or recovery key of the repository")]
    HostKey(&'static str),
    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
}
