//! The read-only FUSE file system behind `drvault mount`: an inode table built lazily as
//! directories are visited, file reads served blob by blob from a bounded cache.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drvault_repo::format::{BlobKind, Node, NodeKind, Tree};
use drvault_repo::{Id, Repository};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEntry, ReplyOpen, ReplyXattr, Request,
};
use tokio::runtime::Handle;

use super::cache::{BlobCache, TreeCache};

/// Snapshots never change: the kernel may keep what it learnt for long.
const TTL: Duration = Duration::from_secs(3600);
/// Blobs fetched ahead of a sequential reader.
const READ_AHEAD: usize = 2;
/// First blobs of a directory's files fetched when it is listed.
const DIRECTORY_AHEAD: usize = 32;

/// Children of a directory: (name, inode), sorted by name.
type Children = Arc<Vec<(Vec<u8>, u64)>>;

pub(super) enum Kind {
    /// A directory of the mount's own layout (the root, `snapshots/`, `hosts/<host>/`, ...).
    Virtual(Children),
    /// A symbolic link of the layout (`latest`).
    Link(Vec<u8>),
    /// An entry of a snapshot whose root tree is `root`; a directory's children are listed
    /// the first time it is visited.
    Entry {
        node: Arc<Node>,
        root: Id,
        children: Option<Children>,
    },
}

pub(super) struct Inode {
    pub kind: Kind,
    /// Modification time of the layout's own entries.
    pub time: SystemTime,
}

struct OpenFile {
    content: Vec<Id>,
    /// `starts[i]` is where blob `i` begins; the last element is the file's length.
    starts: Vec<u64>,
}

pub(super) struct SnapshotFs {
    repo: Arc<Repository>,
    rt: Handle,
    inodes: Mutex<Vec<Inode>>,
    blobs: Arc<BlobCache>,
    trees: TreeCache,
    files: Mutex<std::collections::HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    fetching: Arc<Mutex<HashSet<Id>>>,
    owner: (u32, u32),
}

fn ino_of(index: usize) -> u64 {
    index as u64 + 1
}

fn time_of(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
        NodeKind::File | NodeKind::Hardlink => FileType::RegularFile,
    }
}

impl SnapshotFs {
    pub fn new(
        repo: Arc<Repository>,
        rt: Handle,
        inodes: Vec<Inode>,
        cache_bytes: usize,
    ) -> SnapshotFs {
        SnapshotFs {
            repo,
            rt,
            inodes: Mutex::new(inodes),
            blobs: Arc::new(BlobCache::new(cache_bytes)),
            trees: TreeCache::new(4096),
            files: Mutex::default(),
            next_fh: AtomicU64::new(1),
            fetching: Arc::default(),
            owner: (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            ),
        }
    }

    fn tree(&self, id: &Id) -> Result<Arc<Tree>, Errno> {
        if let Some(t) = self.trees.get(id) {
            return Ok(t);
        }
        let tree = self.rt.block_on(self.repo.load_tree(id)).map_err(|e| {
            tracing::warn!("mount: tree {}: {e}", id.short());
            Errno::EIO
        })?;
        let tree = Arc::new(tree);
        self.trees.insert(*id, tree.clone());
        Ok(tree)
    }

    /// The node a hard link names (a path from its snapshot's root), under the link's name.
    fn resolve_hardlink(&self, link: &Node, root: Id) -> Option<Node> {
        let mut tree = self.tree(&root).ok()?;
        let parts: Vec<&[u8]> = link.target.split(|b| *b == b'/').collect();
        let (last, dirs) = parts.split_last()?;
        for part in dirs {
            let dir = tree.entries.iter().find(|n| n.name == *part)?;
            tree = self.tree(&dir.subtree?).ok()?;
        }
        let target = tree.entries.iter().find(|n| n.name == *last)?;
        (target.kind == NodeKind::File).then(|| Node {
            name: link.name.clone(),
            ..target.clone()
        })
    }

