//! The host keyring: what a host key slot opens (docs/FORMAT.md section 6, "Host keys").
//!
//! A host backs up and deduplicates against the whole repository but reads nothing stored:
//! it gets the ID key and chunker seed (blob IDs and chunk boundaries), each live epoch's
//! X25519 public key (it seals trees, data and snapshots to it) and index key (index entries
//! stay readable, so deduplication works), and the audit log's public key. The full keyring
//! holds the secret halves; the host keyring is rebuilt from it at every key operation.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::envelope::{open, seal, Header, ObjectKind};
use crate::keyring::EpochState;
use crate::{Error, Key, Keyring, Result, MASTER_EPOCH};

const AUTH_KEY_CONTEXT: &str = "drvault 2026 host slot authentication";
const HOST_KEYRING_CONTEXT: &[u8] = b"drvault host keyring";
const HOST_KEYRING_VERSION: u8 = 1;
const SIGNING_CONTEXT: &str = "drvault 2026 host keyring signing";
const SIGNATURE_LEN: usize = 64;

/// The Ed25519 key that signs host keyrings: hosts share the host key that seals them, so
/// without a signature any host could write one (its own "epoch public key" included).
fn signing_key(auth_seed: &[u8; 32]) -> ed25519_dalek::SigningKey {
    let mut seed = blake3::derive_key(SIGNING_CONTEXT, auth_seed);
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    zeroize::Zeroize::zeroize(&mut seed);
    key
}

/// One epoch as a host sees it.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(crate) struct HostEpoch {
    #[zeroize(skip)]
    pub(crate) id: u32,
    #[zeroize(skip)]
    pub(crate) state: EpochState,
    #[zeroize(skip)]
    pub(crate) public: [u8; 32],
    pub(crate) index_key: [u8; 32],
}

#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct HostBody {
    version: u8,
    generation: u64,
    id_key: [u8; 32],
    chunker_seed: [u8; 32],
    #[zeroize(skip)]
    config_hash: [u8; 32],
    #[zeroize(skip)]
    epochs: Vec<HostEpoch>,
    #[zeroize(skip)]
    audit_public: [u8; 32],
}

/// The unlocked host keyring.
#[derive(Clone)]
pub struct HostKeyring {
    body: HostBody,
}

impl std::fmt::Debug for HostKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKeyring")
            .field("generation", &self.body.generation)
            .finish()
    }
}

impl Keyring {
    /// The host keyring of this keyring, sealed under the host key (`None` until the
    /// repository takes host keys).
    pub fn seal_host_keyring(&self) -> Result<Option<Vec<u8>>> {
        let Some(secrets) = self.host_secrets() else {
            return Ok(None);
        };
        let config_hash = *self.config_hash().ok_or(Error::Malformed {
            what: "keyring",
            reason: "host keys need the config binding".into(),
        })?;
        let mut epochs = Vec::new();
        for e in self
            .epochs()
            .iter()
            .filter(|e| e.state != EpochState::Retired)
        {
            epochs.push(HostEpoch {
                id: e.id,
                state: e.state,
                public: self.epoch_public(e.id)?,
                index_key: *self.index_key(e.id)?.expose(),
            });
        }
        let body = HostBody {
            version: HOST_KEYRING_VERSION,
            generation: self.generation(),
            id_key: *self.id_key(),
            chunker_seed: *self.chunker_seed(),
            config_hash,
            epochs,
            audit_public: crate::sealing::public_of(&secrets.audit_secret),
        };
        let mut plain =
            zeroize::Zeroizing::new(postcard::to_stdvec(&body).map_err(|e| Error::Malformed {
                what: "host keyring",
                reason: e.to_string(),
            })?);
        let signature =
            ed25519_dalek::Signer::sign(&signing_key(&secrets.auth_seed), &signed_message(&plain));
        plain.extend_from_slice(&signature.to_bytes());
        let header = Header {
            kind: ObjectKind::HostKeyring,
            compressed: false,
            epoch: MASTER_EPOCH,
        };
        let mut out = Vec::new();
        seal(
            &Key::from_bytes(secrets.host_key),
            header,
            HOST_KEYRING_CONTEXT,
            &plain,
            &mut out,
        )?;
        Ok(Some(out))
    }

    /// The key host slots wrap (with their authentication key).
    pub fn host_key(&self) -> Option<Key> {
        self.host_secrets().map(|s| Key::from_bytes(s.host_key))
    }

    /// The Ed25519 public key that verifies host keyrings (host slots carry it).
    pub fn host_keyring_verifier(&self) -> Option<[u8; 32]> {
        self.host_secrets()
            .map(|s| signing_key(&s.auth_seed).verifying_key().to_bytes())
    }

