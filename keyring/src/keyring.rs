//! The keyring body: what the master key protects.
//!
//! The repository ID key (chunk IDs) and the chunker seed (chunk boundaries) are created once
//! and outlive every rotation, so blob IDs and deduplication survive re-encryption. Data keys
//! live in epochs; a rotation appends an epoch and makes it active.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::envelope::{open, seal, Header, ObjectKind};
use crate::{Error, Key, Result};

/// The epoch number written in envelopes sealed by the master key or a slot KEK.
pub const MASTER_EPOCH: u32 = u32::MAX;
/// The epoch number written in audit-log entries, sealed under the audit key.
pub const AUDIT_EPOCH: u32 = u32::MAX - 1;
/// Version 1: no config binding. Version 2: the body ends with `config_hash`. Version 3: then
/// the host secrets (the repository takes host keys, FORMAT.md section 6).
const KEYRING_VERSION_UNBOUND: u8 = 1;
const KEYRING_VERSION_BOUND: u8 = 2;
const KEYRING_VERSION: u8 = 3;
const KEYRING_CONTEXT: &[u8] = b"drvault keyring";
/// Derives an epoch's index key from its data key (`Keyring::index_key`; a host keyring holds the
/// index keys themselves).
pub(crate) const INDEX_KEY_CONTEXT: &str = "drvault 2026 epoch index key";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EpochState {
    Active,
    Retiring,
    Retired,
}

impl EpochState {
    pub fn as_str(&self) -> &'static str {
        match self {
            EpochState::Active => "active",
            EpochState::Retiring => "retiring",
            EpochState::Retired => "retired",
        }
    }
}

/// One data-key epoch. A retired epoch keeps its id and dates but not its key.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Epoch {
    #[zeroize(skip)]
    pub id: u32,
    #[zeroize(skip)]
    pub created: i64,
    #[zeroize(skip)]
    pub state: EpochState,
    key: Option<[u8; 32]>,
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoch")
            .field("id", &self.id)
            .field("created", &self.created)
            .field("state", &self.state)
            .finish()
    }
}

#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct Body {
    version: u8,
    generation: u64,
    id_key: [u8; 32],
    chunker_seed: [u8; 32],
    #[zeroize(skip)]
    epochs: Vec<Epoch>,
    /// The hash of the repository's `config` this keyring belongs to (FORMAT.md section 6):
    /// the clear-text config cannot be changed by someone without the keys. `None` in
    /// keyrings written before version 2, until the next key operation binds them.
    #[zeroize(skip)]
    config_hash: Option<[u8; 32]>,
    /// Present once the repository takes host keys (version 3).
    hosts: Option<HostSecrets>,
    /// Version 3 only: where the audit log stood when the keyring was written (an entry's
    /// sequence number and hash; opaque here). Encoded after the body's other fields, so
    /// version 3 bodies written without it still decode (FORMAT.md section 6).
    #[serde(skip)]
    #[zeroize(skip)]
    audit_anchor: Option<(u64, [u8; 32])>,
}

/// What only full key holders have, for host keys: the key that seals the host keyring, the
/// seed of each host slot's authentication key, and the audit log's X25519 secret (from
/// version 3 on, audit entries are sealed to its public key, so hosts can append but not read).
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(crate) struct HostSecrets {
    pub(crate) host_key: [u8; 32],
    pub(crate) auth_seed: [u8; 32],
    pub(crate) audit_secret: [u8; 32],
}

/// A version 2 body: version 3 without the host secrets. (Version 1 bodies were written in
/// this layout too, with `config_hash` always `None`.)
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct BodyV2 {
    version: u8,
    generation: u64,
    id_key: [u8; 32],
    chunker_seed: [u8; 32],
    #[zeroize(skip)]
    epochs: Vec<Epoch>,
    #[zeroize(skip)]
    config_hash: Option<[u8; 32]>,
}

/// A version 1 body: the same fields without `config_hash`.
#[derive(Deserialize)]
struct BodyV1 {
    version: u8,
    generation: u64,
    id_key: [u8; 32],
    chunker_seed: [u8; 32],
    epochs: Vec<Epoch>,
}

