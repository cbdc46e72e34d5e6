//! Forged, damaged and hostile repository data: errors that name the object, never a panic,
//! never a write outside the restore target.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use drvault_repo::blob::BlobSealer;
use drvault_repo::format::{
    BlobKind, Node, NodeKind, Snapshot, Summary, Tree, SNAPSHOT_VERSION, TREE_VERSION,
};
use drvault_repo::packer::PackBuilder;
use drvault_repo::store::Store;
use drvault_repo::{Id, Repository};
use drvault_tests::{files_below, noise, Env, PASSWORD};

fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        name: name.to_vec(),
        kind,
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
        content: vec![],
        subtree: None,
        target: vec![],
        xattrs: vec![],
    }
}

/// Writes blobs and a snapshot with the real keys, as a malicious key holder could.
struct Forger {
    rt: tokio::runtime::Runtime,
    repo: Repository,
}

impl Forger {
    fn new(env: &Env) -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = Store::open(env.repo().to_str().unwrap(), false).unwrap();
        let repo = rt
            .block_on(Repository::open(
                store,
                &drvault_keyring::Credential::passphrase(PASSWORD.as_bytes()),
                None,
            ))
            .unwrap();
        Forger { rt, repo }
    }

    fn blob(&self, kind: BlobKind, plain: &[u8]) -> Id {
        let id = self.repo.blob_id(plain);
        let mut sealer = BlobSealer::new(self.repo.keys(), 3).unwrap();
        let sealed = sealer.seal(kind, &id, plain).unwrap();
        let mut pack = PackBuilder::new(1 << 20);
        pack.add(kind, id, plain.len() as u32, &sealed);
        let pack = pack.finish(self.repo.keys()).unwrap();
        self.rt.block_on(self.repo.upload_pack(pack)).unwrap();
        id
    }

    /// Stores the tree exactly as given: no sorting, no validation.
    fn tree(&self, entries: Vec<Node>) -> Id {
        self.blob(
            BlobKind::Tree,
            &Tree {
                version: TREE_VERSION,
                entries,
            }
            .encode(),
        )
    }

    fn snapshot(&self, root: Id) {
        self.rt.block_on(self.repo.flush_index()).unwrap();
        let snap = Snapshot {
            version: SNAPSHOT_VERSION,
            time_ns: 1,
            host: "forged".into(),
            username: String::new(),
            paths: vec![b"/".to_vec()],
            tags: vec![],
            parent: None,
            tree: root,
            summary: Summary::default(),
            program_version: String::new(),
            audit: None,
            writer: None,
            untrusted: None,
            stored_as: Vec::new(),
        };
        self.rt.block_on(self.repo.save_snapshot(&snap)).unwrap();
    }
}

fn file_with(forger: &Forger, name: &[u8], data: &[u8]) -> Node {
    let mut n = node(name, NodeKind::File);
    n.content = vec![forger.blob(BlobKind::Data, data)];
    n.size = data.len() as u64;
    n
}

/// Restores the latest (forged) snapshot and asserts nothing appeared outside the target.
fn restore_forged(env: &Env, prepare_target: impl FnOnce(&Path, &Path)) -> std::process::Output {
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let target = env.path("target");
    fs::create_dir_all(&target).unwrap();
    prepare_target(&target, &outside);
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(
        files_below(&outside).is_empty(),
        "a restore wrote outside its target: {:?}",
        files_below(&outside)
    );
    assert!(!env.dir.path().join("escape").exists());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    out
}

#[test]
fn traversal_names_are_refused() {
    for bad in [
        &b".."[..],
        b"../escape",
        b"a/../../escape",
        b".",
        b"",
        b"nul\0byte",
    ] {
        let env = Env::new();
        env.init();
        let f = Forger::new(&env);
        let root = f.tree(vec![file_with(&f, bad, b"evil payload")]);
        f.snapshot(root);
        let out = restore_forged(&env, |_, _| {});
        assert_eq!(
            out.status.code(),
            Some(drvault_tests::code::INTEGRITY),
            "name {bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("tree"),
            "the error names the tree object"
        );
    }
}

