//! `drvault mount MOUNTPOINT`: the snapshots as a read-only file system until Ctrl-C, SIGTERM or
//! `umount` (the engine is `drvault_restore::mount`).

use anyhow::{Context as _, Result};
use drvault_restore::mount::{Mount, MountOptions};

use crate::cli::{Global, MountArgs};
use crate::context::Context;
use crate::exit::{usage, Exit};

pub fn run(ctx: &Context, g: &Global, a: &MountArgs) -> Result<Exit> {
    match std::fs::metadata(&a.mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => usage!(
            "{} is not a directory: name an empty directory to mount on",
            a.mountpoint.display()
        ),
        Err(e) => usage!(
            "cannot mount on {}: {e}; create an empty directory first",
            a.mountpoint.display()
        ),
    }
    let repo = ctx.open(g)?;
    let snaps = ctx.rt.block_on(repo.snapshots())?;
    let filter = super::restore::spec(None, None, &a.filter);
    let chosen: Vec<_> = snaps
        .into_iter()
        .filter(|(_, s)| filter.admits(s))
        .collect();
    let opts = MountOptions {
        allow_other: a.allow_other,
        cache_bytes: a.cache_mib.max(8) << 20,
    };
    let mut mount = Mount::new(
        repo.clone(),
        ctx.rt.handle().clone(),
        &chosen,
        &a.mountpoint,
        &opts,
    )
    .with_context(|| {
        format!(
            "cannot mount on {} (is /dev/fuse there, and fuse3's fusermount3 installed when not \
             root?)",
            a.mountpoint.display()
        )
    })?;
    // Ctrl-C or SIGTERM unmounts; `run` then returns.
    let mut unmounter = mount.unmounter();
    ctx.rt.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        if let Err(e) = unmounter.unmount() {
            eprintln!("drvault: cannot unmount: {e} (close what uses it, then `umount` it)");
        }
    });
    if !g.quiet {
        eprintln!(
            "mounted {} at {}; Ctrl-C, SIGTERM or `umount {}` ends it",
            crate::text::plural(chosen.len() as u64, "snapshot"),
            a.mountpoint.display(),
            a.mountpoint.display()
        );
    }
    mount.run().context("the mount ended with an error")?;
    Ok(Exit::Ok)
}