/// The unlocked keyring.
#[derive(Clone)]
pub struct Keyring {
    master: Key,
    body: Body,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("generation", &self.body.generation)
            .field("epochs", &self.body.epochs)
            .finish()
    }
}

impl Keyring {
    /// A new keyring with a fresh master key, ID key, chunker seed and one active epoch (id 1).
    pub fn generate(now: i64) -> Result<Self> {
        let master = Key::generate()?;
        let body = Body {
            version: KEYRING_VERSION,
            generation: 1,
            id_key: *Key::generate()?.expose(),
            chunker_seed: *Key::generate()?.expose(),
            config_hash: None,
            hosts: None,
            audit_anchor: None,
            epochs: vec![Epoch {
                id: 1,
                created: now,
                state: EpochState::Active,
                key: Some(*Key::generate()?.expose()),
            }],
        };
        Ok(Keyring { master, body })
    }

    pub fn master(&self) -> &Key {
        &self.master
    }

    /// Increases with every change; the newest keyring object wins.
    pub fn generation(&self) -> u64 {
        self.body.generation
    }

    pub fn epochs(&self) -> &[Epoch] {
        &self.body.epochs
    }

    /// The key of the repository's keyed BLAKE3 blob IDs.
    pub fn id_key(&self) -> &[u8; 32] {
        &self.body.id_key
    }

    /// The key of the audit log: derived from the ID key, so it outlives every rotation of the
    /// data keys and of the master key, and old entries need no re-encryption.
    pub fn audit_key(&self) -> Key {
        Key::from_bytes(blake3::derive_key(
            "drvault audit log v1",
            &self.body.id_key,
        ))
    }

    /// The seed of the chunker's keyed gear table.
    pub fn chunker_seed(&self) -> &[u8; 32] {
        &self.body.chunker_seed
    }

    /// The epoch new data is sealed under.
    pub fn active_epoch(&self) -> Result<(u32, Key)> {
        self.body
            .epochs
            .iter()
            .rev()
            .find(|e| e.state == EpochState::Active)
            .and_then(|e| e.key.map(|k| (e.id, Key::from_bytes(k))))
            .ok_or(Error::Malformed {
                what: "keyring",
                reason: "no active epoch".into(),
            })
    }

    /// The data key of `epoch`, if the keyring still holds it.
    pub fn epoch_key(&self, epoch: u32) -> Result<Key> {
        self.body
            .epochs
            .iter()
            .find(|e| e.id == epoch)
            .and_then(|e| e.key.map(Key::from_bytes))
            .ok_or(Error::UnknownEpoch(epoch))
    }

    /// Starts a new data-key epoch and makes it the one new data is sealed under; the epoch that
    /// was active becomes retiring (it still opens what it sealed). Returns the new epoch's id.
    pub fn rotate(&mut self, now: i64) -> Result<u32> {
        let id = self
            .body
            .epochs
            .iter()
            .map(|e| e.id)
            .max()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or(Error::Malformed {
                what: "keyring",
                reason: "epoch ids exhausted".into(),
            })?;
        if id >= AUDIT_EPOCH {
            return Err(Error::Malformed {
                what: "keyring",
                reason: "epoch ids exhausted".into(),
            });
        }
        for e in &mut self.body.epochs {
            if e.state == EpochState::Active {
                e.state = EpochState::Retiring;
            }
        }
        self.body.epochs.push(Epoch {
            id,
            created: now,
            state: EpochState::Active,
            key: Some(*Key::generate()?.expose()),
        });
        self.body.generation += 1;
        Ok(id)
    }

    /// Destroys the keys of the given retiring epochs: they become retired, and nothing they
    /// sealed can be opened with this keyring again. The active epoch cannot be retired.
    pub fn retire(&mut self, ids: &[u32]) -> Result<()> {
        for id in ids {
            let e = self
                .body
                .epochs
                .iter_mut()
                .find(|e| e.id == *id)
                .ok_or(Error::UnknownEpoch(*id))?;
            if e.state == EpochState::Active {
                return Err(Error::Malformed {
                    what: "keyring",
                    reason: format!("epoch {id} is active; rotate before retiring it"),
                });
            }
            e.state = EpochState::Retired;
            if let Some(k) = e.key.as_mut() {
                zeroize::Zeroize::zeroize(k);
            }
            e.key = None;
        }
        self.body.generation += 1;
        Ok(())
    }