#[test]
fn duplicate_names_cannot_redirect_through_a_symlink() {
    let env = Env::new();
    env.init();
    let f = Forger::new(&env);
    let outside = env.path("outside");
    let mut link = node(b"d", NodeKind::Symlink);
    link.target = outside.to_str().unwrap().as_bytes().to_vec();
    let mut dir = node(b"d", NodeKind::Dir);
    dir.subtree = Some(f.tree(vec![file_with(&f, b"pwned", b"evil")]));
    let root = f.tree(vec![link, dir]);
    f.snapshot(root);
    let out = restore_forged(&env, |_, _| {});
    assert_eq!(
        out.status.code(),
        Some(drvault_tests::code::INTEGRITY),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn symlinks_in_snapshot_or_target_are_never_followed() {
    let env = Env::new();
    env.init();
    let f = Forger::new(&env);
    // The snapshot holds a symlink to the outside and a hard link trying to reach through it,
    // plus a directory the target already has as a symlink to the outside.
    let outside = env.path("outside");
    let mut link = node(b"a-link", NodeKind::Symlink);
    link.target = outside.to_str().unwrap().as_bytes().to_vec();
    let mut hard = node(b"b-hard", NodeKind::Hardlink);
    hard.target = b"a-link/pwned".to_vec();
    let mut traversal = node(b"c-hard", NodeKind::Hardlink);
    traversal.target = b"../../etc/passwd".to_vec();
    let root = f.tree(vec![link.clone(), hard, file_with(&f, b"ok", b"fine")]);
    f.snapshot(root);
    let out = restore_forged(&env, |_, _| {});
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target = env.path("target");
    assert_eq!(fs::read_link(target.join("a-link")).unwrap(), outside);
    assert!(!target.join("b-hard").exists());

    // A hard link whose source leaves the snapshot is an integrity error.
    let env = Env::new();
    env.init();
    let f = Forger::new(&env);
    let root = f.tree(vec![traversal]);
    f.snapshot(root);
    let out = restore_forged(&env, |_, _| {});
    assert_eq!(
        out.status.code(),
        Some(drvault_tests::code::INTEGRITY),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A directory that exists in the target as a symlink is refused, not followed.
    let env = Env::new();
    env.init();
    let f = Forger::new(&env);
    let mut dir = node(b"d", NodeKind::Dir);
    dir.subtree = Some(f.tree(vec![file_with(&f, b"pwned", b"evil")]));
    let root = f.tree(vec![dir]);
    f.snapshot(root);
    let out = restore_forged(&env, |target, outside| {
        symlink(outside, target.join("d")).unwrap()
    });
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a plain directory"));
}

#[test]
fn device_nodes_are_not_created() {
    let env = Env::new();
    env.init();
    let f = Forger::new(&env);
    let mut dev = node(b"disk", NodeKind::BlockDevice);
    dev.rdev = 0x0801;
    let root = f.tree(vec![dev]);
    f.snapshot(root);
    let out = restore_forged(&env, |_, _| {});
    assert!(out.status.success());
    assert!(!env.path("target/disk").exists());
}

#[test]
fn no_plaintext_reaches_the_repository() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // A text file (compressible) and a random one (stored uncompressed, so only encryption hides it).
    let text: String = (0..2000)
        .map(|i| format!("line {i}: the quick brown fox knows the launch code\n"))
        .collect();
    fs::write(src.join("known.txt"), &text).unwrap();
    let random = noise(300_000, 42);
    fs::write(src.join("random.bin"), &random).unwrap();
    env.init();
    env.ok(&["backup", src.to_str().unwrap()]);
    let needles: Vec<&[u8]> = vec![
        b"launch code",
        b"known.txt",
        b"random.bin",
        &random[1000..1032],
        &random[250_000..250_032],
    ];
    for f in files_below(&env.repo()) {
        let bytes = fs::read(&f).unwrap();
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == *n),
                "plaintext found in {}",
                f.display()
            );
        }
        // Names are hashes: nothing about the source shows in them.
        assert!(!f.to_string_lossy().contains("known"));
    }
}

