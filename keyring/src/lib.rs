//! The drvault key hierarchy.
//!
//! passphrase --Argon2id--> key-encryption key --unwraps--> master key
//! master key --seals--> keyring body: repository ID key, chunker seed, data-key epochs.
//! host passphrase --Argon2id--> KEK --unwraps--> host key --opens--> host keyring: ID key,
//! chunker seed, epoch public keys and index keys (hosts back up but read nothing stored).
//!
//! This crate performs no I/O: callers hand it bytes and store what it returns.
//! Every secret lives in a zeroizing buffer and no `Debug` output shows key material.

mod envelope;
mod error;
mod hosts;
mod kdf;
mod keyring;
mod keys;
mod sealing;
mod secret;
mod slot;

pub use envelope::{
    ephemeral_key, open, open_into, seal, Header, ObjectKind, ENVELOPE_OVERHEAD, FORMAT_VERSION,
    HEADER_LEN, PUBLIC_HEADER_LEN, SEALED_TO_PUBLIC_VERSION,
};
pub use error::Error;
#[doc(hidden)]
pub use hosts::check_host_body;
pub use hosts::HostKeyring;
pub use kdf::KdfParams;
#[doc(hidden)]
pub use keyring::check_body as check_keyring_body;
pub use keyring::{Epoch, EpochState, Keyring, AUDIT_EPOCH, MASTER_EPOCH};
pub use keys::{Keys, Sealer};
pub use sealing::SealingKey;
pub use secret::{random_bytes, Key};
pub use slot::{
    generate_recovery_key, normalize_recovery_key, Credential, HostSlotKeys, KeySlot, SlotKind,
    MAX_LABEL,
};

pub type Result<T, E = Error> = std::result::Result<T, E>;
