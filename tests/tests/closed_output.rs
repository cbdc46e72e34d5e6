//! Every command ends quietly, with its usual status, when its standard output is closed
//! (`drvault ls latest | head -3`).
#![allow(clippy::unwrap_used)]

use std::process::Stdio;

use drvault_tests::Env;

/// Runs `args` with standard output a pipe whose reading end is already closed: every write
/// fails with EPIPE.
fn with_closed_stdout(env: &Env, args: &[&str]) -> std::process::Output {
    let (read, write) = rustix::pipe::pipe().unwrap();
    drop(read);
    let mut cmd = env.cmd();
    cmd.args(args)
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped());
    cmd.output().unwrap()
}

#[test]
fn commands_end_quietly_when_their_output_is_closed() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for d in 0..20 {
        std::fs::create_dir_all(src.join(format!("dir{d}"))).unwrap();
        for f in 0..100 {
            std::fs::write(src.join(format!("dir{d}/file-with-a-long-name-{f}")), b"x").unwrap();
        }
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    for args in [
        &["ls", "latest"][..],
        &["--json", "ls", "latest"],
        &["snapshots"],
        &["--json", "snapshots"],
        &["key", "list"],
        &["targets"],
        &["check"],
        &["audit", "log"],
        &["completions", "bash"],
        &["jobs"],
        &["--json", "jobs"],
        &["forget", "--keep-last", "5", "--dry-run"],
    ] {
        let out = with_closed_stdout(&env, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "drvault {args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "drvault {args:?} ends quietly: {stderr}"
        );
    }
}

#[test]
fn names_with_control_characters_are_escaped_in_listings_and_warnings() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let evil = "report\u{1b}]0;owned\u{7}\u{1b}[2J.txt";
    std::fs::write(src.join(evil), b"x").unwrap();
    let device = drvault_tests::is_root()
        && rustix::fs::mknodat(
            rustix::fs::CWD,
            src.join("null\u{1b}[31m"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            rustix::fs::makedev(1, 3),
        )
        .is_ok();
    env.ok(&["backup", src.to_str().unwrap()]);
    let listing = env.ok(&["ls", "latest"]);
    assert!(!listing.contains('\u{1b}'), "{listing:?}");
    assert!(
        listing.contains("report\\u{1b}]0;owned\\u{7}"),
        "{listing:?}"
    );
    if device {
        let target = env.path("target");
        let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("null\\u{1b}[31m"), "{stderr:?}");
        assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    }
}