    /// Replaces the master key. The body (ID key, seed, epochs) is unchanged; `seal` then
    /// seals it under the new master key, and every slot must be wrapped again.
    pub fn replace_master(&mut self) -> Result<()> {
        self.master = Key::generate()?;
        self.body.generation += 1;
        Ok(())
    }

    /// The config hash this keyring is bound to, if it is.
    pub fn config_hash(&self) -> Option<&[u8; 32]> {
        self.body.config_hash.as_ref()
    }

    /// Binds this keyring to a config (its hash): sealed from now on as version 2.
    pub fn bind_config(&mut self, hash: [u8; 32]) {
        self.body.config_hash = Some(hash);
    }

    /// Where the audit log stood when this keyring was written: the sequence number and hash
    /// of the newest entry then (kept only by keyrings that take host keys).
    pub fn audit_anchor(&self) -> Option<(u64, [u8; 32])> {
        self.body.audit_anchor
    }

    /// Records where the audit log stands, for the next `seal`.
    pub fn set_audit_anchor(&mut self, anchor: Option<(u64, [u8; 32])>) {
        self.body.audit_anchor = anchor;
    }

    /// Makes this keyring take host keys: creates the host secrets (once). Returns false when
    /// it already did.
    pub fn enable_hosts(&mut self) -> Result<bool> {
        if self.body.hosts.is_some() {
            return Ok(false);
        }
        self.body.hosts = Some(HostSecrets {
            host_key: *Key::generate()?.expose(),
            auth_seed: *Key::generate()?.expose(),
            audit_secret: *Key::generate()?.expose(),
        });
        self.body.generation += 1;
        Ok(true)
    }

    /// True once the repository takes host keys.
    pub fn takes_hosts(&self) -> bool {
        self.body.hosts.is_some()
    }

    pub(crate) fn host_secrets(&self) -> Option<&HostSecrets> {
        self.body.hosts.as_ref()
    }

    /// Replaces the key that seals the host keyring and the seed of the hosts' authentication
    /// and keyring-signing keys (with the master key: every host slot is removed, and a stolen
    /// host key, authentication key or old host keyring is worthless from then on).
    pub fn replace_host_key(&mut self) -> Result<()> {
        if let Some(h) = self.body.hosts.as_mut() {
            h.host_key = *Key::generate()?.expose();
            h.auth_seed = *Key::generate()?.expose();
            self.body.generation += 1;
        }
        Ok(())
    }

    /// The index key of `epoch` (derived from its data key): what index objects of a
    /// repository that takes host keys are sealed under.
    pub fn index_key(&self, epoch: u32) -> Result<Key> {
        let data = self.epoch_key(epoch)?;
        Ok(Key::from_bytes(blake3::derive_key(
            INDEX_KEY_CONTEXT,
            data.expose(),
        )))
    }

    /// The X25519 public key hosts seal `epoch`'s objects to.
    pub fn epoch_public(&self, epoch: u32) -> Result<[u8; 32]> {
        Ok(crate::sealing::public_of(self.epoch_key(epoch)?.expose()))
    }

    /// The key that opens a version 2 envelope of `epoch` (or of the audit log) sealed with
    /// the ephemeral public key `ephemeral`.
    pub fn opening_key(&self, epoch: u32, ephemeral: &[u8; 32]) -> Result<Key> {
        if epoch == AUDIT_EPOCH {
            let hosts = self.body.hosts.as_ref().ok_or(Error::UnknownEpoch(epoch))?;
            return crate::sealing::opening_key(&hosts.audit_secret, ephemeral);
        }
        crate::sealing::opening_key(self.epoch_key(epoch)?.expose(), ephemeral)
    }