#[test]
fn wrong_passphrase_is_a_clear_error_with_its_code() {
    let env = Env::new();
    env.init();
    let out = env
        .cmd()
        .arg("snapshots")
        .env("DRVAULT_PASSWORD", "not the passphrase")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(drvault_tests::code::WRONG_PASSWORD));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wrong passphrase"), "{stderr}");
    assert!(
        !stderr.contains("not the passphrase"),
        "the passphrase was echoed"
    );
    // And from a file (first line only).
    let pw = env.path("pw");
    fs::write(
        &pw,
        format!("{}\nignored second line\n", drvault_tests::PASSWORD),
    )
    .unwrap();
    let out = env
        .cmd()
        .env_remove("DRVAULT_PASSWORD")
        .arg("--password-file")
        .arg(&pw)
        .arg("snapshots")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No repository at all is its own code.
    let out = std::process::Command::new(drvault_tests::drvault_bin())
        .arg("--repo")
        .arg(env.path("nothing-here"))
        .arg("snapshots")
        .env("DRVAULT_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(drvault_tests::code::NO_REPOSITORY));
    // init twice is refused.
    let out = env.run(&["init", "--kdf-memory-kib", "64"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

fn packs(env: &Env) -> Vec<std::path::PathBuf> {
    let mut p = files_below(&env.repo().join("data"));
    p.sort();
    p
}

#[test]
fn a_flipped_byte_is_found_by_check_read_data() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("data"), noise(2 * 1024 * 1024, 9)).unwrap();
    env.init();
    env.ok(&["backup", src.to_str().unwrap()]);
    assert!(env.run(&["check", "--read-data"]).status.success());
    // Flip one byte in the middle of the largest pack (the data pack).
    let pack = packs(&env)
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&pack, &bytes).unwrap();
    let name = pack.file_name().unwrap().to_string_lossy().to_string();
    let out = env.run(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(drvault_tests::code::INTEGRITY));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&name),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A restore of the damaged data fails with the integrity code and names the pack.
    let out = env.run(&[
        "restore",
        "latest",
        "--target",
        env.path("t").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(drvault_tests::code::INTEGRITY));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&name));
}

#[test]
fn truncated_and_garbage_objects_are_named_errors() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"content").unwrap();
    env.init();
    env.ok(&["backup", src.to_str().unwrap()]);
    // Truncate the snapshot object.
    let snap = files_below(&env.repo().join("snapshots")).pop().unwrap();
    let bytes = fs::read(&snap).unwrap();
    fs::write(&snap, &bytes[..bytes.len() / 2]).unwrap();
    // Listing skips it with a warning naming it (one damaged object must not hide the rest);
    // check calls it damage.
    let name = snap.file_name().unwrap().to_string_lossy().to_string();
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&name));
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(drvault_tests::code::INTEGRITY));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&name));
    // Truncate every pack to a few bytes: check names them, nothing panics.
    for p in packs(&env) {
        fs::write(&p, b"xy").unwrap();
    }
    let out = env.run(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(drvault_tests::code::INTEGRITY));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    // A garbage config.
    fs::write(env.repo().join("config"), b"{not json").unwrap();
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(drvault_tests::code::INTEGRITY));
    assert!(String::from_utf8_lossy(&out.stderr).contains("config"));
}

#[test]
fn a_second_key_slot_opens_the_same_repository() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"shared").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let new_pw = env.path("new-pw");
    fs::write(&new_pw, "a second, different passphrase\n").unwrap();
    env.ok(&[
        "key",
        "add",
        "--new-password-file",
        new_pw.to_str().unwrap(),
    ]);
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["key", "list", "--json"])).unwrap();
    // The passphrase and recovery slots from init, and the new one.
    assert_eq!(listed["slots"].as_array().unwrap().len(), 3);
    // The new passphrase opens the repository and sees the same snapshot; the old one still works.
    let out = env
        .cmd()
        .env("DRVAULT_PASSWORD", "a second, different passphrase")
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_eq!(env.snapshots_json().len(), 1);
    // A wrong one still fails with its code.
    let out = env
        .cmd()
        .env("DRVAULT_PASSWORD", "neither of them")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(drvault_tests::code::WRONG_PASSWORD));
}

#[test]
fn a_tree_that_repeats_one_subtree_at_every_level_is_refused_not_expanded() {
    let env = Env::new();
    env.init();
    let forger = Forger::new(&env);
    // Level 0 holds a file; each level above holds two directories that are both the level
    // below: 64 levels store 64 small trees and walk to 2^64 paths.
    let mut level = forger.tree(vec![file_with(&forger, b"f", b"x")]);
    for _ in 0..64 {
        let mut a = node(b"a", NodeKind::Dir);
        a.mode = 0o755;
        a.subtree = Some(level);
        let mut b = a.clone();
        b.name = b"b".to_vec();
        level = forger.tree(vec![a, b]);
    }
    forger.snapshot(level);
    let run_bounded = |args: &[&str]| {
        let mut child = env
            .cmd()
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("drvault {args:?} expands the forged tree without bound");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    };
    let target = env.path("target");
    for args in [
        &["restore", "latest", "--target", target.to_str().unwrap()][..],
        &["ls", "latest"],
    ] {
        let out = run_bounded(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(drvault_tests::code::INTEGRITY),
            "drvault {args:?}: {stderr}"
        );
        assert!(stderr.contains("forged snapshot"), "{stderr}");
    }
}
