//! One conformance suite that every storage backend passes: a local directory, SeaweedFS and
//! moto (real S3 servers on loopback), and Azurite (Azure Blob Storage's emulator). It pins down what the repository relies on: create-only
//! writes that are atomic under a race, exact ranged reads, listings, and errors callers act on.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use bytes::Bytes;
use drvault_repo::target::Target;
use drvault_repo::Error;
use drvault_tests::noise;
use drvault_tests::s3::S3Server;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn conformance(t: &Target) {
    // Create-only writes; reading back the same bytes.
    let small = Bytes::from_static(b"hello, object");
    t.put_new("data/ab/abc", small.clone(), false)
        .await
        .unwrap();
    assert_eq!(t.get("data/ab/abc").await.unwrap(), small);
    assert_eq!(t.size("data/ab/abc").await.unwrap(), small.len() as u64);

    // A second create of the same name: refused, or accepted when the caller says the bytes
    // are content-addressed (idempotent); the first bytes stay.
    let again = t
        .put_new("data/ab/abc", Bytes::from_static(b"other"), false)
        .await;
    assert!(
        matches!(again, Err(Error::AlreadyExists { .. })),
        "{again:?}"
    );
    t.put_new("data/ab/abc", Bytes::from_static(b"other"), true)
        .await
        .unwrap();
    assert_eq!(t.get("data/ab/abc").await.unwrap(), small);

    // Exact ranged reads, including the last byte; a range past the end is an error, not a
    // short answer.
    let big = Bytes::from(noise(17 << 20, 7));
    t.put_new("data/cd/big", big.clone(), false).await.unwrap();
    assert_eq!(
        t.get_range("data/cd/big", 5..4101).await.unwrap(),
        big.slice(5..4101)
    );
    let end = big.len() as u64;
    assert_eq!(
        t.get_range("data/cd/big", end - 1..end).await.unwrap(),
        big.slice(big.len() - 1..)
    );
    assert!(t
        .get_range("data/cd/big", end - 10..end + 10)
        .await
        .is_err());
    assert_eq!(t.get("data/cd/big").await.unwrap(), big);

    // Missing objects are NotFound for every kind of read.
    assert!(matches!(
        t.get("data/zz/none").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        t.get_range("data/zz/none", 0..1).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        t.size("data/zz/none").await,
        Err(Error::NotFound { .. })
    ));

    // Listings: by prefix, nested, with sizes; an empty prefix lists everything.
    t.put_new("snapshots/s1", Bytes::from_static(b"s"), false)
        .await
        .unwrap();
    let data: BTreeSet<(String, u64)> = t
        .list("data/")
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.name, l.size))
        .collect();
    let want: BTreeSet<(String, u64)> = [
        ("data/ab/abc".to_string(), small.len() as u64),
        ("data/cd/big".to_string(), end),
    ]
    .into();
    assert_eq!(data, want);
    assert_eq!(t.list("").await.unwrap().len(), 3);
    assert!(t.list("index/").await.unwrap().is_empty());

    // Deletes; deleting again is not an error the caller must handle differently.
    t.delete("snapshots/s1").await.unwrap();
    assert!(matches!(
        t.get("snapshots/s1").await,
        Err(Error::NotFound { .. })
    ));
    let twice = t.delete("snapshots/s1").await;
    assert!(
        matches!(twice, Ok(()) | Err(Error::NotFound { .. })),
        "{twice:?}"
    );

    // Atomic create-only under a race: of eight writers of one name, exactly one wins and its
    // bytes are the ones stored (the lease protocol of key rotation and prune relies on it).
    let racers = (0..8u8).map(|i| {
        let t = t.clone();
        async move {
            (
                i,
                t.put_new("locks/lease", Bytes::from(vec![i; 1024]), false)
                    .await,
            )
        }
    });
    let results = futures::future::join_all(racers).await;
    let winners: Vec<u8> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one create wins: {results:?}");
    for (_, r) in &results {
        assert!(
            matches!(r, Ok(()) | Err(Error::AlreadyExists { .. })),
            "{r:?}"
        );
    }
    assert_eq!(
        t.get("locks/lease").await.unwrap(),
        Bytes::from(vec![winners[0]; 1024])
    );
}

