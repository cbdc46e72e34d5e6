//! `drvault dump SNAPSHOT PATH`: one file of a snapshot to standard output, or a directory as a
//! tar stream, without restoring anything. Blobs are read in order with a few reads ahead, so
//! memory stays a few chunks and the speed is the store's.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use drvault_repo::format::{BlobKind, Node, NodeKind};
use drvault_repo::{Id, Repository};

use crate::cli::{ArchiveFormat, DumpArgs, Global};
use crate::context::Context;
use crate::exit::Exit;

use super::printable;

pub fn run(ctx: &Context, g: &Global, a: &DumpArgs) -> Result<Exit> {
    let repo = ctx.open(g)?;
    let snaps = ctx.rt.block_on(repo.snapshots())?;
    let spec = super::restore::spec(Some(a.snapshot.clone()), None, &a.filter);
    let (snap_id, snap) = drvault_restore::select_snapshot(&snaps, &spec)?;
    let comps = crate::context::components(&a.path);
    let node = lookup(ctx, &repo, snap.tree, &comps).with_context(|| {
        let paths: Vec<String> = snap.paths.iter().map(|p| printable(p)).collect();
        format!(
            "in snapshot {}, which holds {}",
            snap_id.short(),
            paths.join(", ")
        )
    })?;
    let mut out = crate::output::Out;
    let written = match (node.kind, a.archive) {
        (NodeKind::File, None) => {
            let mut fetcher = Fetcher::new(ctx, repo.clone());
            fetcher.enqueue_front(node.content.iter().copied());
            let mut r = Content::new(&mut fetcher, &node);
            std::io::copy(&mut r, &mut out).map(|_| ())
        }
        (NodeKind::Dir, _) | (_, Some(ArchiveFormat::Tar)) => {
            let base = comps.iter().map(|c| printable(c)).collect::<Vec<_>>();
            write_tar(ctx, &repo, &node, &base.join("/"), &mut out)
        }
        (kind, None) => bail!(
            "{} is a {kind:?} entry, not a file: `drvault dump --archive tar` writes it with its \
             metadata",
            a.path.display()
        ),
    };
    match written {
        Ok(()) => Ok(Exit::Ok),
        // The reader went away (`| head`): not an error.
        Err(_) if crate::output::closed() => Ok(Exit::Ok),
        Err(e) => match e.into_inner() {
            Some(inner) => match inner.downcast::<drvault_repo::Error>() {
                Ok(repo_error) => Err((*repo_error).into()),
                Err(other) => Err(anyhow::anyhow!("{other}")),
            },
            None => Err(anyhow::anyhow!("cannot write to standard output")),
        },
    }
}

/// The entry at `comps` below the root tree (the root itself for no components).
pub(super) fn lookup(
    ctx: &Context,
    repo: &Repository,
    root: Id,
    comps: &[Vec<u8>],
) -> Result<Node> {
    let mut node = Node {
        subtree: Some(root),
        ..directory_defaults()
    };
    let mut so_far = String::new();
    for c in comps {
        so_far.push('/');
        so_far.push_str(&printable(c));
        let Some(tree) = node.subtree.filter(|_| node.kind == NodeKind::Dir) else {
            bail!("{so_far}: its parent is not a directory");
        };
        let t = ctx.rt.block_on(repo.load_tree(&tree))?;
        node = match t.entries.into_iter().find(|n| n.name == *c) {
            Some(n) => n,
            None => bail!("{so_far} is not in the snapshot; `drvault ls` lists what is"),
        };
    }
    Ok(node)
}

fn directory_defaults() -> Node {
    Node::bare(Vec::new(), NodeKind::Dir, 0o755, (0, 0), 0)
}

/// `node` and everything below it as a tar stream (ustar with GNU long names), paths as in the
/// snapshot without the leading `/`.
fn write_tar(
    ctx: &Context,
    repo: &Arc<Repository>,
    node: &Node,
    path: &str,
    out: &mut crate::output::Out,
) -> std::io::Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Complete);
    let mut fetcher = Fetcher::new(ctx, repo.clone());
    if n_is_file(node) {
        fetcher.enqueue_front(node.content.iter().copied());
    }
    let mut expansion = drvault_repo::expansion::Expansion::default();
    let mut stack = vec![(path.to_string(), node.clone())];
    while let Some((path, n)) = stack.pop() {
        if let (NodeKind::Dir, Some(tree)) = (n.kind, n.subtree) {
            let t = ctx
                .rt
                .block_on(repo.load_tree(&tree))
                .map_err(std::io::Error::other)?;
            expansion
                .visit(&tree, drvault_repo::expansion::weight(&t))
                .map_err(std::io::Error::other)?;
            // This directory's files are written next (before its later siblings'): their
            // blobs go to the front of what is fetched ahead.
            fetcher.enqueue_front(
                t.entries
                    .iter()
                    .filter(|c| n_is_file(c))
                    .flat_map(|c| c.content.iter().copied())
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
            for child in t.entries.into_iter().rev() {
                let p = if path.is_empty() {
                    printable(&child.name)
                } else {
                    format!("{path}/{}", printable(&child.name))
                };
                stack.push((p, child));
            }
        }
        if path.is_empty() {
            continue;
        }
        append(&mut fetcher, &mut tar, &path, &n)?;
    }
    tar.finish()
}