    /// The children of a directory inode, listing a snapshot directory the first time.
    fn children(&self, ino: u64) -> Result<Children, Errno> {
        let (subtree, root) = {
            let inodes = self.inodes.lock().map_err(|_| Errno::EIO)?;
            match &inodes.get(ino as usize - 1).ok_or(Errno::ENOENT)?.kind {
                Kind::Virtual(c) => return Ok(c.clone()),
                Kind::Entry {
                    children: Some(c), ..
                } => return Ok(c.clone()),
                Kind::Entry { node, root, .. } if node.kind == NodeKind::Dir => {
                    (node.subtree.ok_or(Errno::EIO)?, *root)
                }
                _ => return Err(Errno::ENOTDIR),
            }
        };
        let tree = self.tree(&subtree)?;
        let nodes: Vec<Node> = tree
            .entries
            .iter()
            .map(|n| match n.kind {
                NodeKind::Hardlink => self.resolve_hardlink(n, root).unwrap_or_else(|| n.clone()),
                _ => n.clone(),
            })
            .collect();
        let mut inodes = self.inodes.lock().map_err(|_| Errno::EIO)?;
        // Another thread may have listed it meanwhile: keep its inodes.
        if let Some(Inode {
            kind: Kind::Entry {
                children: Some(c), ..
            },
            ..
        }) = inodes.get(ino as usize - 1)
        {
            return Ok(c.clone());
        }
        let mut children = Vec::with_capacity(nodes.len());
        for node in nodes {
            let name = node.name.clone();
            inodes.push(Inode {
                kind: Kind::Entry {
                    node: Arc::new(node),
                    root,
                    children: None,
                },
                time: UNIX_EPOCH,
            });
            children.push((name, ino_of(inodes.len() - 1)));
        }
        // `ls -l`, `cp -a` and `find | xargs cat` read a directory's files right after listing
        // it: start fetching their first blobs now (bounded by the cache's share of reads).
        let firsts: Vec<Id> = inodes[inodes.len() - children.len()..]
            .iter()
            .filter_map(|i| match &i.kind {
                Kind::Entry { node, .. } if node.kind == NodeKind::File => {
                    node.content.first().copied()
                }
                _ => None,
            })
            .take(DIRECTORY_AHEAD)
            .collect();
        let children = Arc::new(children);
        if let Some(Inode {
            kind: Kind::Entry { children: c, .. },
            ..
        }) = inodes.get_mut(ino as usize - 1)
        {
            *c = Some(children.clone());
        }
        drop(inodes);
        self.fetch_ahead(&firsts, DIRECTORY_AHEAD);
        Ok(children)
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let inodes = self.inodes.lock().map_err(|_| Errno::EIO)?;
        let inode = inodes
            .get((ino as usize).wrapping_sub(1))
            .ok_or(Errno::ENOENT)?;
        let (uid, gid) = self.owner;
        let layout = |kind, perm, size| FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: 0,
            atime: inode.time,
            mtime: inode.time,
            ctime: inode.time,
            crtime: inode.time,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid,
            gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        Ok(match &inode.kind {
            Kind::Virtual(_) => layout(FileType::Directory, 0o555, 0),
            Kind::Link(target) => layout(FileType::Symlink, 0o777, target.len() as u64),
            Kind::Entry { node, .. } => {
                let kind = file_type(node.kind);
                let size = match node.kind {
                    NodeKind::Symlink => node.target.len() as u64,
                    NodeKind::File | NodeKind::Hardlink => node.size,
                    _ => 0,
                };
                FileAttr {
                    ino: INodeNo(ino),
                    size,
                    blocks: size.div_ceil(512),
                    atime: time_of(node.atime_ns),
                    mtime: time_of(node.mtime_ns),
                    ctime: time_of(node.ctime_ns),
                    crtime: time_of(node.mtime_ns),
                    kind,
                    perm: (node.mode & 0o7777) as u16,
                    nlink: if kind == FileType::Directory { 2 } else { 1 },
                    uid: node.uid,
                    gid: node.gid,
                    rdev: node.rdev as u32,
                    blksize: 4096,
                    flags: 0,
                }
            }
        })
    }

