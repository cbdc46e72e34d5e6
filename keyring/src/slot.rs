//! Key slots: one passphrase (or key file, or recovery key) wrapping the master key.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::envelope::{open, seal, Header, ObjectKind};
use crate::{random_bytes, Error, KdfParams, Key, Result, MASTER_EPOCH};

/// Version 2 adds the label (authenticated with the wrapped key) and takes a key file's every
/// byte; version 1 slots still open (FORMAT.md section 6).
const SLOT_VERSION: u8 = 2;

/// Longest label, in bytes.
pub const MAX_LABEL: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotKind {
    Passphrase,
    KeyFile,
    Recovery,
    /// A host's put-only key: wraps the host key and the host's authentication key, not the
    /// master key. The label is the host name.
    Host,
}

impl SlotKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            SlotKind::Passphrase => "passphrase",
            SlotKind::KeyFile => "keyfile",
            SlotKind::Recovery => "recovery",
            SlotKind::Host => "host",
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
    /// Who or what holds this key ("alice@db1", "recovery"); empty in version 1 slots.
    pub label: String,
    /// The master key sealed with the KEK (envelope kind `SlotWrap`; context = salt, and in
    /// version 2 the salt followed by the label, so the label cannot be changed alone).
    pub wrapped: Vec<u8>,
}

/// The version 1 layout (no label).
#[derive(Deserialize)]
struct KeySlotV1 {
    version: u8,
    kind: SlotKind,
    created: i64,
    kdf: KdfParams,
    salt: [u8; 16],
    wrapped: Vec<u8>,
}

/// What a host slot unwraps.
pub struct HostSlotKeys {
    /// Opens the host keyring.
    pub host_key: Key,
    /// The host's authentication key (its snapshots' proofs).
    pub auth: Key,
    /// The Ed25519 key that verifies host keyrings.
    pub verifier: [u8; 32],
}

/// What a user supplied to open the repository: a passphrase (the first line when it came
/// from a file) and, when it came from a file, the file's every byte. Each slot takes the form
/// its kind needs ([`KeySlot::input`]).
#[derive(Clone)]
pub struct Credential {
    line: Zeroizing<Vec<u8>>,
    file: Option<Zeroizing<Vec<u8>>>,
}

impl Credential {
    /// A passphrase typed or given in the environment.
    pub fn passphrase(p: &[u8]) -> Self {
        Credential {
            line: Zeroizing::new(p.to_vec()),
            file: None,
        }
    }

    /// The content of a password or key file: its first line (without `\r\n`) is the
    /// passphrase, the whole is a key file.
    pub fn file(bytes: &[u8]) -> Self {
        let end = bytes
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(bytes.len());
        let line = &bytes[..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Credential {
            line: Zeroizing::new(line.to_vec()),
            file: Some(Zeroizing::new(bytes.to_vec())),
        }
    }

    /// The passphrase form.
    pub fn line(&self) -> &[u8] {
        &self.line
    }

    /// What a new key-file slot takes: the file's every byte (the passphrase without a file).
    pub fn whole(&self) -> &[u8] {
        self.file.as_deref().map_or(self.line(), |f| f.as_slice())
    }

    /// True when neither form holds anything (an empty password file).
    pub fn is_empty(&self) -> bool {
        self.line.is_empty() && self.file.as_ref().is_none_or(|f| f.is_empty())
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential([secret])")
    }
}

/// A new recovery key: 256 random bits as 8 groups of 8 lower-case hex digits.
pub fn generate_recovery_key() -> Result<Zeroizing<String>> {
    let bytes = Zeroizing::new(random_bytes::<32>()?);
    let mut hex = Zeroizing::new(String::with_capacity(71));
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            hex.push('-');
        }
        hex.push_str(&format!("{b:02x}"));
    }
    Ok(hex)
}

/// A recovery key as typed (upper case, without dashes, with spaces) in its canonical form;
/// `None` when it is not 64 hex digits.
pub fn normalize_recovery_key(typed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let digits: Zeroizing<Vec<u8>> = Zeroizing::new(
        typed
            .iter()
            .filter(|b| !matches!(b, b'-' | b' ' | b'\t' | b'\r' | b'\n'))
            .map(u8::to_ascii_lowercase)
            .collect(),
    );
    if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(71));
    for (i, group) in digits.chunks(8).enumerate() {
        if i > 0 {
            out.push(b'-');
        }
        out.extend_from_slice(group);
    }
    Some(out)
}

