//! The backup library against an in-memory store and a real temporary directory: the session
//! protocol's visible effects (one snapshot, no session left behind), reuse of unchanged
//! files, cancellation, progress, and requests refused before anything is written.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use drvault_repo::format::BlobKind;
use drvault_repo::store::Store;
use drvault_repo::testing;
use tokio::runtime::Runtime;

use super::*;

struct Fixture {
    rt: Runtime,
    store: Store,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let store = testing::memory_store();
        rt.block_on(testing::init(store.clone())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/a.txt"), b"alpha").unwrap();
        std::fs::write(dir.path().join("src/b.bin"), vec![7u8; 300_000]).unwrap();
        Fixture { rt, store, dir }
    }

    /// A fresh process's view, as a front end opens it for a backup.
    fn open(&self) -> Arc<Repository> {
        Arc::new(
            self.rt
                .block_on(Repository::open_without_index(
                    self.store.clone(),
                    &testing::credential(),
                    None,
                ))
                .unwrap(),
        )
    }

    fn request(&self) -> BackupRequest {
        BackupRequest {
            source: Source::Paths {
                paths: vec![self.dir.path().join("src")],
                excludes: Vec::new(),
                one_file_system: false,
            },
            tags: vec!["t".into()],
            parent: Parent::Latest,
            host: "h1".into(),
        }
    }

    fn backup(&self, req: BackupRequest, mut controls: Controls) -> Result<BackupOutcome> {
        run(&self.rt, self.open(), &req, &mut controls)
    }

    fn names(&self, prefix: &str) -> Vec<String> {
        self.rt.block_on(self.store.list_names(prefix)).unwrap()
    }
}

#[test]
fn a_backup_commits_one_snapshot_and_ends_its_session() {
    let f = Fixture::new();
    let out = f.backup(f.request(), Controls::default()).unwrap();
    let s = &out.snapshot.summary;
    assert_eq!((s.files_new, s.files_changed, s.files_unchanged), (2, 0, 0));
    assert_eq!(s.bytes_read, 300_005);
    assert_eq!(out.snapshot.host, "h1");
    assert_eq!(out.snapshot.tags, ["t"]);
    // One snapshot object; the snapshot's ID is a keyed hash of its plaintext, not its name.
    assert_eq!(f.names("snapshots/").len(), 1);
    assert_ne!(
        f.names("snapshots/")[0],
        format!("snapshots/{}", out.id.to_hex())
    );
    assert!(
        !f.names("locks/").iter().any(|n| n.contains("session-")),
        "the session was ended: {:?}",
        f.names("locks/")
    );
    // What was stored reads back.
    let repo = Arc::new(
        f.rt.block_on(Repository::open(
            f.store.clone(),
            &testing::credential(),
            None,
        ))
        .unwrap(),
    );
    let root = f.rt.block_on(repo.load_tree(&out.snapshot.tree)).unwrap();
    assert_eq!(root.entries.len(), 1, "the path's parents are directories");
}

#[test]
fn the_latest_snapshot_of_the_same_paths_is_the_parent() {
    let f = Fixture::new();
    let first = f.backup(f.request(), Controls::default()).unwrap();
    let second = f.backup(f.request(), Controls::default()).unwrap();
    assert_eq!(second.snapshot.parent, Some(first.id));
    let s = &second.snapshot.summary;
    assert_eq!((s.files_new, s.files_unchanged, s.bytes_read), (0, 2, 0));
    // Another host's backup of the same paths starts afresh.
    let mut other = f.request();
    other.host = "h2".into();
    let third = f.backup(other, Controls::default()).unwrap();
    assert_eq!(third.snapshot.parent, None);
    assert_eq!(third.snapshot.summary.files_new, 2);
}

#[test]
fn a_cancelled_backup_stops_without_a_snapshot_or_a_session() {
    let f = Fixture::new();
    let cancel = Cancel::new();
    cancel.cancel();
    let err = f
        .backup(
            f.request(),
            Controls {
                cancel,
                progress: None,
            },
        )
        .err()
        .unwrap();
    assert!(matches!(err, Error::Interrupted), "{err}");
    assert!(err.is_retryable());
    assert!(f.names("snapshots/").is_empty());
    assert!(!f.names("locks/").iter().any(|n| n.contains("session-")));
}

#[test]
fn a_missing_path_or_bad_pattern_is_refused_before_anything_is_written() {
    let f = Fixture::new();
    let before = f.names("");
    let mut req = f.request();
    req.source = Source::Paths {
        paths: vec![f.dir.path().join("not-there")],
        excludes: Vec::new(),
        one_file_system: false,
    };
    let err = f.backup(req, Controls::default()).err().unwrap();
    assert!(matches!(err, Error::Request(_)), "{err}");
    assert!(err.to_string().contains("no snapshot was made"), "{err}");
    let mut req = f.request();
    req.source = Source::Paths {
        paths: vec![f.dir.path().join("src")],
        excludes: vec!["a{".into()],
        one_file_system: false,
    };
    let err = f.backup(req, Controls::default()).err().unwrap();
    assert!(matches!(err, Error::Usage(_)), "{err}");
    assert_eq!(f.names(""), before, "nothing was written");
}

