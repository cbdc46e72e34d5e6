//! Walks the source paths depth first and turns each directory into a tree blob, reusing the
//! content of files unchanged since the parent snapshot (size, mtime, ctime and inode equal).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use drvault_repo::chunker::Chunker;
use drvault_repo::format::{BlobKind, Node, NodeKind, Summary, Tree, TREE_VERSION};
use drvault_repo::{Id, Repository};
use globset::GlobSet;
use rustix::fs::{AtFlags, Mode, OFlags, Stat};
use tokio::runtime::Handle;

use crate::metadata::{file_id, nlink};
use crate::pipeline::Pipeline;
use crate::readers::{FileToRead, Pending, Readers};

mod defer;
use crate::{Error, Progress, Result};

pub struct WalkOptions {
    pub excludes: GlobSet,
    pub one_file_system: bool,
}

pub struct Walker {
    pipeline: Arc<Pipeline>,
    readers: Readers,
    rt: Handle,
    opts: WalkOptions,
    /// (device, inode) of multiply linked files already stored → their path in the snapshot.
    links: HashMap<(u64, u64), Vec<u8>>,
    progress: Option<Box<dyn Progress>>,
    pub summary: Summary,
    /// Directories waiting for their files' readers (defer.rs).
    deferred: defer::Deferred,
}

/// A node whose file content may still be on its way from a reader:
/// (answer, whether a parent entry existed, the source path for messages), or, for a directory,
/// whose tree is stored once its own files are in (the slot it will be in).
struct Entry {
    node: Node,
    pending: Option<(Pending, bool, PathBuf)>,
    subtree: Option<u64>,
}

/// A directory assembled in memory for the path components above the backed-up paths.
#[derive(Default)]
struct Virtual {
    children: BTreeMap<Vec<u8>, VirtualEntry>,
}

enum VirtualEntry {
    Real(Node),
    Dir(PathBuf, Virtual),
}

impl Walker {
    pub fn new(
        pipeline: Pipeline,
        chunker: Chunker,
        rt: Handle,
        opts: WalkOptions,
        readers: usize,
        progress: Option<Box<dyn Progress>>,
    ) -> Result<Self> {
        let pipeline = Arc::new(pipeline);
        let readers = Readers::start(pipeline.clone(), chunker, readers)?;
        Ok(Walker {
            pipeline,
            readers,
            rt,
            opts,
            links: HashMap::new(),
            progress,
            summary: Summary::default(),
            deferred: defer::Deferred::default(),
        })
    }

    /// Stops the readers and hands back the pipeline to finish.
    pub fn into_pipeline(self) -> Result<(Pipeline, Summary)> {
        if let Some(mut p) = self.progress {
            p.finish();
        }
        self.readers.finish();
        let pipeline = Arc::try_unwrap(self.pipeline)
            .map_err(|_| Error::Internal("the pipeline is still shared after the walk".into()))?;
        Ok((pipeline, self.summary))
    }

    fn report(&mut self) {
        if let Some(p) = &mut self.progress {
            p.update(&self.summary);
        }
    }

    fn repo(&self) -> &Repository {
        self.pipeline.repo()
    }

