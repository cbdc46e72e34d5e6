use serde::{Deserialize, Serialize};

use crate::Id;

/// The snapshot layout with the audit anchor (version 2). A snapshot without an anchor is still
/// written as version 1, byte for byte as before; one written with a host key is version 3
/// (with the host proof).
pub const SNAPSHOT_VERSION: u32 = 2;
/// The layout with the host proof of a snapshot written with a host key.
pub const SNAPSHOT_VERSION_HOST: u32 = 3;

/// Which host key wrote a snapshot (version 3): the host its slot belongs to, and a keyed
/// BLAKE3 of the snapshot's version 1 or 2 encoding under that host's authentication key, which
/// only that host's slots and the full keys hold (docs/FORMAT.md section 12).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostProof {
    pub host: String,
    pub mac: [u8; 32],
}

/// The audit entry that recorded a snapshot's commit (docs/FORMAT.md sections 12 and 17): its
/// sequence number and the BLAKE3 hash of its canonical encoding. A snapshot carrying it anchors
/// the audit chain up to that entry: cutting or rewriting the log there is detected from the
/// snapshot alone, on any machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRef {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl AuditRef {
    pub fn hash_hex(&self) -> String {
        self.hash.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A snapshot: the root of one backup. Its ID is the name of its object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    /// Nanoseconds since the Unix epoch (UTC) at which the backup started.
    pub time_ns: i64,
    pub host: String,
    pub username: String,
    /// The backed-up paths as given (bytes: not necessarily UTF-8).
    pub paths: Vec<Vec<u8>>,
    pub tags: Vec<String>,
    pub parent: Option<Id>,
    /// Root tree: one entry per backed-up path, named by the path with '/' replaced (see FORMAT.md).
    pub tree: Id,
    pub summary: Summary,
    pub program_version: String,
    /// The audit entry of its commit; absent in snapshots written before 0.7 and in those
    /// whose commit the audit log could not take (`audit verify` says which).
    pub audit: Option<AuditRef>,
    /// Present when a host key wrote it (version 3).
    pub writer: Option<HostProof>,
    /// Never stored: set by the reader when the snapshot's writer is not what it claims (a
    /// host key's snapshot without a valid proof, or claiming another host).
    #[serde(skip)]
    pub untrusted: Option<String>,
    /// Never stored: the names (`snapshots/<id>`) of the objects holding this snapshot, as the
    /// reader found them (two after an interrupted re-encryption). The snapshot's own ID is a
    /// keyed hash of its plaintext (`Repository::snapshot_id`), which re-encryption keeps.
    #[serde(skip)]
    pub stored_as: Vec<Id>,
}

/// The version 2 layout: every field but the host proof.
#[derive(Serialize, Deserialize)]
struct SnapshotV2 {
    version: u32,
    time_ns: i64,
    host: String,
    username: String,
    paths: Vec<Vec<u8>>,
    tags: Vec<String>,
    parent: Option<Id>,
    tree: Id,
    summary: Summary,
    program_version: String,
    audit: Option<AuditRef>,
}

/// The version 1 layout: every field but the anchor.
#[derive(Serialize, Deserialize)]
struct SnapshotV1 {
    version: u32,
    time_ns: i64,
    host: String,
    username: String,
    paths: Vec<Vec<u8>>,
    tags: Vec<String>,
    parent: Option<Id>,
    tree: Id,
    summary: Summary,
    program_version: String,
}

impl Snapshot {
    /// The postcard bytes: version 3 with a host proof, else version 1 without an anchor and
    /// version 2 with one. (Any other `version` is written as given, in the version 3 layout:
    /// what a newer drvault's snapshot looks like to this one.)
    pub fn encode(&self) -> Vec<u8> {
        if !matches!(self.version, 1..=3) || self.writer.is_some() {
            let version = if matches!(self.version, 1..=3) {
                SNAPSHOT_VERSION_HOST
            } else {
                self.version
            };
            return super::encode(&Snapshot {
                version,
                ..self.clone()
            });
        }
        match self.audit {
            None => super::encode(&SnapshotV1 {
                version: 1,
                time_ns: self.time_ns,
                host: self.host.clone(),
                username: self.username.clone(),
                paths: self.paths.clone(),
                tags: self.tags.clone(),
                parent: self.parent,
                tree: self.tree,
                summary: self.summary.clone(),
                program_version: self.program_version.clone(),
            }),
            Some(_) => super::encode(&SnapshotV2 {
                version: 2,
                time_ns: self.time_ns,
                host: self.host.clone(),
                username: self.username.clone(),
                paths: self.paths.clone(),
                tags: self.tags.clone(),
                parent: self.parent,
                tree: self.tree,
                summary: self.summary.clone(),
                program_version: self.program_version.clone(),
                audit: self.audit,
            }),
        }
    }

    /// What the host proof authenticates: the snapshot's bytes without the proof.
    pub fn proof_input(&self) -> Vec<u8> {
        let mut plain = Snapshot {
            writer: None,
            untrusted: None,
            stored_as: Vec::new(),
            ..self.clone()
        };
        if plain.version == SNAPSHOT_VERSION_HOST {
            plain.version = if plain.audit.is_some() {
                SNAPSHOT_VERSION
            } else {
                1
            };
        }
        plain.encode()
    }

