//! What the target holds beyond the snapshot: found in the directories a restore writes in full
//! (not the ancestors of an `--include`, not a directory whose listing is lost), listed by
//! `--dry-run` and removed by `--delete`. Entries an `--exclude` pattern matches are left alone.
//! Every directory is opened through the target's descriptors without following a symlink, and
//! an extra directory is removed from the inside out by descriptor, so a path swapped under the
//! restore cannot send a removal outside the target.
//!
//! Nothing on another mount than the target's is listed or removed: a file system mounted on a
//! directory of the target (the snapshot's empty `/mnt/data`, `/proc` in a restore to `/`, a bind
//! mount of the target's own file system) is not the restore's to empty, and an automount point
//! is not triggered. What is left, for that reason or because it could not be removed, is
//! reported as a warning; it does not fail the restore.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, StatxAttributes, StatxFlags};
use rustix::io::Errno;

use crate::fsops::Target;
use crate::Result;

/// An entry of the target the snapshot does not have.
pub(crate) struct Extra {
    /// Its path below the target.
    pub rel: PathBuf,
}

/// What `--delete` finds: the extra entries, and the complete directories it leaves alone because
/// another mount is there (only the topmost of nested ones).
pub(crate) struct Extras {
    pub found: Vec<Extra>,
    pub other_mounts: Vec<PathBuf>,
}

/// The extra entries of each complete directory. `complete` holds the directories' components
/// ("" for the target itself); `children` the snapshot's names in each.
pub(crate) fn find(
    target: &Target,
    complete: &[Vec<Vec<u8>>],
    children: &HashMap<Vec<u8>, HashSet<Vec<u8>>>,
    excludes: &[Vec<Vec<u8>>],
) -> Result<Extras> {
    let home = Place::of(&target.root()).map_err(|e| target.io_error(Path::new(""), e.into()))?;
    let mut extras = Vec::new();
    let mut other_mounts = Vec::new();
    for dir in complete {
        let rel: PathBuf = dir.iter().map(|c| OsStr::from_bytes(c)).collect();
        let Some(fd) = target.open_dir_if_there(&rel)? else {
            continue;
        };
        if Place::of(&fd).map_err(|e| target.io_error(&rel, e.into()))? != home {
            other_mounts.push(rel);
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
    other_mounts.sort();
    let mut topmost: Vec<PathBuf> = Vec::new();
    for p in other_mounts {
        if !topmost.last().is_some_and(|t| p.starts_with(t)) {
            topmost.push(p);
        }
    }
    Ok(Extras {
        found: extras,
        other_mounts: topmost,
    })
}

/// The warning for a directory `--delete` left alone because another mount is there.
pub(crate) fn left_on_other_mount(path: &Path) -> String {
    format!(
        "{}: --delete left it and what is below it: another file system is mounted there \
         (restore with --target on that file system to make it match)",
        drvault_repo::printable::path(path)
    )
}

/// Which mount and device a directory is on: `--delete` stays where both are the target's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    device: (u32, u32),
    /// The mount's ID, where the kernel gives it (Linux 5.8 and later).
    mount: Option<u64>,
}

impl Place {
    fn of(fd: &impl AsFd) -> rustix::io::Result<Place> {
        let st = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)?;
        Ok(Place::from(&st))
    }

    fn from(st: &rustix::fs::Statx) -> Place {
        Place {
            device: (st.stx_dev_major, st.stx_dev_minor),
            mount: StatxFlags::from_bits_retain(st.stx_mask)
                .contains(StatxFlags::MNT_ID)
                .then_some(st.stx_mnt_id),
        }
    }
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

/// Removes the stale temporaries [`stale_temps`] found: regular files only, by a plain unlink,
/// so one swapped for a directory since it was checked stays (and so does what is in it).
pub(crate) fn remove_stale(target: &Target, stale: &[Extra]) -> Result<()> {
    for e in stale {
        let parent = e.rel.parent().unwrap_or(Path::new(""));
        let name = e.rel.file_name().unwrap_or_default();
        let Some(dir) = target.open_dir_if_there(parent)? else {
            continue;
        };
        match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) | Err(Errno::ISDIR) | Err(Errno::PERM) => {}
            Err(err) => return Err(target.io_error(&e.rel, err.into())),
        }
    }
    Ok(())
}

/// What [`remove`] did, or with `dry_run` would do.
#[derive(Default)]
pub(crate) struct Removed {
    /// Entries that went (a directory counts with all it held).
    pub count: u64,
    /// Warnings for what was left: another mount, or an entry that could not be removed.
    pub warnings: Vec<String>,
}

