use serde::{Deserialize, Serialize};

use crate::{Error, Id, Result};

pub const TREE_VERSION: u32 = 1;

/// A directory listing, stored as a tree blob. Entries are sorted by name, names are unique.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub version: u32,
    pub entries: Vec<Node>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    /// A further name of a regular file stored earlier in the same snapshot; `target` holds that
    /// file's path from the snapshot root, components joined by '/'.
    Hardlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// One path component, arbitrary bytes except '/' and NUL, never "." or "..".
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// st_mode permission bits including setuid, setgid and sticky (0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub atime_ns: i64,
    pub ctime_ns: i64,
    pub size: u64,
    pub inode: u64,
    pub device: u64,
    pub rdev: u64,
    /// Data blob IDs of a regular file, in order.
    pub content: Vec<Id>,
    /// Tree blob of a directory.
    pub subtree: Option<Id>,
    /// Symlink target, or hard link source path (see [`NodeKind::Hardlink`]).
    pub target: Vec<u8>,
    /// Extended attributes (name, value), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Node {
    /// A node made rather than read from a file system (a stream's file, a directory around
    /// it, a snapshot's root): no content, subtree, link target or extended attributes, and one
    /// time for modification, access and change.
    pub fn bare(name: Vec<u8>, kind: NodeKind, mode: u32, owner: (u32, u32), time_ns: i64) -> Node {
        Node {
            name,
            kind,
            mode,
            uid: owner.0,
            gid: owner.1,
            mtime_ns: time_ns,
            atime_ns: time_ns,
            ctime_ns: time_ns,
            size: 0,
            inode: 0,
            device: 0,
            rdev: 0,
            content: Vec::new(),
            subtree: None,
            target: Vec::new(),
            xattrs: Vec::new(),
        }
    }
}

/// Refuses a name that could escape its directory when restored.
pub fn validate_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(Error::integrity(
            "tree",
            format!(
                "entry name {:?} is not a single path component",
                String::from_utf8_lossy(name)
            ),
        ));
    }
    Ok(())
}

impl Tree {
    /// The plaintext of the tree blob.
    pub fn encode(&self) -> Vec<u8> {
        super::encode(self)
    }

    /// Checks the invariants a restore relies on: valid, unique, sorted names.
    pub fn validate(&self, object: &str) -> Result<()> {
        if self.version != TREE_VERSION {
            return Err(Error::UnsupportedVersion {
                object: object.to_string(),
                version: self.version,
            });
        }
        for (i, n) in self.entries.iter().enumerate() {
            validate_name(&n.name).map_err(|_| {
                Error::integrity(
                    object,
                    format!(
                        "entry name {:?} is not a single path component",
                        String::from_utf8_lossy(&n.name)
                    ),
                )
            })?;
            if i > 0 && self.entries[i - 1].name >= n.name {
                return Err(Error::integrity(
                    object,
                    "entries are not sorted and unique",
                ));
            }
            if (n.kind == NodeKind::Dir) != n.subtree.is_some() {
                return Err(Error::integrity(
                    object,
                    "directory entry without subtree, or subtree on a non-directory",
                ));
            }
        }
        Ok(())
    }
}
