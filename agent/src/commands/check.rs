use anyhow::Result;
use drvault_repo::check::{check, ReadData};

use crate::cli::{CheckArgs, Global};
use crate::context::Context;
use crate::exit::Exit;

pub fn run(ctx: &Context, g: &Global, a: &CheckArgs) -> Result<Exit> {
    let repo = ctx.open(g)?;
    let read = match (a.read_data, a.read_data_subset) {
        (true, _) => ReadData::All,
        (false, Some(p)) if (0.0..=100.0).contains(&p) => ReadData::Subset(p),
        (false, Some(p)) => {
            anyhow::bail!("--read-data-subset takes a percentage from 0 to 100, not {p}")
        }
        _ => ReadData::None,
    };
    let report = ctx.rt.block_on(check(repo, read))?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        for e in &report.errors {
            eprintln!("error: {e}");
        }
        println!(
            "checked {} snapshots, {} trees, {} blobs in {} packs ({} packs read): {}",
            report.snapshots,
            report.trees,
            report.blobs,
            report.packs,
            report.packs_read,
            if report.errors.is_empty() {
                "no errors".to_string()
            } else {
                format!("{} errors", report.errors.len())
            }
        );
    }
    Ok(if report.errors.is_empty() {
        Exit::Ok
    } else {
        Exit::Integrity
    })
}
