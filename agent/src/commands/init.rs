use anyhow::Result;
use drvault_keyring::KdfParams;
use drvault_repo::repository::InitOptions;
use drvault_repo::Repository;

use crate::cli::{Global, InitArgs};
use crate::context::Context;
use crate::exit::Exit;

pub fn run(ctx: &Context, g: &Global, a: &InitArgs) -> Result<Exit> {
    let id = init(ctx, g, a.kdf_memory_kib, a.compression_level)?;
    if g.json {
        println!(
            "{}",
            serde_json::json!({ "id": id, "location": ctx.repo_location })
        );
    } else {
        println!("created repository {id} at {}", ctx.repo_location);
        println!("keep the passphrase safe: without it the data cannot be read");
    }
    Ok(Exit::Ok)
}

/// Creates the repository at the context's location; returns its ID.
pub fn init(ctx: &Context, g: &Global, kdf_memory_kib: Option<u32>, level: i32) -> Result<String> {
    let store = ctx.store(true)?;
    let pass = crate::password::read(g.password_file.as_deref(), true)?;
    if pass.is_empty() {
        anyhow::bail!("refusing an empty passphrase");
    }
    let mut opts = InitOptions {
        compression_level: level,
        ..Default::default()
    };
    if let Some(m) = kdf_memory_kib {
        opts.kdf = KdfParams {
            m_cost_kib: m.max(8),
            t_cost: if m < 1024 {
                1
            } else {
                KdfParams::SERVER.t_cost
            },
            p_cost: 1,
        };
    }
    let repo = ctx.rt.block_on(Repository::init(store, &pass, opts))?;
    Ok(repo.config().id.clone())
}
