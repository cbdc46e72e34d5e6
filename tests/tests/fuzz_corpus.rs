//! The fuzz targets' smoke run (the coverage-guided runs are `benches/fuzz.sh`): every seed of
//! `fuzz/corpus/<target>/`, every prefix of it and a few thousand deterministic mutations go
//! through the target's decoder, which must neither panic nor hang.
//!
//! `cargo test -p drvault-tests --test fuzz_corpus -- --ignored write_seed_corpus` rewrites
//! the seeds from a real repository that drvault writes.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use drvault_repo::format::{IndexFile, IndexPack, PruneMark, INDEX_VERSION, PRUNE_MARK_VERSION};
use drvault_repo::fuzz_targets::TARGETS;
use drvault_repo::store::Store;
use drvault_repo::{Id, Repository};
use drvault_tests::{files_below, noise, Env, PASSWORD};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

/// Deterministic mutations of `seed`: bit flips, byte replacements with edge values,
/// insertions and deletions, chosen by a xorshift generator.
fn mutations(seed: &[u8], n: usize, mut x: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..n {
        let mut m = seed.to_vec();
        for _ in 0..1 + next() % 4 {
            let at = if m.is_empty() {
                0
            } else {
                (next() as usize) % m.len()
            };
            match next() % 5 {
                0 if !m.is_empty() => m[at] ^= 1 << (next() % 8),
                1 if !m.is_empty() => m[at] = [0, 0xff, 0x7f, 0x80, 1][(next() % 5) as usize],
                2 => m.insert(at.min(m.len()), next() as u8),
                3 if !m.is_empty() => {
                    m.remove(at);
                }
                _ if m.len() >= 2 => {
                    // Large length prefixes: postcard varints of 2^32 and more.
                    m[at] = 0xff;
                }
                _ => {}
            }
        }
        out.push(m);
    }
    out
}

#[test]
fn every_decoder_survives_its_corpus_prefixes_and_mutations() {
    let mut seeds_total = 0;
    for (name, target) in TARGETS {
        let dir = corpus().join(name);
        let seeds = files_below(&dir);
        assert!(
            !seeds.is_empty(),
            "no seed corpus for {name} in {}",
            dir.display()
        );
        for (i, path) in seeds.iter().enumerate() {
            let seed = fs::read(path).unwrap();
            seeds_total += 1;
            target(&seed);
            for len in 0..seed.len().min(512) {
                target(&seed[..len]);
            }
            for m in mutations(&seed, 500, 0x9E37_79B9 + i as u64) {
                target(&m);
            }
        }
    }
    assert!(seeds_total >= TARGETS.len());
}

fn write_seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus().join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

/// Files of a repository directory below `dir`.
fn objects(env: &Env, dir: &str) -> Vec<PathBuf> {
    let d = env.repo().join(dir);
    if d.exists() {
        files_below(&d)
    } else {
        Vec::new()
    }
}

