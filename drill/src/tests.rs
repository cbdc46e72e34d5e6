//! A drill against an in-memory repository holding a real backup of a temporary directory.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use drvault_backup::{BackupRequest, Controls, Parent, Source};
use drvault_repo::store::Store;
use drvault_repo::testing;
use drvault_repo::Repository;

use super::*;

struct Fixture {
    rt: tokio::runtime::Runtime,
    store: Store,
    src: tempfile::TempDir,
    state: tempfile::TempDir,
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
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("db.dump"), b"rows").unwrap();
        let f = Fixture {
            rt,
            store,
            src,
            state: tempfile::tempdir().unwrap(),
        };
        let req = BackupRequest {
            source: Source::Paths {
                paths: vec![f.src.path().to_path_buf()],
                excludes: Vec::new(),
                one_file_system: false,
            },
            tags: Vec::new(),
            parent: Parent::Latest,
            host: "db1".into(),
        };
        drvault_backup::run(&f.rt, f.open(), &req, &mut Controls::default()).unwrap();
        f
    }

    fn open(&self) -> Arc<Repository> {
        Arc::new(
            self.rt
                .block_on(Repository::open(
                    self.store.clone(),
                    &testing::credential(),
                    None,
                ))
                .unwrap(),
        )
    }

    fn plan(&self, validate: &[&str]) -> Plan {
        Plan {
            name: "db".into(),
            paths: vec![self.src.path().to_string_lossy().into_owned()],
            from_job: false,
            host: Some("db1".into()),
            snapshot: None,
            restore_dir: None,
            validate: validate.iter().map(|v| v.to_string()).collect(),
            validate_timeout: Duration::from_secs(60),
            validate_env: BTreeMap::new(),
            rto_objective: Duration::from_secs(3600),
            rpo_objective: Duration::from_secs(3600),
        }
    }

    fn drill(&self, plan: &Plan, reachable: bool) -> DrillRecord {
        let open = |_: &[String]| {
            if reachable {
                Ok(self.open())
            } else {
                Err("every target is down".to_string())
            }
        };
        let env = Surroundings {
            rt: &self.rt,
            open_surviving: &open,
            targets_used: vec!["memory".into()],
            scratch_root: self.state.path().join("drills"),
            redactor: Default::default(),
        };
        run(&env, plan, &[], false).0
    }
}

#[test]
fn a_drill_restores_verifies_validates_and_is_recorded() {
    let f = Fixture::new();
    let file = format!("{{restore_dir}}{}/db.dump", f.src.path().display());
    let r = f.drill(&f.plan(&[&format!("grep -q rows {file}")]), true);
    assert!(r.passed, "{}", r.reason);
    assert_eq!((r.files, r.verified_files), (1, 1));
    assert!(r.rto_seconds.unwrap() >= 0.0 && r.rpo_seconds.unwrap() >= 0.0);
    assert_eq!(r.validations.len(), 1);
    assert_eq!(r.snapshot_host.as_deref(), Some("db1"));
    // The scratch restore is removed afterwards.
    let left = std::fs::read_dir(f.state.path().join("drills"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .count()
        })
        .unwrap_or(0);
    assert_eq!(left, 0);
    let repo = f.open();
    let seq = f.rt.block_on(record(&repo, &r)).unwrap();
    let log = f.rt.block_on(repo.audit().read_all()).unwrap();
    let entry = log[&seq].as_ref().unwrap();
    assert_eq!(
        (entry.action.as_str(), entry.result.as_str()),
        ("drill.run", "ok")
    );
    assert_eq!(entry.details["drill_id"], r.drill_id.as_str());
}

#[test]
fn failures_become_the_records_reason() {
    let f = Fixture::new();
    let r = f.drill(&f.plan(&["exit 7"]), true);
    assert!(!r.passed);
    assert!(r.reason.contains("exit code 7"), "{}", r.reason);
    let r = f.drill(&f.plan(&[]), false);
    assert!(!r.passed);
    assert!(r.reason.contains("every target is down"), "{}", r.reason);
    let mut tight = f.plan(&[]);
    tight.rpo_objective = Duration::ZERO;
    let r = f.drill(&tight, true);
    assert!(!r.passed && r.reason.contains("RPO"), "{}", r.reason);
    let mut other = f.plan(&[]);
    other.host = Some("web1".into());
    let r = f.drill(&other, true);
    assert!(
        !r.passed && r.reason.contains("no snapshot"),
        "{}",
        r.reason
    );
}
