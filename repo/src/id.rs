use serde::{Deserialize, Serialize};

/// A 256-bit identifier: the BLAKE3 hash of an object's stored bytes, or the keyed BLAKE3 hash
/// of a blob's plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// The unkeyed BLAKE3 hash: names of stored objects, verifiable without keys.
    pub fn of_stored(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    /// The keyed BLAKE3 hash: blob IDs, which reveal nothing to whoever lacks the ID key.
    pub fn of_plaintext(id_key: &[u8; 32], bytes: &[u8]) -> Id {
        Id(*blake3::keyed_hash(id_key, bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn from_hex(s: &str) -> Option<Id> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Id(out))
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

/// How maps keyed by IDs hash them: foldhash with a random per-process seed. Pack names come
/// from listings a hostile target controls (it can plant `data/<hash of x>` for any `x` and so
/// choose names whose first bytes collide); with an unknown seed it cannot aim at one bucket.
pub type IdBuildHasher = foldhash::fast::RandomState;
/// A hash map keyed by IDs.
pub type IdMap<V> = std::collections::HashMap<Id, V, IdBuildHasher>;
/// A hash set of IDs.
pub type IdSet = std::collections::HashSet<Id, IdBuildHasher>;
