//! File-system operations of a restore, all through a descriptor of the target that the restore
//! opened itself.
//!
//! A path below the target is resolved by the kernel with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` (per component with `O_NOFOLLOW` on kernels without it), so a
//! directory that a local user swaps for a symlink is refused, never followed. Every entry the
//! restore creates is recorded by device and inode ([`FileId`]) and checked again at each later
//! open; metadata is applied to the opened descriptor (`fchown`, `fsetxattr`, `fchmod`,
//! `futimens`), never through a path resolved again.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use drvault_repo::format::Node;
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Stat, Timestamps, Uid};
use rustix::io::Errno;

use crate::error::io;
use crate::{Error, Result};

/// What an entry the restore created is: checked again at every later open, so a file or
/// directory put in its place is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    /// The owner when created: a user who unlinks the entry and makes one of their own may get
    /// the same inode number back (ext4 and XFS reuse them at once), never root's ownership.
    uid: u32,
}

impl FileId {
    // `Stat`'s field types differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    fn of(st: &Stat) -> Self {
        FileId {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            uid: st.st_uid,
        }
    }

    /// The same inode, whoever owns it now (after the restore's own chown).
    fn same_inode(&self, other: &FileId) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }

    /// What the entry is once the restore gave it the owner `uid` (installing a file as root).
    pub fn owned_by(self, uid: u32) -> FileId {
        FileId { uid, ..self }
    }
}

/// A file being restored, open under its temporary name, with the directory holding it.
pub struct TempFile {
    dir: OwnedFd,
    name: std::ffi::OsString,
    pub file: File,
    pub id: FileId,
}

/// Temporary names of files being restored begin with this.
pub const TEMP_PREFIX: &str = ".drvault-restore-";

/// Set once the kernel answered ENOSYS to openat2 (before Linux 5.6).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// The restore target, held open.
pub struct Target {
    fd: OwnedFd,
    path: PathBuf,
}

