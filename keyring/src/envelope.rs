//! The sealed-object envelope shared by every encrypted object (docs/FORMAT.md, "Envelope").
//!
//! ```text
//! offset size field
//! 0      1    format version (1)
//! 1      1    object kind
//! 2      1    flags (bit 0: payload is zstd-compressed)
//! 3      4    key epoch, u32 little endian (0xFFFF_FFFF: sealed by the master key or a slot KEK)
//! 7      12   nonce, random
//! 19     n+16 AES-256-GCM ciphertext and tag
//! ```
//! The associated data is the 7 header bytes followed by a caller-given context (a blob's ID),
//! so a ciphertext cannot be moved to another kind, epoch or blob.
//!
//! Format version 2 is the same envelope sealed to an epoch's X25519 public key by a writer that
//! holds no secret key (a host key): 32 bytes of the writer's ephemeral public key follow the
//! 7 header bytes, the nonce follows them, and the associated data is all 39 header bytes and
//! the context. The AES key is derived from the X25519 shared secret ([`crate::sealing`]).

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use crate::{random_bytes, Error, Key, Result};

pub const FORMAT_VERSION: u8 = 1;
/// An envelope sealed to a public key (the module documentation).
pub const SEALED_TO_PUBLIC_VERSION: u8 = 2;
pub const HEADER_LEN: usize = 19;
/// The header of a version 2 envelope: 7 bytes, the ephemeral public key, the nonce.
pub const PUBLIC_HEADER_LEN: usize = 7 + 32 + 12;
pub(crate) const TAG_LEN: usize = 16;
/// Bytes an envelope adds to its payload.
pub const ENVELOPE_OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// What a sealed object is; part of the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ObjectKind {
    DataBlob = 1,
    TreeBlob = 2,
    Index = 3,
    Snapshot = 4,
    Keyring = 5,
    PackHeader = 6,
    SlotWrap = 7,
    AuditEntry = 8,
    PruneMark = 9,
    /// The host keyring (FORMAT.md section 6): what host key slots open.
    HostKeyring = 10,
    /// An index object sealed under its epoch's index key, which host keys hold too.
    SharedIndex = 11,
    /// A prune mark sealed under its epoch's index key (backups on hosts read the marks).
    SharedPruneMark = 12,
}

impl ObjectKind {
    /// The kind an object of this kind is stored as in a repository that takes host keys,
    /// when hosts must read it (index objects and prune marks).
    pub fn shared(self) -> Option<ObjectKind> {
        match self {
            ObjectKind::Index => Some(ObjectKind::SharedIndex),
            ObjectKind::PruneMark => Some(ObjectKind::SharedPruneMark),
            _ => None,
        }
    }
}

impl ObjectKind {
    pub fn from_u8(v: u8) -> Result<Self> {
        Ok(match v {
            1 => ObjectKind::DataBlob,
            2 => ObjectKind::TreeBlob,
            3 => ObjectKind::Index,
            4 => ObjectKind::Snapshot,
            5 => ObjectKind::Keyring,
            6 => ObjectKind::PackHeader,
            7 => ObjectKind::SlotWrap,
            8 => ObjectKind::AuditEntry,
            9 => ObjectKind::PruneMark,
            10 => ObjectKind::HostKeyring,
            11 => ObjectKind::SharedIndex,
            12 => ObjectKind::SharedPruneMark,
            other => {
                return Err(Error::Malformed {
                    what: "envelope",
                    reason: format!("unknown object kind {other}"),
                })
            }
        })
    }
}

/// The clear-text header of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: ObjectKind,
    pub compressed: bool,
    pub epoch: u32,
}

impl Header {
    /// Parses the first 7 bytes of a sealed object (version, kind, flags, epoch): what the
    /// start of an object read alone says, without the length checks of [`Header::parse`].
    pub fn parse_prefix(prefix: &[u8]) -> Result<Self> {
        let Some(head) = prefix.get(..7) else {
            return Err(Error::Malformed {
                what: "envelope",
                reason: format!("{} bytes is shorter than a header", prefix.len()),
            });
        };
        if !matches!(head[0], FORMAT_VERSION | SEALED_TO_PUBLIC_VERSION) {
            return Err(Error::UnsupportedVersion(head[0]));
        }
        let mut padded = head.to_vec();
        let least = if head[0] == FORMAT_VERSION {
            ENVELOPE_OVERHEAD
        } else {
            PUBLIC_HEADER_LEN + TAG_LEN
        };
        padded.resize(least, 0);
        Self::parse(&padded)
    }

    /// Parses the header of a sealed object without opening it.
    pub fn parse(sealed: &[u8]) -> Result<Self> {
        let least = match sealed.first() {
            Some(&FORMAT_VERSION) => ENVELOPE_OVERHEAD,
            Some(&SEALED_TO_PUBLIC_VERSION) => PUBLIC_HEADER_LEN + TAG_LEN,
            Some(&v) => return Err(Error::UnsupportedVersion(v)),
            None => 1,
        };
        if sealed.len() < least {
            return Err(Error::Malformed {
                what: "envelope",
                reason: format!("{} bytes is shorter than the envelope", sealed.len()),
            });
        }
        let flags = sealed[2];
        if flags & !1 != 0 {
            return Err(Error::Malformed {
                what: "envelope",
                reason: format!("unknown flags {flags:#x}"),
            });
        }
        Ok(Header {
            kind: ObjectKind::from_u8(sealed[1])?,
            compressed: flags & 1 == 1,
            epoch: u32::from_le_bytes([sealed[3], sealed[4], sealed[5], sealed[6]]),
        })
    }