    /// Seals the keyring body under the master key.
    pub fn seal(&self) -> Result<Vec<u8>> {
        let mut body = self.body.clone();
        let malformed = |e: postcard::Error| Error::Malformed {
            what: "keyring",
            reason: e.to_string(),
        };
        let plain = zeroize::Zeroizing::new(match (&body.config_hash, &body.hosts) {
            (Some(_), Some(_)) => {
                body.version = KEYRING_VERSION;
                let mut plain = postcard::to_stdvec(&body).map_err(malformed)?;
                plain.extend(postcard::to_stdvec(&body.audit_anchor).map_err(malformed)?);
                plain
            }
            (_, None) => {
                let v2 = BodyV2 {
                    version: if body.config_hash.is_some() {
                        KEYRING_VERSION_BOUND
                    } else {
                        KEYRING_VERSION_UNBOUND
                    },
                    generation: body.generation,
                    id_key: body.id_key,
                    chunker_seed: body.chunker_seed,
                    epochs: body.epochs.clone(),
                    config_hash: body.config_hash,
                };
                postcard::to_stdvec(&v2).map_err(malformed)?
            }
            (None, Some(_)) => {
                return Err(Error::Malformed {
                    what: "keyring",
                    reason: "host secrets without a config binding".into(),
                })
            }
        });
        let mut out = Vec::new();
        let header = Header {
            kind: ObjectKind::Keyring,
            compressed: false,
            epoch: crate::MASTER_EPOCH,
        };
        seal(&self.master, header, KEYRING_CONTEXT, &plain, &mut out)?;
        Ok(out)
    }

    /// Opens a sealed keyring body with the master key unwrapped from a slot.
    pub fn open(master: Key, sealed: &[u8]) -> Result<Self> {
        let (header, plain) = open(&master, KEYRING_CONTEXT, sealed)?;
        let plain = zeroize::Zeroizing::new(plain);
        if header.kind != ObjectKind::Keyring {
            return Err(Error::Malformed {
                what: "keyring",
                reason: "wrong object kind".into(),
            });
        }
        let body = decode_body(&plain)?;
        Ok(Keyring { master, body })
    }
}

/// Decodes a keyring body's plaintext (either version).
fn decode_body(plain: &[u8]) -> Result<Body> {
    let malformed = |e: postcard::Error| Error::Malformed {
        what: "keyring",
        reason: e.to_string(),
    };
    // The version is the body's first field, a single byte in postcard.
    let body = match plain.first() {
        Some(&KEYRING_VERSION) => {
            let (mut body, rest): (Body, _) =
                postcard::take_from_bytes(plain).map_err(malformed)?;
            if !rest.is_empty() {
                let (anchor, trailing) = postcard::take_from_bytes(rest).map_err(malformed)?;
                if !trailing.is_empty() {
                    return Err(Error::Malformed {
                        what: "keyring",
                        reason: "bytes after the audit anchor".into(),
                    });
                }
                body.audit_anchor = anchor;
            }
            if body.config_hash.is_none() || body.hosts.is_none() {
                return Err(Error::Malformed {
                    what: "keyring",
                    reason: "a version 3 keyring without its config hash or host secrets".into(),
                });
            }
            body
        }
        Some(&KEYRING_VERSION_BOUND) => {
            let old: BodyV2 = postcard::from_bytes(plain).map_err(malformed)?;
            let old = &old;
            if old.config_hash.is_none() {
                return Err(Error::Malformed {
                    what: "keyring",
                    reason: "a version 2 keyring without its config hash".into(),
                });
            }
            Body {
                version: old.version,
                generation: old.generation,
                id_key: old.id_key,
                chunker_seed: old.chunker_seed,
                epochs: old.epochs.clone(),
                config_hash: old.config_hash,
                hosts: None,
                audit_anchor: None,
            }
        }
        Some(&KEYRING_VERSION_UNBOUND) => {
            let old: BodyV1 = postcard::from_bytes(plain).map_err(malformed)?;
            Body {
                version: old.version,
                generation: old.generation,
                id_key: old.id_key,
                chunker_seed: old.chunker_seed,
                epochs: old.epochs,
                config_hash: None,
                hosts: None,
                audit_anchor: None,
            }
        }
        Some(&v) => return Err(Error::UnsupportedVersion(v)),
        None => {
            return Err(Error::Malformed {
                what: "keyring",
                reason: "empty body".into(),
            })
        }
    };
    Ok(body)
}

