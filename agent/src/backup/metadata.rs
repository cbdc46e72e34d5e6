//! Reading an entry's metadata into a tree node.

use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use drvault_repo::format::{Node, NodeKind};

pub fn kind_of(meta: &Metadata) -> NodeKind {
    let ft = meta.file_type();
    if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    }
}

/// A node for `path` with everything but its content, subtree or target.
pub fn node_from(name: &[u8], path: &Path, meta: &Metadata) -> (Node, Option<std::io::Error>) {
    let (xattrs, err) = read_xattrs(path);
    let mut node = node_without_xattrs(name, meta);
    node.xattrs = xattrs;
    (node, err)
}

/// A node from `lstat` data alone: no extended attributes, content, subtree or target.
pub fn node_without_xattrs(name: &[u8], meta: &Metadata) -> Node {
    Node {
        name: name.to_vec(),
        kind: kind_of(meta),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        atime_ns: meta.atime() * 1_000_000_000 + meta.atime_nsec(),
        ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        size: if meta.is_file() { meta.size() } else { 0 },
        inode: meta.ino(),
        device: meta.dev(),
        rdev: meta.rdev(),
        content: Vec::new(),
        subtree: None,
        target: Vec::new(),
        xattrs: Vec::new(),
    }
}

/// Extended attributes of the entry itself (symlinks are not followed), sorted by name.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

pub fn read_xattrs(path: &Path) -> (Xattrs, Option<std::io::Error>) {
    let names = match xattr::list(path) {
        Ok(n) => n,
        // File systems without xattr support simply have none.
        Err(e) if e.raw_os_error() == Some(95) => return (Vec::new(), None),
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut out = Vec::new();
    let mut err = None;
    for name in names {
        match xattr::get(path, &name) {
            Ok(Some(v)) => out.push((name.as_bytes().to_vec(), v)),
            Ok(None) => {}
            Err(e) => err = Some(e),
        }
    }
    out.sort();
    (out, err)
}