    /// A directory's entries from position `offset` on ("." and ".." first), each with its
    /// attributes, handed to `add` until it returns true (the reply is full). Only what is sent
    /// is built, so listing a huge directory page by page stays linear.
    fn list_from(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(u64, &FileAttr, &[u8], u64) -> bool,
    ) -> Result<(), Errno> {
        let children = self.children(ino)?;
        let own = self.attr(ino)?;
        let dots: [&[u8]; 2] = [b".", b".."];
        for (i, name) in dots.iter().enumerate().skip(offset as usize) {
            if add(ino, &own, name, i as u64 + 1) {
                return Ok(());
            }
        }
        let first = (offset as usize).saturating_sub(dots.len());
        for (i, (name, child)) in children.iter().enumerate().skip(first) {
            let attr = self.attr(*child)?;
            if add(*child, &attr, name, (i + dots.len()) as u64 + 1) {
                break;
            }
        }
        Ok(())
    }

    fn node(&self, ino: u64) -> Result<Arc<Node>, Errno> {
        let inodes = self.inodes.lock().map_err(|_| Errno::EIO)?;
        match &inodes
            .get((ino as usize).wrapping_sub(1))
            .ok_or(Errno::ENOENT)?
            .kind
        {
            Kind::Entry { node, .. } => Ok(node.clone()),
            _ => Err(Errno::EINVAL),
        }
    }