#[test]
fn local_directory_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let t = Target::open("local", dir.path().to_str().unwrap(), true).unwrap();
    runtime().block_on(conformance(&t));
}

#[test]
fn seaweedfs_passes_the_conformance_suite() {
    let server = S3Server::seaweed("conformance");
    runtime().block_on(conformance(&server.target("repo")));
}

#[test]
fn moto_passes_the_conformance_suite() {
    let server = S3Server::moto("conformance");
    runtime().block_on(conformance(&server.target("repo")));
}

#[test]
fn a_wrong_secret_is_refused_by_a_signature_checking_server() {
    let server = S3Server::seaweed("signed");
    // The right secret is accepted by the same server: what follows is a refusal, not a
    // server that is not there.
    let good = Target::open_url(
        "good",
        &server.url("x"),
        &server.options(),
        &Default::default(),
        false,
    )
    .unwrap();
    runtime()
        .block_on(good.put_new("ok", Bytes::from_static(b"x"), false))
        .unwrap();
    let mut options = server.options();
    options.insert("aws_secret_access_key".into(), "not-the-secret".into());
    let t = Target::open_url(
        "bad",
        &server.url("x"),
        &options,
        &Default::default(),
        false,
    )
    .unwrap();
    let r = runtime().block_on(t.put_new("obj", Bytes::from_static(b"x"), false));
    let err = r.expect_err("a forged signature must be refused");
    assert!(
        err.is_not_permitted(),
        "a refusal of the credentials, which no retry fixes: {err:?}"
    );
    let msg = err.to_string();
    assert!(
        !msg.contains("not-the-secret"),
        "the secret must not appear in errors: {msg}"
    );
}

#[test]
fn bad_target_configurations_are_refused_with_a_reason() {
    let tuning = Default::default();
    let no_opts = Default::default();
    let unknown: std::collections::BTreeMap<String, String> =
        [("aws_no_such_option".to_string(), "1".to_string())].into();
    let err = Target::open_url("t", "s3://bucket/p", &unknown, &tuning, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("aws_no_such_option"), "{err}");
    let err = Target::open_url("t", "ftp://host/p", &no_opts, &tuning, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ftp://host/p"), "{err}");
    let err = Target::open_url("t", "s3://", &no_opts, &tuning, false)
        .unwrap_err()
        .to_string();
    assert!(!err.is_empty());
    let local_opts: std::collections::BTreeMap<String, String> =
        [("x".to_string(), "1".to_string())].into();
    assert!(Target::open_url("t", "/tmp", &local_opts, &tuning, false).is_err());
}

#[test]
fn azurite_passes_the_conformance_suite() {
    let server = drvault_tests::azurite::Azurite::start("conformance");
    runtime().block_on(conformance(&server.target("repo")));
}

/// The whole program against Azurite: init, backup, check --read-data and a verified restore
/// through an `az://` target.
#[test]
fn a_repository_on_azurite_backs_up_and_restores_byte_for_byte() {
    let server = drvault_tests::azurite::Azurite::start("e2e");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("big"), noise(5 << 20, 3)).unwrap();
    std::fs::write(src.join("sub/small"), b"small").unwrap();
    let config = dir.path().join("drvault.toml");
    std::fs::write(
        &config,
        "[[targets]]\nname = \"azure\"\nurl = \"az://e2e/repo\"\noptions = { use_emulator = \"true\" }\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(drvault_tests::drvault_bin())
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(args)
            .env("DRVAULT_PASSWORD", drvault_tests::PASSWORD)
            .env(
                "AZURITE_BLOB_STORAGE_URL",
                format!("http://127.0.0.1:{}", server.port),
            )
            .env_remove("DRVAULT_REPO")
            .env_remove("DRVAULT_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "drvault {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["init", "--kdf-memory-kib", "64"]);
    run(&["backup", src.to_str().unwrap()]);
    run(&["check", "--read-data"]);
    let target = dir.path().join("back");
    run(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--verify",
    ]);
    let restored = drvault_tests::restored(&target, &src);
    assert_eq!(
        std::fs::read(restored.join("big")).unwrap(),
        noise(5 << 20, 3)
    );
    assert_eq!(std::fs::read(restored.join("sub/small")).unwrap(), b"small");
}