#[test]
#[ignore = "rewrites fuzz/corpus from a real repository; run by hand"]
fn write_seed_corpus() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("dir/sub")).unwrap();
    fs::write(src.join("dir/a.txt"), b"some text\n").unwrap();
    fs::write(src.join("dir/sub/big.bin"), noise(3 << 20, 4)).unwrap();
    std::os::unix::fs::symlink("dir/a.txt", src.join("link")).unwrap();
    fs::hard_link(src.join("dir/a.txt"), src.join("hard")).unwrap();
    env.ok(&["backup", "--tag", "seed", src.to_str().unwrap()]);
    fs::write(src.join("dir/a.txt"), b"changed\n").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    env.ok(&["forget", "--keep-last", "1"]);
    env.ok(&["prune"]);
    env.ok(&["key", "rotate"]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = Store::open(env.repo().to_str().unwrap(), false).unwrap();
    let repo = rt
        .block_on(Repository::open(
            store,
            &drvault_keyring::Credential::passphrase(PASSWORD.as_bytes()),
            None,
        ))
        .unwrap();

    write_seed(
        "config",
        "config",
        &fs::read(env.repo().join("config")).unwrap(),
    );
    let mut master = None;
    for (i, p) in objects(&env, "keys").iter().enumerate() {
        let bytes = fs::read(p).unwrap();
        write_seed("key_slot", &format!("slot-{i}"), &bytes);
        let slot = drvault_keyring::KeySlot::decode(&bytes).unwrap();
        master = slot.unwrap_master(PASSWORD.as_bytes()).ok().or(master);
    }
    let master = master.unwrap();
    for (i, p) in objects(&env, "keyring").iter().enumerate() {
        let sealed = fs::read(p).unwrap();
        if let Ok((_, plain)) = drvault_keyring::open(&master, b"drvault keyring", &sealed) {
            write_seed("keyring_body", &format!("body-{i}"), &plain);
        }
        write_seed("envelope", &format!("keyring-{i}"), &sealed);
    }
    for (i, (_, snap)) in rt.block_on(repo.snapshots()).unwrap().iter().enumerate() {
        write_seed(
            "snapshot",
            &format!("snapshot-{i}"),
            &postcard::to_stdvec(snap).unwrap(),
        );
        let tree = rt.block_on(repo.load_tree(&snap.tree)).unwrap();
        write_seed(
            "tree",
            &format!("root-{i}"),
            &postcard::to_stdvec(&tree).unwrap(),
        );
        for (j, n) in tree.entries.iter().enumerate() {
            if let Some(sub) = n.subtree {
                let t = rt.block_on(repo.load_tree(&sub)).unwrap();
                write_seed(
                    "tree",
                    &format!("sub-{i}-{j}"),
                    &postcard::to_stdvec(&t).unwrap(),
                );
            }
        }
    }
    let mut packs = Vec::new();
    for (i, p) in objects(&env, "data").iter().enumerate().take(4) {
        let bytes = fs::read(p).unwrap();
        let id = Id::of_stored(&bytes);
        let entries = repo.read_pack_header(&id, &bytes).unwrap();
        write_seed(
            "pack_header",
            &format!("header-{i}"),
            &postcard::to_stdvec(&entries).unwrap(),
        );
        write_seed(
            "pack_trailer",
            &format!("pack-{i}"),
            &bytes[bytes.len().saturating_sub(64)..],
        );
        let first = entries[0];
        let sealed = &bytes[first.offset as usize..(first.offset + first.length) as usize];
        let mut blob = vec![(first.raw_length >> 8) as u8];
        blob.extend_from_slice(&sealed[..sealed.len().min(4096)]);
        write_seed("blob", &format!("blob-{i}"), &blob);
        write_seed(
            "envelope",
            &format!("blob-{i}"),
            &sealed[..sealed.len().min(4096)],
        );
        packs.push(IndexPack {
            pack: id,
            blobs: entries,
        });
    }
    let index = IndexFile {
        version: INDEX_VERSION,
        packs: packs.clone(),
    };
    write_seed("index", "index-0", &postcard::to_stdvec(&index).unwrap());
    let mark = PruneMark {
        version: PRUNE_MARK_VERSION,
        created: 1_764_000_000,
        packs: packs.iter().map(|p| p.pack).collect(),
    };
    write_seed("prune_mark", "mark-0", &postcard::to_stdvec(&mark).unwrap());
    for (seq, entry) in rt.block_on(repo.audit().read_all()).unwrap() {
        if let Ok(e) = entry {
            write_seed("audit_entry", &format!("entry-{seq}"), &e.canonical_bytes());
        }
    }
    // Locks: the lease the last maintenance command left, and a session as a backup writes it.
    for (i, p) in objects(&env, "locks").iter().enumerate() {
        let bytes = fs::read(p).unwrap();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let kind = if name.starts_with("session") {
            "session"
        } else {
            "lock"
        };
        write_seed(kind, &format!("{kind}-{i}"), &bytes);
    }
    write_seed(
        "session",
        "session-written",
        br#"{"host":"web-1","pid":4242,"started":1764000000,"epoch":2,"honours_marks":true,"heartbeat":1764000060,"pid_scope":"boot:1f2e"}"#,
    );
    write_seed(
        "lock",
        "lease-written",
        br#"{"purpose":"prune","host":"db-2","pid":77,"acquired":1764000000,"expires":1764000900,"token":"5f1c","pid_scope":"boot:1f2e"}"#,
    );
}
