//! Prune against a real repository in a temporary directory.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use super::*;
use crate::blob::BlobSealer;
use crate::check::{check, ReadData};
use crate::format::encode;
use crate::format::{Node, NodeKind, Summary, Tree, TREE_VERSION};
use crate::session::{Session, SESSION_STALE_AFTER};
use bytes::Bytes;
use drvault_keyring::Header;

async fn repository() -> Repository {
    crate::testing::memory_repository().await.unwrap()
}

/// Another process opening the same repository.
async fn reopen(repo: &Repository) -> Repository {
    Repository::open(repo.store().clone(), &crate::testing::credential(), None)
        .await
        .unwrap()
}

/// Stores `blobs` in one new pack of `kind` and indexes it; returns the ids and the pack.
async fn put_pack(repo: &Repository, kind: BlobKind, blobs: &[Vec<u8>]) -> (Vec<Id>, Id) {
    let mut sealer = BlobSealer::new(repo.keys(), 1).unwrap();
    let mut b = PackBuilder::new(1 << 30);
    let mut ids = Vec::new();
    for plain in blobs {
        let id = repo.blob_id(plain);
        let sealed = sealer.seal(kind, &id, plain).unwrap();
        b.add(kind, id, plain.len() as u32, &sealed);
        ids.push(id);
    }
    let pack = b.finish(repo.keys()).unwrap();
    let pid = pack.id;
    repo.upload_pack(pack).await.unwrap();
    repo.flush_index().await.unwrap();
    (ids, pid)
}

fn file(name: &str, content: Vec<Id>) -> Node {
    Node {
        name: name.as_bytes().to_vec(),
        kind: NodeKind::File,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime_ns: 0,
        atime_ns: 0,
        ctime_ns: 0,
        size: 0,
        inode: 0,
        device: 0,
        rdev: 0,
        content,
        subtree: None,
        target: Vec::new(),
        xattrs: Vec::new(),
    }
}

/// A snapshot of one directory holding `files`; returns its object name and tree pack.
async fn snapshot(repo: &Repository, tag: &str, files: &[(&str, Vec<Id>)]) -> (String, Id) {
    let tree = Tree {
        version: TREE_VERSION,
        entries: files.iter().map(|(n, c)| file(n, c.clone())).collect(),
    };
    let (t, pack) = put_pack(repo, BlobKind::Tree, &[encode(&tree)]).await;
    let snap = Snapshot {
        version: crate::format::SNAPSHOT_VERSION,
        time_ns: 0,
        host: "h".into(),
        username: "u".into(),
        paths: vec![b"/x".to_vec()],
        tags: vec![tag.into()],
        parent: None,
        tree: t[0],
        summary: Summary::default(),
        program_version: "test".into(),
        audit: None,
        writer: None,
        untrusted: None,
        stored_as: Vec::new(),
    };
    // The snapshot's ID is not its object's name.
    let (_, name) = repo.save_snapshot_object(&snap).await.unwrap();
    (name, pack)
}