impl KeySlot {
    /// Wraps `master` under a key derived from `passphrase`.
    pub fn create(
        kind: SlotKind,
        created: i64,
        kdf: KdfParams,
        passphrase: &[u8],
        label: &str,
        master: &Key,
    ) -> Result<Self> {
        if kind == SlotKind::Host {
            return Err(Error::Malformed {
                what: "key slot",
                reason: "a host slot wraps the host key: KeySlot::create_host".into(),
            });
        }
        Self::wrap(kind, created, kdf, passphrase, label, master.expose())
    }

    /// A host slot for `host`: wraps the host key and the host's authentication key.
    pub fn create_host(
        created: i64,
        kdf: KdfParams,
        passphrase: &[u8],
        host: &str,
        keyring: &crate::Keyring,
    ) -> Result<Self> {
        if host.is_empty() {
            return Err(Error::Malformed {
                what: "key slot",
                reason: "a host slot needs the host's name".into(),
            });
        }
        let host_key = keyring.host_key().ok_or(Error::Malformed {
            what: "keyring",
            reason: "the repository takes no host keys yet".into(),
        })?;
        let auth = keyring.host_auth_key(host)?;
        let verifier = keyring.host_keyring_verifier().ok_or(Error::Malformed {
            what: "keyring",
            reason: "the repository takes no host keys yet".into(),
        })?;
        let mut all = Zeroizing::new([0u8; 96]);
        all[..32].copy_from_slice(host_key.expose());
        all[32..64].copy_from_slice(auth.expose());
        all[64..].copy_from_slice(&verifier);
        Self::wrap(SlotKind::Host, created, kdf, passphrase, host, all.as_ref())
    }

    fn wrap(
        kind: SlotKind,
        created: i64,
        kdf: KdfParams,
        passphrase: &[u8],
        label: &str,
        secret: &[u8],
    ) -> Result<Self> {
        if label.len() > MAX_LABEL || label.chars().any(char::is_control) {
            return Err(Error::Malformed {
                what: "key slot label",
                reason: format!("at most {MAX_LABEL} bytes, no control characters"),
            });
        }
        let salt: [u8; 16] = random_bytes()?;
        let kek = kdf.derive(passphrase, &salt)?;
        let mut wrapped = Vec::new();
        let header = Header {
            kind: ObjectKind::SlotWrap,
            compressed: false,
            epoch: MASTER_EPOCH,
        };
        let slot = KeySlot {
            version: SLOT_VERSION,
            kind,
            created,
            kdf,
            salt,
            label: label.to_string(),
            wrapped: Vec::new(),
        };
        seal(&kek, header, &slot.context(), secret, &mut wrapped)?;
        Ok(KeySlot { wrapped, ..slot })
    }

    /// The envelope context: what the wrapped key authenticates besides itself.
    fn context(&self) -> Vec<u8> {
        let mut c = self.salt.to_vec();
        if self.version >= 2 {
            c.extend_from_slice(self.label.as_bytes());
        }
        c
    }