    fn blob(&self, id: &Id) -> Result<Arc<Vec<u8>>, Errno> {
        if let Some(b) = self.blobs.get(id) {
            return Ok(b);
        }
        // Fetched ahead and on its way: wait for it (a while) rather than read it twice.
        for _ in 0..400 {
            let on_its_way = self.fetching.lock().is_ok_and(|f| f.contains(id));
            if !on_its_way {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(b) = self.blobs.get(id) {
            return Ok(b);
        }
        let blob = self
            .rt
            .block_on(self.repo.read_blob(BlobKind::Data, id))
            .map_err(|e| {
                tracing::warn!("mount: blob {}: {e}", id.short());
                Errno::EIO
            })?;
        let blob = Arc::new(blob);
        self.blobs.insert(*id, blob.clone());
        Ok(blob)
    }

    /// Starts fetching blobs a sequential reader will want next into the cache.
    fn read_ahead(&self, ids: &[Id]) {
        self.fetch_ahead(ids, READ_AHEAD);
    }

    /// Starts fetching up to `limit` of `ids` that are neither cached nor on their way.
    fn fetch_ahead(&self, ids: &[Id], limit: usize) {
        for id in ids.iter().take(limit) {
            if self.blobs.get(id).is_some() {
                continue;
            }
            let started = self.fetching.lock().map(|mut f| f.insert(*id));
            if !matches!(started, Ok(true)) {
                continue;
            }
            let (repo, cache, fetching, id) = (
                self.repo.clone(),
                self.blobs.clone(),
                self.fetching.clone(),
                *id,
            );
            self.rt.spawn(async move {
                if let Ok(blob) = repo.read_blob(BlobKind::Data, &id).await {
                    cache.insert(id, Arc::new(blob));
                }
                if let Ok(mut f) = fetching.lock() {
                    f.remove(&id);
                }
            });
        }
    }
}

impl Filesystem for SnapshotFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = self.children(parent.0).and_then(|children| {
            let i = children
                .binary_search_by(|(n, _)| n.as_slice().cmp(name.as_bytes()))
                .map_err(|_| Errno::ENOENT)?;
            self.attr(children[i].1)
        });
        match found {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let target = {
            let Ok(inodes) = self.inodes.lock() else {
                return reply.error(Errno::EIO);
            };
            match inodes
                .get((ino.0 as usize).wrapping_sub(1))
                .map(|i| &i.kind)
            {
                Some(Kind::Link(t)) => Ok(t.clone()),
                Some(Kind::Entry { node, .. }) if node.kind == NodeKind::Symlink => {
                    Ok(node.target.clone())
                }
                Some(_) => Err(Errno::EINVAL),
                None => Err(Errno::ENOENT),
            }
        };
        match target {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & (libc_flags::O_WRONLY | libc_flags::O_RDWR) != 0 {
            return reply.error(Errno::EROFS);
        }
        let node = match self.node(ino.0) {
            Ok(n) if n.kind == NodeKind::File => n,
            Ok(_) => return reply.error(Errno::EINVAL),
            Err(e) => return reply.error(e),
        };
        let mut starts = Vec::with_capacity(node.content.len() + 1);
        let mut at = 0u64;
        for id in &node.content {
            starts.push(at);
            match self.repo.locate(id) {
                Some(loc) => at += u64::from(loc.entry.raw_length),
                None => {
                    tracing::warn!("mount: blob {} is not in the index", id.short());
                    return reply.error(Errno::EIO);
                }
            }
        }
        starts.push(at);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut files) = self.files.lock() {
            files.insert(
                fh,
                Arc::new(OpenFile {
                    content: node.content.clone(),
                    starts,
                }),
            );
        }
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(file) = self.files.lock().ok().and_then(|f| f.get(&fh.0).cloned()) else {
            return reply.error(Errno::EBADF);
        };
        let end = (offset + u64::from(size)).min(*file.starts.last().unwrap_or(&0));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut pos = offset;
        // The blob holding `pos`: the last one starting at or before it.
        let mut i = file.starts.partition_point(|s| *s <= pos).saturating_sub(1);
        while pos < end && i < file.content.len() {
            let blob = match self.blob(&file.content[i]) {
                Ok(b) => b,
                Err(e) => return reply.error(e),
            };
            let from = (pos - file.starts[i]) as usize;
            let to = ((end - file.starts[i]) as usize).min(blob.len());
            if from >= to {
                // The index and the blob disagree on its length: the file is damaged.
                return reply.error(Errno::EIO);
            }
            out.extend_from_slice(&blob[from..to]);
            pos += (to - from) as u64;
            i += 1;
        }
        self.read_ahead(&file.content[i.min(file.content.len())..]);
        reply.data(&out);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: fuser::ReplyEmpty,
    ) {
        // Nothing is ever written: closing has nothing to flush. ENOSYS tells the kernel so,
        // and it stops sending a flush at every close.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        if let Ok(mut files) = self.files.lock() {
            files.remove(&fh.0);
        }
        reply.ok();
    }

    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Attributes with each listed entry (no lookup per file after a listing), lookups in
        // one directory in parallel, symlink targets cached: each only where the kernel has it.
        for wanted in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
        ] {
            let _ = config.add_capabilities(wanted);
        }
        Ok(())
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = self.list_from(ino.0, offset, |child, attr, name, next| {
            reply.add(INodeNo(child), next, attr.kind, OsStr::from_bytes(name))
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let listed = self.list_from(ino.0, offset, |child, attr, name, next| {
            let name = OsStr::from_bytes(name);
            reply.add(INodeNo(child), next, name, &TTL, attr, Generation(0))
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let node = match self.node(ino.0) {
            Ok(n) => n,
            Err(_) => return reply.error(Errno::NO_XATTR),
        };
        match node.xattrs.iter().find(|(n, _)| n == name.as_bytes()) {
            None => reply.error(Errno::NO_XATTR),
            Some((_, value)) => xattr_reply(reply, value, size),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let names: Vec<u8> = match self.node(ino.0) {
            Ok(n) => n
                .xattrs
                .iter()
                .flat_map(|(name, _)| name.iter().copied().chain([0]))
                .collect(),
            Err(_) => Vec::new(),
        };
        xattr_reply(reply, &names, size);
    }
}

/// `size` 0 asks for the length; a smaller buffer than the value is ERANGE.
fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if (size as usize) < value.len() {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

/// Open flags as the kernel sends them (Linux values).
mod libc_flags {
    pub const O_WRONLY: i32 = 0o1;
    pub const O_RDWR: i32 = 0o2;
}
