//! Restores under pressure (issue "Restores that work under pressure"): what an incident brings
//! — damaged data, a crash, a slip of the keyboard — never ends in a restore that looks complete
//! and is not, or a success that did not happen.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use drvault_tests::{code, files_below, noise, restored, text, Env};

/// 40 files of incompressible data, each its own blob.
fn forty_files(env: &Env) -> PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..40u64 {
        let dir = if i % 2 == 0 {
            src.clone()
        } else {
            src.join("sub")
        };
        fs::write(dir.join(format!("f{i:02}")), noise(96 * 1024, 100 + i)).unwrap();
    }
    src
}

/// Flips one byte in the middle of each of the repository's data packs' largest.
fn damage_largest_pack(env: &Env) {
    let pack = files_below(&env.repo().join("data"))
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&pack, &bytes).unwrap();
}

/// Every file below `dir` whose name is a restore's temporary name.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    files_below(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".drvault-restore-")
        })
        .collect()
}

#[test]
fn a_damaged_blob_loses_only_its_file_and_names_it() {
    let env = Env::new();
    env.init();
    let src = forty_files(&env);
    env.ok(&["backup", src.to_str().unwrap()]);
    damage_largest_pack(&env);

    let target = env.path("t");
    let out = env.run(&[
        "--json",
        "restore",
        "latest",
        "--verify",
        "--target",
        target.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code::INTEGRITY), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["complete"], false);
    let damaged = report["damaged"].as_array().unwrap();
    assert!(!damaged.is_empty(), "{report}");
    let damaged_paths: Vec<String> = damaged
        .iter()
        .map(|d| d["path"].as_str().unwrap().to_string())
        .collect();

    // Every other file is restored intact; no damaged one is left under its name, or at all.
    let got = restored(&target, &src);
    let mut intact = 0;
    for f in files_below(&src) {
        let rel = f.strip_prefix(&src).unwrap();
        let at = got.join(rel);
        let listed = damaged_paths.iter().any(|p| Path::new(p) == at);
        if listed {
            assert!(
                !at.exists(),
                "{} is damaged yet left in place",
                at.display()
            );
            assert!(stderr.contains(&*at.to_string_lossy()), "named: {stderr}");
        } else {
            assert_eq!(fs::read(&f).unwrap(), fs::read(&at).unwrap(), "{rel:?}");
            intact += 1;
        }
    }
    assert_eq!(intact + damaged_paths.len(), 40);
    assert!(temporaries(&target).is_empty());
    // Each damaged file names the byte range lost and why.
    for d in damaged {
        let ranges = d["ranges"].as_array().unwrap();
        assert_eq!(ranges.len(), 1, "{d}");
        assert_eq!(ranges[0][0], 0);
        assert_eq!(ranges[0][1], 96 * 1024);
        assert!(d["reason"].as_str().unwrap().contains("integrity"), "{d}");
    }
    assert_eq!(report["files"], 40 - damaged_paths.len());
    assert!(stderr.contains("NOT restored"), "{stderr}");
}

#[test]
fn a_restore_killed_midway_leaves_no_file_under_its_final_name() {
    let env = Env::new();
    env.init();
    let src = forty_files(&env);
    env.ok(&["backup", src.to_str().unwrap()]);
    let target = env.path("t");
    let out = env
        .cmd()
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        // Killed as the first complete file is about to take its name: files are created and
        // written pack by pack, so some exist by then, all under temporary names.
        .env("DRVAULT_FAILPOINTS", "restore.before-install=abort")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let got = restored(&target, &src);
    for f in files_below(&src) {
        let at = got.join(f.strip_prefix(&src).unwrap());
        assert!(
            !at.exists(),
            "{} looks restored after a crash",
            at.display()
        );
    }
    assert!(!temporaries(&target).is_empty());
    // Run again: the restore completes and leaves its own temporaries' names alone.
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    for f in files_below(&src) {
        let at = got.join(f.strip_prefix(&src).unwrap());
        assert_eq!(fs::read(&f).unwrap(), fs::read(&at).unwrap());
    }
}