fn blob(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn exists(repo: &Repository, pack: &Id) -> bool {
    repo.store().get(&paths::pack(pack)).await.is_ok()
}

/// One data pack whose only snapshot was forgotten: its blobs and the pack.
async fn forgotten_pack(repo: &Repository, len: usize) -> (Vec<Id>, Id) {
    let (x, px) = put_pack(repo, BlobKind::Data, &[blob(1, len)]).await;
    let (s, _) = snapshot(repo, "s", &[("f", x.clone())]).await;
    repo.store().delete(&s).await.unwrap();
    (x, px)
}

/// Writes a backup session object by hand (a start time or version `Session::start` would not
/// give), by a live process of this host; returns its name.
async fn put_session(
    repo: &Repository,
    name: &str,
    started: i64,
    honours_marks: Option<bool>,
) -> String {
    let mut body = serde_json::json!({
        "host": crate::host::hostname(), "pid": std::process::id(), "started": started, "epoch": 1,
    });
    if let Some(h) = honours_marks {
        body["honours_marks"] = h.into();
    }
    let name = format!("locks/session-{name:0>32}");
    repo.store()
        .put_new(&name, serde_json::to_vec(&body).unwrap().into(), false)
        .await
        .unwrap();
    name
}

fn grace(secs: u64) -> PruneOptions {
    PruneOptions {
        grace: Duration::from_secs(secs),
        ..Default::default()
    }
}

async fn assert_clean(repo: &Repository) {
    let r = check(
        Arc::new(reopen(repo).await),
        ReadData::All,
        &crate::cancel::Cancel::new(),
    )
    .await
    .unwrap();
    assert!(r.errors.is_empty() && r.warnings.is_empty(), "{r:?}");
}

#[test]
fn bits() {
    let mut b = Bits::new(130);
    assert!(b.set(129) && !b.set(129) && b.get(129) && !b.get(128));
    assert!(!b.set(192) && !b.get(192), "out of range is ignored");
    assert_eq!(b.count(), 1);
}

#[tokio::test]
async fn prune_marks_first_then_sweeps_but_keeps_what_a_late_snapshot_uses() {
    let repo = repository().await;
    let (a, pa) = put_pack(&repo, BlobKind::Data, &[blob(1, 5000), blob(2, 5000)]).await;
    let (sa, ta) = snapshot(&repo, "a", &[("f", a.clone())]).await;
    let (b, pb) = put_pack(&repo, BlobKind::Data, &[blob(3, 5000)]).await;
    snapshot(&repo, "b", &[("g", b.clone())]).await;
    repo.store().delete(&sa).await.unwrap();

    // The default grace only marks.
    let r = prune(&reopen(&repo).await, &grace(3600)).await.unwrap();
    assert_eq!((r.snapshots, r.used_blobs), (1, 2));
    assert_eq!((r.packs_marked, r.packs_deleted), (2, 0), "{r:?}");
    assert_eq!(r.marks_pending.len(), 1);
    assert!(exists(&repo, &pa).await && exists(&repo, &ta).await);
    // A dry run changes nothing.
    let dry = prune(
        &reopen(&repo).await,
        &PruneOptions {
            dry_run: true,
            ..grace(0)
        },
    )
    .await
    .unwrap();
    assert_eq!(dry.packs_deleted, 2, "{dry:?}");
    assert!(exists(&repo, &pa).await);

    // A backup that began before the mark deduplicated against pa and commits now.
    let late = reopen(&repo).await;
    let (_, tc) = snapshot(&late, "c", &[("f", a.clone())]).await;

    let r = prune(&reopen(&repo).await, &grace(0)).await.unwrap();
    assert_eq!(r.kept_back, vec![paths::pack(&pa)], "{r:?}");
    assert_eq!(r.packs_deleted, 1);
    assert_eq!(r.marks_swept.len(), 1);
    assert!(exists(&repo, &pa).await && !exists(&repo, &ta).await);
    assert!(exists(&repo, &pb).await && exists(&repo, &tc).await);
    assert!(repo
        .store()
        .list_names(paths::PRUNE)
        .await
        .unwrap()
        .is_empty());
    let after = reopen(&repo).await;
    for id in a.iter().chain(&b) {
        after.read_blob(BlobKind::Data, id).await.unwrap();
    }
    assert_clean(&repo).await;
    // Nothing left to do.
    let r = prune(&reopen(&repo).await, &grace(0)).await.unwrap();
    assert_eq!((r.packs_marked, r.packs_deleted), (0, 0), "{r:?}");
}

#[tokio::test]
async fn a_mostly_unused_pack_is_repacked_and_its_used_blob_survives() {
    let repo = repository().await;
    let (x, px) = put_pack(&repo, BlobKind::Data, &[blob(7, 2000), blob(8, 50_000)]).await;
    snapshot(&repo, "s", &[("f", vec![x[0]])]).await;
    let r = prune(&reopen(&repo).await, &grace(0)).await.unwrap();
    assert_eq!((r.packs_repacked, r.blobs_repacked), (1, 1), "{r:?}");
    assert_eq!(r.packs_deleted, 1);
    assert!(!exists(&repo, &px).await);
    let after = reopen(&repo).await;
    assert_eq!(
        after.read_blob(BlobKind::Data, &x[0]).await.unwrap(),
        blob(7, 2000)
    );
    assert!(!after.has_blob(&x[1]));
    assert_clean(&repo).await;
    // Above the threshold nothing is repacked.
    let (y, _) = put_pack(&repo, BlobKind::Data, &[blob(9, 2000), blob(10, 50_000)]).await;
    snapshot(&repo, "t", &[("f", vec![y[0]])]).await;
    let r = prune(
        &reopen(&repo).await,
        &PruneOptions {
            repack_threshold: 1.0,
            ..grace(0)
        },
    )
    .await
    .unwrap();
    assert_eq!((r.packs_repacked, r.packs_marked), (0, 0), "{r:?}");
    let bad = prune(
        &reopen(&repo).await,
        &PruneOptions {
            repack_threshold: 1.5,
            ..grace(0)
        },
    )
    .await;
    assert!(matches!(bad, Err(Error::Usage(_))), "{bad:?}");
}

#[tokio::test]
async fn backups_forget_marked_packs_and_a_running_one_holds_the_sweep() {
    let repo = repository().await;
    let (x, px) = forgotten_pack(&repo, 3000).await;
    // A backup running while prune marks: its session is read after the index, and packs
    // written since it began (less the clock-skew margin) are never marked, since they may be
    // its own, not referenced yet.
    let session = Session::start(repo.store(), 1).await.unwrap();
    let r = prune(&reopen(&repo).await, &grace(0)).await.unwrap();
    assert_eq!((r.packs_marked, r.packs_deleted), (0, 0), "{r:?}");
    session.end(repo.store()).await;
    // One that began a margin after these packs were written (as by a later clock) is held off
    // only at the sweep: the packs are marked, not deleted.
    let name = put_session(&repo, "1111", unix_now() + CLOCK_SKEW_MARGIN, Some(true)).await;
    let r = prune(&reopen(&repo).await, &grace(0)).await.unwrap();
    assert_eq!((r.packs_marked, r.packs_deleted), (2, 0), "{r:?}");
    assert!(
        r.marks_pending[0].waiting_for[0].contains("backup"),
        "{r:?}"
    );
    // A backup starting now does not deduplicate against the marked pack.
    let backup = reopen(&repo).await;
    assert!(backup.has_blob(&x[0]));
    assert_eq!(backup.forget_marked_packs().await.unwrap(), 2);
    assert!(!backup.has_blob(&x[0]));
    repo.store().delete(&name).await.unwrap();
    let r = prune(&reopen(&repo).await, &grace(0)).await.unwrap();
    assert_eq!(r.packs_deleted, 2, "{r:?}");
    assert!(!exists(&repo, &px).await);
    assert_clean(&repo).await;
}

#[tokio::test]
async fn a_backup_from_a_drvault_that_ignores_marks_holds_every_sweep() {
    let repo = repository().await;
    let (_, px) = forgotten_pack(&repo, 3000).await;
    let r = prune(&reopen(&repo).await, &grace(3600)).await.unwrap();
    assert_eq!(r.packs_marked, 2, "{r:?}");
    // A 0.3 session (no honours_marks) that began well after the mark, on this host.
    let name = put_session(&repo, "0000", unix_now() + 3 * CLOCK_SKEW_MARGIN, None).await;
    let r = prune(&reopen(&repo).await, &grace(0)).await.unwrap();
    assert_eq!(r.packs_deleted, 0, "{r:?}");
    assert!(exists(&repo, &px).await);
    repo.store().delete(&name).await.unwrap();
    let r = prune(&reopen(&repo).await, &grace(0)).await.unwrap();
    assert_eq!(r.packs_deleted, 2, "{r:?}");
}

#[tokio::test]
async fn a_damaged_mark_stops_prune_and_a_mark_of_deleted_packs_is_swept() {
    let repo = repository().await;
    let (_, px) = forgotten_pack(&repo, 3000).await;
    let r = prune(&reopen(&repo).await, &grace(3600)).await.unwrap();
    let mark = r.mark.unwrap();
    let mut bytes = repo.store().get(&mark).await.unwrap().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    repo.store().delete(&mark).await.unwrap();
    repo.store()
        .put_new(&mark, bytes.clone().into(), false)
        .await
        .unwrap();
    let err = prune(&reopen(&repo).await, &grace(0)).await.unwrap_err();
    assert!(
        matches!(&err, Error::Integrity { object, .. } if *object == mark),
        "{err}"
    );
    assert!(exists(&repo, &px).await);
    // A backup goes on (prune will not delete what the damaged mark lists).
    assert_eq!(reopen(&repo).await.forget_marked_packs().await.unwrap(), 0);

    // An interrupted sweep: the packs are gone, the mark is left.
    repo.store().delete(&mark).await.unwrap();
    let ghost = PruneMark {
        version: PRUNE_MARK_VERSION,
        created: unix_now() - 10,
        packs: vec![Id([7; 32])],
    };
    let name = repo.write_prune_mark(&ghost).await.unwrap();
    let r = prune(&reopen(&repo).await, &grace(0)).await.unwrap();
    assert!(r.marks_swept.contains(&name), "{r:?}");
    assert!(repo
        .store()
        .list_names(paths::PRUNE)
        .await
        .unwrap()
        .is_empty());
    assert!(!exists(&repo, &px).await);
    assert_clean(&repo).await;
}

#[tokio::test]
async fn snapshots_committed_during_a_prune_are_walked_before_the_sweep() {
    let repo = repository().await;
    let (a, pa) = put_pack(&repo, BlobKind::Data, &[blob(1, 4000)]).await;
    let (s, _) = snapshot(&repo, "a", &[("f", a.clone())]).await;
    repo.store().delete(&s).await.unwrap();
    let reopened = reopen(&repo).await;
    let pruner = Pruner { repo: &reopened };
    let mut lease: Option<&mut Lease> = None;
    let mut usage = pruner.usage(&mut lease).await.unwrap();
    assert_eq!(usage.used.count(), 0);
    // A backup that began before the mark commits meanwhile; its tree is in a new pack.
    snapshot(&reopen(&repo).await, "late", &[("f", a.clone())]).await;
    assert!(pruner
        .walk_new_snapshots(&mut lease, &mut usage)
        .await
        .unwrap());
    assert_eq!(usage.used.count(), 2, "its tree and its data blob");
    let listing = pruner.pack_listing().await.unwrap();
    let sweep: IdSet = [pa].into_iter().collect();
    let (kept, _) = pruner
        .sole_copies(&usage, &Bits::default(), &listing, &sweep)
        .unwrap();
    assert!(kept.contains(&pa));
    assert!(!pruner
        .walk_new_snapshots(&mut lease, &mut usage)
        .await
        .unwrap());
}

#[tokio::test]
async fn repacked_packs_hold_one_epoch_each_so_reencryption_finds_them() {
    let repo = repository().await;
    let (x, _) = put_pack(&repo, BlobKind::Data, &[blob(1, 2000), blob(2, 40_000)]).await;
    crate::keys::rotate_epoch(&repo).await.unwrap();
    let rotated = reopen(&repo).await;
    let (y, _) = put_pack(&rotated, BlobKind::Data, &[blob(3, 2000), blob(4, 40_000)]).await;
    snapshot(&rotated, "s", &[("f", vec![x[0], y[0]])]).await;
    let r = prune(&reopen(&repo).await, &grace(0)).await.unwrap();
    assert_eq!((r.packs_repacked, r.packs_deleted), (2, 2), "{r:?}");
    let after = reopen(&repo).await;
    for name in after.store().list_names(paths::DATA).await.unwrap() {
        let bytes = after.store().get(&name).await.unwrap();
        let entries = after
            .read_pack_header(
                &Id::from_hex(name.rsplit('/').next().unwrap()).unwrap(),
                &bytes,
            )
            .unwrap();
        let epochs: HashSet<u32> = entries
            .iter()
            .map(|e| Header::parse(&bytes[e.offset as usize..]).unwrap().epoch)
            .collect();
        assert_eq!(epochs.len(), 1, "{name} mixes epochs");
    }
    let report = crate::keys::reencrypt(&after, &|_| {}, &crate::cancel::Cancel::new())
        .await
        .unwrap();
    assert_eq!(report.retired, vec![1], "{report:?}");
    let last = reopen(&repo).await;
    assert_eq!(
        last.read_blob(BlobKind::Data, &x[0]).await.unwrap(),
        blob(1, 2000)
    );
    assert_eq!(
        last.read_blob(BlobKind::Data, &y[0]).await.unwrap(),
        blob(3, 2000)
    );
    assert_clean(&repo).await;
}

mod sessions_and_checks;
