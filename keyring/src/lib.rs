//! The drvault key hierarchy.
//!
//! passphrase --Argon2id--> key-encryption key --unwraps--> master key
//! master key --seals--> keyring body: repository ID key, chunker seed, data-key epochs.
//!
//! This crate performs no I/O: callers hand it bytes and store what it returns.
//! Every secret lives in a zeroizing buffer and no `Debug` output shows key material.

mod envelope;
mod error;
mod kdf;
mod keyring;
mod secret;
mod slot;

pub use envelope::{open, seal, Header, ObjectKind, ENVELOPE_OVERHEAD, FORMAT_VERSION, HEADER_LEN};
pub use error::Error;
pub use kdf::KdfParams;
#[doc(hidden)]
pub use keyring::check_body as check_keyring_body;
pub use keyring::{Epoch, EpochState, Keyring, AUDIT_EPOCH, MASTER_EPOCH};
pub use secret::{random_bytes, Key};
pub use slot::{
    generate_recovery_key, normalize_recovery_key, Credential, KeySlot, SlotKind, MAX_LABEL,
};

pub type Result<T, E = Error> = std::result::Result<T, E>;
