//! Named fail points for the interleaving tests, compiled in only with the `failpoints`
//! feature (the test builds); without it [`hit`] is an empty inline function.
//!
//! `DRVAULT_FAILPOINTS` lists `name=action` pairs separated by `;`. Actions:
//! - `pause`: create `<DRVAULT_FAILPOINT_DIR>/<name>.reached`, then wait until
//!   `<DRVAULT_FAILPOINT_DIR>/<name>.resume` exists (the test runs another operation meanwhile);
//! - `abort`: end the process at once, as `kill -9` would (no destructors, no cleanup);
//! - `panic`: panic on the calling thread (a bug's stand-in, for the agent's job isolation).
//!
//! A point pauses or aborts the first time it is reached in the process; later hits pass.

/// Reached a named point of a protocol (see the module documentation).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub async fn hit(_name: &str) {}

#[cfg(feature = "failpoints")]
pub async fn hit(name: &str) {
    if let Some(resume) = act(name) {
        while !resume.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// [`hit`] for synchronous code on a plain thread (the restore, the backup's readers).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit_blocking(_name: &str) {}

#[cfg(feature = "failpoints")]
pub fn hit_blocking(name: &str) {
    if let Some(resume) = act(name) {
        while !resume.exists() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Carries out the point's action: aborts, or announces the pause and returns the file whose
/// existence ends it.
#[cfg(feature = "failpoints")]
fn act(name: &str) -> Option<std::path::PathBuf> {
    match armed(name)?.as_str() {
        "abort" => {
            eprintln!("drvault: fail point {name}: aborting");
            std::process::abort();
        }
        "panic" => panic!("fail point {name}: panicking"),
        "pause" => {
            let dir = std::path::PathBuf::from(std::env::var_os("DRVAULT_FAILPOINT_DIR")?);
            let _ = std::fs::write(dir.join(format!("{name}.reached")), b"");
            Some(dir.join(format!("{name}.resume")))
        }
        _ => None,
    }
}

/// The action for `name`, once per process.
#[cfg(feature = "failpoints")]
fn armed(name: &str) -> Option<String> {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static FIRED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let spec = std::env::var("DRVAULT_FAILPOINTS").ok()?;
    let action = spec.split(';').find_map(|pair| {
        let (n, a) = pair.split_once('=')?;
        (n.trim() == name).then(|| a.trim().to_string())
    })?;
    let mut fired = FIRED.lock().ok()?;
    fired
        .get_or_insert_with(HashSet::new)
        .insert(name.to_string())
        .then_some(action)
}
