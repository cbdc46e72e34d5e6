use anyhow::Result;
use drvault_keyring::{KdfParams, SlotKind};

use crate::cli::{Global, KeyCommand, KeyKindArg};
use crate::context::Context;
use crate::exit::Exit;

pub fn run(ctx: &Context, g: &Global, cmd: &KeyCommand) -> Result<Exit> {
    let repo = ctx.open(g)?;
    match cmd {
        KeyCommand::Add(a) => {
            let pass = crate::password::read_new(a.new_password_file.as_deref())?;
            let kind = match a.kind {
                KeyKindArg::Passphrase => SlotKind::Passphrase,
                KeyKindArg::Keyfile => SlotKind::KeyFile,
                KeyKindArg::Recovery => SlotKind::Recovery,
            };
            let name = ctx
                .rt
                .block_on(repo.add_key_slot(kind, &pass, KdfParams::SERVER))?;
            let id = name.rsplit('/').next().unwrap_or(&name);
            if g.json {
                println!("{}", serde_json::json!({ "id": id, "kind": kind.as_str() }));
            } else {
                println!("added {} slot {}", kind.as_str(), &id[..8.min(id.len())]);
            }
        }
        KeyCommand::List => {
            let slots = ctx.rt.block_on(repo.key_slots())?;
            let list: Vec<_> = slots
                .iter()
                .map(|(name, s)| {
                    serde_json::json!({
                        "id": name.rsplit('/').next().unwrap_or(name),
                        "kind": s.kind.as_str(),
                        "created": chrono::DateTime::from_timestamp(s.created, 0).map(|t| t.to_rfc3339()),
                    })
                })
                .collect();
            if g.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "slots": list }))?
                );
            } else {
                for (name, s) in &slots {
                    let id = name.rsplit('/').next().unwrap_or(name);
                    let t = chrono::DateTime::from_timestamp(s.created, 0)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default();
                    println!("{}  {:<10}  {t}", &id[..8.min(id.len())], s.kind.as_str());
                }
            }
        }
    }
    Ok(Exit::Ok)
}