    /// The bytes this slot derives its key from: the passphrase, a recovery key in canonical
    /// form, or a key file's every byte (version 1 key-file slots took the first line).
    pub fn input<'a>(&self, c: &'a Credential) -> Cow<'a, [u8]> {
        match self.kind {
            SlotKind::Passphrase | SlotKind::Host => Cow::Borrowed(c.line()),
            SlotKind::Recovery => match normalize_recovery_key(c.line()) {
                Some(k) => Cow::Owned(k.to_vec()),
                None => Cow::Borrowed(c.line()),
            },
            SlotKind::KeyFile if self.version >= 2 => {
                Cow::Borrowed(c.file.as_deref().map_or(c.line(), |f| f.as_slice()))
            }
            SlotKind::KeyFile => Cow::Borrowed(c.line()),
        }
    }

    /// Unwraps the master key with what `c` holds for this slot's kind. A version 1 recovery
    /// slot may hold a secret its user chose (64 hex digits in another form than drvault's):
    /// it is tried as typed first, then normalised.
    pub fn unwrap_with(&self, c: &Credential) -> Result<Key> {
        if self.kind == SlotKind::Recovery && self.version < 2 {
            match self.unwrap_master(c.line()) {
                Err(Error::WrongPassphrase) => {}
                other => return other,
            }
        }
        let input = self.input(c);
        let key = self.unwrap_master(&input);
        if let Cow::Owned(mut v) = input {
            zeroize::Zeroize::zeroize(&mut v);
        }
        key
    }

    /// The secret a new (version 2) slot of this kind takes from `c`: a key file's every byte,
    /// otherwise what this slot takes. Re-wrapping a version 1 key-file slot must not keep its
    /// first-line meaning under version 2, where the whole file opens.
    pub fn input_for_new_slot<'a>(&self, c: &'a Credential) -> Cow<'a, [u8]> {
        match self.kind {
            SlotKind::KeyFile => Cow::Borrowed(c.whole()),
            _ => self.input(c),
        }
    }

    /// Unwraps a host slot: the host key, the host's authentication key and the key that
    /// verifies host keyrings.
    pub fn unwrap_host_with(&self, c: &Credential) -> Result<HostSlotKeys> {
        if self.kind != SlotKind::Host {
            return Err(Error::Malformed {
                what: "key slot",
                reason: "not a host slot".into(),
            });
        }
        let plain = self.unwrap_secret(c.line(), 96)?;
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        let mut verifier = [0u8; 32];
        a.copy_from_slice(&plain[..32]);
        b.copy_from_slice(&plain[32..64]);
        verifier.copy_from_slice(&plain[64..]);
        let keys = HostSlotKeys {
            host_key: Key::from_bytes(a),
            auth: Key::from_bytes(b),
            verifier,
        };
        zeroize::Zeroize::zeroize(&mut a);
        zeroize::Zeroize::zeroize(&mut b);
        Ok(keys)
    }

    fn unwrap_secret(&self, passphrase: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>> {
        let kek = self.kdf.derive(passphrase, &self.salt)?;
        let (header, plain) = open(&kek, &self.context(), &self.wrapped).map_err(|e| match e {
            Error::Authentication => Error::WrongPassphrase,
            other => other,
        })?;
        // Wiped on every path, the error ones included.
        let plain = zeroize::Zeroizing::new(plain);
        if header.kind != ObjectKind::SlotWrap || plain.len() != len {
            return Err(Error::Malformed {
                what: "key slot",
                reason: "wrapped key has the wrong shape".into(),
            });
        }
        Ok(plain)
    }

    /// Unwraps the master key; a failure to authenticate means the passphrase is wrong.
    pub fn unwrap_master(&self, passphrase: &[u8]) -> Result<Key> {
        if self.kind == SlotKind::Host {
            return Err(Error::HostKey("the master key"));
        }
        let plain = self.unwrap_secret(passphrase, 32)?;
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
        let malformed = |e: postcard::Error| Error::Malformed {
            what: "key slot",
            reason: e.to_string(),
        };
        match bytes.first() {
            Some(1) => {
                let v1: KeySlotV1 = postcard::from_bytes(bytes).map_err(malformed)?;
                Ok(KeySlot {
                    version: v1.version,
                    kind: v1.kind,
                    created: v1.created,
                    kdf: v1.kdf,
                    salt: v1.salt,
                    label: String::new(),
                    wrapped: v1.wrapped,
                })
            }
            Some(&SLOT_VERSION) => {
                let slot: KeySlot = postcard::from_bytes(bytes).map_err(malformed)?;
                if slot.label.len() > MAX_LABEL {
                    return Err(Error::Malformed {
                        what: "key slot",
                        reason: "label too long".into(),
                    });
                }
                Ok(slot)
            }
            Some(&v) => Err(Error::UnsupportedVersion(v)),
            None => Err(Error::Malformed {
                what: "key slot",
                reason: "empty".into(),
            }),
        }
    }

    /// A version 1 slot's encoding, for the tests that a repository made before version 2
    /// still opens.
    #[doc(hidden)]
    pub fn encode_v1(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct V1<'a> {
            version: u8,
            kind: SlotKind,
            created: i64,
            kdf: KdfParams,
            salt: [u8; 16],
            wrapped: &'a [u8],
        }
        postcard::to_stdvec(&V1 {
            version: 1,
            kind: self.kind,
            created: self.created,
            kdf: self.kdf,
            salt: self.salt,
            wrapped: &self.wrapped,
        })
        .unwrap_or_default()
    }

    /// A version 1 slot (no label; a key file's first line), for those tests.
    #[doc(hidden)]
    pub fn create_v1(
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
            version: 1,
            kind,
            created,
            kdf,
            salt,
            label: String::new(),
            wrapped,
        })
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
            "alice@db1",
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

    #[test]
    fn the_label_is_bound_to_the_wrapped_key() {
        let master = Key::generate().expect("rng");
        let slot = KeySlot::create(
            SlotKind::Passphrase,
            0,
            KdfParams::INSECURE_TEST,
            b"pw",
            "alice@db1",
            &master,
        )
        .expect("create");
        let mut forged = KeySlot::decode(&slot.encode()).expect("decode");
        assert_eq!(forged.label, "alice@db1");
        forged.label = "bob@db2".into();
        assert!(forged.unwrap_master(b"pw").is_err());
        assert!(KeySlot::create(
            SlotKind::Passphrase,
            0,
            KdfParams::INSECURE_TEST,
            b"pw",
            "evil\u{1b}[2J",
            &master
        )
        .is_err());
    }

    #[test]
    fn a_key_file_is_all_its_bytes_and_version_1_slots_still_open() {
        let master = Key::generate().expect("rng");
        let mut file = b"abc\n".to_vec();
        file.extend_from_slice(&[7u8; 60]);
        let slot = KeySlot::create(
            SlotKind::KeyFile,
            0,
            KdfParams::INSECURE_TEST,
            &file,
            "",
            &master,
        )
        .expect("create");
        assert_eq!(
            slot.unwrap_with(&Credential::file(&file)).expect("open"),
            master
        );
        assert!(slot.unwrap_with(&Credential::file(b"abc")).is_err());
        assert!(slot.unwrap_with(&Credential::file(b"abc\n")).is_err());
        // A version 1 key-file slot was made from the first line; it still opens that way.
        let v1 = KeySlot::create_v1(
            SlotKind::KeyFile,
            0,
            KdfParams::INSECURE_TEST,
            b"abc",
            &master,
        )
        .expect("create");
        let v1 = KeySlot::decode(&v1.encode_v1()).expect("decode");
        assert_eq!((v1.version, v1.label.as_str()), (1, ""));
        assert_eq!(
            v1.unwrap_with(&Credential::file(&file)).expect("open"),
            master
        );
    }

    #[test]
    fn a_recovery_key_opens_however_it_is_typed() {
        let master = Key::generate().expect("rng");
        let key = generate_recovery_key().expect("rng");
        assert_eq!(key.len(), 71);
        let slot = KeySlot::create(
            SlotKind::Recovery,
            0,
            KdfParams::INSECURE_TEST,
            key.as_bytes(),
            "recovery",
            &master,
        )
        .expect("create");
        let upper = key.to_ascii_uppercase();
        let bare: String = key.chars().filter(|c| *c != '-').collect();
        let spaced = key.replace('-', " ");
        for typed in [key.as_str(), &upper, &bare, &spaced] {
            let opened = slot.unwrap_with(&Credential::passphrase(typed.as_bytes()));
            assert_eq!(opened.expect(typed), master);
        }
        assert!(normalize_recovery_key(b"not a key").is_none());
        // A version 1 recovery slot made from 64 hex digits of the user's own choosing opens
        // with them as typed.
        let chosen = "AB".repeat(32);
        let v1 = KeySlot::create_v1(
            SlotKind::Recovery,
            0,
            KdfParams::INSECURE_TEST,
            chosen.as_bytes(),
            &master,
        )
        .expect("create");
        let opened = v1.unwrap_with(&Credential::passphrase(chosen.as_bytes()));
        assert_eq!(opened.expect("as typed"), master);
        assert!(normalize_recovery_key(&[b'g'; 64]).is_none());
    }
}
