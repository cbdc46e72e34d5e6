use anyhow::Result;
use drvault_keyring::KdfParams;
use drvault_repo::repository::InitOptions;
use drvault_repo::Repository;
use zeroize::Zeroizing;

use crate::cli::{Global, InitArgs};
use crate::context::Context;
use crate::exit::Exit;

/// Argon2id parameters with `m` KiB of memory (the hidden `--kdf-memory-kib` of tests).
pub fn kdf_with_memory(m: u32) -> KdfParams {
    KdfParams {
        m_cost_kib: m.max(8),
        t_cost: if m < 1024 {
            1
        } else {
            KdfParams::SERVER.t_cost
        },
        p_cost: 1,
    }
}

pub fn run(ctx: &Context, g: &Global, a: &InitArgs) -> Result<Exit> {
    let (id, recovery) = init(
        ctx,
        g,
        a.kdf_memory_kib,
        a.compression_level,
        a.format_version >= 2,
    )?;
    if g.json {
        outln!(
            "{}",
            serde_json::json!({ "id": id, "location": ctx.repo_location, "recovery_key": recovery.as_str() })
        );
    } else {
        outln!("created repository {id} at {}", ctx.repo_location);
        outln!("keep the passphrase safe: without it the data cannot be read");
        print_recovery(&recovery);
    }
    Ok(Exit::Ok)
}

/// Shows the recovery key: the only time it is ever shown.
pub fn print_recovery(key: &str) {
    outln!(
        "recovery key (shown once: store it offline; it opens the repository like the passphrase):"
    );
    outln!("  {key}");
}

/// The label a new slot gets unless `--label` says otherwise: who made it, where.
pub fn default_label() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            if rustix::process::geteuid().is_root() {
                "root".into()
            } else {
                rustix::process::geteuid().as_raw().to_string()
            }
        });
    let label = format!("{user}@{}", drvault_repo::host::hostname());
    let label: String = label.chars().filter(|c| !c.is_control()).collect();
    let mut end = label.len().min(drvault_keyring::MAX_LABEL);
    while !label.is_char_boundary(end) {
        end -= 1;
    }
    label[..end].to_string()
}

/// Creates the repository at the context's location, with a passphrase slot and a recovery
/// slot; returns its ID and the recovery key.
pub fn init(
    ctx: &Context,
    g: &Global,
    kdf_memory_kib: Option<u32>,
    level: i32,
    host_keys: bool,
) -> Result<(String, Zeroizing<String>)> {
    let store = ctx.store(true)?;
    let pass = crate::password::read(g.password_file.as_deref(), true)?;
    let pass = pass.line();
    if pass.is_empty() {
        anyhow::bail!("refusing an empty passphrase");
    }
    let mut opts = InitOptions {
        compression_level: level,
        label: default_label(),
        host_keys,
        ..Default::default()
    };
    if let Some(m) = kdf_memory_kib {
        opts.kdf = kdf_with_memory(m);
    }
    let (repo, recovery) =
        ctx.rt
            .block_on(Repository::create(store, pass, opts, &ctx.repo_location))?;
    Ok((repo.config().id.clone(), recovery))
}
