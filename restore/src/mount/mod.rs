//! `drvault mount`: the repository's snapshots as a read-only FUSE file system.
//!
//! ```text
//! MOUNTPOINT/snapshots/<short id>/...       every snapshot, by ID
//! MOUNTPOINT/hosts/<host>/<time>/...        each host's snapshots by time (UTC, as printed)
//! MOUNTPOINT/hosts/<host>/latest -> <time>  its newest
//! MOUNTPOINT/tags/<tag>/<time>/...          snapshots carrying the tag
//! MOUNTPOINT/tags/<tag>/latest -> <time>
//! ```
//! Below a snapshot, directories are its trees, listed only when visited (listing a directory
//! reads its tree, nothing else); a file read fetches only the blobs its range covers, through
//! a bounded cache, with the next blobs fetched ahead for sequential readers. The set of
//! snapshots is the one at mount time. The kernel enforces the snapshot's modes
//! (`default_permissions`); only the mounting user may enter unless `allow_other` is given.

mod cache;
mod fs;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drvault_repo::format::{Node, NodeKind, Snapshot};
use drvault_repo::{Id, Repository};
use fuser::{Config, MountOption, Session, SessionACL};
use tokio::runtime::Handle;

use fs::{Inode, Kind, SnapshotFs};

pub struct MountOptions {
    /// Let other users in (the kernel still applies each entry's mode and owner).
    pub allow_other: bool,
    /// Bytes of decrypted blobs kept for reads.
    pub cache_bytes: usize,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            cache_bytes: 64 << 20,
        }
    }
}

/// A mounted file system, served by [`Mount::run`] until it is unmounted.
pub struct Mount {
    session: Session<SnapshotFs>,
}

/// Unmounts a [`Mount`] from another thread (a signal handler): `run` then returns.
pub struct Unmounter(fuser::SessionUnmounter);

impl Unmounter {
    pub fn unmount(&mut self) -> std::io::Result<()> {
        self.0.unmount()
    }
}

impl Mount {
    /// Mounts `snapshots` of `repo` at `mountpoint` (an empty directory).
    pub fn new(
        repo: Arc<Repository>,
        rt: Handle,
        snapshots: &[(Id, Snapshot)],
        mountpoint: &Path,
        opts: &MountOptions,
    ) -> std::io::Result<Mount> {
        let fs = SnapshotFs::new(repo, rt, layout(snapshots), opts.cache_bytes);
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::RO,
            MountOption::FSName("drvault".into()),
            MountOption::Subtype("drvault".into()),
            MountOption::NoDev,
            MountOption::NoSuid,
            MountOption::DefaultPermissions,
        ];
        config.acl = if opts.allow_other {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        config.n_threads = Some(4);
        Ok(Mount {
            session: Session::new(fs, mountpoint, &config)?,
        })
    }

    pub fn unmounter(&mut self) -> Unmounter {
        Unmounter(self.session.unmount_callable())
    }

    /// Serves requests until the file system is unmounted (by [`Unmounter`] or `umount`).
    pub fn run(self) -> std::io::Result<()> {
        self.session.run()
    }
}

/// A snapshot's time as a directory name: "2026-12-01T20:53:31Z".
fn time_name(s: &Snapshot) -> String {
    chrono::DateTime::from_timestamp_nanos(s.time_ns)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn system_time(ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)
}