/// Removes the extra entries, except what is on another mount than the target's and what cannot
/// be removed (each a warning). With `dry_run`, only finds what would go and what would stay.
pub(crate) fn remove(target: &Target, extras: &[Extra], dry_run: bool) -> Result<Removed> {
    let home = Place::of(&target.root()).map_err(|e| target.io_error(Path::new(""), e.into()))?;
    let mut walk = Removal {
        target,
        home,
        dry_run,
        done: Removed::default(),
    };
    for e in extras {
        let parent = e.rel.parent().unwrap_or(Path::new(""));
        let name = e.rel.file_name().unwrap_or_default();
        let Some(dir) = target.open_dir_if_there(parent)? else {
            continue;
        };
        // A mount put on the parent since it was listed.
        match Place::of(&dir) {
            Ok(p) if p == home => {}
            Ok(_) => {
                walk.other_mount(parent);
                continue;
            }
            Err(err) => {
                walk.failed(parent, err);
                continue;
            }
        }
        walk.entry(&dir, &e.rel, name);
    }
    Ok(walk.done)
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

/// One `--delete` pass, from the inside out.
struct Removal<'a> {
    target: &'a Target,
    /// The target's place: nothing elsewhere is removed.
    home: Place,
    dry_run: bool,
    done: Removed,
}

impl Removal<'_> {
    fn other_mount(&mut self, rel: &Path) {
        let w = left_on_other_mount(&self.target.display(rel));
        self.done.warnings.push(w);
    }

    fn failed(&mut self, rel: &Path, e: Errno) {
        self.done.warnings.push(format!(
            "{}: --delete could not remove it: {}",
            drvault_repo::printable::path(&self.target.display(rel)),
            std::io::Error::from(e)
        ));
    }

    /// Removes `name` (at `rel` below the target) from `dir`: a file or link at once, a
    /// directory after its contents (opened without following a symlink put in its place).
    /// Returns false when something is left below it, and so it stays.
    fn entry(&mut self, dir: &OwnedFd, rel: &Path, name: &OsStr) -> bool {
        if !self.dry_run {
            match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
                Ok(()) => {
                    self.done.count += 1;
                    return true;
                }
                Err(Errno::ISDIR) | Err(Errno::PERM) => {}
                Err(Errno::NOENT) => return true,
                Err(e) => {
                    self.failed(rel, e);
                    return false;
                }
            }
        }
        // Looked at before it is opened, so an automount point is not triggered.
        let flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT;
        let st = match rustix::fs::statx(dir, name, flags, StatxFlags::TYPE | StatxFlags::MNT_ID) {
            Ok(st) => st,
            Err(Errno::NOENT) => return true,
            Err(e) => {
                self.failed(rel, e);
                return false;
            }
        };
        let is_dir = rustix::fs::FileType::from_raw_mode(u32::from(st.stx_mode))
            == rustix::fs::FileType::Directory;
        if !is_dir {
            if !self.dry_run {
                // Unlinking it was refused (EPERM: an immutable file, another user's file in a
                // sticky directory): it stays, and is not counted as gone.
                self.failed(rel, Errno::PERM);
                return false;
            }
            self.done.count += 1;
            return true;
        }
        let automount = st.stx_attributes.contains(StatxAttributes::AUTOMOUNT);
        if automount || Place::from(&st) != self.home {
            self.other_mount(rel);
            return false;
        }
        let sub = match rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(sub) => sub,
            Err(Errno::NOENT) => return true,
            Err(e) => {
                self.failed(rel, e);
                return false;
            }
        };
        // Mounted there between the look and the open.
        if Place::of(&sub).ok() != Some(self.home) {
            self.other_mount(rel);
            return false;
        }
        let children = match list(&sub) {
            Ok(c) => c,
            Err(e) => {
                let errno = e.raw_os_error().map_or(Errno::IO, Errno::from_raw_os_error);
                self.failed(rel, errno);
                return false;
            }
        };
        let mut emptied = true;
        for child in children {
            emptied &= self.entry(&sub, &rel.join(&child), &child);
        }
        drop(sub);
        if !emptied {
            return false;
        }
        if self.dry_run {
            self.done.count += 1;
            return true;
        }
        match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
            Ok(()) => {
                self.done.count += 1;
                true
            }
            Err(Errno::NOENT) => true,
            Err(e) => {
                self.failed(rel, e);
                false
            }
        }
    }
}
