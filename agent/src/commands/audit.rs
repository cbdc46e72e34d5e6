//! `drvault audit log` and `drvault audit verify`.

use anyhow::Result;
use drvault_repo::audit;

use crate::cli::{AuditCommand, Global};
use crate::context::Context;
use crate::exit::Exit;

pub fn run(ctx: &Context, g: &Global, cmd: &AuditCommand) -> Result<Exit> {
    let repo = ctx.open(g)?;
    match cmd {
        AuditCommand::Log => {
            let entries = ctx.rt.block_on(repo.audit().read_all())?;
            let mut damaged = false;
            let mut list = Vec::new();
            for (seq, e) in entries {
                match e {
                    Ok(e) => list.push(e),
                    Err(err) => {
                        damaged = true;
                        eprintln!("entry {seq}: {err}");
                    }
                }
            }
            if g.json {
                outln!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() && !damaged {
                outln!(
                    "the audit log has no entries yet (key operations, forget, prune and drills \
                     append to it)"
                );
            } else {
                for e in &list {
                    outln!(
                        "{:>5}  {}  {:<16}  {:<18}  {}  {}",
                        e.seq,
                        crate::timefmt::shown_rfc3339(&e.time),
                        e.actor,
                        e.action,
                        e.result,
                        e.details
                    );
                }
            }
            Ok(if damaged { Exit::Integrity } else { Exit::Ok })
        }
        AuditCommand::Export {
            since,
            until,
            output,
        } => {
            let since = since.as_deref().map(parse_time).transpose()?;
            let until = until.as_deref().map(parse_time).transpose()?;
            let verified = ctx.rt.block_on(drvault_repo::audit_verify::verify(&repo))?;
            if !verified.is_intact() {
                anyhow::bail!("the audit log does not verify (run `drvault audit verify`); refusing to export a segment of it");
            }
            let entries: Vec<audit::AuditEntry> = ctx
                .rt
                .block_on(repo.audit().read_all())?
                .into_values()
                .filter_map(|e| e.ok())
                .collect();
            let segment: Vec<&audit::AuditEntry> = entries
                .iter()
                .filter(|e| {
                    let t = chrono::DateTime::parse_from_rfc3339(&e.time)
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .ok();
                    t.is_some_and(|t| since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u))
                })
                .collect();
            let doc = serde_json::json!({
                "repository": repo.config().id,
                "since": since.map(|t| t.to_rfc3339()),
                "until": until.map(|t| t.to_rfc3339()),
                "entries": segment,
                // The chain before the segment ends in `anchor_before`; the segment's last entry
                // hashes to `anchor_after`; the whole log's head at export time is `head`.
                "anchor_before": segment.first().map(|e| e.prev.clone()),
                "anchor_after": segment.last().map(|e| e.hash()),
                "head": verified.head,
                "hash": "BLAKE3 over each entry's canonical JSON (docs/FORMAT.md section 17)",
            });
            let text = serde_json::to_string_pretty(&doc)? + "\n";
            match output {
                Some(p) => std::fs::write(p, text)?,
                None => out!("{text}"),
            }
            Ok(Exit::Ok)
        }
        AuditCommand::Verify => {
            let r = ctx.rt.block_on(drvault_repo::audit_verify::verify(&repo))?;
            if g.json {
                outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                if let Some((seq, why)) = &r.first_broken {
                    eprintln!("audit log broken at entry {seq}: {why}");
                }
                for (seq, why) in &r.catalog_mismatches {
                    eprintln!("entry {seq}: {why}");
                }
                for b in &r.anchors.broken_anchors {
                    eprintln!(
                        "audit log cut or rewritten: snapshot {} ({}, {}) was recorded by entry \
                         {}, but {}",
                        b.snapshot, b.host, b.time, b.seq, b.reason
                    );
                }
                for m in &r.anchors.missing_snapshots {
                    eprintln!(
                        "snapshot missing: entry {} recorded a snapshot of {} at {} ({}) that the \
                         repository no longer holds or cannot read, and no `forget` removed it \
                         (run `drvault check`; a backup killed while committing also leaves this)",
                        m.commit,
                        m.host,
                        m.time,
                        m.paths.join(", ")
                    );
                }
                if let Some(k) = &r.anchors.keyring_anchor {
                    if let Some(why) = &k.broken {
                        eprintln!(
                            "audit log cut or rewritten: the keyring (generation {}) was written \
                             when entry {} was the newest, but {why}",
                            k.generation, k.seq
                        );
                    }
                }
                if let Some(why) = &r.anchors.anchors_skipped {
                    eprintln!("snapshots not compared with the log: {why}");
                }
                if r.anchors.pending_commits > 0 {
                    eprintln!(
                        "{} backup commits are younger than a backup session and have no snapshot \
                         yet; a later verify judges them",
                        r.anchors.pending_commits
                    );
                }
                if r.is_intact() {
                    outln!(
                        "audit log intact: {} entries, head {}; {} snapshots{} anchor it",
                        r.entries,
                        r.head.as_deref().unwrap_or("(empty)"),
                        r.anchors.anchored,
                        if r.anchors.keyring_anchor.is_some() {
                            " and the keyring"
                        } else {
                            ""
                        }
                    );
                }
            }
            Ok(if r.is_intact() {
                Exit::Ok
            } else {
                Exit::Integrity
            })
        }
    }
}

/// A time or a date (midnight UTC).
fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    crate::timefmt::parse(text, crate::timefmt::DateMeans::StartOfDay)
}