/// The inode table of the layout: index 0 is the root (inode 1).
fn layout(snapshots: &[(Id, Snapshot)]) -> Vec<Inode> {
    let mut sorted: Vec<&(Id, Snapshot)> = snapshots.iter().collect();
    sorted.sort_by_key(|(id, s)| (s.time_ns, *id));
    let newest = sorted
        .last()
        .map_or(UNIX_EPOCH, |(_, s)| system_time(s.time_ns));
    let mut inodes = vec![Inode {
        kind: Kind::Virtual(Arc::default()),
        time: newest,
    }];
    let push = |inodes: &mut Vec<Inode>, kind: Kind, time: SystemTime| -> u64 {
        inodes.push(Inode { kind, time });
        inodes.len() as u64
    };
    let root_of = |s: &Snapshot| Node {
        subtree: Some(s.tree),
        ..Node::bare(Vec::new(), NodeKind::Dir, 0o755, (0, 0), s.time_ns)
    };
    // snapshots/<short id>: a longer prefix where two IDs share the short one.
    let mut by_id = Vec::new();
    for (id, s) in &sorted {
        let hex = id.to_hex();
        let short = id.short();
        let clash = sorted.iter().filter(|(o, _)| o.short() == short).count() > 1;
        let name = if clash { hex } else { short };
        let entry = Kind::Entry {
            node: Arc::new(root_of(s)),
            root: s.tree,
            children: None,
        };
        by_id.push((
            name.into_bytes(),
            push(&mut inodes, entry, system_time(s.time_ns)),
        ));
    }
    // Groups by host and by tag: <time>/ per snapshot (with its short ID when two share a
    // second) and `latest`.
    let group = |inodes: &mut Vec<Inode>, members: Vec<&(Id, Snapshot)>| -> u64 {
        let mut children: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut last = None;
        for (id, s) in &members {
            let mut name = time_name(s);
            if children.iter().any(|(n, _)| *n == name.as_bytes()) {
                name = format!("{name}-{}", id.short());
            }
            let entry = Kind::Entry {
                node: Arc::new(root_of(s)),
                root: s.tree,
                children: None,
            };
            let ino = push(inodes, entry, system_time(s.time_ns));
            // `latest` is never a doubtful snapshot (a host key's naming another host).
            if s.untrusted.is_none() {
                last = Some((name.clone(), s.time_ns));
            }
            children.push((name.into_bytes(), ino));
        }
        if let Some((name, time)) = last {
            let link = push(inodes, Kind::Link(name.into_bytes()), system_time(time));
            children.push((b"latest".to_vec(), link));
        }
        children.sort();
        let time = members
            .last()
            .map_or(UNIX_EPOCH, |(_, s)| system_time(s.time_ns));
        push(inodes, Kind::Virtual(Arc::new(children)), time)
    };
    let mut hosts: BTreeMap<&str, Vec<&(Id, Snapshot)>> = BTreeMap::new();
    let mut tags: BTreeMap<&str, Vec<&(Id, Snapshot)>> = BTreeMap::new();
    for snap in &sorted {
        hosts.entry(snap.1.host.as_str()).or_default().push(snap);
        for t in &snap.1.tags {
            tags.entry(t.as_str()).or_default().push(snap);
        }
    }
    // Host and tag names come from snapshots: only valid entry names become directories.
    let valid = |n: &str| drvault_repo::format::validate_name(n.as_bytes()).is_ok();
    let mut host_dirs = Vec::new();
    for (host, members) in hosts.into_iter().filter(|(h, _)| valid(h)) {
        host_dirs.push((host.as_bytes().to_vec(), group(&mut inodes, members)));
    }
    let mut tag_dirs = Vec::new();
    for (tag, members) in tags.into_iter().filter(|(t, _)| valid(t)) {
        tag_dirs.push((tag.as_bytes().to_vec(), group(&mut inodes, members)));
    }
    by_id.sort();
    let mut top = Vec::new();
    for (name, children) in [
        ("hosts", host_dirs),
        ("snapshots", by_id),
        ("tags", tag_dirs),
    ] {
        top.push((
            name.as_bytes().to_vec(),
            push(&mut inodes, Kind::Virtual(Arc::new(children)), newest),
        ));
    }
    inodes[0].kind = Kind::Virtual(Arc::new(top));
    inodes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(host: &str, tags: &[&str], time_s: i64, tree: u8) -> Snapshot {
        Snapshot {
            version: drvault_repo::format::SNAPSHOT_VERSION,
            time_ns: time_s * 1_000_000_000,
            host: host.into(),
            username: String::new(),
            paths: vec![b"/etc".to_vec()],
            tags: tags.iter().map(|t| t.to_string()).collect(),
            parent: None,
            tree: Id::of_stored(&[tree]),
            summary: Default::default(),
            program_version: String::new(),
            audit: None,
            writer: None,
            untrusted: None,
            stored_as: Vec::new(),
        }
    }

    fn children(inodes: &[Inode], ino: u64) -> Vec<(String, u64)> {
        match &inodes[ino as usize - 1].kind {
            Kind::Virtual(c) => c
                .iter()
                .map(|(n, i)| (String::from_utf8_lossy(n).into_owned(), *i))
                .collect(),
            _ => panic!("not a directory"),
        }
    }

    #[test]
    fn hosts_tags_and_latest_are_laid_out_by_time() {
        let snaps = vec![
            (Id::of_stored(b"a"), snap("db1", &["daily"], 1_000, 1)),
            (Id::of_stored(b"b"), snap("db1", &[], 2_000, 2)),
            (Id::of_stored(b"c"), snap("web", &["daily"], 1_500, 3)),
            // A name that is not one path component never becomes a directory.
            (Id::of_stored(b"d"), snap("../evil", &["a/b"], 500, 4)),
        ];
        let inodes = layout(&snaps);
        let top: Vec<String> = children(&inodes, 1).into_iter().map(|c| c.0).collect();
        assert_eq!(top, ["hosts", "snapshots", "tags"]);
        let hosts = children(&inodes, children(&inodes, 1)[0].1);
        let names: Vec<&str> = hosts.iter().map(|h| h.0.as_str()).collect();
        assert_eq!(names, ["db1", "web"]);
        let db1 = children(&inodes, hosts[0].1);
        let names: Vec<&str> = db1.iter().map(|h| h.0.as_str()).collect();
        assert_eq!(
            names,
            ["1970-01-01T00:16:40Z", "1970-01-01T00:33:20Z", "latest"]
        );
        match &inodes[db1[2].1 as usize - 1].kind {
            Kind::Link(t) => assert_eq!(t, b"1970-01-01T00:33:20Z"),
            _ => panic!("latest is a link"),
        }
        let tags = children(&inodes, children(&inodes, 1)[2].1);
        assert_eq!(tags.len(), 1, "only the valid tag");
        assert_eq!(children(&inodes, children(&inodes, 1)[1].1).len(), 4);
    }
}
