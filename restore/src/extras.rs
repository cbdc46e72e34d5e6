//! What the target holds beyond the snapshot: found in the directories a restore writes in full
//! (not the ancestors of an `--include`, not a directory whose listing is lost), listed by
//! `--dry-run` and removed by `--delete`. Entries an `--exclude` pattern matches are left alone.
//! Every directory is opened through the target's descriptors without following a symlink, and
//! an extra directory is removed from the inside out by descriptor, so a path swapped under the
//! restore cannot send a removal outside the target.
//!
//! Nothing on another file system than the target's is listed or removed: a file system mounted
//! on a directory of the target (the snapshot's empty `/mnt/data`, `/proc` in a restore to `/`)
//! is not the restore's to empty. What is left for that reason is reported.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::fsops::Target;
use crate::Result;

/// An entry of the target the snapshot does not have.
pub(crate) struct Extra {
    /// Its path below the target.
    pub rel: PathBuf,
}

/// What `--delete` finds: the extra entries, and the complete directories it leaves alone because
/// another file system is mounted on them (only the topmost of nested ones).
pub(crate) struct Extras {
    pub found: Vec<Extra>,
    pub other_fs: Vec<PathBuf>,
}

/// The extra entries of each complete directory. `complete` holds the directories' components
/// ("" for the target itself); `children` the snapshot's names in each.
pub(crate) fn find(
    target: &Target,
    complete: &[Vec<Vec<u8>>],
    children: &HashMap<Vec<u8>, HashSet<Vec<u8>>>,
    excludes: &[Vec<Vec<u8>>],
) -> Result<Extras> {
    let device = target.device()?;
    let mut extras = Vec::new();
    let mut other_fs = Vec::new();
    for dir in complete {
        let rel: PathBuf = dir.iter().map(|c| OsStr::from_bytes(c)).collect();
        let Some(fd) = target.open_dir_if_there(&rel)? else {
            continue;
        };
        if device_of(&fd).map_err(|e| target.io_error(&rel, e))? != device {
            other_fs.push(rel);
            continue;
        }
        let key = dir.join(&b'/');
        let empty = HashSet::new();
        let wanted = children.get(&key).unwrap_or(&empty);
        for name in list(&fd).map_err(|e| target.io_error(&rel, e))? {
            let bytes = name.as_bytes().to_vec();
            let mut comps = dir.clone();
            comps.push(bytes.clone());
            if wanted.contains(&bytes) || crate::collect::excluded(excludes, &comps) {
                continue;
            }
            extras.push(Extra {
                rel: rel.join(&name),
            });
        }
    }
    extras.sort_by(|a, b| a.rel.cmp(&b.rel));
    other_fs.sort();
    let mut topmost: Vec<PathBuf> = Vec::new();
    for p in other_fs {
        if !topmost.last().is_some_and(|t| p.starts_with(t)) {
            topmost.push(p);
        }
    }
    Ok(Extras {
        found: extras,
        other_fs: topmost,
    })
}

/// The warning for a directory `--delete` left alone.
pub(crate) fn left_on_other_fs(path: &Path) -> String {
    format!(
        "{}: --delete left it and what is below it: another file system is mounted there \
         (restore with --target on that file system to make it match)",
        drvault_repo::printable::path(path)
    )
}

fn device_of(fd: &OwnedFd) -> std::io::Result<u64> {
    Ok(rustix::fs::fstat(fd)?.st_dev)
}

/// The temporary files a killed restore left (`.drvault-restore-<pid><time>-<n>`, their
/// process gone) in the directories this restore writes in full: a rerun removes them.
pub(crate) fn stale_temps(target: &Target, complete: &[Vec<Vec<u8>>]) -> Result<Vec<Extra>> {
    let prefix = crate::fsops::TEMP_PREFIX.as_bytes();
    let mut stale = Vec::new();
    for dir in complete {
        let rel: PathBuf = dir.iter().map(|c| OsStr::from_bytes(c)).collect();
        let Some(fd) = target.open_dir_if_there(&rel)? else {
            continue;
        };
        for name in list(&fd).map_err(|e| target.io_error(&rel, e))? {
            let Some(rest) = name.as_bytes().strip_prefix(prefix) else {
                continue;
            };
            // The token is the writer's process ID in hex followed by 8 hex digits.
            let token = rest.split(|&b| b == b'-').next().unwrap_or_default();
            let pid = std::str::from_utf8(token)
                .ok()
                .filter(|t| t.len() > 8)
                .and_then(|t| u32::from_str_radix(&t[..t.len() - 8], 16).ok());
            // Liveness that cannot be checked (no /proc) counts as alive.
            let alive = !Path::new("/proc/self").exists()
                || pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            // Only a regular file, as a restore makes them: never a directory or a link.
            let regular =
                rustix::fs::statat(&fd, &name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
                    rustix::fs::FileType::from_raw_mode(st.st_mode)
                        == rustix::fs::FileType::RegularFile
                });
            if pid.is_some() && !alive && regular {
                stale.push(Extra {
                    rel: rel.join(&name),
                });
            }
        }
    }
    Ok(stale)
}

/// What [`remove`] did.
#[derive(Default)]
pub(crate) struct Removed {
    /// Entries that went (a directory counts with all it held).
    pub count: u64,
    /// Directories below the target left because another file system is mounted on them (with
    /// the extra directories holding them).
    pub other_fs: Vec<PathBuf>,
}

/// Removes the extra entries, except what is on another file system than the target's.
pub(crate) fn remove(target: &Target, extras: &[Extra]) -> Result<Removed> {
    let device = target.device()?;
    let mut done = Removed::default();
    for e in extras {
        let parent = e.rel.parent().unwrap_or(Path::new(""));
        let name = e.rel.file_name().unwrap_or_default();
        let Some(dir) = target.open_dir_if_there(parent)? else {
            continue;
        };
        let mut walk = Removal {
            device,
            count: 0,
            other_fs: Vec::new(),
        };
        walk.entry(&dir, &e.rel, name)
            .map_err(|err| target.io_error(&e.rel, err))?;
        done.count += walk.count;
        done.other_fs.extend(walk.other_fs);
    }
    Ok(done)
}

/// The names in a directory.
fn list(dir: &OwnedFd) -> std::io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push(OsStr::from_bytes(name).to_os_string());
    }
    Ok(out)
}

/// One extra entry's removal, from the inside out.
struct Removal {
    /// The target's file system: nothing on another is removed.
    device: u64,
    count: u64,
    other_fs: Vec<PathBuf>,
}

impl Removal {
    /// Removes `name` (at `rel` below the target) from `dir`: a file or link at once, a
    /// directory after its contents (opened without following a symlink put in its place).
    /// Returns false when something is left below it (a mount point), and so is it.
    fn entry(&mut self, dir: &OwnedFd, rel: &Path, name: &OsStr) -> std::io::Result<bool> {
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) => {
                self.count += 1;
                return Ok(true);
            }
            Err(Errno::ISDIR) | Err(Errno::PERM) => {}
            Err(Errno::NOENT) => return Ok(true),
            Err(e) => return Err(e.into()),
        }
        let sub = rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        if device_of(&sub)? != self.device {
            self.other_fs.push(rel.to_path_buf());
            return Ok(false);
        }
        let mut emptied = true;
        for child in list(&sub)? {
            emptied &= self.entry(&sub, &rel.join(&child), &child)?;
        }
        drop(sub);
        if !emptied {
            return Ok(false);
        }
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
        self.count += 1;
        Ok(true)
    }
}
