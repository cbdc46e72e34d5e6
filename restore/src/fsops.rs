//! File-system operations of a restore, each refusing to follow what it did not create.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use drvault_repo::format::Node;
use rustix::fs::{AtFlags, Mode, Timestamps, CWD};

use crate::error::io;
use crate::{Error, Result};

/// Joins validated snapshot components below `target`.
pub fn join(target: &Path, comps: &[Vec<u8>]) -> PathBuf {
    let mut p = target.to_path_buf();
    for c in comps {
        p.push(OsStr::from_bytes(c));
    }
    p
}

/// Creates a directory, or accepts an existing one only if it is a real directory (not a
/// symlink to somewhere else).
pub fn mkdir(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => Ok(()),
        Ok(_) => Err(Error::UnsafeTarget(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(path).map_err(io(path))?;
            // Owner-only until the snapshot's mode is applied at the end.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io(path))
        }
        Err(e) => Err(io(path)(e)),
    }
}

/// Opens a file for writing without following a symlink in its place.
pub fn open_write(path: &Path, create: bool) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create(create)
        .truncate(create)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(io(path))
}

pub fn open_read(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(io(path))
}

/// Removes whatever non-directory is at `path` so a new entry can take its place.
pub fn clear(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(Error::UnsafeTarget(path.to_path_buf())),
        Ok(_) => std::fs::remove_file(path).map_err(io(path)),
        Err(_) => Ok(()),
    }
}

pub fn mkfifo(path: &Path) -> Result<()> {
    clear(path)?;
    rustix::fs::mknodat(
        CWD,
        path,
        rustix::fs::FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .map_err(|e| io(path)(e.into()))
}

fn timestamp(ns: i64) -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    }
}

/// Applies extended attributes, ownership (as root), permissions and times. Problems that do not
/// lose data (an xattr namespace we may not write) come back as warnings.
pub fn apply_metadata(
    path: &Path,
    node: &Node,
    as_root: bool,
    symlink: bool,
) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    if !symlink {
        for (name, value) in &node.xattrs {
            if let Err(e) = xattr::set(path, OsStr::from_bytes(name), value) {
                warnings.push(format!(
                    "{}: cannot set extended attribute {}: {e}",
                    path.display(),
                    String::from_utf8_lossy(name)
                ));
            }
        }
    }
    if as_root {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid)).map_err(io(path))?;
    }
    if !symlink {
        // After chown, which clears setuid and setgid.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(node.mode & 0o7777))
            .map_err(io(path))?;
    }
    let times = Timestamps {
        last_access: timestamp(node.atime_ns),
        last_modification: timestamp(node.mtime_ns),
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io(path)(e.into()))?;
    Ok(warnings)
}
