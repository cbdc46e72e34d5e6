//! Beside prune, on the same fixtures: backup sessions' liveness as prune judges it, typed check
//! findings, and every sealed structure refusing versions it does not read.

use super::*;

/// Writes a session with a heartbeat, as the named process of `pid_scope` would.
async fn put_heartbeat_session(
    repo: &Repository,
    name: &str,
    pid: u32,
    pid_scope: &str,
    heartbeat: i64,
) -> String {
    let body = serde_json::json!({
        "host": crate::host::hostname(), "pid": pid, "started": heartbeat, "epoch": 1,
        "honours_marks": true, "heartbeat": heartbeat, "pid_scope": pid_scope,
    });
    let name = format!("locks/session-{name:0>32}");
    repo.store()
        .put_new(&name, serde_json::to_vec(&body).unwrap().into(), false)
        .await
        .unwrap();
    name
}

/// A pid that no process of this machine has.
fn unused_pid() -> u32 {
    (4_000_000..4_100_000)
        .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        .unwrap()
}

/// Defect 4: a backup in a container that shares this host's name but not its PID namespace
/// has a pid this process cannot see. Its session is live while its heartbeat is fresh; only a
/// stale heartbeat, or a pid missing in the same boot and namespace, ends it.
#[tokio::test]
async fn liveness_rests_on_heartbeats_not_on_a_pid_from_another_namespace() {
    let repo = repository().await;
    let (_, px) = forgotten_pack(&repo, 3000).await;
    let r = prune(&reopen(&repo).await, &grace(3600)).await.unwrap();
    assert_eq!(r.packs_marked, 2, "{r:?}");
    let later = unix_now() - 60;
    // Another PID namespace, same host name, a pid we cannot see, a fresh heartbeat: live.
    let other = put_heartbeat_session(&repo, "c1", unused_pid(), "other-boot/pid:[1]", later).await;
    let r = prune(&reopen(&repo).await, &grace(0)).await.unwrap();
    assert_eq!(
        r.packs_deleted, 0,
        "the container's backup holds the sweep: {r:?}"
    );
    assert!(exists(&repo, &px).await);
    repo.store().delete(&other).await.unwrap();
    // Our own namespace and a pid that is gone: dead at once.
    let scope = crate::host::pid_scope();
    let dead = put_heartbeat_session(&repo, "c2", unused_pid(), &scope, later).await;
    // A heartbeat older than the staleness bound: dead, whoever wrote it.
    let stale_at = unix_now() - SESSION_STALE_AFTER.as_secs() as i64 - 2 * CLOCK_SKEW_MARGIN;
    let stale = put_heartbeat_session(&repo, "c3", 1, "other-boot/pid:[1]", stale_at).await;
    let r = prune(&reopen(&repo).await, &grace(0)).await.unwrap();
    assert_eq!(r.packs_deleted, 2, "{r:?}");
    assert!(!exists(&repo, &px).await);
    for n in [dead, stale] {
        repo.store().delete(&n).await.unwrap();
    }
    assert_clean(&repo).await;
}

/// A session renews itself and refuses to commit once its renewals lapsed beyond the bound.
#[tokio::test]
async fn a_live_session_is_seen_and_ends_cleanly() {
    let repo = repository().await;
    let session = repo.begin_backup().await.unwrap();
    session.confirm().unwrap();
    let live = crate::session::live_sessions(repo.store()).await.unwrap();
    assert_eq!(live.len(), 1);
    assert!(live[0].heartbeat > 0 && !live[0].pid_scope.is_empty());
    session.end(repo.store()).await;
    assert!(crate::session::live_sessions(repo.store())
        .await
        .unwrap()
        .is_empty());
}

/// Defect 5 at the unit level: the same blob stored in two packs by two "hosts"; prune keeps
/// one and deletes the other, and every snapshot still reads.
#[tokio::test]
async fn duplicate_copies_in_two_packs_leave_one() {
    let repo = repository().await;
    let (x, p1) = put_pack(&repo, BlobKind::Data, &[blob(1, 5000), blob(2, 5000)]).await;
    let (_, p2) = put_pack(&repo, BlobKind::Data, &[blob(1, 5000), blob(2, 5000)]).await;
    assert_ne!(p1, p2);
    snapshot(&repo, "s", &[("f", x.clone())]).await;
    let r = prune(&reopen(&repo).await, &grace(0)).await.unwrap();
    assert_eq!(r.packs_deleted, 1, "{r:?}");
    assert!(exists(&repo, &p1).await != exists(&repo, &p2).await);
    assert_clean(&repo).await;
}