#[test]
fn an_include_that_matches_nothing_is_an_error_naming_the_snapshot() {
    let env = Env::new();
    env.init();
    let etc = env.path("etc");
    let home = env.path("home");
    fs::create_dir_all(&etc).unwrap();
    fs::create_dir_all(&home).unwrap();
    fs::write(etc.join("hosts"), b"127.0.0.1 localhost\n").unwrap();
    fs::write(home.join("notes"), b"home\n").unwrap();
    env.ok(&["backup", home.to_str().unwrap()]);
    env.ok(&["backup", etc.to_str().unwrap()]);
    let target = env.path("t");
    let t = target.to_str().unwrap();

    let missing = format!("{}/nothing-here", etc.display());
    let out = env.run(&["restore", "latest", "--include", &missing, "--target", t]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code::USAGE), "{stderr}");
    assert!(stderr.contains("matches nothing"), "{stderr}");
    assert!(
        stderr.contains(&*etc.to_string_lossy()),
        "names the paths: {stderr}"
    );
    // "latest" of /home is the /etc snapshot: the include says so.
    let out = env.run(&[
        "restore",
        "latest",
        "--include",
        home.to_str().unwrap(),
        "--target",
        t,
    ]);
    assert_eq!(
        out.status.code(),
        Some(code::USAGE),
        "{}",
        text(&out.stderr)
    );
    // A relative include and a glob match nothing either.
    for inc in ["home/notes", "/*/notes"] {
        let out = env.run(&["restore", "latest", "--include", inc, "--target", t]);
        assert_eq!(
            out.status.code(),
            Some(code::USAGE),
            "{inc}: {}",
            text(&out.stderr)
        );
    }
    assert!(!target.join(home.strip_prefix("/").unwrap()).exists());
    // A pattern matches one name per component, as in the shell.
    let pattern = format!("{}/h*s", etc.display());
    env.ok(&["restore", "latest", "--include", &pattern, "--target", t]);
    assert_eq!(
        fs::read(restored(&target, &etc).join("hosts")).unwrap(),
        b"127.0.0.1 localhost\n"
    );
    let nothing = format!("{}/x*", etc.display());
    let out = env.run(&["restore", "latest", "--include", &nothing, "--target", t]);
    assert_eq!(out.status.code(), Some(code::USAGE));

    // --path selects the newest snapshot of that path.
    env.ok(&[
        "restore",
        "latest",
        "--path",
        home.to_str().unwrap(),
        "--include",
        home.to_str().unwrap(),
        "--target",
        t,
    ]);
    assert_eq!(
        fs::read(restored(&target, &home).join("notes")).unwrap(),
        b"home\n"
    );
    let out = env.run(&["restore", "latest", "--tag", "nope", "--target", t]);
    assert_eq!(out.status.code(), Some(code::USAGE));
    assert!(
        text(&out.stderr).contains("tagged nope"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn ls_json_is_one_document_and_ls_names_what_is_missing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/file"), b"x").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "ls", "latest"])).unwrap();
    let entries = v["entries"].as_array().unwrap();
    assert!(entries
        .iter()
        .any(|e| e["path"].as_str().unwrap().ends_with("/d/file")));
    // One file: the file itself.
    let file = format!("{}/d/file", src.display());
    let one = env.ok(&["ls", "latest", &file]);
    assert_eq!(one.lines().count(), 1, "{one}");
    assert!(one.contains(&file));
    let out = env.run(&["ls", "latest", &format!("{}/nope", src.display())]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("is not in snapshot") && stderr.contains(&*src.to_string_lossy()),
        "{stderr}"
    );
    let out = env.run(&["ls", ""]);
    assert_eq!(out.status.code(), Some(code::FAILURE));
    assert!(
        text(&out.stderr).contains("give an ID"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_typo_in_an_unrelated_config_section_does_not_block_a_restore() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let config = env.path("drvault.toml");
    let targets = format!(
        "[[targets]]\nname = \"local\"\nurl = \"file://{}\"\n",
        env.repo().display()
    );
    // `pathz`: a typo in a job; `schedule`: a unit spelt out.
    fs::write(
        &config,
        format!(
            "{targets}[[jobs]]\nname = \"etc\"\nkind = \"backup\"\npathz = [\"/etc\"]\nschedule = \"daily\"\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(drvault_tests::drvault_bin())
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(env.state())
            .args(args)
            .env("DRVAULT_PASSWORD", drvault_tests::PASSWORD)
            .env_remove("DRVAULT_REPO")
            .output()
            .unwrap()
    };
    let t = env.path("t");
    for args in [
        &["snapshots"][..],
        &["ls", "latest"],
        &["restore", "latest", "--target", t.to_str().unwrap()],
    ] {
        let out = run(args);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains("[jobs]") && stderr.contains("pathz"),
            "{stderr}"
        );
    }
    assert_eq!(fs::read(restored(&t, &src).join("a")).unwrap(), b"a");
    // The agent, which uses the section, stays strict.
    let out = run(&["agent", "--print-schedule"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("pathz"), "{}", text(&out.stderr));
    // A misspelt section name would send the command to the default repository: an error.
    fs::write(&config, targets.replace("[[targets]]", "[[target]]")).unwrap();
    let out = run(&["snapshots"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown section [target]"),
        "{}",
        text(&out.stderr)
    );
    // A broken storage section still stops a command that needs it...
    fs::write(&config, "[[targets]]\nname = \"local\"\nurll = \"x\"\n").unwrap();
    let out = run(&["snapshots"]);
    assert!(!out.status.success());
    // ...but not one given --repo, which does not read the targets.
    fs::write(&config, "this is [not toml").unwrap();
    let out = env
        .cmd()
        .arg("--config")
        .arg(&config)
        .arg("snapshots")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not valid TOML"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn jobs_with_repo_shows_only_that_repositorys_runs() {
    let env = Env::new();
    // The history file, created with its schema by drvault itself.
    env.ok(&["jobs"]);
    let db = rusqlite::Connection::open(env.state().join("jobs.sqlite")).unwrap();
    for (job, repo) in [
        ("mine", env.repo().display().to_string()),
        ("other", "/srv/elsewhere".into()),
    ] {
        db.execute(
            "INSERT INTO job_runs (job, kind, host, started, ended, result, repository)
             VALUES (?1, 'backup', 'h', 100.0, 101.0, 'success', ?2)",
            rusqlite::params![job, repo],
        )
        .unwrap();
    }
    drop(db);
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "jobs"])).unwrap();
    let jobs: Vec<&str> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["job"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, ["mine"], "Env::cmd passes --repo: only its runs");
    let all = std::process::Command::new(drvault_tests::drvault_bin())
        .args(["--json", "--state-dir"])
        .arg(env.state())
        .arg("jobs")
        .env_remove("DRVAULT_REPO")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&all.stdout).unwrap();
    assert_eq!(
        v["runs"].as_array().unwrap().len(),
        2,
        "without --repo: every run"
    );
}

#[test]
fn a_damaged_directory_listing_loses_only_that_directory() {
    use drvault_repo::format::paths;
    let env = Env::new();
    env.init();
    let src = env.path("src");
    // Different contents: identical directories would share one tree blob.
    for (d, seed) in [("keep", 0u64), ("lost", 10)] {
        fs::create_dir_all(src.join(d)).unwrap();
        for i in 0..3u64 {
            fs::write(src.join(d).join(format!("f{i}")), noise(2000, seed + i)).unwrap();
        }
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    // Find the tree blob of src/lost and flip a byte inside it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = drvault_repo::store::Store::open(env.repo().to_str().unwrap(), false).unwrap();
    let repo = rt
        .block_on(drvault_repo::Repository::open(
            store,
            &drvault_keyring::Credential::passphrase(drvault_tests::PASSWORD.as_bytes()),
            None,
        ))
        .unwrap();
    let snaps = rt.block_on(repo.snapshots()).unwrap();
    let mut tree = snaps[0].1.tree;
    let mut comps: Vec<&[u8]> = src
        .to_str()
        .unwrap()
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::as_bytes)
        .collect();
    comps.push(b"lost");
    for c in comps {
        let t = rt.block_on(repo.load_tree(&tree)).unwrap();
        tree = t
            .entries
            .iter()
            .find(|n| n.name == c)
            .and_then(|n| n.subtree)
            .unwrap();
    }
    let loc = repo.locate(&tree).unwrap();
    let pack = env.repo().join(paths::pack(&loc.pack));
    let mut bytes = fs::read(&pack).unwrap();
    let at = loc.entry.offset as usize + loc.entry.length as usize / 2;
    bytes[at] ^= 0x10;
    fs::write(&pack, bytes).unwrap();
    drop(repo);

    let target = env.path("t");
    let out = env.run(&[
        "--json",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(code::INTEGRITY),
        "{}",
        text(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let damaged = report["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{report}");
    assert!(damaged[0]["path"].as_str().unwrap().ends_with("/src/lost"));
    assert!(damaged[0]["reason"].as_str().unwrap().contains("listing"));
    let got = restored(&target, &src);
    assert!(
        !got.join("lost").exists(),
        "no empty directory that looks restored"
    );
    for i in 0..3u64 {
        assert_eq!(
            fs::read(got.join(format!("keep/f{i}"))).unwrap(),
            noise(2000, i)
        );
    }
    // --delete never takes the copy already in the target of a directory whose listing is lost
    // (its name is the snapshot's, even though its contents cannot be read).
    fs::create_dir_all(got.join("lost")).unwrap();
    fs::write(got.join("lost/mine"), b"the only copy left").unwrap();
    fs::write(got.join("extra"), b"x").unwrap();
    let out = env.run(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--delete",
    ]);
    assert_eq!(
        out.status.code(),
        Some(code::INTEGRITY),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        fs::read(got.join("lost/mine")).unwrap(),
        b"the only copy left"
    );
    assert!(
        !got.join("extra").exists(),
        "what the snapshot lacks still goes"
    );
}

#[test]
fn a_backup_stopped_by_sigint_exits_130() {
    let env = Env::new();
    env.init();
    let src = forty_files(&env);
    let mut cmd = env.cmd();
    cmd.args(["backup", src.to_str().unwrap()]);
    let paused =
        drvault_tests::failpoints::start_paused(cmd, &env.path("fp"), "backup.before-open");
    let pid = paused.pid();
    let ok = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    // Give the handler a moment to note the request before the walk goes on.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = paused
        .resume_within(std::time::Duration::from_secs(120))
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(code::INTERRUPTED),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn backing_up_root_with_one_file_system_keeps_the_other_paths_given() {
    use std::os::unix::fs::MetadataExt;
    // `-x / /dev`: /dev is another file system, given explicitly. It used to be dropped ("/"
    // returned the walk of / alone). Everything at the top but /etc and /dev is excluded to
    // keep the test small.
    let (root_dev, dev_dev) = (
        fs::metadata("/").unwrap().dev(),
        fs::metadata("/dev").unwrap().dev(),
    );
    if root_dev == dev_dev {
        eprintln!("skipped: /dev is not a file system of its own here");
        return;
    }
    let env = Env::new();
    env.init();
    let mut args: Vec<String> = vec!["backup".into(), "-x".into(), "/".into(), "/dev".into()];
    for e in fs::read_dir("/").unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name != "etc" && name != "dev" {
            args.push("--exclude".into());
            args.push(format!("/{name}"));
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.run(&args);
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "{}",
        text(&out.stderr)
    );
    let listing = env.ok(&["ls", "latest", "/dev/null"]);
    assert!(
        listing.starts_with('c'),
        "/dev/null is in the snapshot: {listing}"
    );
    assert!(env
        .ok(&["ls", "latest", "/etc/passwd"])
        .contains("/etc/passwd"));
    // -x still keeps other file systems below "/" out: /proc is excluded anyway, and /etc is
    // the root's own.
    let out = env.run(&["backup", "/", "/etc/ssh"]);
    assert_eq!(out.status.code(), Some(code::USAGE));
    assert!(
        text(&out.stderr).contains("top-level"),
        "{}",
        text(&out.stderr)
    );
}