/// Decodes a keyring body's plaintext and drops it: for the fuzz targets (`fuzz/`).
#[doc(hidden)]
pub fn check_body(plain: &[u8]) -> Result<()> {
    decode_body(plain).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyring_written_before_the_config_binding_opens_and_binds_later() {
        let kr = Keyring::generate(1).expect("generate");
        // Unbound: sealed as version 1, exactly the old layout.
        let old = kr.seal().expect("seal");
        let back = Keyring::open(kr.master().clone(), &old).expect("a version 1 keyring opens");
        assert_eq!(back.config_hash(), None);
        assert_eq!(back.id_key(), kr.id_key());
        let mut bound = back;
        bound.bind_config([7; 32]);
        let sealed = bound.seal().expect("seal");
        let again = Keyring::open(kr.master().clone(), &sealed).expect("open");
        assert_eq!(again.config_hash(), Some(&[7; 32]));
        assert_eq!(again.epochs().len(), 1);
    }

    #[test]
    fn a_version_3_keyring_keeps_its_audit_anchor_and_opens_without_one() {
        let mut kr = Keyring::generate(1).expect("generate");
        kr.bind_config([7; 32]);
        kr.enable_hosts().expect("hosts");
        let plain_of = |kr: &Keyring| {
            let sealed = kr.seal().expect("seal");
            crate::envelope::open(kr.master(), KEYRING_CONTEXT, &sealed)
                .expect("open")
                .1
        };
        // Written before the anchor existed: the body ends after the host secrets.
        let without = plain_of(&kr);
        assert_eq!(without.last(), Some(&0), "None is one zero byte");
        let body = decode_body(&without[..without.len() - 1]).expect("decodes");
        assert_eq!(body.audit_anchor, None);
        kr.set_audit_anchor(Some((41, [9; 32])));
        let back = Keyring::open(kr.master().clone(), &kr.seal().expect("seal")).expect("open");
        assert_eq!(back.audit_anchor(), Some((41, [9; 32])));
        let mut longer = plain_of(&kr);
        longer.push(0);
        assert!(decode_body(&longer).is_err(), "trailing bytes are refused");
    }

    #[test]
    fn seal_open_round_trip() {
        let kr = Keyring::generate(42).expect("generate");
        let sealed = kr.seal().expect("seal");
        let back = Keyring::open(kr.master().clone(), &sealed).expect("open");
        assert_eq!(back.id_key(), kr.id_key());
        assert_eq!(back.active_epoch().expect("active").0, 1);
        assert!(matches!(back.epoch_key(7), Err(Error::UnknownEpoch(7))));
        assert!(Keyring::open(Key::generate().expect("rng"), &sealed).is_err());
        // Rotation and retirement.
        let mut kr = back;
        let (old, _) = kr.active_epoch().expect("active");
        let new = kr.rotate(100).expect("rotate");
        assert_eq!(kr.active_epoch().expect("active").0, new);
        assert_eq!(kr.epochs()[0].state, EpochState::Retiring);
        assert!(
            kr.epoch_key(old).is_ok(),
            "a retiring epoch still opens its data"
        );
        assert!(
            kr.retire(&[new]).is_err(),
            "the active epoch cannot be retired"
        );
        kr.retire(&[old]).expect("retire");
        assert!(matches!(kr.epoch_key(old), Err(Error::UnknownEpoch(_))));
        let resealed = Keyring::open(kr.master().clone(), &kr.seal().expect("seal")).expect("open");
        assert!(
            resealed.epoch_key(old).is_err(),
            "retired key material is gone after sealing"
        );
        assert_eq!(resealed.generation(), 3);
        let mut moved = resealed.clone();
        moved.replace_master().expect("new master");
        let sealed_new = moved.seal().expect("seal");
        assert!(
            Keyring::open(resealed.master().clone(), &sealed_new).is_err(),
            "the old master no longer opens it"
        );
        let back = Keyring::open(moved.master().clone(), &sealed_new).expect("open");
        // Debug output never shows key material.
        let shown = format!("{back:?}");
        assert!(!shown.contains(&format!("{:?}", back.id_key())));
    }
}
