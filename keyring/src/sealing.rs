//! Sealing to a public key (envelope version 2): how a host that holds no secret key writes
//! what only the repository's key holders can read (docs/FORMAT.md section 5).
//!
//! Each epoch has an X25519 key pair derived from its data key. A writer makes one ephemeral
//! key pair per [`SealingKey`] (one per backup worker), and both sides derive the AES-256-GCM
//! key as `BLAKE3-derive_key("drvault 2026 sealed to epoch", shared || ephemeral || recipient)`.
//! The ephemeral secret is dropped with the `SealingKey`: the writer cannot open what it sealed.

use x25519_dalek::{PublicKey, StaticSecret};

use crate::envelope::{aad, Header, PUBLIC_HEADER_LEN, SEALED_TO_PUBLIC_VERSION};
use crate::{random_bytes, Error, Key, Result};

const KDF_CONTEXT: &str = "drvault 2026 sealed to epoch";
const EPOCH_SECRET_CONTEXT: &str = "drvault 2026 epoch x25519 secret";

/// The X25519 secret of an epoch (or of the audit log), derived from a 32-byte secret.
pub(crate) fn static_secret(from: &[u8; 32]) -> StaticSecret {
    StaticSecret::from(blake3::derive_key(EPOCH_SECRET_CONTEXT, from))
}

/// The public half of [`static_secret`].
pub(crate) fn public_of(from: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&static_secret(from)).to_bytes()
}

fn derive(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32]) -> Key {
    let mut ikm = zeroize::Zeroizing::new([0u8; 96]);
    ikm[..32].copy_from_slice(shared);
    ikm[32..64].copy_from_slice(ephemeral);
    ikm[64..].copy_from_slice(recipient);
    Key::from_bytes(blake3::derive_key(KDF_CONTEXT, ikm.as_ref()))
}

/// One writer's key for sealing to `recipient` (an epoch's public key) under `epoch`.
pub struct SealingKey {
    epoch: u32,
    ephemeral: [u8; 32],
    key: Key,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey")
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl SealingKey {
    pub fn new(epoch: u32, recipient: &[u8; 32]) -> Result<Self> {
        // A fresh secret from the OS RNG, used for this key only and wiped when dropped.
        let secret = StaticSecret::from(random_bytes::<32>()?);
        let ephemeral = PublicKey::from(&secret).to_bytes();
        let shared = secret.diffie_hellman(&PublicKey::from(*recipient));
        if !shared.was_contributory() {
            return Err(Error::Malformed {
                what: "epoch public key",
                reason: "a low-order point".into(),
            });
        }
        Ok(SealingKey {
            epoch,
            key: derive(shared.as_bytes(), &ephemeral, recipient),
            ephemeral,
        })
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Seals `plaintext` as a version 2 envelope of `kind`, appending it to `out`.
    pub fn seal(
        &self,
        kind: crate::ObjectKind,
        compressed: bool,
        context: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let header = Header {
            kind,
            compressed,
            epoch: self.epoch,
        };
        let nonce: [u8; 12] = random_bytes()?;
        let mut head = [0u8; PUBLIC_HEADER_LEN - 12];
        head[..7].copy_from_slice(&header.bytes_of_version(SEALED_TO_PUBLIC_VERSION));
        head[7..].copy_from_slice(&self.ephemeral);
        out.reserve(PUBLIC_HEADER_LEN + plaintext.len() + crate::envelope::TAG_LEN);
        out.extend_from_slice(&head);
        out.extend_from_slice(&nonce);
        crate::envelope::encrypt_append(&self.key, &nonce, &aad(&head, context), plaintext, out)
    }
}

/// The AES key that opens version 2 envelopes whose ephemeral public key is `ephemeral`, for
/// the holder of the secret `from` derives ([`static_secret`]).
pub(crate) fn opening_key(from: &[u8; 32], ephemeral: &[u8; 32]) -> Result<Key> {
    let secret = static_secret(from);
    let recipient = PublicKey::from(&secret).to_bytes();
    let shared = secret.diffie_hellman(&PublicKey::from(*ephemeral));
    if !shared.was_contributory() {
        return Err(Error::Authentication);
    }
    Ok(derive(shared.as_bytes(), ephemeral, &recipient))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{open, ObjectKind};

    #[test]
    fn what_a_host_seals_opens_only_with_the_epoch_secret() {
        let epoch_secret = [7u8; 32];
        let public = public_of(&epoch_secret);
        let sealer = SealingKey::new(4, &public).expect("sealer");
        let mut sealed = Vec::new();
        sealer
            .seal(ObjectKind::TreeBlob, false, b"ctx", b"a tree", &mut sealed)
            .expect("seal");
        let header = Header::parse(&sealed).expect("header");
        assert_eq!((header.kind, header.epoch), (ObjectKind::TreeBlob, 4));
        let eph = crate::envelope::ephemeral_key(&sealed).expect("version 2");
        let key = opening_key(&epoch_secret, &eph).expect("derive");
        assert_eq!(open(&key, b"ctx", &sealed).expect("open").1, b"a tree");
        // Another context, another secret, a flipped ephemeral key: refused.
        assert!(open(&key, b"other", &sealed).is_err());
        let wrong = opening_key(&[8u8; 32], &eph).expect("derive");
        assert!(open(&wrong, b"ctx", &sealed).is_err());
        let mut flipped = sealed.clone();
        flipped[10] ^= 1;
        assert!(open(&key, b"ctx", &flipped).is_err());
        // Two sealers never share an ephemeral key.
        let other = SealingKey::new(4, &public).expect("sealer");
        assert_ne!(other.ephemeral, sealer.ephemeral);
        // A low-order "public key" is refused.
        assert!(SealingKey::new(4, &[0u8; 32]).is_err());
        assert!(opening_key(&epoch_secret, &[0u8; 32]).is_err());
    }
}
