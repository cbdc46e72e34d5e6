//! Issue "Ransomware-resilient repository", put-only host keys: a host backs up and
//! deduplicates against the whole repository but opens nothing stored; what it writes names its
//! host, provably; key rotation and re-encryption go on; a version 1 repository is upgraded in
//! place, resumably. (The attacker against a locked, IAM-enforcing S3 server is in
//! `ransomware.rs`.)
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use drvault_tests::{code, noise, Env};
use serde_json::Value;

const HOST_PASSPHRASE: &str = "the web host's own key";

fn write_secret(env: &Env, name: &str, text: &str) -> String {
    let file = env.path(name);
    fs::write(&file, text).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    file.to_str().unwrap().to_string()
}

fn add_host_key(env: &Env, host: &str) -> Value {
    let file = write_secret(env, &format!("{host}.key"), HOST_PASSPHRASE);
    serde_json::from_str(&env.ok(&[
        "--json",
        "key",
        "add",
        "--kind",
        "host",
        "--host",
        host,
        "--new-password-file",
        &file,
        "--kdf-memory-kib",
        "64",
    ]))
    .unwrap()
}

/// `drvault` as host `host` with its host key (its own state directory).
fn as_host(env: &Env, host: &str, args: &[&str]) -> Output {
    let out = env
        .host_cmd(host)
        .env("DRVAULT_PASSWORD", HOST_PASSPHRASE)
        .args(args)
        .output()
        .unwrap();
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !String::from_utf8_lossy(text).contains(HOST_PASSPHRASE),
            "the host key's passphrase leaked"
        );
    }
    out
}

fn host_ok(env: &Env, host: &str, args: &[&str]) -> String {
    let out = as_host(env, host, args);
    assert!(
        out.status.success(),
        "drvault {args:?} as {host} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn source(env: &Env, seed: u64) -> std::path::PathBuf {
    let src = env.path(&format!("src-{seed}"));
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("big"), noise(700_000, seed)).unwrap();
    fs::write(src.join("sub/small"), format!("small {seed}")).unwrap();
    src
}

#[test]
fn a_host_key_backs_up_deduplicated_and_opens_nothing() {
    let env = Env::new();
    env.init();
    let src = source(&env, 1);
    let src_arg = src.to_str().unwrap();
    // The full keys back the same data up first: the host stores none of it again.
    env.ok(&["backup", src_arg]);
    let added = add_host_key(&env, "web1");
    assert_eq!(added["label"], "web1", "{added}");
    let first: Value =
        serde_json::from_str(&host_ok(&env, "web1", &["--json", "backup", src_arg])).unwrap();
    assert!(
        first["bytes_added"].as_u64().unwrap() < 20_000,
        "deduplicated against what the full keys stored: {first}"
    );
    let id = first["id"].as_str().unwrap().to_string();

    // Nothing stored opens with the host key, and it says what to do (exit 21).
    let stolen = env.path("stolen");
    for args in [
        vec!["restore", "latest", "--target", stolen.to_str().unwrap()],
        vec!["ls", id.as_str()],
        vec!["dump", id.as_str(), "/"],
        vec!["check"],
        vec!["check", "--read-data"],
        vec!["key", "list"],
        vec!["key", "rotate"],
        vec!["key", "reencrypt"],
        vec!["audit", "verify"],
        vec!["stats"],
    ] {
        let out = as_host(&env, "web1", &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(code::NOT_PERMITTED),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains("host") && stderr.contains("passphrase"),
            "{args:?}: {stderr}"
        );
    }
    assert!(!stolen.exists() || drvault_tests::files_below(&stolen).is_empty());

    // `snapshots` lists only what this machine wrote, from its local catalog: not the full
    // keys' snapshot, and nothing on a machine whose catalog never saw a backup.
    let out = as_host(&env, "web1", &["--json", "snapshots"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("local catalog"));
    let own: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(own[0]["id"], id.as_str());
    assert_eq!(own[0]["written_by_host_key"], "web1");
    assert_eq!(own[0]["summary"]["bytes_added"], first["bytes_added"]);
    let elsewhere = env
        .host_cmd("web1-rebuilt")
        .env("DRVAULT_PASSWORD", HOST_PASSPHRASE)
        .args(["--json", "snapshots"])
        .output()
        .unwrap();
    assert_eq!(elsewhere.status.code(), Some(0));
    assert_eq!(
        serde_json::from_slice::<Vec<Value>>(&elsewhere.stdout).unwrap(),
        Vec::<Value>::new()
    );

    // The full keys read what the host wrote, and see which host key wrote it.
    let snaps = env.snapshots_json();
    let mine = snaps.iter().find(|s| s["id"] == id.as_str()).unwrap();
    assert_eq!(mine["written_by_host_key"], "web1", "{mine}");
    assert_eq!(mine["untrusted"], Value::Null, "{mine}");
    assert_eq!(mine["host"], "web1");
    env.restore_and_compare(&id, &src, "back");
    env.ok(&["check", "--read-data"]);
    let verified = env.ok(&["audit", "verify"]);
    assert!(verified.contains("intact"), "{verified}");
}

#[test]
fn a_snapshot_naming_another_host_is_flagged_and_restore_wants_trust_host() {
    let env = Env::new();
    env.init();
    add_host_key(&env, "web1");
    let src = source(&env, 2);
    let src_arg = src.to_str().unwrap();
    env.ok(&["backup", "--host", "db1", src_arg]);
    fs::write(src.join("sub/small"), b"planted by web1").unwrap();
    // The compromised web host writes a snapshot claiming to be db1's newest.
    let forged: Value = serde_json::from_str(&host_ok(
        &env,
        "web1",
        &["--json", "backup", "--host", "db1", src_arg],
    ))
    .unwrap();
    let forged_id = forged["id"].as_str().unwrap();

    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(code::INTEGRITY));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("claims host db1 but was written with host web1's key"),
        "{text}"
    );
    // "latest" of db1 passes over the forgery; naming it is refused without --trust-host.
    let back = env.path("back");
    env.ok(&[
        "restore",
        "latest",
        "--host",
        "db1",
        "--target",
        back.to_str().unwrap(),
    ]);
    let restored = drvault_tests::restored(&back, &src);
    assert_eq!(
        fs::read(restored.join("sub/small")).unwrap(),
        b"small 2",
        "the genuine snapshot, not the forgery"
    );
    let out = env.run(&[
        "restore",
        forged_id,
        "--target",
        env.path("b2").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(code::NOT_PERMITTED));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--trust-host"));
    env.ok(&[
        "restore",
        forged_id,
        "--trust-host",
        "--target",
        env.path("b3").to_str().unwrap(),
    ]);
}