impl Target {
    /// Creates the target if needed and opens it. The path itself is the caller's (root's)
    /// choice and is resolved once; everything below it is resolved beneath the descriptor.
    pub fn open(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(io(path))?;
        let canonical = path.canonicalize().map_err(io(path))?;
        let fd = rustix::fs::open(
            &canonical,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOTDIR | Errno::LOOP => Error::UnsafeTarget(canonical.clone()),
            e => io(&canonical)(e.into()),
        })?;
        Ok(Target {
            fd,
            path: canonical,
        })
    }

    /// The full path of `rel`, for messages.
    pub fn display(&self, rel: &Path) -> PathBuf {
        self.path.join(rel)
    }

    /// The target directory itself (opened with `O_PATH`).
    pub(crate) fn root(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// An I/O error at `rel`, named by its full path.
    pub(crate) fn io_error(&self, rel: &Path, e: std::io::Error) -> Error {
        io(&self.display(rel))(e)
    }

    /// Opens the directory `rel` for listing, beneath the target without following a symlink;
    /// `None` when nothing is at `rel` yet.
    pub(crate) fn open_dir_if_there(&self, rel: &Path) -> Result<Option<OwnedFd>> {
        match self.resolve(rel, OFlags::RDONLY | OFlags::DIRECTORY) {
            Ok(fd) => Ok(Some(fd)),
            // Only to tell "missing" from "swapped": nothing is opened or written by this path.
            Err(e) => match std::fs::symlink_metadata(self.display(rel)) {
                Err(m) if m.kind() == std::io::ErrorKind::NotFound => Ok(None),
                _ => Err(e),
            },
        }
    }

    fn changed(&self, rel: &Path, why: impl std::fmt::Display) -> Error {
        Error::Changed {
            path: self.display(rel),
            reason: why.to_string(),
        }
    }

    /// Opens `rel` (relative, "" for the target itself) beneath the target without following
    /// any symlink. A component that is missing, not a directory or a symlink means the tree
    /// changed under the restore.
    fn resolve(&self, rel: &Path, flags: OFlags) -> Result<OwnedFd> {
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let rel_or_dot = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let mut attempts = 0;
        let opened = loop {
            if NO_OPENAT2.load(Ordering::Relaxed) {
                break self.resolve_per_component(rel_or_dot, flags);
            }
            let how =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            match rustix::fs::openat2(&self.fd, rel_or_dot, flags, Mode::empty(), how) {
                Err(Errno::NOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
                // A rename elsewhere on the file system raced the lookup: try again.
                Err(Errno::AGAIN) if attempts < 16 => attempts += 1,
                other => break other,
            }
        };
        opened.map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR | Errno::NOENT | Errno::XDEV => {
                self.changed(rel, "a directory on its way was replaced or moved")
            }
            e => io(&self.display(rel))(e.into()),
        })
    }

    fn resolve_per_component(&self, rel: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        let comps: Vec<&OsStr> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s),
                _ => None,
            })
            .collect();
        let Some((last, dirs)) = comps.split_last() else {
            return rustix::fs::openat(&self.fd, ".", flags, Mode::empty());
        };
        let mut cur: Option<OwnedFd> = None;
        for d in dirs {
            let at = cur.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
            let next = rustix::fs::openat(
                at,
                *d,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            cur = Some(next);
        }
        let at = cur.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
        rustix::fs::openat(at, *last, flags, Mode::empty())
    }

    /// The directory holding `rel` (opened beneath the target) and `rel`'s last component.
    fn parent<'a>(&self, rel: &'a Path) -> Result<(OwnedFd, &'a OsStr)> {
        let name = rel
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{} has no name", rel.display())))?;
        let dir = rel.parent().unwrap_or(Path::new(""));
        Ok((self.resolve(dir, OFlags::PATH | OFlags::DIRECTORY)?, name))
    }

    /// Creates a directory (owner-only until its metadata is applied at the end), or accepts an
    /// existing real directory.
    pub fn mkdir(&self, rel: &Path) -> Result<FileId> {
        let (dir, name) = self.parent(rel)?;
        let fresh = match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(io(&self.display(rel))(e.into())),
        };
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOTDIR | Errno::LOOP => Error::UnsafeTarget(self.display(rel)),
            Errno::NOENT => self.changed(rel, "it was removed as it was created"),
            e => io(&self.display(rel))(e.into()),
        })?;
        let id = FileId::of(&fstat(&fd, self, rel)?);
        // A directory just made is ours: another user's in its place was swapped in.
        if fresh && id.uid != rustix::process::geteuid().as_raw() {
            return Err(self.changed(rel, "another user's directory was put in its place"));
        }
        Ok(id)
    }

    /// Removes whatever non-directory is at `name` in `dir` so a new entry can take its place.
    fn clear(&self, dir: &OwnedFd, name: &OsStr, rel: &Path) -> Result<()> {
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                Err(Error::UnsafeTarget(self.display(rel)))
            }
            Ok(_) => match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(io(&self.display(rel))(e.into())),
            },
            Err(_) => Ok(()),
        }
    }

    /// Creates the file that will become `rel` under the temporary name `temp` beside it
    /// (owner-only, sparse at its final size): a file is under its final name only once its
    /// content is complete. A crash leaves only `.drvault-restore-*` names.
    pub fn create_temp(&self, rel: &Path, temp: &Path, size: u64) -> Result<TempFile> {
        let (dir, name) = self.parent(temp)?;
        // A directory at the final name would refuse the rename at the end: say so before
        // anything is written.
        if let Some(final_name) = rel.file_name() {
            if let Ok(st) = rustix::fs::statat(&dir, final_name, AtFlags::SYMLINK_NOFOLLOW) {
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    return Err(Error::UnsafeTarget(self.display(rel)));
                }
            }
        }
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| match e {
            Errno::EXIST => self.changed(temp, "something was put in its place"),
            e => io(&self.display(temp))(e.into()),
        })?;
        if size > 0 {
            rustix::fs::ftruncate(&fd, size).map_err(|e| io(&self.display(temp))(e.into()))?;
        }
        let id = FileId::of(&fstat(&fd, self, temp)?);
        Ok(TempFile {
            name: name.to_os_string(),
            dir,
            file: File::from(fd),
            id,
        })
    }

    /// Opens the temporary file `temp` this restore created again (for writing, or for
    /// reading to verify it), checking it is still that file.
    pub fn reopen_temp(&self, temp: &Path, id: FileId, write: bool) -> Result<TempFile> {
        let (dir, name) = self.parent(temp)?;
        // Non-blocking: a FIFO put in its place must not hang the restore (it is refused by
        // the identity check right after).
        let flags = if write {
            OFlags::WRONLY
        } else {
            OFlags::RDONLY
        };
        let fd = self.open_checked(
            &dir,
            name,
            temp,
            id,
            flags | OFlags::NONBLOCK | OFlags::NOCTTY,
        )?;
        Ok(TempFile {
            name: name.to_os_string(),
            dir,
            file: File::from(fd),
            id,
        })
    }

    /// The regular file at `rel`, opened for reading, when there is one (not a symlink, a
    /// directory or anything else: those are replaced or refused as before).
    pub fn existing_file(&self, rel: &Path) -> Result<Option<(File, FileId)>> {
        let (dir, name) = self.parent(rel)?;
        let fd = match rustix::fs::openat(
            &dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::LOOP | Errno::ISDIR | Errno::NXIO | Errno::ACCESS) => {
                return Ok(None)
            }
            Err(e) => return Err(io(&self.display(rel))(e.into())),
        };
        let st = fstat(&fd, self, rel)?;
        // A file with other names may be another file entirely (a user's hard link to one of
        // root's): it is replaced, never kept and given the snapshot's metadata.
        #[allow(clippy::unnecessary_cast)]
        let single = st.st_nlink as u64 == 1;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || !single {
            return Ok(None);
        }
        Ok(Some((File::from(fd), FileId::of(&st))))
    }

    /// Gives the complete temporary file `temp` the metadata of `node` through its open
    /// descriptor, then renames it to `rel`, replacing whatever non-directory is there in one
    /// step: a file appears under its name complete, with its owner and mode.
    pub fn install(
        &self,
        temp: TempFile,
        (rel, node): (&Path, &Node),
        as_root: bool,
    ) -> Result<Vec<String>> {
        let fd = OwnedFd::from(temp.file);
        let warnings = self.set_metadata(&fd, rel, node, as_root)?;
        let name = rel
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{} has no name", rel.display())))?;
        // The temporary name must still be this file (a user who can write the directory may
        // have put their own there). A swap between this check and the rename is caught by the
        // check after it, which fails the restore.
        let temp_rel = rel.with_file_name(&temp.name);
        if !self
            .stat_at(&temp.dir, &temp.name, &temp_rel)?
            .same_inode(&temp.id)
        {
            return Err(self.changed(&temp_rel, "it was replaced by another file"));
        }
        rustix::fs::renameat(&temp.dir, &temp.name, &temp.dir, name).map_err(|e| match e {
            Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST => Error::UnsafeTarget(self.display(rel)),
            Errno::NOENT => self.changed(&temp_rel, "it was removed"),
            e => io(&self.display(rel))(e.into()),
        })?;
        // The owner is the snapshot's by now: the inode identifies the file (and `fd`, still
        // open, keeps its number from being reused by another file meanwhile).
        if !self.stat_at(&temp.dir, name, rel)?.same_inode(&temp.id) {
            return Err(self.changed(rel, "it was replaced by another file"));
        }
        Ok(warnings)
    }

    /// Removes the temporary file of a file that could not be restored.
    pub fn discard(&self, temp: &Path, id: FileId) -> Result<()> {
        let (dir, name) = self.parent(temp)?;
        self.open_entry(&dir, name, temp, id)?;
        rustix::fs::unlinkat(&dir, name, AtFlags::empty())
            .map_err(|e| io(&self.display(temp))(e.into()))
    }

    /// Opens the entry `name` of `dir` itself (a symlink is not followed), checked against `id`.
    fn open_entry(&self, dir: &OwnedFd, name: &OsStr, rel: &Path, id: FileId) -> Result<OwnedFd> {
        self.open_checked(dir, name, rel, id, OFlags::PATH)
    }

    /// Opens the entry `name` of `dir` with `flags` (never following a symlink), checked
    /// against `id`.
    fn open_checked(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        rel: &Path,
        id: FileId,
        flags: OFlags,
    ) -> Result<OwnedFd> {
        let fd = rustix::fs::openat(
            dir,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOENT => self.changed(rel, "it was removed"),
            e => io(&self.display(rel))(e.into()),
        })?;
        self.expect(&fd, rel, id)?;
        Ok(fd)
    }

    fn expect(&self, fd: &OwnedFd, rel: &Path, id: FileId) -> Result<()> {
        if FileId::of(&fstat(fd, self, rel)?) == id {
            Ok(())
        } else {
            Err(self.changed(rel, "it was replaced by another file"))
        }
    }

    pub fn mkfifo(&self, rel: &Path) -> Result<FileId> {
        let (dir, name) = self.parent(rel)?;
        self.clear(&dir, name, rel)?;
        rustix::fs::mknodat(&dir, name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
            .map_err(|e| io(&self.display(rel))(e.into()))?;
        self.stat_at(&dir, name, rel)
    }

    fn stat_at(&self, dir: &OwnedFd, name: &OsStr, rel: &Path) -> Result<FileId> {
        rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map(|st| FileId::of(&st))
            .map_err(|e| match e {
                Errno::NOENT => self.changed(rel, "it was removed"),
                e => io(&self.display(rel))(e.into()),
            })
    }

    pub fn symlink(&self, rel: &Path, points_to: &[u8]) -> Result<FileId> {
        let (dir, name) = self.parent(rel)?;
        self.clear(&dir, name, rel)?;
        rustix::fs::symlinkat(OsStr::from_bytes(points_to), &dir, name)
            .map_err(|e| io(&self.display(rel))(e.into()))?;
        self.stat_at(&dir, name, rel)
    }

    /// Links `rel` to the file `source` this restore created (never to what replaced it).
    pub fn hard_link(&self, source: &Path, source_id: FileId, rel: &Path) -> Result<()> {
        let (sdir, sname) = self.parent(source)?;
        let checked = self.open_entry(&sdir, sname, source, source_id)?;
        let (dir, name) = self.parent(rel)?;
        self.clear(&dir, name, rel)?;
        // Link the checked inode itself, not whatever the name holds by now. AT_EMPTY_PATH needs
        // CAP_DAC_READ_SEARCH; without it, the name (no AT_SYMLINK_FOLLOW: a symlink swapped in
        // is linked, not followed).
        match rustix::fs::linkat(&checked, "", &dir, name, AtFlags::EMPTY_PATH) {
            Ok(()) => Ok(()),
            Err(Errno::NOENT | Errno::PERM) => {
                rustix::fs::linkat(&sdir, sname, &dir, name, AtFlags::empty())
                    .map_err(|e| io(&self.display(rel))(e.into()))
            }
            Err(e) => Err(io(&self.display(rel))(e.into())),
        }
    }

    /// Applies ownership (as root), extended attributes, permissions and times to the entry
    /// this restore created at `rel`. Ownership comes first: chown clears setuid, setgid and
    /// `security.capability`, which are set after it. Problems that do not lose data (an xattr
    /// namespace we may not write) come back as warnings.
    pub fn apply_metadata(
        &self,
        rel: &Path,
        id: FileId,
        node: &Node,
        kind: MetaKind,
        as_root: bool,
    ) -> Result<Vec<String>> {
        let fail = |e: Errno| io(&self.display(rel))(e.into());
        if kind == MetaKind::Symlink {
            let (dir, name) = self.parent(rel)?;
            let link = self.open_entry(&dir, name, rel, id)?;
            if as_root {
                // Through the checked descriptor: a hard link swapped in is not chowned.
                rustix::fs::chownat(&link, "", uid(node), gid(node), AtFlags::EMPTY_PATH)
                    .map_err(fail)?;
            }
            rustix::fs::utimensat(&dir, name, &times(node), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(fail)?;
            return Ok(Vec::new());
        }
        let flags = match kind {
            MetaKind::Dir => OFlags::RDONLY | OFlags::DIRECTORY,
            _ => OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
        };
        let fd = self.resolve(rel, flags)?;
        self.expect(&fd, rel, id)?;
        self.set_metadata(&fd, rel, node, as_root)
    }

    /// Ownership (as root), extended attributes, permissions and times, through `fd`.
    fn set_metadata(
        &self,
        fd: &OwnedFd,
        rel: &Path,
        node: &Node,
        as_root: bool,
    ) -> Result<Vec<String>> {
        let fail = |e: Errno| io(&self.display(rel))(e.into());
        if as_root {
            rustix::fs::fchown(fd, uid(node), gid(node)).map_err(fail)?;
        }
        let mut warnings = Vec::new();
        for (name, value) in &node.xattrs {
            if let Err(e) = rustix::fs::fsetxattr(
                fd,
                OsStr::from_bytes(name),
                value,
                rustix::fs::XattrFlags::empty(),
            ) {
                warnings.push(format!(
                    "{}: cannot set extended attribute {}: {}",
                    drvault_repo::printable::path(&self.display(rel)),
                    drvault_repo::printable::bytes(name),
                    std::io::Error::from(e)
                ));
            }
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(node.mode & 0o7777)).map_err(fail)?;
        rustix::fs::futimens(fd, &times(node)).map_err(fail)?;
        Ok(warnings)
    }
}

/// How metadata is applied: through the entry's own descriptor, or (symlinks) through its
/// directory's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKind {
    Dir,
    Other,
    Symlink,
}

fn uid(node: &Node) -> Option<Uid> {
    Some(Uid::from_raw(node.uid))
}

fn gid(node: &Node) -> Option<Gid> {
    Some(Gid::from_raw(node.gid))
}

fn fstat(fd: &OwnedFd, target: &Target, rel: &Path) -> Result<Stat> {
    rustix::fs::fstat(fd).map_err(|e| io(&target.display(rel))(e.into()))
}

/// The node's access and modification times.
fn times(node: &Node) -> Timestamps {
    Timestamps {
        last_access: timestamp(node.atime_ns),
        last_modification: timestamp(node.mtime_ns),
    }
}

fn timestamp(ns: i64) -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    }
}
