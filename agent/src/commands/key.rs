//! `drvault key ...`: slots, epochs, rotation and re-encryption.

use std::io::IsTerminal;

use anyhow::Result;
use drvault_keyring::{KdfParams, SlotKind};
use drvault_repo::keys::{self, Progress, ReencryptReport};
use drvault_repo::Repository;

use crate::cli::{Global, KeyCommand, KeyKindArg};
use crate::context::Context;
use crate::exit::{usage, Exit};

fn short(name: &str) -> &str {
    let id = name.rsplit('/').next().unwrap_or(name);
    &id[..8.min(id.len())]
}

fn rfc3339(t: i64) -> String {
    crate::timefmt::rfc3339(t.saturating_mul(1_000_000_000))
}

/// Unix seconds as every command prints times.
fn shown(t: i64) -> String {
    crate::timefmt::shown(t.saturating_mul(1_000_000_000))
}

pub fn run(ctx: &Context, g: &Global, cmd: &KeyCommand) -> Result<Exit> {
    let repo = ctx.open(g)?;
    match cmd {
        KeyCommand::Add(a) if matches!(a.kind, KeyKindArg::Host) => {
            return add_host(ctx, g, &repo, a)
        }
        KeyCommand::Add(a) => {
            if a.host.is_some() {
                usage!("--host names the host of a host key: add --kind host");
            }
            // A recovery key is generated, as `init` does; a key file is every byte of it.
            let mut recovery = None;
            let (kind, pass) = match a.kind {
                KeyKindArg::Passphrase => (
                    SlotKind::Passphrase,
                    crate::password::read_new(a.new_password_file.as_deref())?,
                ),
                KeyKindArg::Keyfile => {
                    let Some(f) = a.new_password_file.as_deref() else {
                        usage!("a key-file slot needs the file: --new-password-file FILE (all its bytes are the key)");
                    };
                    (SlotKind::KeyFile, crate::password::read_key_file(f)?)
                }
                KeyKindArg::Host => unreachable!("handled above"),
                KeyKindArg::Recovery => {
                    if a.new_password_file.is_some() {
                        usage!(
                            "a recovery key is generated, not read: leave out --new-password-file"
                        );
                    }
                    let key = drvault_keyring::generate_recovery_key()?;
                    let bytes = zeroize::Zeroizing::new(key.as_bytes().to_vec());
                    recovery = Some(key);
                    (SlotKind::Recovery, bytes)
                }
            };
            let label = match (&a.label, kind) {
                (Some(l), _) => l.clone(),
                (None, SlotKind::Recovery) => "recovery".to_string(),
                (None, _) => super::init::default_label(),
            };
            let kdf = a
                .kdf_memory_kib
                .map_or(KdfParams::SERVER, super::init::kdf_with_memory);
            let name = ctx
                .rt
                .block_on(keys::add_key_slot(&repo, kind, &pass, kdf, &label))?;
            let id = name.rsplit('/').next().unwrap_or(&name);
            if g.json {
                let mut v = serde_json::json!({ "id": id, "kind": kind.as_str(), "label": label });
                if let Some(k) = &recovery {
                    v["recovery_key"] = k.as_str().into();
                }
                outln!("{v}");
            } else {
                outln!("added {} slot {} ({label})", kind.as_str(), short(&name));
                if let Some(k) = &recovery {
                    super::init::print_recovery(k);
                }
            }
        }
        KeyCommand::List => list(ctx, g, &repo)?,
        KeyCommand::Remove { slot } => {
            let name = ctx.rt.block_on(keys::remove_key_slot(&repo, slot))?;
            report(
                g,
                serde_json::json!({ "removed": short(&name) }),
                &format!("removed key slot {}", short(&name)),
            );
        }
        KeyCommand::Passwd { new_password_file } => {
            let old = crate::password::read(g.password_file.as_deref(), false)?;
            let new = crate::password::read_new(new_password_file.as_deref())?;
            let (old_name, new_name) = ctx.rt.block_on(keys::change_passphrase(
                &repo,
                &old,
                &new,
                KdfParams::SERVER,
            ))?;
            report(
                g,
                serde_json::json!({ "old": short(&old_name), "new": short(&new_name) }),
                &format!(
                    "slot {} replaced by slot {} under the new passphrase",
                    short(&old_name),
                    short(&new_name)
                ),
            );
        }
        KeyCommand::Rotate(a) => {
            if a.if_due {
                let policy = ctx.rotation;
                let c = ctx.rt.block_on(keys::rotation_due(
                    &repo,
                    &policy,
                    chrono::Utc::now().timestamp(),
                ))?;
                if !c.due {
                    report(
                        g,
                        serde_json::json!({ "rotated": false, "epoch": c.epoch, "age_days": c.age_days, "blobs": c.blobs }),
                        &format!(
                            "not due: epoch {} is {} days old (rotate at {}) and seals {} blobs (rotate at {})",
                            c.epoch,
                            c.age_days,
                            policy.max_age.as_secs() / 86_400,
                            c.blobs,
                            policy.max_blobs
                        ),
                    );
                    return Ok(Exit::Ok);
                }
            }
            let epoch = if a.master {
                let pass = crate::password::read(g.password_file.as_deref(), false)?;
                let (epoch, removed) =
                    ctx.rt
                        .block_on(keys::rotate_master(&repo, &pass, KdfParams::SERVER))?;
                if !g.quiet {
                    eprintln!(
                        "new master key; the slot in use was wrapped again{}",
                        if removed > 0 {
                            format!(", {removed} other slots were removed (add them again with `drvault key add`)")
                        } else {
                            String::new()
                        }
                    );
                }
                epoch
            } else {
                ctx.rt.block_on(keys::rotate_epoch(&repo))?
            };
            if !a.reencrypt {
                report(
                    g,
                    serde_json::json!({ "epoch": epoch }),
                    &format!("epoch {epoch} is active; run `drvault key reencrypt` to rewrite older data and retire the old epochs"),
                );
                return Ok(Exit::Ok);
            }
            // The repository must be opened again to seal under the new epoch.
            let repo = ctx.open(g)?;
            return reencrypt(ctx, g, &repo);
        }
        KeyCommand::Reencrypt => return reencrypt(ctx, g, &repo),
    }
    Ok(Exit::Ok)
}

