//! Key operations on a repository in memory: what they refuse, and what the audit log says of
//! them (the operations write their own entries, whatever front end calls them).
#![allow(clippy::unwrap_used)]

use super::*;

async fn repository() -> Repository {
    crate::testing::memory_repository().await.unwrap()
}

async fn actions(repo: &Repository) -> Vec<(String, String)> {
    repo.audit()
        .read_all()
        .await
        .unwrap()
        .into_values()
        .map(|e| {
            let e = e.unwrap();
            (e.action, e.result)
        })
        .collect()
}

#[tokio::test]
async fn a_prefix_matching_several_slots_is_refused_and_the_refusal_is_audited() {
    let repo = repository().await;
    // Slot ids are hashes: among 17 of them, two share their first hex digit.
    let mut firsts: HashSet<char> = HashSet::new();
    let mut shared = None;
    for n in 0..17 {
        let name = crate::keys::add_key_slot(
            &repo,
            SlotKind::Passphrase,
            format!("pass {n}").as_bytes(),
            KdfParams::INSECURE_TEST,
            "",
        )
        .await
        .unwrap();
        let first = paths::short(&name).chars().next().unwrap();
        if !firsts.insert(first) {
            shared = Some(first);
            break;
        }
    }
    let prefix = shared.unwrap().to_string();
    let slots_before = repo.key_slots().await.unwrap().len();
    let err = crate::keys::remove_key_slot(&repo, &prefix)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Usage(m) if m.contains("matches several key slots")),
        "{err}"
    );
    assert_eq!(repo.key_slots().await.unwrap().len(), slots_before);
    let log = actions(&repo).await;
    assert!(log
        .iter()
        .filter(|(a, _)| a == "key.add")
        .all(|(_, r)| r == "ok"));
    let (action, result) = log.last().unwrap();
    assert_eq!(action, "key.remove");
    assert!(
        result.starts_with("failed: ") && result.contains("several"),
        "{result}"
    );
}

#[tokio::test]
async fn a_cancelled_reencryption_stops_cleanly_and_both_outcomes_are_audited() {
    let repo = repository().await;
    let epoch = crate::keys::rotate_epoch(&repo).await.unwrap();
    assert!(epoch > 0);
    let reopened = Repository::open(repo.store().clone(), &crate::testing::credential(), None)
        .await
        .unwrap();
    // Stopped before its first pass: nothing is rewritten or retired, the lease is released.
    let cancel = crate::cancel::Cancel::new();
    cancel.cancel();
    let err = crate::keys::reencrypt(&reopened, &|_| {}, &cancel)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Interrupted), "{err}");
    assert!(crate::lease::current_lease(repo.store())
        .await
        .unwrap()
        .is_none_or(|(_, l)| !l.is_held()));
    // Run again, it finishes and retires the old epoch.
    let r = crate::keys::reencrypt(&reopened, &|_| {}, &crate::cancel::Cancel::new())
        .await
        .unwrap();
    assert_eq!(r.retired, [epoch - 1]);
    let log = actions(&repo).await;
    let names: Vec<&str> = log.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        names,
        ["key.rotate", "key.reencrypt", "key.reencrypt"],
        "{log:?}"
    );
    assert!(
        log[1].1.starts_with("failed: stopped on request"),
        "{log:?}"
    );
    assert_eq!(log[2].1, "ok");
}

#[tokio::test]
async fn rotation_is_due_by_age_or_by_blobs_whichever_comes_first() {
    let repo = repository().await;
    let day = 86_400;
    let now = unix_now();
    let policy = RotationPolicy {
        max_age: Duration::from_secs(90 * day),
        max_blobs: 1 << 28,
    };
    let fresh = crate::keys::rotation_due(&repo, &policy, now)
        .await
        .unwrap();
    assert_eq!((fresh.epoch, fresh.age_days, fresh.due), (1, 0, false));
    let later = crate::keys::rotation_due(&repo, &policy, now + 90 * day as i64)
        .await
        .unwrap();
    assert!(later.due && later.age_days == 90, "{later:?}");
    let by_blobs = RotationPolicy {
        max_blobs: fresh.blobs,
        ..policy
    };
    assert!(
        crate::keys::rotation_due(&repo, &by_blobs, now)
            .await
            .unwrap()
            .due
    );
    // A clock behind the epoch's creation is age 0, not an overflow.
    assert_eq!(
        crate::keys::rotation_due(&repo, &policy, 0)
            .await
            .unwrap()
            .age_days,
        0
    );
}