fn n_is_file(n: &Node) -> bool {
    n.kind == NodeKind::File
}

/// Blobs fetched ahead, within a file and across the files of a tar stream in the order it
/// writes them: small files get the same overlap of reads as large ones. At most `WINDOW` blobs
/// are in flight or waiting, so memory stays a few chunks.
struct Fetcher<'a> {
    ctx: &'a Context,
    repo: Arc<Repository>,
    queue: VecDeque<Id>,
    inflight: VecDeque<(Id, tokio::task::JoinHandle<drvault_repo::Result<Vec<u8>>>)>,
}

impl<'a> Fetcher<'a> {
    const WINDOW: usize = 16;

    fn new(ctx: &'a Context, repo: Arc<Repository>) -> Self {
        Fetcher {
            ctx,
            repo,
            queue: VecDeque::new(),
            inflight: VecDeque::new(),
        }
    }

    /// Puts `ids` (in order) before everything queued.
    fn enqueue_front(&mut self, ids: impl DoubleEndedIterator<Item = Id>) {
        for id in ids.rev() {
            self.queue.push_front(id);
        }
        self.top_up();
    }

    fn top_up(&mut self) {
        while self.inflight.len() < Self::WINDOW {
            let Some(id) = self.queue.pop_front() else {
                break;
            };
            let repo = self.repo.clone();
            let handle = self
                .ctx
                .rt
                .spawn(async move { repo.read_blob(BlobKind::Data, &id).await });
            self.inflight.push_back((id, handle));
        }
    }

    /// The blob `id`: from the reads in flight when it is one of them, read now otherwise.
    fn take(&mut self, id: &Id) -> std::io::Result<Vec<u8>> {
        let blob = match self.inflight.iter().position(|(i, _)| i == id) {
            Some(at) => {
                let (_, handle) = self
                    .inflight
                    .remove(at)
                    .ok_or_else(|| std::io::Error::other("a blob read in flight went missing"))?;
                self.ctx
                    .rt
                    .block_on(handle)
                    .map_err(std::io::Error::other)?
            }
            None => {
                if let Some(at) = self.queue.iter().position(|i| i == id) {
                    self.queue.remove(at);
                }
                self.ctx
                    .rt
                    .block_on(self.repo.read_blob(BlobKind::Data, id))
            }
        };
        self.top_up();
        blob.map_err(std::io::Error::other)
    }
}

/// A file's content as a `Read`, its blobs taken from the [`Fetcher`] in order.
struct Content<'f, 'a> {
    fetcher: &'f mut Fetcher<'a>,
    ids: std::vec::IntoIter<Id>,
    current: Vec<u8>,
    at: usize,
}

impl<'f, 'a> Content<'f, 'a> {
    fn new(fetcher: &'f mut Fetcher<'a>, node: &Node) -> Self {
        Content {
            fetcher,
            ids: node.content.clone().into_iter(),
            current: Vec::new(),
            at: 0,
        }
    }
}

impl Read for Content<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            let Some(id) = self.ids.next() else {
                return Ok(0);
            };
            self.current = self.fetcher.take(&id)?;
            self.at = 0;
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn append(
    fetcher: &mut Fetcher<'_>,
    tar: &mut tar::Builder<&mut crate::output::Out>,
    path: &str,
    n: &Node,
) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_mode(n.mode & 0o7777);
    h.set_uid(u64::from(n.uid));
    h.set_gid(u64::from(n.gid));
    h.set_mtime(n.mtime_ns.div_euclid(1_000_000_000).max(0) as u64);
    h.set_size(0);
    match n.kind {
        NodeKind::File => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(n.size);
            let reader = Content::new(fetcher, n);
            tar.append_data(&mut h, path, reader)
        }
        NodeKind::Dir => {
            h.set_entry_type(tar::EntryType::Directory);
            tar.append_data(&mut h, format!("{path}/"), std::io::empty())
        }
        NodeKind::Symlink => {
            h.set_entry_type(tar::EntryType::Symlink);
            tar.append_link(&mut h, path, printable(&n.target))
        }
        NodeKind::Hardlink => {
            h.set_entry_type(tar::EntryType::Link);
            tar.append_link(&mut h, path, printable(&n.target))
        }
        NodeKind::Fifo => {
            h.set_entry_type(tar::EntryType::Fifo);
            tar.append_data(&mut h, path, std::io::empty())
        }
        NodeKind::CharDevice | NodeKind::BlockDevice => {
            h.set_entry_type(if n.kind == NodeKind::CharDevice {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            let (major, minor) = (rustix::fs::major(n.rdev), rustix::fs::minor(n.rdev));
            h.set_device_major(major)?;
            h.set_device_minor(minor)?;
            tar.append_data(&mut h, path, std::io::empty())
        }
        // A socket cannot be archived; tar skips them too.
        NodeKind::Socket => Ok(()),
    }
}