    /// Backs up absolute `paths`; returns the root tree. The snapshot mirrors their absolute
    /// location: /etc/ssh becomes the entry "etc" holding "ssh".
    pub fn run(&mut self, paths: &[PathBuf], parent_root: Option<Id>) -> Result<Id> {
        let mut root = Virtual::default();
        let components = |path: &Path| -> Vec<Vec<u8>> {
            path.components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(s) => Some(s.as_bytes().to_vec()),
                    _ => None,
                })
                .collect()
        };
        let others: Vec<Vec<Vec<u8>>> = paths
            .iter()
            .map(|p| components(p))
            .filter(|c| !c.is_empty())
            .collect();
        if others.len() < paths.len() {
            // "/" with others (`-x / /boot`): the others are walked on their own file systems
            // and take their places in "/"; "/" alone is every top-level entry.
            if let Some(deep) = others.iter().find(|c| c.len() > 1) {
                return Err(Error::Usage(format!(
                    "/{}: besides `/`, give only top-level directories (such as /boot); back up \
                     deeper paths in a snapshot of their own",
                    String::from_utf8_lossy(&deep.join(&b'/'))
                )));
            }
            self.walk_root(&mut root, &others, parent_root)?;
        }
        for path in paths {
            let comps = components(path);
            let Some((last, dirs)) = comps.split_last() else {
                continue;
            };
            let parent_tree = self.parent_dir(parent_root, dirs);
            let parent_node =
                parent_tree.and_then(|t| t.entries.into_iter().find(|n| n.name == *last));
            // The backed-up path's own directories are the caller's (root's) choice; from the
            // path's last component on, everything is opened relative to a descriptor.
            let above = path.parent().unwrap_or(Path::new("/"));
            let opened = rustix::fs::open(
                above,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .and_then(|dir| {
                let st =
                    rustix::fs::statat(&dir, OsStr::from_bytes(last), AtFlags::SYMLINK_NOFOLLOW)?;
                Ok((dir, st))
            });
            let (dir, st) = match opened {
                Ok(x) => x,
                Err(e) => {
                    self.warn(path, &std::io::Error::from(e));
                    continue;
                }
            };
            let root_dev = file_id(&st).0;
            let Some(entry) = self.backup_entry(
                &Arc::new(dir),
                path,
                last,
                &comps,
                &st,
                parent_node,
                root_dev,
            )?
            else {
                continue;
            };
            self.settle(true)?;
            let Some(node) = self.resolve(vec![entry])?.pop() else {
                continue;
            };
            let mut dir = &mut root;
            let mut cur = PathBuf::from("/");
            for d in dirs {
                cur.push(std::ffi::OsStr::from_bytes(d));
                let entry = dir
                    .children
                    .entry(d.clone())
                    .or_insert_with(|| VirtualEntry::Dir(cur.clone(), Virtual::default()));
                dir = match entry {
                    VirtualEntry::Dir(_, v) => v,
                    VirtualEntry::Real(_) => {
                        return Err(Error::Usage(format!(
                            "{} is both backed up and a parent of another path",
                            cur.display()
                        )))
                    }
                };
            }
            dir.children.insert(last.clone(), VirtualEntry::Real(node));
        }
        self.store_virtual(root)
    }

    /// Every top-level entry of "/" except those given as paths of their own, walked on the
    /// root's file system.
    fn walk_root(
        &mut self,
        root: &mut Virtual,
        given: &[Vec<Vec<u8>>],
        parent_root: Option<Id>,
    ) -> Result<()> {
        let root_error = |e: rustix::io::Errno| {
            Error::Source(format!("cannot open /: {}", std::io::Error::from(e)))
        };
        let fd = Arc::new(rustix::fs::open("/", dir_flags(), Mode::empty()).map_err(root_error)?);
        let dev = file_id(&rustix::fs::fstat(&*fd).map_err(root_error)?).0;
        let mut parent_nodes: HashMap<Vec<u8>, Node> = self
            .parent_dir(parent_root, &[])
            .map(|t| t.entries.into_iter().map(|n| (n.name.clone(), n)).collect())
            .unwrap_or_default();
        for name in self.list_names(&fd, Path::new("/")) {
            if given.iter().any(|c| c[0] == name) {
                continue;
            }
            let child = Path::new("/").join(OsStr::from_bytes(&name));
            let st =
                match rustix::fs::statat(&*fd, OsStr::from_bytes(&name), AtFlags::SYMLINK_NOFOLLOW)
                {
                    Ok(st) => st,
                    Err(e) => {
                        self.warn(&child, &std::io::Error::from(e));
                        continue;
                    }
                };
            let comps = vec![name.clone()];
            let parent_node = parent_nodes.remove(&name);
            let Some(entry) =
                self.backup_entry(&fd, &child, &name, &comps, &st, parent_node, dev)?
            else {
                continue;
            };
            self.settle(true)?;
            if let Some(node) = self.resolve(vec![entry])?.pop() {
                root.children.insert(name, VirtualEntry::Real(node));
            }
            self.report();
        }
        Ok(())
    }

    /// The names in an opened directory, sorted (a listing failure is a warning: empty).
    fn list_names(&mut self, dir: &OwnedFd, path: &Path) -> Vec<Vec<u8>> {
        let mut names: Vec<Vec<u8>> = match rustix::fs::Dir::read_from(dir) {
            Ok(entries) => {
                let mut names = Vec::new();
                for entry in entries {
                    match entry {
                        Ok(e) => names.push(e.file_name().to_bytes().to_vec()),
                        // An entry the kernel could not return (an I/O error, a damaged
                        // directory block): the listing is incomplete, and the user hears it.
                        Err(e) => {
                            let e = std::io::Error::from(e);
                            self.warn(path, &format!("cannot list every entry: {e}"));
                            break;
                        }
                    }
                }
                names.retain(|n| n != b"." && n != b"..");
                names
            }
            Err(e) => {
                let e = std::io::Error::from(e);
                self.warn(path, &format!("cannot list directory: {e}"));
                Vec::new()
            }
        };
        names.sort();
        names
    }

    fn store_virtual(&mut self, v: Virtual) -> Result<Id> {
        let mut entries = Vec::new();
        for (name, entry) in v.children {
            match entry {
                VirtualEntry::Real(node) => entries.push(node),
                VirtualEntry::Dir(path, sub) => {
                    let subtree = self.store_virtual(sub)?;
                    let st = rustix::fs::lstat(&path).map_err(|e| {
                        Error::Source(format!(
                            "cannot read {}: {}",
                            drvault_repo::printable::path(&path),
                            std::io::Error::from(e)
                        ))
                    })?;
                    let (mut node, _) = crate::metadata::node_from(&name, &path, &st);
                    node.subtree = Some(subtree);
                    entries.push(node);
                }
            }
        }
        self.store_tree(entries)
    }

    fn store_tree(&mut self, entries: Vec<Node>) -> Result<Id> {
        let tree = Tree {
            version: TREE_VERSION,
            entries,
        };
        let bytes = tree.encode();
        self.pipeline.add(BlobKind::Tree, &bytes)
    }

    fn parent_dir(&self, parent_root: Option<Id>, comps: &[Vec<u8>]) -> Option<Tree> {
        let mut tree = self.load_tree(parent_root?)?;
        for c in comps {
            let sub = tree
                .entries
                .iter()
                .find(|n| n.name == *c && n.kind == NodeKind::Dir)?
                .subtree?;
            tree = self.load_tree(sub)?;
        }
        Some(tree)
    }

    fn load_tree(&self, id: Id) -> Option<Tree> {
        let repo = self.pipeline.repo();
        // The walker is a plain thread, never inside the runtime: blocking on it here is safe.
        match self.rt.block_on(repo.load_tree(&id)) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("parent tree {id} unreadable, files below it are read again: {e}");
                None
            }
        }
    }

    fn warn(&mut self, path: &Path, e: &dyn std::fmt::Display) {
        tracing::warn!("{}: {e}", drvault_repo::printable::path(path));
        self.summary.errors += 1;
    }

    fn excluded(&self, path: &Path) -> bool {
        !self.opts.excludes.is_empty()
            && (self.opts.excludes.is_match(path)
                || path
                    .file_name()
                    .is_some_and(|n| self.opts.excludes.is_match(n)))
    }

    /// Backs up one entry; `None` when it is skipped (excluded, unreadable, a socket).
    /// `dir` is the directory holding the entry `name` (shown as `path`), `st` its `lstat` data.
    #[allow(clippy::too_many_arguments)]
    fn backup_entry(
        &mut self,
        dir: &Arc<OwnedFd>,
        path: &Path,
        name: &[u8],
        snap_path: &[Vec<u8>],
        st: &Stat,
        parent: Option<Node>,
        root_dev: u64,
    ) -> Result<Option<Entry>> {
        // A clean point: everything handed to the pipeline so far is packed, uploaded and
        // indexed by `Pipeline::finish` before the error reaches the caller.
        self.pipeline.check_cancelled()?;
        if self.excluded(path) {
            return Ok(None);
        }
        let mut node = crate::metadata::node_without_xattrs(name, st);
        // Setting an extended attribute changes ctime: with inode and ctime unchanged, the
        // parent's attributes are current and the (path-walking) listxattr call is saved.
        let same_inode = parent.as_ref().is_some_and(|p| {
            p.kind == node.kind && p.inode == node.inode && p.ctime_ns == node.ctime_ns
        });
        match parent.as_ref() {
            Some(p) if same_inode => node.xattrs = p.xattrs.clone(),
            // Read from the descriptor that is opened and compared with the walk: the reader's
            // for a file, the walk's own for a directory (below).
            _ if matches!(node.kind, NodeKind::File | NodeKind::Dir) => {}
            _ => {
                let at = crate::metadata::entry_path(dir.as_fd(), name, path);
                let (xattrs, xerr) = crate::metadata::read_xattrs(&at);
                node.xattrs = xattrs;
                if let Some(e) = xerr {
                    self.warn(path, &format!("cannot read extended attributes: {e}"));
                }
            }
        }
        match node.kind {
            NodeKind::Dir => {
                self.summary.dirs += 1;
                let parent_sub = parent
                    .filter(|p| p.kind == NodeKind::Dir)
                    .and_then(|p| p.subtree);
                let cross = self.opts.one_file_system && file_id(st).0 != root_dev;
                drvault_repo::failpoint::hit_blocking("backup.before-list");
                let opened =
                    rustix::fs::openat(&**dir, OsStr::from_bytes(name), dir_flags(), Mode::empty())
                        .and_then(|fd| Ok((rustix::fs::fstat(&fd)?, fd)));
                let sub = match opened {
                    Ok((now, fd)) if file_id(&now) == file_id(st) => {
                        if !same_inode {
                            let (xattrs, xerr) = crate::metadata::read_xattrs_fd(fd.as_fd());
                            node.xattrs = xattrs;
                            if let Some(e) = xerr {
                                self.warn(path, &format!("cannot read extended attributes: {e}"));
                            }
                        }
                        Arc::new(fd)
                    }
                    Ok(_) | Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                        self.warn(path, &"changed since it was walked (another directory, a symlink or a file was put in its place): skipped");
                        return Ok(None);
                    }
                    Err(e) => {
                        self.warn(
                            path,
                            &format!("cannot list directory: {}", std::io::Error::from(e)),
                        );
                        node.subtree = Some(self.store_tree(Vec::new())?);
                        return Ok(Some(Entry {
                            node,
                            pending: None,
                            subtree: None,
                        }));
                    }
                };
                let slot = self.backup_dir(sub, path, snap_path, parent_sub, !cross, root_dev)?;
                return Ok(Some(Entry {
                    node,
                    pending: None,
                    subtree: Some(slot),
                }));
            }
            NodeKind::File => {
                if nlink(st) > 1 {
                    let key = file_id(st);
                    if let Some(first) = self.links.get(&key) {
                        node.kind = NodeKind::Hardlink;
                        node.target = first.clone();
                        node.size = 0;
                        self.summary.other_entries += 1;
                        return Ok(Some(Entry {
                            node,
                            pending: None,
                            subtree: None,
                        }));
                    }
                }
                self.summary.bytes_total += node.size;
                let unchanged = parent.as_ref().is_some_and(|p| {
                    p.kind == NodeKind::File
                        && p.size == node.size
                        && p.mtime_ns == node.mtime_ns
                        && p.ctime_ns == node.ctime_ns
                        && p.inode == node.inode
                        && p.content.iter().all(|id| self.repo().has_blob(id))
                });
                let mut pending = None;
                if unchanged {
                    node.content = parent.map(|p| p.content).unwrap_or_default();
                    self.summary.files_unchanged += 1;
                } else {
                    let file = FileToRead {
                        dir: dir.clone(),
                        name: name.to_vec(),
                        id: file_id(st),
                        xattrs: !same_inode,
                    };
                    pending = Some((
                        self.readers.submit(file)?,
                        parent.is_some(),
                        path.to_path_buf(),
                    ));
                }
                if nlink(st) > 1 {
                    self.links.insert(file_id(st), snap_path.join(&b'/'));
                }
                return Ok(Some(Entry {
                    node,
                    pending,
                    subtree: None,
                }));
            }
            NodeKind::Symlink => {
                match rustix::fs::readlinkat(&**dir, OsStr::from_bytes(name), Vec::new()) {
                    Ok(t) => node.target = t.into_bytes(),
                    Err(e) => {
                        let e = std::io::Error::from(e);
                        self.warn(path, &format!("cannot read link: {e}"));
                        return Ok(None);
                    }
                }
                self.summary.other_entries += 1;
            }
            NodeKind::Socket => return Ok(None),
            _ => self.summary.other_entries += 1,
        }
        Ok(Some(Entry {
            node,
            pending: None,
            subtree: None,
        }))
    }

    /// Backs up the directory open as `dir` (shown as `path`): lists it, hands its changed files
    /// to the readers and queues it; returns the slot its tree ID will be stored in.
    fn backup_dir(
        &mut self,
        dir: Arc<OwnedFd>,
        path: &Path,
        snap_path: &[Vec<u8>],
        parent: Option<Id>,
        descend: bool,
        root_dev: u64,
    ) -> Result<u64> {
        if !descend {
            return self.defer_dir(Vec::new());
        }
        let parent_tree = parent.and_then(|p| self.load_tree(p));
        let mut parent_nodes: HashMap<Vec<u8>, Node> = parent_tree
            .map(|t| t.entries.into_iter().map(|n| (n.name.clone(), n)).collect())
            .unwrap_or_default();
        let names = self.list_names(&dir, path);
        let mut entries = Vec::with_capacity(names.len());
        let mut child_path = snap_path.to_vec();
        for name in names {
            let child = path.join(OsStr::from_bytes(&name));
            // fstatat on the open directory: no walk of the whole path per entry.
            let st = match rustix::fs::statat(
                &*dir,
                OsStr::from_bytes(&name),
                AtFlags::SYMLINK_NOFOLLOW,
            ) {
                Ok(st) => st,
                Err(e) => {
                    self.warn(&child, &std::io::Error::from(e));
                    continue;
                }
            };
            child_path.push(name.clone());
            let parent_node = parent_nodes.remove(&name);
            let node =
                self.backup_entry(&dir, &child, &name, &child_path, &st, parent_node, root_dev)?;
            child_path.pop();
            self.report();
            if let Some(n) = node {
                entries.push(n);
            }
        }
        self.defer_dir(entries)
    }
}

/// How the walk opens a directory it lists: never through a symlink, never blocking.
fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC
}
