//! The keys a process opened a repository with: every key (a passphrase, key-file or recovery
//! slot opened the full keyring) or a host's put-only keys (a host slot opened the host
//! keyring). Everything that seals or opens repository objects asks this type, so what a host
//! key cannot do is decided in one place.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::envelope::{ephemeral_key, Header, ObjectKind, SEALED_TO_PUBLIC_VERSION};
use crate::sealing::SealingKey;
use crate::{Error, HostKeyring, Key, Keyring, Result, AUDIT_EPOCH};

/// Derived opening keys kept per (ephemeral key, epoch): one X25519 operation per writer, not
/// per object.
const OPENING_CACHE: usize = 4096;

enum Access {
    Full(Keyring),
    Host {
        ring: HostKeyring,
        host: String,
        slot: crate::HostSlotKeys,
    },
}

pub struct Keys {
    access: Access,
    opening: Mutex<HashMap<([u8; 32], u32), Key>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.access {
            Access::Full(kr) => f.debug_tuple("Keys::Full").field(kr).finish(),
            Access::Host { ring, host, .. } => f
                .debug_struct("Keys::Host")
                .field("host", host)
                .field("ring", ring)
                .finish(),
        }
    }
}

/// How one writer seals: with an epoch's data key (full keys) or to its public key (hosts).
pub enum Sealer {
    Symmetric { epoch: u32, key: Key },
    Public(SealingKey),
}

impl Sealer {
    pub fn epoch(&self) -> u32 {
        match self {
            Sealer::Symmetric { epoch, .. } => *epoch,
            Sealer::Public(k) => k.epoch(),
        }
    }

    /// Seals `payload` (already compressed when `compressed`) as an object of `kind`.
    pub fn seal(
        &self,
        kind: ObjectKind,
        compressed: bool,
        context: &[u8],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        match self {
            Sealer::Symmetric { epoch, key } => crate::seal(
                key,
                Header {
                    kind,
                    compressed,
                    epoch: *epoch,
                },
                context,
                payload,
                out,
            ),
            Sealer::Public(k) => k.seal(kind, compressed, context, payload, out),
        }
    }
}

impl Keys {
    pub fn full(keyring: Keyring) -> Self {
        Keys {
            access: Access::Full(keyring),
            opening: Mutex::default(),
        }
    }

    /// A host's keys: its host keyring, its host name and what its slot unwrapped (the host
    /// key and verifier, to read a newer host keyring; its authentication key).
    pub fn host(ring: HostKeyring, host: String, slot: crate::HostSlotKeys) -> Self {
        Keys {
            access: Access::Host { ring, host, slot },
            opening: Mutex::default(),
        }
    }

    /// The full keyring, unless these are a host's keys.
    pub fn keyring(&self) -> Option<&Keyring> {
        match &self.access {
            Access::Full(kr) => Some(kr),
            Access::Host { .. } => None,
        }
    }

    /// What the host slot unwrapped (to open a newer host keyring), when these are a host's
    /// keys.
    pub fn host_slot(&self) -> Option<&crate::HostSlotKeys> {
        match &self.access {
            Access::Full(_) => None,
            Access::Host { slot, .. } => Some(slot),
        }
    }

    /// The host these keys belong to, when they are a host's.
    pub fn host_name(&self) -> Option<&str> {
        match &self.access {
            Access::Full(_) => None,
            Access::Host { host, .. } => Some(host),
        }
    }

    pub fn id_key(&self) -> &[u8; 32] {
        match &self.access {
            Access::Full(kr) => kr.id_key(),
            Access::Host { ring, .. } => ring.id_key(),
        }
    }

    pub fn chunker_seed(&self) -> &[u8; 32] {
        match &self.access {
            Access::Full(kr) => kr.chunker_seed(),
            Access::Host { ring, .. } => ring.chunker_seed(),
        }
    }

    pub fn generation(&self) -> u64 {
        match &self.access {
            Access::Full(kr) => kr.generation(),
            Access::Host { ring, .. } => ring.generation(),
        }
    }

    pub fn config_hash(&self) -> Option<&[u8; 32]> {
        match &self.access {
            Access::Full(kr) => kr.config_hash(),
            Access::Host { ring, .. } => Some(ring.config_hash()),
        }
    }

    /// True when the repository takes host keys: index objects are then sealed under index
    /// keys and audit entries to the audit log's public key.
    pub fn takes_hosts(&self) -> bool {
        match &self.access {
            Access::Full(kr) => kr.takes_hosts(),
            Access::Host { .. } => true,
        }
    }

