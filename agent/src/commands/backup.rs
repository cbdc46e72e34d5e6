use anyhow::Result;
use drvault_backup::{BackupRequest, Controls, Parent, Source, StreamSource};

use crate::cli::{BackupArgs, Global};
use crate::context::Context;
use crate::exit::Exit;

pub fn run(ctx: &Context, g: &Global, a: &BackupArgs) -> Result<Exit> {
    let source = source(a)?;
    // A path that is not there (an unmounted volume, a typo) is refused before a repository is
    // created or the passphrase asked for.
    drvault_backup::check_request(&source)?;
    if a.init && !repository_exists(ctx)? {
        let (_, recovery) = super::init::init(
            ctx,
            g,
            None,
            drvault_repo::repository::InitOptions::default().compression_level,
            true,
        )?;
        if !g.json && !g.quiet {
            eprintln!("created repository at {}", ctx.repo_location);
            eprintln!("recovery key (shown once: store it offline; it opens the repository like the passphrase):");
            eprintln!("  {}", recovery.as_str());
        }
    }
    let repo = ctx.open_without_index(g)?;
    // After the passphrase prompt: Ctrl-C at the prompt ends the process at once.
    crate::stop::on_signals(&ctx.rt);
    let req = request(ctx, &repo, a, source)?;
    let progress = crate::backup_progress::Progress::on_terminal()
        .map(|p| Box::new(p) as Box<dyn drvault_backup::Progress>);
    let mut controls = Controls {
        cancel: crate::stop::token(),
        progress,
    };
    let out = ctx.backup(g, &req, &mut controls, Some(repo))?;
    let owed = &out.owed;
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
                "audit_entry": out.snapshot.audit.map(|a| a.seq),
                "audit_unrecorded": out.unrecorded,
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
    if let Some(why) = &out.unrecorded {
        eprintln!(
            "snapshot {} is saved, but the audit log did not record its commit ({why}); `drvault \
             audit verify` counts it as unanchored",
            out.id.short()
        );
    }
    Ok(if s.errors > 0 || out.unrecorded.is_some() {
        Exit::Partial
    } else {
        Exit::Ok
    })
}

/// What the arguments say to back up.
fn source(a: &BackupArgs) -> Result<Source> {
    let stream = a.stdin || a.stdin_from_command;
    if stream {
        if let Err(e) = drvault_backup::filename_components(&a.stdin_filename) {
            crate::exit::usage!("{e}");
        }
    }
    Ok(if stream {
        Source::Stream {
            source: if a.stdin {
                StreamSource::Stdin
            } else {
                StreamSource::Command {
                    argv: a.paths.iter().map(|p| p.clone().into_os_string()).collect(),
                    env: a.command_env.clone(),
                }
            },
            filename: a.stdin_filename.clone(),
        }
    } else {
        Source::Paths {
            paths: a.paths.clone(),
            excludes: a.excludes.clone(),
            one_file_system: a.one_file_system,
        }
    })
}

/// The typed request the arguments stand for (`--parent` resolved to a snapshot ID in the
/// repository already opened).
fn request(
    ctx: &Context,
    repo: &drvault_repo::Repository,
    a: &BackupArgs,
    source: Source,
) -> Result<BackupRequest> {
    let parent = match &a.parent {
        Some(spec) => {
            let snaps = ctx.rt.block_on(repo.snapshots())?;
            let s = drvault_restore::SnapshotSpec {
                id: Some(spec.clone()),
                ..Default::default()
            };
            Parent::Snapshot(drvault_restore::select_snapshot(&snaps, &s)?.0)
        }
        None => Parent::Latest,
    };
    Ok(BackupRequest {
        source,
        tags: a.tags.clone(),
        parent,
        // A host key backs up as its own host unless told otherwise (another name is written,
        // and `snapshots` flags it: the proof names the key's host).
        host: a.host.clone().unwrap_or_else(|| {
            repo.opened_by_host()
                .map_or_else(drvault_repo::host::hostname, str::to_string)
        }),
    })
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