#[test]
fn a_failing_stream_command_leaves_no_snapshot() {
    let f = Fixture::new();
    let req = |argv: &[&str]| BackupRequest {
        source: Source::Stream {
            source: StreamSource::Command {
                argv: argv.iter().map(Into::into).collect(),
                env: Vec::new(),
            },
            filename: "db/dump.sql".into(),
        },
        tags: Vec::new(),
        parent: Parent::Latest,
        host: "h1".into(),
    };
    let err = f
        .backup(
            req(&["sh", "-c", "echo partial; exit 3"]),
            Controls::default(),
        )
        .err()
        .unwrap();
    assert!(matches!(err, Error::Source(_)), "{err}");
    assert!(err.to_string().contains("exited with status 3"), "{err}");
    assert!(f.names("snapshots/").is_empty());
    let out = f
        .backup(req(&["printf", "hello"]), Controls::default())
        .unwrap();
    assert_eq!(out.snapshot.paths, [b"/db/dump.sql".to_vec()]);
    assert_eq!(out.snapshot.summary.bytes_total, 5);
    assert!(!f.names("locks/").iter().any(|n| n.contains("session-")));
}

#[test]
fn progress_sees_every_file_and_the_end() {
    #[derive(Default)]
    struct Seen {
        files: u64,
        finished: bool,
    }
    struct Sink(Arc<Mutex<Seen>>);
    impl Progress for Sink {
        fn update(&mut self, s: &Summary) {
            self.0.lock().unwrap().files = s.files_new + s.files_changed + s.files_unchanged;
        }
        fn finish(&mut self) {
            self.0.lock().unwrap().finished = true;
        }
    }
    let f = Fixture::new();
    let seen = Arc::new(Mutex::new(Seen::default()));
    f.backup(
        f.request(),
        Controls {
            cancel: Cancel::new(),
            progress: Some(Box::new(Sink(seen.clone()))),
        },
    )
    .unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.files, 2);
    assert!(seen.finished);
}

/// A run adding many blobs indexes them as it goes, a full index object at a time, and keeps
/// only the blobs in flight in its dedup set: before, both held an entry per blob of the run
/// until its end (200 bytes per blob on 4,000,000 small files), and a run killed before its end
/// left all of its uploads unindexed.
#[test]
fn a_long_run_indexes_as_it_goes_and_forgets_what_is_uploaded() {
    let f = Fixture::new();
    let repo = f.open();
    let pipeline = Pipeline::start(
        repo.clone(),
        f.rt.handle().clone(),
        2,
        drvault_repo::cancel::Cancel::new(),
    )
    .unwrap();
    let blobs = 2 * drvault_repo::index::INDEX_ENTRIES_PER_OBJECT;
    // Distinct, and not very compressible: a 1 MiB pack fills every ten thousand blobs or so.
    let data = |n: usize| {
        let mut x = n as u64;
        (0..8)
            .map(|_| {
                // splitmix64
                x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                format!("{:016x}", z ^ (z >> 31))
            })
            .collect::<String>()
    };
    let mut ids = Vec::with_capacity(blobs);
    for n in 0..blobs {
        ids.push(pipeline.add(BlobKind::Data, data(n).as_bytes()).unwrap());
    }
    // The uploads finish in the background: the first index object follows the upload that
    // brought the pending entries to a full object's worth.
    let store = repo.store().clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let names =
            f.rt.block_on(store.list_names(drvault_repo::format::paths::INDEX))
                .unwrap();
        if !names.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no index object written while the run went on"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        pipeline.queued_len() < blobs / 2,
        "{} of {blobs} blobs still in the dedup set after their packs were uploaded",
        pipeline.queued_len()
    );
    // A blob already uploaded is still known: added again, it is not stored twice.
    let before = pipeline.blobs_added();
    pipeline.add(BlobKind::Data, data(0).as_bytes()).unwrap();
    assert_eq!(pipeline.blobs_added(), before);
    pipeline.finish().unwrap();
    let index =
        f.rt.block_on(store.list_names(drvault_repo::format::paths::INDEX))
            .unwrap();
    assert!(index.len() >= 2, "{index:?}");
    let reopened = f.open();
    f.rt.block_on(reopened.reload_index()).unwrap();
    assert!(ids.iter().all(|id| reopened.has_blob(id)));
}
