//! Key slots: one passphrase (or key file, or recovery key) wrapping the master key.

use serde::{Deserialize, Serialize};

use crate::envelope::{open, seal, Header, ObjectKind};
use crate::{random_bytes, Error, KdfParams, Key, Result, MASTER_EPOCH};

const SLOT_VERSION: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotKind {
    Passphrase,
    KeyFile,
    Recovery,
}

impl SlotKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            SlotKind::Passphrase => "passphrase",
            SlotKind::KeyFile => "keyfile",
            SlotKind::Recovery => "recovery",
        }
    }
}

/// A stored key slot. Only `wrapped` is secret, and it is sealed under the slot's KEK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySlot {
    pub version: u8,
    pub kind: SlotKind,
    /// Unix seconds.
    pub created: i64,
    pub kdf: KdfParams,
    pub salt: [u8; 16],
    /// The master key sealed with the KEK (envelope kind `SlotWrap`, context = salt).
    pub wrapped: Vec<u8>,
}

impl KeySlot {
    /// Wraps `master` under a key derived from `passphrase`.
    pub fn create(
        kind: SlotKind,
        created: i64,
        kdf: KdfParams,
        passphrase: &[u8],
        master: &Key,
    ) -> Result<Self> {
        let salt: [u8; 16] = random_bytes()?;
        let kek = kdf.derive(passphrase, &salt)?;
        let mut wrapped = Vec::new();
        let header = Header {
            kind: ObjectKind::SlotWrap,
            compressed: false,
            epoch: MASTER_EPOCH,
        };
        seal(&kek, header, &salt, master.expose(), &mut wrapped)?;
        Ok(KeySlot {
            version: SLOT_VERSION,
            kind,
            created,
            kdf,
            salt,
            wrapped,
        })
    }

    /// Unwraps the master key; a failure to authenticate means the passphrase is wrong.
    pub fn unwrap_master(&self, passphrase: &[u8]) -> Result<Key> {
        let kek = self.kdf.derive(passphrase, &self.salt)?;
        let (header, plain) = open(&kek, &self.salt, &self.wrapped).map_err(|e| match e {
            Error::Authentication => Error::WrongPassphrase,
            other => other,
        })?;
        // Wiped on every path, the error ones included.
        let plain = zeroize::Zeroizing::new(plain);
        if header.kind != ObjectKind::SlotWrap || plain.len() != 32 {
            return Err(Error::Malformed {
                what: "key slot",
                reason: "wrapped key has the wrong shape".into(),
            });
        }
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&plain);
        let key = Key::from_bytes(bytes);
        // `from_bytes` took a copy: the one on this stack goes too.
        zeroize::Zeroize::zeroize(&mut bytes);
        Ok(key)
    }

    pub fn encode(&self) -> Vec<u8> {
        // postcard serialisation of this plain struct cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let slot: KeySlot = postcard::from_bytes(bytes).map_err(|e| Error::Malformed {
            what: "key slot",
            reason: e.to_string(),
        })?;
        if slot.version != SLOT_VERSION {
            return Err(Error::UnsupportedVersion(slot.version));
        }
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_passphrase_is_reported_as_such() {
        let master = Key::generate().expect("rng");
        let slot = KeySlot::create(
            SlotKind::Passphrase,
            0,
            KdfParams::INSECURE_TEST,
            b"right",
            &master,
        )
        .expect("create");
        let decoded = KeySlot::decode(&slot.encode()).expect("decode");
        assert_eq!(decoded.unwrap_master(b"right").expect("open"), master);
        assert!(matches!(
            decoded.unwrap_master(b"wrong"),
            Err(Error::WrongPassphrase)
        ));
        assert!(KeySlot::decode(b"garbage").is_err());
    }
}