    /// Decodes either layout by its leading version; refuses any other version.
    pub fn decode(object: &str, bytes: &[u8]) -> crate::Result<Snapshot> {
        let (version, _) = postcard::take_from_bytes::<u32>(bytes)
            .map_err(|e| crate::Error::integrity(object, format!("does not decode: {e}")))?;
        match version {
            1 => {
                let v1: SnapshotV1 = super::decode(object, bytes)?;
                Ok(Snapshot {
                    version: 1,
                    time_ns: v1.time_ns,
                    host: v1.host,
                    username: v1.username,
                    paths: v1.paths,
                    tags: v1.tags,
                    parent: v1.parent,
                    tree: v1.tree,
                    summary: v1.summary,
                    program_version: v1.program_version,
                    audit: None,
                    writer: None,
                    untrusted: None,
                    stored_as: Vec::new(),
                })
            }
            2 => {
                let v2: SnapshotV2 = super::decode(object, bytes)?;
                Ok(Snapshot {
                    version: 2,
                    time_ns: v2.time_ns,
                    host: v2.host,
                    username: v2.username,
                    paths: v2.paths,
                    tags: v2.tags,
                    parent: v2.parent,
                    tree: v2.tree,
                    summary: v2.summary,
                    program_version: v2.program_version,
                    audit: v2.audit,
                    writer: None,
                    untrusted: None,
                    stored_as: Vec::new(),
                })
            }
            3 => {
                let s: Snapshot = super::decode(object, bytes)?;
                if s.writer.is_none() {
                    return Err(crate::Error::integrity(
                        object,
                        "a version 3 snapshot without its host proof",
                    ));
                }
                Ok(s)
            }
            other => Err(crate::Error::UnsupportedVersion {
                object: object.to_string(),
                version: other,
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample(audit: Option<AuditRef>) -> Snapshot {
        Snapshot {
            version: SNAPSHOT_VERSION,
            time_ns: 1_700_000_000_000_000_000,
            host: "web-1".into(),
            username: "root".into(),
            paths: vec![b"/etc".to_vec()],
            tags: vec!["daily".into()],
            parent: None,
            tree: Id([7; 32]),
            summary: Summary::default(),
            program_version: "0.7.0".into(),
            audit,
            writer: None,
            untrusted: None,
            stored_as: Vec::new(),
        }
    }

    #[test]
    fn a_snapshot_with_a_host_proof_is_version_3_and_the_proof_covers_the_rest() {
        let mut s = sample(Some(AuditRef {
            seq: 3,
            hash: [4; 32],
        }));
        let before = s.encode();
        s.writer = Some(HostProof {
            host: "web-1".into(),
            mac: [5; 32],
        });
        let bytes = s.encode();
        assert_eq!(bytes[0], 3);
        let back = Snapshot::decode("s", &bytes).unwrap();
        assert_eq!(back.writer, s.writer);
        assert_eq!(back.version, 3);
        assert_eq!(back.encode(), bytes);
        // The proof covers exactly the version 2 bytes of the same snapshot.
        assert_eq!(back.proof_input(), before);
        for cut in 0..bytes.len() {
            assert!(Snapshot::decode("s", &bytes[..cut]).is_err(), "{cut}");
        }
    }

    #[test]
    fn a_snapshot_without_an_anchor_keeps_the_version_1_bytes() {
        let s = sample(None);
        let bytes = s.encode();
        assert_eq!(bytes[0], 1, "version 1 leads");
        let back = Snapshot::decode("s", &bytes).unwrap();
        assert_eq!(back.audit, None);
        assert_eq!(back.version, 1);
        // Re-encoding what was read gives the same bytes (re-encryption keeps the plaintext).
        assert_eq!(back.encode(), bytes);
    }

    #[test]
    fn a_snapshot_with_an_anchor_is_version_2_and_round_trips() {
        let anchor = AuditRef {
            seq: 42,
            hash: [9; 32],
        };
        let bytes = sample(Some(anchor)).encode();
        assert_eq!(bytes[0], 2);
        let back = Snapshot::decode("s", &bytes).unwrap();
        assert_eq!(back.audit, Some(anchor));
        assert_eq!(back.encode(), bytes);
    }

    #[test]
    fn other_versions_and_truncations_are_refused() {
        let mut bytes = sample(None).encode();
        bytes[0] = 4;
        assert!(matches!(
            Snapshot::decode("s", &bytes),
            Err(crate::Error::UnsupportedVersion { version: 4, .. })
        ));
        let full = sample(Some(AuditRef {
            seq: 1,
            hash: [1; 32],
        }))
        .encode();
        for cut in 0..full.len() {
            assert!(Snapshot::decode("s", &full[..cut]).is_err(), "{cut}");
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unchanged: u64,
    pub dirs: u64,
    pub other_entries: u64,
    pub bytes_read: u64,
    /// Bytes of the entries' content, as in the source.
    pub bytes_total: u64,
    /// Bytes added to the repository after deduplication, compression and encryption.
    pub bytes_added: u64,
    pub blobs_added: u64,
    pub errors: u64,
    pub duration_ms: u64,
}