fn report(g: &Global, json: serde_json::Value, text: &str) {
    if g.json {
        outln!("{json}");
    } else if !g.quiet {
        outln!("{text}");
    }
}

fn list(ctx: &Context, g: &Global, repo: &Repository) -> Result<()> {
    let slots = ctx.rt.block_on(repo.key_slots())?;
    let epochs = ctx.rt.block_on(keys::epochs(repo))?;
    if g.json {
        let slots: Vec<_> = slots
            .iter()
            .map(|(name, s)| {
                serde_json::json!({
                    "id": name.rsplit('/').next().unwrap_or(name),
                    "kind": s.kind.as_str(),
                    "label": s.label,
                    "current": repo.opened_slot() == Some(name.as_str()),
                    "created": rfc3339(s.created),
                })
            })
            .collect();
        let epochs: Vec<_> = epochs
            .iter()
            .map(|e| {
                serde_json::json!({ "id": e.id, "created": rfc3339(e.created), "state": e.state, "objects": e.objects })
            })
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "slots": slots, "epochs": epochs }))?
        );
    } else {
        outln!("key slots (* opened this repository now):");
        for (name, s) in &slots {
            let current = if repo.opened_slot() == Some(name.as_str()) {
                '*'
            } else {
                ' '
            };
            outln!(
                "{current} {}  {:<10}  {}  {}",
                short(name),
                s.kind.as_str(),
                shown(s.created),
                if s.label.is_empty() {
                    "(no label)".to_string()
                } else {
                    drvault_repo::printable::bytes(s.label.as_bytes())
                }
            );
        }
        outln!("data-key epochs:");
        for e in &epochs {
            outln!(
                "  {:>4}  {:<8}  {}  {}",
                e.id,
                e.state,
                shown(e.created),
                super::plural(e.objects, "object")
            );
        }
    }
    Ok(())
}

fn reencrypt(ctx: &Context, g: &Global, repo: &Repository) -> Result<Exit> {
    crate::stop::on_signals(&ctx.rt);
    let show = !g.quiet && !g.json && std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let progress = move |p: Progress| {
        if show {
            eprint!(
                "\rre-encrypting: {}/{} packs, {}   ",
                p.packs_done,
                p.packs_total,
                super::human(p.bytes_done)
            );
        }
    };
    let r: ReencryptReport =
        ctx.rt
            .block_on(keys::reencrypt(repo, &progress, &crate::stop::token()))?;
    if show {
        eprintln!();
    }
    let secs = started.elapsed().as_secs_f64();
    if g.json {
        let mut v = serde_json::to_value(&r)?;
        v["duration_s"] = serde_json::json!(secs);
        outln!("{v}");
    } else if !g.quiet {
        outln!(
            "rewrote {} packs ({}), {} index objects and {} snapshots in {secs:.1} s; {} packs were already done",
            r.packs_rewritten,
            super::human(r.bytes_rewritten),
            r.indexes_rewritten,
            r.snapshots.len(),
            r.packs_already_done
        );
        if !r.snapshots.is_empty() {
            outln!("(snapshot IDs do not change: only the objects holding them were renamed)");
        }
        if !r.retired.is_empty() {
            outln!("retired epochs {:?}: their keys are destroyed", r.retired);
        }
        for why in &r.not_retired {
            eprintln!("not retired: {why}");
        }
    }
    Ok(if r.not_retired.is_empty() {
        Exit::Ok
    } else {
        Exit::Partial
    })
}

/// `key add --kind host`: a put-only key for one host (upgrading the repository first when it
/// does not take host keys yet).
fn add_host(
    ctx: &Context,
    g: &Global,
    repo: &Repository,
    a: &crate::cli::KeyAddArgs,
) -> Result<Exit> {
    let host = a.host.clone().unwrap_or_else(drvault_repo::host::hostname);
    let pass = crate::password::read_new(a.new_password_file.as_deref())?;
    let name = ctx.rt.block_on(keys::add_host_key(
        repo,
        &host,
        &pass,
        a.kdf_memory_kib
            .map_or(KdfParams::SERVER, super::init::kdf_with_memory),
    ))?;
    let id = name.rsplit('/').next().unwrap_or(&name);
    report(
        g,
        serde_json::json!({ "id": id, "kind": "host", "label": host }),
        &format!(
            "added host slot {} for host {host}: it backs up but opens nothing stored",
            short(&name)
        ),
    );
    Ok(Exit::Ok)
}

/// `drvault migrate`: format version 2, in place and resumably.
pub fn migrate(ctx: &Context, g: &Global) -> Result<Exit> {
    let repo = ctx.open(g)?;
    let r = ctx.rt.block_on(keys::migrate(&repo))?;
    let text = if r.keyring_upgraded {
        format!(
            "the repository now takes host keys (format version 2); {} index objects and {} \
             prune marks sealed again under index keys",
            r.indexes_rewritten, r.marks_rewritten
        )
    } else {
        format!(
            "the repository already took host keys (format version 2); {} index objects and {} \
             prune marks sealed again under index keys",
            r.indexes_rewritten, r.marks_rewritten
        )
    };
    report(g, serde_json::to_value(&r)?, &text);
    Ok(Exit::Ok)
}