    /// The authentication key of host `host`'s slots: what proves a snapshot came from a slot
    /// of that host. Only full key holders derive it for any host.
    pub fn host_auth_key(&self, host: &str) -> Result<Key> {
        let secrets = self.host_secrets().ok_or(Error::Malformed {
            what: "keyring",
            reason: "the repository takes no host keys".into(),
        })?;
        let mut h = blake3::Hasher::new_derive_key(AUTH_KEY_CONTEXT);
        h.update(&secrets.auth_seed);
        h.update(host.as_bytes());
        Ok(Key::from_bytes(*h.finalize().as_bytes()))
    }

    /// The key that authenticates prune marks (`None` until the repository takes host keys,
    /// whose marks are sealed under index keys that hosts hold).
    pub fn prune_mark_key(&self) -> Option<Key> {
        self.host_secrets().map(|s| {
            Key::from_bytes(blake3::derive_key(
                "drvault 2026 prune mark authentication",
                &s.audit_secret,
            ))
        })
    }

    /// The key that authenticates audit entries written by full keys (`None` until the
    /// repository takes host keys).
    pub fn audit_auth_key(&self) -> Option<Key> {
        self.host_secrets().map(|s| {
            Key::from_bytes(blake3::derive_key(
                "drvault 2026 audit entry authentication",
                &s.audit_secret,
            ))
        })
    }

    /// The audit log's X25519 public key (`None` until the repository takes host keys).
    pub fn audit_public(&self) -> Option<[u8; 32]> {
        self.host_secrets()
            .map(|s| crate::sealing::public_of(&s.audit_secret))
    }
}

/// What the signature covers: a context, then the body's bytes.
fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = HOST_KEYRING_CONTEXT.to_vec();
    m.extend_from_slice(body);
    m
}

impl HostKeyring {
    /// Opens a sealed host keyring with the host key a host slot unwrapped, and verifies its
    /// signature with the verifying key the slot carries: a host keyring another host wrote
    /// (with the host key every host shares) does not verify.
    pub fn open(host_key: &Key, verifier: &[u8; 32], sealed: &[u8]) -> Result<Self> {
        let (header, plain) = open(host_key, HOST_KEYRING_CONTEXT, sealed)?;
        let plain = zeroize::Zeroizing::new(plain);
        if header.kind != ObjectKind::HostKeyring {
            return Err(Error::Malformed {
                what: "host keyring",
                reason: "wrong object kind".into(),
            });
        }
        let Some(at) = plain.len().checked_sub(SIGNATURE_LEN) else {
            return Err(Error::Malformed {
                what: "host keyring",
                reason: "shorter than its signature".into(),
            });
        };
        let verifier =
            ed25519_dalek::VerifyingKey::from_bytes(verifier).map_err(|_| Error::Malformed {
                what: "host slot",
                reason: "its keyring verifying key is not a valid Ed25519 key".into(),
            })?;
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(&plain[at..]);
        verifier
            .verify_strict(
                &signed_message(&plain[..at]),
                &ed25519_dalek::Signature::from_bytes(&signature),
            )
            .map_err(|_| Error::Forged("host keyring"))?;
        Self::decode(&plain[..at])
    }

    fn decode(plain: &[u8]) -> Result<Self> {
        match plain.first() {
            Some(&HOST_KEYRING_VERSION) => {}
            Some(&v) => return Err(Error::UnsupportedVersion(v)),
            None => {
                return Err(Error::Malformed {
                    what: "host keyring",
                    reason: "empty body".into(),
                })
            }
        }
        let body: HostBody = postcard::from_bytes(plain).map_err(|e| Error::Malformed {
            what: "host keyring",
            reason: e.to_string(),
        })?;
        Ok(HostKeyring { body })
    }

    pub fn generation(&self) -> u64 {
        self.body.generation
    }

    pub fn id_key(&self) -> &[u8; 32] {
        &self.body.id_key
    }

    pub fn chunker_seed(&self) -> &[u8; 32] {
        &self.body.chunker_seed
    }

    pub fn config_hash(&self) -> &[u8; 32] {
        &self.body.config_hash
    }

    pub fn audit_public(&self) -> &[u8; 32] {
        &self.body.audit_public
    }

    /// The epoch new objects are sealed to: its id and public key.
    pub fn active_epoch(&self) -> Result<(u32, [u8; 32])> {
        self.body
            .epochs
            .iter()
            .rev()
            .find(|e| e.state == EpochState::Active)
            .map(|e| (e.id, e.public))
            .ok_or(Error::Malformed {
                what: "host keyring",
                reason: "no active epoch".into(),
            })
    }

    /// The index key of `epoch`.
    pub fn index_key(&self, epoch: u32) -> Result<Key> {
        self.body
            .epochs
            .iter()
            .find(|e| e.id == epoch)
            .map(|e| Key::from_bytes(e.index_key))
            .ok_or(Error::UnknownEpoch(epoch))
    }
}

/// Decodes a host keyring's plaintext and drops it: for the fuzz targets.
#[doc(hidden)]
pub fn check_host_body(plain: &[u8]) -> Result<()> {
    HostKeyring::decode(plain).map(|_| ())
}
