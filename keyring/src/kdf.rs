use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};

use crate::{Error, Key, Result};

/// Argon2id parameters, stored in each key slot so they can be raised later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// Sized for a server: 64 MiB, 3 passes (about 0.2 s on one core here).
    pub const SERVER: KdfParams = KdfParams {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };
    /// Cheap parameters for tests only: they make passphrases easy to brute-force.
    pub const INSECURE_TEST: KdfParams = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    /// Largest memory (KiB), passes, lanes, and memory × passes a reader runs: 2 GiB, 16, 16,
    /// 4 GiB (e.g. 1 GiB × 4 passes). Ten times the default's cost and more is a planted slot.
    pub const MAX_M_COST_KIB: u32 = 2 * 1024 * 1024;
    pub const MAX_T_COST: u32 = 16;
    pub const MAX_P_COST: u32 = 16;
    pub const MAX_WORK_KIB: u64 = 4 * 1024 * 1024;

    pub fn affordable(&self) -> bool {
        self.m_cost_kib <= Self::MAX_M_COST_KIB
            && self.t_cost <= Self::MAX_T_COST
            && self.p_cost <= Self::MAX_P_COST
            && u64::from(self.m_cost_kib) * u64::from(self.t_cost) <= Self::MAX_WORK_KIB
    }

    /// Derives the key-encryption key from a passphrase and a slot's salt.
    pub fn derive(&self, passphrase: &[u8], salt: &[u8]) -> Result<Key> {
        // Refuse parameters a hostile repository plants to make every open cost minutes and
        // gigabytes, before allocating: what a server can pay per slot.
        if !self.affordable() {
            return Err(Error::Kdf(format!("parameters out of range: {self:?}")));
        }
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| Error::Kdf(e.to_string()))?;
        let mut out = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase, salt, &mut out)
            .map_err(|e| Error::Kdf(e.to_string()))?;
        let key = Key::from_bytes(out);
        zeroize::Zeroize::zeroize(&mut out);
        Ok(key)
    }
}