    pub(crate) fn bytes_of_version(&self, version: u8) -> [u8; 7] {
        let e = self.epoch.to_le_bytes();
        [
            version,
            self.kind as u8,
            u8::from(self.compressed),
            e[0],
            e[1],
            e[2],
            e[3],
        ]
    }

    fn bytes(&self) -> [u8; 7] {
        self.bytes_of_version(FORMAT_VERSION)
    }
}

/// The ephemeral public key of a version 2 envelope (`None` for version 1).
pub fn ephemeral_key(sealed: &[u8]) -> Option<[u8; 32]> {
    if sealed.first() != Some(&SEALED_TO_PUBLIC_VERSION) {
        return None;
    }
    sealed.get(7..39)?.try_into().ok()
}

pub(crate) fn aad(header: &[u8], context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context);
    aad
}

/// Seals `plaintext` under `key`, appending the envelope to `out`.
pub fn seal(
    key: &Key,
    header: Header,
    context: &[u8],
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let nonce: [u8; 12] = random_bytes()?;
    let head = header.bytes();
    out.reserve(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&head);
    out.extend_from_slice(&nonce);
    encrypt_append(key, &nonce, &aad(&head, context), plaintext, out)
}

/// Appends `plaintext` to `out` and encrypts it there, then appends the tag: no ciphertext
/// buffer of its own (the backup seals every chunk through here).
pub(crate) fn encrypt_append(
    key: &Key,
    nonce: &[u8; 12],
    aad: &[u8],
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(plaintext);
    let tag = cipher(key)?
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            &mut out[start..],
        )
        .map_err(|_| Error::Authentication)?;
    out.extend_from_slice(tag.as_ref());
    Ok(())
}

/// AES-256-GCM under `key`: aws-lc's implementation (already linked for TLS), which runs the
/// whole GCM on the CPU's AES and carry-less multiply instructions several blocks at a time.
fn cipher(key: &Key) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, key.expose())
        .map(LessSafeKey::new)
        .map_err(|_| Error::Authentication)
}

/// Opens an envelope sealed by [`seal`] with the same key and context; returns header and
/// plaintext. A version 2 envelope opens with the key derived for its ephemeral public key
/// ([`crate::sealing::opening_key`]).
pub fn open(key: &Key, context: &[u8], sealed: &[u8]) -> Result<(Header, Vec<u8>)> {
    let mut plaintext = Vec::new();
    let header = open_into(key, context, sealed, &mut plaintext)?;
    Ok((header, plaintext))
}

/// [`open`] into `out`, which is cleared first: a caller opening many objects reuses one
/// buffer. `out` is left empty when the envelope does not open.
pub fn open_into(key: &Key, context: &[u8], sealed: &[u8], out: &mut Vec<u8>) -> Result<Header> {
    out.clear();
    let header = Header::parse(sealed)?;
    let head_len = if sealed[0] == SEALED_TO_PUBLIC_VERSION {
        PUBLIC_HEADER_LEN
    } else {
        HEADER_LEN
    };
    let nonce: [u8; 12] = sealed[head_len - 12..head_len]
        .try_into()
        .map_err(|_| Error::Authentication)?;
    let cipher = cipher(key)?;
    out.extend_from_slice(&sealed[head_len..]);
    let opened = cipher
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(&sealed[..head_len - 12], context)),
            out,
        )
        .map(|plain| plain.len());
    match opened {
        Ok(len) => {
            out.truncate(len);
            Ok(header)
        }
        Err(_) => {
            out.clear();
            Err(Error::Authentication)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            kind: ObjectKind::DataBlob,
            compressed: true,
            epoch: 3,
        }
    }

    /// The cipher is standard AES-256-GCM: the answer below came from another implementation
    /// (OpenSSL, through Python's `cryptography`), so a change of crate cannot change the format.
    #[test]
    fn known_answer() {
        let key = Key::from_bytes(std::array::from_fn(|i| i as u8));
        let nonce: [u8; 12] = std::array::from_fn(|i| i as u8);
        let mut out = Vec::new();
        encrypt_append(
            &key,
            &nonce,
            b"header-and-context",
            b"drvault known answer",
            &mut out,
        )
        .expect("seal");
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "2370a07ab089b63be62ff8fcdfc91903f0a1e24678c51d74133560dcf10ab06034eea145"
        );
    }

    #[test]
    fn round_trip_and_binding() {
        let key = Key::generate().expect("rng");
        let mut sealed = Vec::new();
        seal(&key, header(), b"blob-a", b"hello", &mut sealed).expect("seal");
        assert_eq!(sealed.len(), 5 + ENVELOPE_OVERHEAD);
        let (h, pt) = open(&key, b"blob-a", &sealed).expect("open");
        assert_eq!((h, pt.as_slice()), (header(), &b"hello"[..]));
        // Another context (blob ID), key, kind or flipped bit is refused.
        assert!(matches!(
            open(&key, b"blob-b", &sealed),
            Err(Error::Authentication)
        ));
        assert!(matches!(
            open(&Key::generate().expect("rng"), b"blob-a", &sealed),
            Err(Error::Authentication)
        ));
        let mut swapped = sealed.clone();
        swapped[1] = ObjectKind::TreeBlob as u8;
        assert!(matches!(
            open(&key, b"blob-a", &swapped),
            Err(Error::Authentication)
        ));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            open(&key, b"blob-a", &flipped),
            Err(Error::Authentication)
        ));
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let key = Key::generate().expect("rng");
        assert!(open(&key, b"", &[]).is_err());
        assert!(open(&key, b"", &[1u8; 20]).is_err());
        let mut v = vec![9u8; 64];
        assert!(matches!(
            Header::parse(&v),
            Err(Error::UnsupportedVersion(9))
        ));
        v[0] = 1;
        v[1] = 99;
        assert!(Header::parse(&v).is_err());
    }
}