#[test]
fn hosts_keep_backing_up_across_rotation_and_reencryption() {
    let env = Env::new();
    env.init();
    add_host_key(&env, "web1");
    let src = source(&env, 3);
    let src_arg = src.to_str().unwrap();
    host_ok(&env, "web1", &["backup", src_arg]);
    // A rotation with re-encryption retires the epoch the host sealed to; the host's next
    // backup seals to the new epoch's public key.
    env.ok(&["key", "rotate", "--reencrypt"]);
    fs::write(src.join("sub/small"), b"after the rotation").unwrap();
    let after: Value =
        serde_json::from_str(&host_ok(&env, "web1", &["--json", "backup", src_arg])).unwrap();
    env.restore_and_compare(after["id"].as_str().unwrap(), &src, "back");
    env.ok(&["check", "--read-data"]);
    let epochs = env.ok(&["key", "list"]);
    assert!(epochs.contains("host"), "{epochs}");

    // A new master key removes every other slot, host slots included, and the host key that
    // opened the host keyring: the stolen host key is useless from then on.
    env.ok(&["key", "rotate", "--master"]);
    let out = as_host(&env, "web1", &["backup", src_arg]);
    assert_eq!(
        out.status.code(),
        Some(code::WRONG_PASSWORD),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_version_1_repository_is_upgraded_in_place_resumably() {
    let env = Env::new();
    env.ok(&["init", "--kdf-memory-kib", "64", "--format-version", "1"]);
    let src = source(&env, 4);
    let src_arg = src.to_str().unwrap();
    env.ok(&["backup", src_arg]);
    fs::write(src.join("sub/small"), b"second").unwrap();
    env.ok(&["backup", src_arg]);
    env.ok(&["forget", "--keep-last", "1"]);
    env.ok(&["prune", "--grace", "1h"]); // leaves a prune mark to carry over

    // The first run stops hard after upgrading the keyring; the second finishes the rewrite.
    let dir = tempfile::tempdir().unwrap();
    let out = env
        .cmd()
        .env("DRVAULT_FAILPOINTS", "migrate.after-keyring=abort")
        .env("DRVAULT_FAILPOINT_DIR", dir.path())
        .args(["migrate"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the fail point stopped it");
    let second: Value = serde_json::from_str(&env.ok(&["--json", "migrate"])).unwrap();
    assert_eq!(second["keyring_upgraded"], false, "{second}");
    assert!(
        second["indexes_rewritten"].as_u64().unwrap() >= 2,
        "{second}"
    );
    assert_eq!(second["marks_rewritten"], 1, "{second}");
    let third: Value = serde_json::from_str(&env.ok(&["--json", "migrate"])).unwrap();
    assert_eq!(third["indexes_rewritten"], 0, "nothing left: {third}");

    // Hosts work on the upgraded repository, deduplicating against the old data.
    add_host_key(&env, "web1");
    let hosted: Value =
        serde_json::from_str(&host_ok(&env, "web1", &["--json", "backup", src_arg])).unwrap();
    assert!(hosted["bytes_added"].as_u64().unwrap() < 20_000, "{hosted}");
    env.restore_and_compare(hosted["id"].as_str().unwrap(), &src, "back");
    env.ok(&["prune", "--grace", "0s"]);
    env.ok(&["check", "--read-data"]);
    let verified = env.ok(&["audit", "verify"]);
    assert!(verified.contains("intact"), "{verified}");
}

/// The review's finding: every host holds the index key prune marks were sealed under, so a
/// host could plant a backdated mark and have the next prune delete packs a snapshot uses.
/// Marks now carry an authentication only full keys make: prune refuses to run, naming it, and
/// deletes nothing.
#[test]
fn a_prune_mark_planted_with_a_host_key_deletes_nothing() {
    use drvault_keyring::{Credential, ObjectKind};
    use drvault_repo::format::{PruneMark, RepoFile};
    use drvault_repo::{store::Store, Id, Repository};

    let env = Env::new();
    env.init();
    add_host_key(&env, "web1");
    let src = source(&env, 5);
    env.ok(&["backup", src.to_str().unwrap()]);
    let packs: Vec<Id> = drvault_tests::files_below(&env.repo().join("data"))
        .iter()
        .map(|p| Id::from_hex(p.file_name().unwrap().to_str().unwrap()).unwrap())
        .collect();
    assert!(!packs.is_empty());

    // The host seals a mark listing every pack, a year old.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Store::open(env.repo().to_str().unwrap(), false).unwrap();
    let repo = rt
        .block_on(Repository::open(
            store,
            &Credential::passphrase(HOST_PASSPHRASE.as_bytes()),
            None,
        ))
        .unwrap();
    assert_eq!(repo.opened_by_host(), Some("web1"));
    let mark = PruneMark {
        version: drvault_repo::format::PRUNE_MARK_VERSION,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            - 365 * 86_400,
        packs: packs.clone(),
    };
    let (kind, sealer) = repo.keys().sealer_for(ObjectKind::PruneMark).unwrap();
    assert_eq!(kind, ObjectKind::SharedPruneMark, "hosts can seal marks");
    let mut sealed = Vec::new();
    sealer
        .seal(kind, false, b"", &RepoFile::encode(&mark), &mut sealed)
        .unwrap();
    let name = Id::of_stored(&sealed).to_hex();
    fs::create_dir_all(env.repo().join("prune")).unwrap();
    fs::write(env.repo().join("prune").join(&name), &sealed).unwrap();

    let out = env.run(&["prune", "--grace", "0s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code::INTEGRITY), "{stderr}");
    assert!(
        stderr.contains(&name) && stderr.contains("full keys"),
        "{stderr}"
    );
    for p in &packs {
        let hex = p.to_hex();
        assert!(
            env.repo().join("data").join(&hex[..2]).join(&hex).exists(),
            "pack {hex} was deleted"
        );
    }
    fs::remove_file(env.repo().join("prune").join(&name)).unwrap();
    env.restore_and_compare("latest", &src, "back");
    env.ok(&["check", "--read-data"]);
}

/// A host key's forgery naming another host takes no part in retention: `--keep-last 1` keeps
/// the real snapshot of that host, not the newer forgery.
#[test]
fn a_forged_snapshot_does_not_push_a_hosts_real_snapshots_out_of_retention() {
    let env = Env::new();
    env.init();
    add_host_key(&env, "web1");
    let src = source(&env, 6);
    let src_arg = src.to_str().unwrap();
    let real: Value =
        serde_json::from_str(&env.ok(&["--json", "backup", "--host", "db1", src_arg])).unwrap();
    host_ok(&env, "web1", &["backup", "--host", "db1", src_arg]);
    env.ok(&["forget", "--host", "db1", "--keep-last", "1"]);
    let ids: Vec<String> = serde_json::from_str::<Value>(
        &String::from_utf8(env.run(&["--json", "snapshots"]).stdout).unwrap(),
    )
    .unwrap()
    .as_array()
    .unwrap()
    .iter()
    .map(|s| s["id"].as_str().unwrap().to_string())
    .collect();
    assert!(
        ids.contains(&real["id"].as_str().unwrap().to_string()),
        "{ids:?}"
    );
    // Nor can the forgery be retagged into one the full keys vouch for.
    let forged = ids
        .iter()
        .find(|i| **i != real["id"].as_str().unwrap())
        .unwrap();
    let out = env.run(&["tag", forged, "--add", "ok"]);
    assert_eq!(out.status.code(), Some(code::NOT_PERMITTED));
}
