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
            let entries = ctx.rt.block_on(audit::read_all(&repo))?;
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
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for e in &list {
                    println!(
                        "{:>5}  {}  {:<16}  {:<18}  {}  {}",
                        e.seq, e.time, e.actor, e.action, e.result, e.details
                    );
                }
            }
            Ok(if damaged { Exit::Integrity } else { Exit::Ok })
        }
        AuditCommand::Verify => {
            let r = ctx.rt.block_on(audit::verify(&repo))?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                if let Some((seq, why)) = &r.first_broken {
                    eprintln!("audit log broken at entry {seq}: {why}");
                }
                for (seq, why) in &r.catalog_mismatches {
                    eprintln!("entry {seq}: {why}");
                }
                if r.is_intact() {
                    println!(
                        "audit log intact: {} entries, head {}",
                        r.entries,
                        r.head.as_deref().unwrap_or("(empty)")
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
