//! Reading an entry's metadata into a tree node, from `fstatat` data taken relative to the
//! walked directory's descriptor. (`Stat`'s field types differ between architectures: the
//! casts are not all no-ops everywhere.)
#![allow(clippy::unnecessary_cast)]

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use drvault_repo::format::{Node, NodeKind};
use rustix::fs::{FileType, Stat};

pub fn kind_of(st: &Stat) -> NodeKind {
    match FileType::from_raw_mode(st.st_mode as _) {
        FileType::Directory => NodeKind::Dir,
        FileType::Symlink => NodeKind::Symlink,
        FileType::Fifo => NodeKind::Fifo,
        FileType::CharacterDevice => NodeKind::CharDevice,
        FileType::BlockDevice => NodeKind::BlockDevice,
        FileType::Socket => NodeKind::Socket,
        _ => NodeKind::File,
    }
}

/// (device, inode): what the walk saw, compared with what a later open finds.
pub fn file_id(st: &Stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

pub fn nlink(st: &Stat) -> u64 {
    st.st_nlink as u64
}

fn ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// A node from `lstat` data alone: no extended attributes, content, subtree or target.
pub fn node_without_xattrs(name: &[u8], st: &Stat) -> Node {
    let kind = kind_of(st);
    Node {
        name: name.to_vec(),
        kind,
        mode: st.st_mode as u32 & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime_ns: ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
        atime_ns: ns(st.st_atime as i64, st.st_atime_nsec as i64),
        ctime_ns: ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
        size: if kind == NodeKind::File {
            st.st_size as u64
        } else {
            0
        },
        inode: st.st_ino as u64,
        device: st.st_dev as u64,
        rdev: st.st_rdev as u64,
        content: Vec::new(),
        subtree: None,
        target: Vec::new(),
        xattrs: Vec::new(),
    }
}

/// A node for the entry at `at` (a path [`entry_path`] gave, or one root chose).
pub fn node_from(name: &[u8], at: &Path, st: &Stat) -> (Node, Option<std::io::Error>) {
    let (xattrs, err) = read_xattrs(at);
    let mut node = node_without_xattrs(name, st);
    node.xattrs = xattrs;
    (node, err)
}

/// Extended attributes of the entry itself (symlinks are not followed), sorted by name.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Where the path-taking `l*xattr` calls find the entry `name` of `dir`: through the
/// descriptor's `/proc/self/fd` link, so no directory on the way can be swapped after the walk
/// opened it (the full path `path` where /proc is not mounted).
pub fn entry_path(dir: BorrowedFd<'_>, name: &[u8], path: &Path) -> PathBuf {
    static PROC: OnceLock<bool> = OnceLock::new();
    if *PROC.get_or_init(|| Path::new("/proc/self/fd").is_dir()) {
        PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(OsStr::from_bytes(name))
    } else {
        path.to_path_buf()
    }
}

/// A descriptor as the xattr crate's `FileExt` wants it (`File` only, otherwise).
struct ByFd<'a>(BorrowedFd<'a>);

impl std::os::fd::AsRawFd for ByFd<'_> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

impl xattr::FileExt for ByFd<'_> {}

/// Extended attributes of the open file or directory `fd`: of exactly what was opened and
/// compared with the walk, whatever its name holds by now.
pub fn read_xattrs_fd(fd: BorrowedFd<'_>) -> (Xattrs, Option<std::io::Error>) {
    use xattr::FileExt;
    let f = ByFd(fd);
    collect_xattrs(f.list_xattr(), |name| f.get_xattr(name))
}

pub fn read_xattrs(at: &Path) -> (Xattrs, Option<std::io::Error>) {
    collect_xattrs(xattr::list(at), |name| xattr::get(at, name))
}

fn collect_xattrs(
    listed: std::io::Result<xattr::XAttrs>,
    get: impl Fn(&OsStr) -> std::io::Result<Option<Vec<u8>>>,
) -> (Xattrs, Option<std::io::Error>) {
    let names = match listed {
        Ok(n) => n,
        // File systems without xattr support simply have none.
        Err(e) if e.raw_os_error() == Some(95) => return (Vec::new(), None),
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut out = Vec::new();
    let mut err = None;
    for name in names {
        match get(&name) {
            Ok(Some(v)) => out.push((name.as_bytes().to_vec(), v)),
            Ok(None) => {}
            Err(e) => err = Some(e),
        }
    }
    out.sort();
    (out, err)
}
