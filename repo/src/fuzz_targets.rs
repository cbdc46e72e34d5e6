//! Every decoder of repository data, as one function per fuzz target (`fuzz/`, run by
//! `benches/fuzz.sh`) and for the corpus replay test. Each takes arbitrary bytes; none may
//! panic, allocate without bound or loop. Decoders of sealed objects take the plaintext a key
//! holder could have sealed: that is what a malicious writer with the keys controls.

use std::sync::OnceLock;

use drvault_keyring::{Key, KeySlot, Keyring, Keys};

use crate::format::{
    decode, parse_pack_trailer, BlobKind, Config, IndexFile, PackEntry, PruneMark, Snapshot, Tree,
};
use crate::Id;

/// Full keys of a repository that takes host keys: opens both envelope versions.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Option<Keys>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut kr = Keyring::generate(0).ok()?;
        kr.bind_config([0; 32]);
        kr.enable_hosts().ok()?;
        Some(Keys::full(kr))
    })
    .as_ref()
    .expect("a keyring can be generated")
}

/// The sealed envelope: header parsing, then authentication under a key.
pub fn envelope(data: &[u8]) {
    let _ = drvault_keyring::Header::parse(data);
    let key = Key::from_bytes([7; 32]);
    let _ = drvault_keyring::open(&key, b"", data);
    let _ = keys().open(b"", data);
}

/// A blob as stored in a pack: envelope, then decompression bounded by its raw length.
pub fn blob(data: &[u8]) {
    let raw = data.first().map_or(0, |&b| u32::from(b) << 8);
    let _ = crate::blob::open_blob(keys(), BlobKind::Data, &Id([0; 32]), raw, data);
}

pub fn key_slot(data: &[u8]) {
    if let Ok(slot) = KeySlot::decode(data) {
        // Only parameters cheap enough to run thousands of times a second.
        if slot.kdf.affordable() && slot.kdf.m_cost_kib <= 64 && slot.kdf.t_cost <= 1 {
            let _ = slot.unwrap_master(b"passphrase");
        }
    }
}

pub fn keyring_body(data: &[u8]) {
    let _ = drvault_keyring::check_keyring_body(data);
}

pub fn pack_trailer(data: &[u8]) {
    let len = data.len() as u64;
    let tail = &data[data.len().saturating_sub(4)..];
    let _ = parse_pack_trailer("pack", len)(tail);
}

pub fn pack_header(data: &[u8]) {
    let _ = decode::<Vec<PackEntry>>("pack header", data);
}

pub fn index(data: &[u8]) {
    let _ = decode::<IndexFile>("index", data);
}

pub fn tree(data: &[u8]) {
    if let Ok(t) = decode::<Tree>("tree", data) {
        let _ = t.validate("tree");
    }
}

pub fn snapshot(data: &[u8]) {
    let _ = decode::<Snapshot>("snapshot", data);
}

pub fn prune_mark(data: &[u8]) {
    let _ = decode::<PruneMark>("prune mark", data);
}

pub fn lock(data: &[u8]) {
    use crate::format::PlainFile;
    let _ = crate::format::LeaseBody::decode("lease", data);
}

pub fn session(data: &[u8]) {
    use crate::format::PlainFile;
    let _ = crate::format::SessionBody::decode("session", data);
}

pub fn audit_entry(data: &[u8]) {
    if let Ok(e) = serde_json::from_slice::<crate::audit::AuditEntry>(data) {
        let _ = e.canonical_bytes();
    }
}

pub fn config(data: &[u8]) {
    if let Ok(c) = Config::decode(data) {
        let _ = c.binding();
        let _ = crate::chunker::Chunker::new(&[1; 32], c.chunker);
    }
}

/// A decoder under test: takes any bytes, must not panic.
pub type Target = fn(&[u8]);

/// Every target by name (the directory names of `fuzz/corpus/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("envelope", envelope),
    ("blob", blob),
    ("key_slot", key_slot),
    ("keyring_body", keyring_body),
    ("pack_trailer", pack_trailer),
    ("pack_header", pack_header),
    ("index", index),
    ("tree", tree),
    ("snapshot", snapshot),
    ("prune_mark", prune_mark),
    ("lock", lock),
    ("session", session),
    ("audit_entry", audit_entry),
    ("config", config),
];