/// The review's finding: a host key writes index objects too, so the index may claim a copy of
/// a used blob in a pack that holds garbage under its ID. Prune must not delete the real copy
/// because of that claim: it reads the other copy first, and keeps the pack when it does not
/// verify.
#[tokio::test]
async fn a_forged_index_entry_does_not_make_prune_delete_the_real_copy() {
    let repo = repository().await;
    let (x, real) = put_pack(&repo, BlobKind::Data, &[blob(1, 5000), blob(2, 5000)]).await;
    // The forged pack: the same IDs over other bytes, and one genuine blob more, so prune
    // prefers it as the keeper of x.
    let y = blob(3, 5000);
    let y_id = repo.blob_id(&y);
    let mut sealer = BlobSealer::new(repo.keys(), 1).unwrap();
    let mut b = PackBuilder::new(1 << 30);
    for id in &x {
        let garbage = blob(99, 5000);
        let sealed = sealer.seal(BlobKind::Data, id, &garbage).unwrap();
        b.add(BlobKind::Data, *id, 5000, &sealed);
    }
    let sealed = sealer.seal(BlobKind::Data, &y_id, &y).unwrap();
    b.add(BlobKind::Data, y_id, y.len() as u32, &sealed);
    let forged = b.finish(repo.keys()).unwrap();
    let forged_id = forged.id;
    repo.upload_pack(forged).await.unwrap();
    repo.flush_index().await.unwrap();
    let mut files = x.clone();
    files.push(y_id);
    snapshot(&repo, "s", &[("f", files)]).await;

    prune(&reopen(&repo).await, &grace(0)).await.unwrap();
    prune(&reopen(&repo).await, &grace(0)).await.unwrap();
    assert!(exists(&repo, &real).await, "the real copy was deleted");
    assert!(exists(&repo, &forged_id).await, "y's only copy");
}

/// Many small index objects are merged into full ones by prune; a host whose catalog was
/// filled before the merge keeps its cached locations, and a fresh host reads the merged index.
#[tokio::test]
async fn prune_merges_small_index_objects_and_catalogs_keep_their_cache() {
    let repo = repository().await;
    let mut ids = Vec::new();
    for i in 0..40u64 {
        let (x, _) = put_pack(&repo, BlobKind::Data, &[blob(100 + i, 500)]).await;
        ids.extend(x.clone());
        snapshot(&repo, &format!("s{i}"), &[("f", x)]).await;
    }
    let count = |repo: &Repository| {
        let store = repo.store().clone();
        async move { store.list_names(paths::INDEX).await.unwrap().len() }
    };
    assert!(count(&repo).await > consolidate::CONSOLIDATE_AFTER);
    let state = tempfile_dir();
    let cached = Repository::open(
        repo.store().clone(),
        &crate::testing::credential(),
        Some(state.clone()),
    )
    .await
    .unwrap();
    assert!(ids.iter().all(|id| cached.has_blob(id)));
    let r = prune(&reopen(&repo).await, &grace(0)).await.unwrap();
    assert!(
        r.indexes_consolidated > consolidate::CONSOLIDATE_AFTER as u64,
        "{r:?}"
    );
    assert!(count(&repo).await < 5);
    for dir in [Some(state.clone()), None] {
        let again = Repository::open(repo.store().clone(), &crate::testing::credential(), dir)
            .await
            .unwrap();
        assert!(ids.iter().all(|id| again.has_blob(id)));
    }
    assert_clean(&repo).await;
    let _ = std::fs::remove_dir_all(&state);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "drvault-consolidate-{}-{}",
        std::process::id(),
        hex::encode(drvault_keyring::random_bytes::<4>().unwrap())
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn check_findings_are_typed_and_name_their_object() {
    use crate::check::Problem;
    let repo = repository().await;
    let (ids, pack) = put_pack(&repo, BlobKind::Data, &[b"one".to_vec()]).await;
    snapshot(&repo, "a", &[("f", ids)]).await;
    assert_clean(&repo).await;
    // A stray object under data/ is a warning; a lost pack is damage.
    repo.store()
        .put_new("data/zz/not-a-pack", Bytes::from_static(b"x"), false)
        .await
        .unwrap();
    repo.store().delete(&paths::pack(&pack)).await.unwrap();
    let r = check(
        Arc::new(reopen(&repo).await),
        ReadData::All,
        &crate::cancel::Cancel::new(),
    )
    .await
    .unwrap();
    let found: Vec<(Problem, &str)> = r
        .findings
        .iter()
        .map(|f| (f.problem, f.object.as_str()))
        .collect();
    assert!(
        found.contains(&(Problem::StrayObject, "data/zz/not-a-pack")),
        "{found:?}"
    );
    assert!(
        found.contains(&(Problem::MissingPack, paths::pack(&pack).as_str())),
        "{found:?}"
    );
    assert_eq!(r.warnings.len(), 1, "{r:?}");
    assert_eq!(r.errors.len(), r.findings.len() - 1);
    assert!(r
        .findings
        .iter()
        .all(|f| f.problem.is_damage() == r.errors.contains(&f.message)));
}

#[tokio::test]
async fn every_sealed_structure_refuses_a_version_it_does_not_read() {
    let repo = repository().await;
    let (name, _) = snapshot(&repo, "a", &[]).await;
    let mut snap = repo.load_snapshot(&name).await.unwrap();
    snap.version = 99;
    let (_, future) = repo.save_snapshot_object(&snap).await.unwrap();
    let err = repo.load_snapshot(&future).await.unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedVersion { version: 99, object } if *object == future),
        "{err}"
    );
    let mark = PruneMark {
        version: 7,
        created: 0,
        packs: Vec::new(),
    };
    let mark_name = repo.write_prune_mark(&mark).await.unwrap();
    let err = repo.read_prune_mark(&mark_name).await.unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedVersion { version: 7, .. }),
        "{err}"
    );
}
