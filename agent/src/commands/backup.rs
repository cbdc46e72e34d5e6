use anyhow::Result;

use crate::backup::{self, BackupRequest, StreamRequest, StreamSource};
use crate::cli::{BackupArgs, Global};
use crate::context::Context;
use crate::exit::Exit;

/// A finished backup: the snapshot, and the objects each target missed.
pub struct Done {
    pub outcome: backup::BackupOutcome,
    pub owed: std::collections::BTreeMap<String, u64>,
}

pub fn run(ctx: &Context, g: &Global, a: &BackupArgs) -> Result<Exit> {
    stop_on_signals(ctx);
    let Done { outcome: out, owed } = backup_once(ctx, g, a)?;
    let s = &out.snapshot.summary;
    if g.json {
        outln!(
            "{}",
            serde_json::json!({
                "id": out.id.to_hex(), "short_id": out.id.short(), "parent": out.snapshot.parent.map(|p| p.to_hex()),
                "files_new": s.files_new, "files_changed": s.files_changed, "files_unchanged": s.files_unchanged,
                "dirs": s.dirs, "other_entries": s.other_entries, "bytes_read": s.bytes_read, "bytes_total": s.bytes_total,
                "bytes_added": s.bytes_added, "blobs_added": s.blobs_added, "errors": s.errors, "duration_ms": s.duration_ms,
                "owed": owed,
            })
        );
    } else if !g.quiet {
        outln!("snapshot {} saved", out.id.short());
        outln!(
            "files: {} new, {} changed, {} unchanged; {} directories, {} other entries",
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            s.dirs,
            s.other_entries
        );
        outln!(
            "read {} of {}, added {} to the repository in {:.2} s",
            super::human(s.bytes_read),
            super::human(s.bytes_total),
            super::human(s.bytes_added),
            s.duration_ms as f64 / 1000.0
        );
        if s.errors > 0 {
            outln!(
                "{} entries could not be read (see the warnings above); the snapshot lacks them",
                s.errors
            );
        }
    }
    Ok(if s.errors > 0 {
        Exit::Partial
    } else {
        Exit::Ok
    })
}

/// Ctrl-C or SIGTERM stops the backup at a clean point (what was uploaded is indexed, so the
/// next backup continues from it); a second one ends the process at once.
fn stop_on_signals(ctx: &Context) {
    use tokio::signal::unix::{signal, SignalKind};
    ctx.rt.spawn(async {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        for n in 0.. {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if n > 0 {
                std::process::exit(130);
            }
            eprintln!("drvault: stopping at the next clean point (again to stop at once)");
            crate::stop::request();
        }
    });
}

/// Runs one backup (creating the repository first with `--init`); prints nothing on stdout.
pub fn backup_once(ctx: &Context, g: &Global, a: &BackupArgs) -> Result<Done> {
    let stream = a.stdin || a.stdin_from_command;
    if stream {
        if let Err(e) = backup::filename_components(&a.stdin_filename) {
            crate::exit::usage!("{e}");
        }
    }
    // A path given that is not there (an unmounted volume, a typo) fails the backup before
    // anything is written: an empty snapshot would become "latest" and count for --keep-last.
    for p in a.paths.iter().filter(|_| !stream) {
        if let Err(e) = std::fs::symlink_metadata(p) {
            anyhow::bail!(
                "cannot back up {}: {e}; no snapshot was made (is the volume mounted, the path \
                 spelt right?)",
                drvault_repo::printable::path(p)
            );
        }
    }
    if a.init && !repository_exists(ctx)? {
        let (_, recovery) = super::init::init(
            ctx,
            g,
            None,
            drvault_repo::repository::InitOptions::default().compression_level,
        )?;
        if !g.json && !g.quiet {
            eprintln!("created repository at {}", ctx.repo_location);
            eprintln!("recovery key (shown once: store it offline; it opens the repository like the passphrase):");
            eprintln!("  {}", recovery.as_str());
        }
    }
    let repo = ctx.open_without_index(g)?;
    let host = a.host.clone().unwrap_or_else(drvault_repo::host::hostname);
    let snaps = ctx.rt.block_on(repo.snapshots())?;
    let parent = match &a.parent {
        Some(spec) => {
            let s = drvault_restore::SnapshotSpec {
                id: Some(spec.clone()),
                ..Default::default()
            };
            Some(drvault_restore::select_snapshot(&snaps, &s)?.0)
        }
        None => {
            // The latest snapshot of this host with the same paths.
            let mut want: Vec<Vec<u8>> = if stream {
                let name = a.stdin_filename.trim_start_matches('/');
                vec![format!("/{name}").into_bytes()]
            } else {
                a.paths
                    .iter()
                    .filter_map(|p| std::path::absolute(p).ok())
                    .map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
                    .collect()
            };
            want.sort();
            want.dedup();
            snaps
                .iter()
                .rev()
                .find(|(_, s)| s.host == host && s.paths == want)
                .map(|(id, _)| *id)
        }
    };
    // The session protocol (session, then marks, then index) is the library's; a rotation
    // since the opening means opening again, once.
    let mut repo = repo;
    let session = match ctx.rt.block_on(repo.begin_backup()) {
        Err(drvault_repo::Error::KeyringChanged) => {
            repo = ctx.open_without_index(g)?;
            ctx.rt.block_on(repo.begin_backup())?
        }
        other => other?,
    };
    let out = if stream {
        let source = if a.stdin {
            StreamSource::Stdin
        } else {
            StreamSource::Command {
                argv: a.paths.iter().map(|p| p.clone().into_os_string()).collect(),
                env: a.command_env.clone(),
            }
        };
        let req = StreamRequest {
            source,
            filename: a.stdin_filename.clone(),
            tags: a.tags.clone(),
            parent,
            host,
        };
        backup::run_stream(&ctx.rt, repo.clone(), &session, req)
    } else {
        let req = BackupRequest {
            paths: a.paths.clone(),
            tags: a.tags.clone(),
            excludes: a.excludes.clone(),
            one_file_system: a.one_file_system,
            parent,
            host,
        };
        backup::run(&ctx.rt, repo.clone(), &session, req)
    };
    ctx.rt.block_on(session.end(repo.store()));
    let out = out?;
    let owed = ctx.rt.block_on(repo.remember_owed());
    for (target, n) in &owed {
        eprintln!(
            "drvault: target {target} missed {n} objects (the write quorum holds them); \
             run `drvault sync` once it is back"
        );
    }
    Ok(Done { outcome: out, owed })
}

/// True when the repository's `config` object can be read; false only when it is known to be
/// absent (an unreachable target is an error, not a reason to create a repository).
fn repository_exists(ctx: &Context) -> Result<bool> {
    let Ok(store) = ctx.store(false) else {
        return Ok(false);
    };
    match ctx
        .rt
        .block_on(store.get(drvault_repo::format::paths::CONFIG))
    {
        Ok(_) => Ok(true),
        Err(drvault_repo::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