    /// The active epoch's id.
    pub fn active_epoch_id(&self) -> Result<u32> {
        match &self.access {
            Access::Full(kr) => Ok(kr.active_epoch()?.0),
            Access::Host { ring, .. } => Ok(ring.active_epoch()?.0),
        }
    }

    /// How trees, data, snapshots and pack headers are sealed.
    pub fn data_sealer(&self) -> Result<Sealer> {
        match &self.access {
            Access::Full(kr) => {
                let (epoch, key) = kr.active_epoch()?;
                Ok(Sealer::Symmetric { epoch, key })
            }
            Access::Host { ring, .. } => {
                let (epoch, public) = ring.active_epoch()?;
                Ok(Sealer::Public(SealingKey::new(epoch, &public)?))
            }
        }
    }

    /// How an object of `kind` is sealed, and the kind it is stored as: index objects and
    /// prune marks under the epoch's index key (as `Shared*` kinds) when the repository takes
    /// host keys, audit entries as [`Keys::audit_sealer`], everything else as
    /// [`Keys::data_sealer`].
    pub fn sealer_for(&self, kind: ObjectKind) -> Result<(ObjectKind, Sealer)> {
        if kind == ObjectKind::AuditEntry {
            return Ok((kind, self.audit_sealer()?));
        }
        let Some(shared) = kind.shared().filter(|_| self.takes_hosts()) else {
            return Ok((kind, self.data_sealer()?));
        };
        let (epoch, key) = match &self.access {
            Access::Full(kr) => {
                let epoch = kr.active_epoch()?.0;
                (epoch, kr.index_key(epoch)?)
            }
            Access::Host { ring, .. } => {
                let epoch = ring.active_epoch()?.0;
                (epoch, ring.index_key(epoch)?)
            }
        };
        Ok((shared, Sealer::Symmetric { epoch, key }))
    }

    /// How audit entries are sealed: to the audit log's public key when the repository takes
    /// host keys, under the audit key before.
    pub fn audit_sealer(&self) -> Result<Sealer> {
        let public = match &self.access {
            Access::Full(kr) => match kr.audit_public() {
                Some(p) => p,
                None => {
                    return Ok(Sealer::Symmetric {
                        epoch: AUDIT_EPOCH,
                        key: kr.audit_key(),
                    })
                }
            },
            Access::Host { ring, .. } => *ring.audit_public(),
        };
        Ok(Sealer::Public(SealingKey::new(AUDIT_EPOCH, &public)?))
    }

    /// The authentication key of `host`'s slots: any host's with full keys, only its own with a
    /// host's keys.
    pub fn host_auth_key(&self, host: &str) -> Result<Key> {
        match &self.access {
            Access::Full(kr) => kr.host_auth_key(host),
            Access::Host {
                host: own, slot, ..
            } if own == host => Ok(slot.auth.clone()),
            Access::Host { .. } => Err(Error::HostKey("another host's authentication key")),
        }
    }

    /// Opens any sealed repository object (not the keyring or slots): its header and payload.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<(Header, Vec<u8>)> {
        let header = Header::parse(sealed)?;
        let key = self.opening_key_for(&header, sealed)?;
        crate::open(&key, context, sealed)
    }

    /// [`Keys::open`] into `out` (cleared first), for callers that open many objects.
    pub fn open_into(&self, context: &[u8], sealed: &[u8], out: &mut Vec<u8>) -> Result<Header> {
        out.clear();
        let header = Header::parse(sealed)?;
        let key = self.opening_key_for(&header, sealed)?;
        crate::open_into(&key, context, sealed, out)
    }

    fn opening_key_for(&self, header: &Header, sealed: &[u8]) -> Result<Key> {
        let public = sealed.first() == Some(&SEALED_TO_PUBLIC_VERSION);
        let kr = match &self.access {
            Access::Host { ring, .. } => {
                return match header.kind {
                    ObjectKind::SharedIndex | ObjectKind::SharedPruneMark if !public => {
                        ring.index_key(header.epoch)
                    }
                    other => Err(Error::HostKey(kind_name(other))),
                }
            }
            Access::Full(kr) => kr,
        };
        if public {
            // Only what hosts write comes sealed to a public key: blobs, snapshots, pack
            // headers, and (under the audit epoch) audit entries.
            let allowed = match header.kind {
                ObjectKind::AuditEntry => header.epoch == AUDIT_EPOCH,
                ObjectKind::DataBlob
                | ObjectKind::TreeBlob
                | ObjectKind::Snapshot
                | ObjectKind::PackHeader => header.epoch != AUDIT_EPOCH,
                _ => false,
            };
            if !allowed {
                return Err(Error::Malformed {
                    what: "envelope",
                    reason: format!("{:?} is never sealed to a public key", header.kind),
                });
            }
            let eph = ephemeral_key(sealed).ok_or(Error::Authentication)?;
            let cache_key = (eph, header.epoch);
            if let Some(k) = self
                .opening
                .lock()
                .ok()
                .and_then(|c| c.get(&cache_key).cloned())
            {
                return Ok(k);
            }
            let key = kr.opening_key(header.epoch, &eph)?;
            if let Ok(mut cache) = self.opening.lock() {
                if cache.len() >= OPENING_CACHE {
                    cache.clear();
                }
                cache.insert(cache_key, key.clone());
            }
            return Ok(key);
        }
        match header.kind {
            ObjectKind::SharedIndex | ObjectKind::SharedPruneMark => kr.index_key(header.epoch),
            ObjectKind::AuditEntry if header.epoch == AUDIT_EPOCH => Ok(kr.audit_key()),
            _ => kr.epoch_key(header.epoch),
        }
    }
}

