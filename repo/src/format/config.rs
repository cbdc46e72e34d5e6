use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::{Error, Result};

pub const REPO_FORMAT_VERSION: u32 = 1;

/// The clear-text `config` object: written once by `init`, never overwritten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub version: u32,
    /// Random, hex; names the local catalog of this repository.
    pub id: String,
    /// Unix seconds.
    pub created: i64,
    pub chunker: ChunkerParams,
    /// Target size of a pack object in bytes.
    pub pack_size: u32,
    /// zstd level for blobs.
    pub compression_level: i32,
}

impl Config {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// What the keyring binds (FORMAT.md section 5): a hash of this config's canonical encoding.
    pub fn binding(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("drvault 2026 config binding");
        h.update(&self.encode());
        *h.finalize().as_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let c: Config = serde_json::from_slice(bytes)
            .map_err(|e| Error::integrity("config", format!("does not parse: {e}")))?;
        if c.version > REPO_FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                object: "config".into(),
                version: c.version,
            });
        }
        // The id names a directory of the state directory: nothing but 32 hex digits.
        if c.id.len() != 32 || !c.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::integrity("config", "its id is not 32 hex digits"));
        }
        c.chunker
            .validate()
            .map_err(|e| Error::integrity("config", e))?;
        if !(1024 * 1024..=512 * 1024 * 1024).contains(&c.pack_size)
            || !(-7..=22).contains(&c.compression_level)
        {
            return Err(Error::integrity(
                "config",
                "pack size or compression level out of range",
            ));
        }
        Ok(c)
    }
}