fn kind_name(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::DataBlob => "file data",
        ObjectKind::TreeBlob => "a directory tree",
        ObjectKind::Index | ObjectKind::SharedIndex => {
            "an index from before the repository took host keys"
        }
        ObjectKind::Snapshot => "a snapshot",
        ObjectKind::Keyring | ObjectKind::HostKeyring | ObjectKind::SlotWrap => "key material",
        ObjectKind::PackHeader => "a pack header",
        ObjectKind::AuditEntry => "the audit log",
        ObjectKind::PruneMark | ObjectKind::SharedPruneMark => {
            "a prune mark from before the repository took host keys"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KdfParams, KeySlot};

    fn full_with_hosts() -> Keyring {
        let mut kr = Keyring::generate(1).expect("generate");
        kr.bind_config([3; 32]);
        assert!(kr.enable_hosts().expect("hosts"));
        assert!(!kr.enable_hosts().expect("hosts"), "once");
        kr
    }

    fn host_keys(kr: &Keyring, host: &str) -> Keys {
        let kdf = KdfParams {
            m_cost_kib: 8,
            t_cost: 1,
            p_cost: 1,
        };
        let slot = KeySlot::create_host(1, kdf, b"host pass", host, kr).expect("slot");
        assert_eq!(slot.label, host);
        let back = KeySlot::decode(&slot.encode()).expect("decode");
        assert!(matches!(
            back.unwrap_master(b"host pass"),
            Err(Error::HostKey(_))
        ));
        let slot_keys = back
            .unwrap_host_with(&crate::Credential::passphrase(b"host pass"))
            .expect("unwrap");
        let sealed = kr.seal_host_keyring().expect("seal").expect("takes hosts");
        let ring =
            HostKeyring::open(&slot_keys.host_key, &slot_keys.verifier, &sealed).expect("open");
        assert_eq!(ring.id_key(), kr.id_key());
        assert_eq!(ring.generation(), kr.generation());
        Keys::host(ring, host.to_string(), slot_keys)
    }

    #[test]
    fn a_host_seals_what_it_cannot_open_and_reads_only_indexes() {
        let kr = full_with_hosts();
        let host = host_keys(&kr, "db1");
        let full = Keys::full(kr.clone());
        // What the host seals, full keys open; the host itself cannot.
        let sealer = host.data_sealer().expect("sealer");
        let mut tree = Vec::new();
        sealer
            .seal(ObjectKind::TreeBlob, false, b"id", b"names", &mut tree)
            .expect("seal");
        assert_eq!(full.open(b"id", &tree).expect("full opens").1, b"names");
        assert!(matches!(host.open(b"id", &tree), Err(Error::HostKey(_))));
        // Nor what full keys sealed.
        let mut data = Vec::new();
        full.data_sealer()
            .expect("sealer")
            .seal(ObjectKind::DataBlob, false, b"id", b"secret", &mut data)
            .expect("seal");
        assert!(matches!(host.open(b"id", &data), Err(Error::HostKey(_))));
        // Index objects: both read both.
        for writer in [&host, &full] {
            let (kind, s) = writer.sealer_for(ObjectKind::Index).expect("index sealer");
            assert_eq!(kind, ObjectKind::SharedIndex);
            let mut idx = Vec::new();
            s.seal(kind, false, b"", b"entries", &mut idx)
                .expect("seal");
            assert_eq!(host.open(b"", &idx).expect("host").1, b"entries");
            assert_eq!(full.open(b"", &idx).expect("full").1, b"entries");
        }
        // The audit log: hosts append, only full keys read.
        let mut entry = Vec::new();
        host.audit_sealer()
            .expect("audit")
            .seal(ObjectKind::AuditEntry, false, b"audit/1", b"{}", &mut entry)
            .expect("seal");
        assert_eq!(full.open(b"audit/1", &entry).expect("full").1, b"{}");
        assert!(host.open(b"audit/1", &entry).is_err());
        // Authentication keys: a host has its own only; full keys derive every host's.
        assert_eq!(
            host.host_auth_key("db1").expect("own").expose(),
            full.host_auth_key("db1").expect("any").expose()
        );
        assert!(host.host_auth_key("db2").is_err());
        assert_ne!(
            full.host_auth_key("db2").expect("any").expose(),
            full.host_auth_key("db1").expect("any").expose()
        );
    }

    #[test]
    fn a_rotation_gives_hosts_the_new_public_key_and_retirement_takes_the_old() {
        let mut kr = full_with_hosts();
        let old = kr.active_epoch().expect("active").0;
        let new = kr.rotate(2).expect("rotate");
        let host = host_keys(&kr, "web");
        assert_eq!(host.data_sealer().expect("sealer").epoch(), new);
        kr.retire(&[old]).expect("retire");
        let host = host_keys(&kr, "web");
        let full = Keys::full(kr);
        let mut idx = Vec::new();
        let (kind, s) = full.sealer_for(ObjectKind::PruneMark).expect("sealer");
        assert_eq!(kind, ObjectKind::SharedPruneMark);
        s.seal(kind, false, b"", b"x", &mut idx).expect("seal");
        assert!(host.open(b"", &idx).is_ok());
        assert_eq!(s.epoch(), new);
    }

    #[test]
    fn keyring_bodies_keep_their_versions() {
        let mut kr = Keyring::generate(1).expect("generate");
        kr.bind_config([1; 32]);
        let v2 = kr.seal().expect("seal");
        let back = Keyring::open(kr.master().clone(), &v2).expect("open");
        assert!(!back.takes_hosts());
        assert!(back.seal_host_keyring().expect("none").is_none());
        let mut with = back;
        with.enable_hosts().expect("enable");
        let v3 = with.seal().expect("seal");
        let again = Keyring::open(with.master().clone(), &v3).expect("open v3");
        assert!(again.takes_hosts());
        assert_eq!(again.audit_public(), with.audit_public());
        // A host keyring does not open with the master key, nor the keyring with the host key.
        let host_ring = with.seal_host_keyring().expect("seal").expect("some");
        let verifier = with.host_keyring_verifier().expect("verifier");
        assert!(HostKeyring::open(with.master(), &verifier, &host_ring).is_err());
        // A host keyring sealed under the shared host key but signed by anyone else (a host
        // writing its own epoch public key) is refused as forged.
        let host_key = with.host_key().expect("host key");
        let (_, body) = crate::open(&host_key, b"drvault host keyring", &host_ring).expect("open");
        let mut forged_body = body[..body.len() - 64].to_vec();
        forged_body.extend_from_slice(&[0u8; 64]);
        let mut forged = Vec::new();
        crate::seal(
            &host_key,
            crate::Header {
                kind: ObjectKind::HostKeyring,
                compressed: false,
                epoch: crate::MASTER_EPOCH,
            },
            b"drvault host keyring",
            &forged_body,
            &mut forged,
        )
        .expect("seal");
        assert!(matches!(
            HostKeyring::open(&host_key, &verifier, &forged),
            Err(Error::Forged(_))
        ));
        assert!(HostKeyring::open(&host_key, &verifier, &host_ring).is_ok());
        // A new master key replaces the seed: the old verifier no longer verifies.
        let mut rotated = with.clone();
        rotated.replace_host_key().expect("replace");
        let new_ring = rotated.seal_host_keyring().expect("seal").expect("some");
        let new_key = rotated.host_key().expect("key");
        assert!(HostKeyring::open(&new_key, &verifier, &new_ring).is_err());
        assert!(Keyring::open(with.host_key().expect("key"), &v3).is_err());
    }
}
