//! `restore --dry-run`: what a restore would write, keep and delete, found without creating or
//! changing anything.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use drvault_repo::format::NodeKind;
use drvault_repo::{printable, Repository};

use crate::collect::Entry;
use crate::fsops::Target;
use crate::options::{Overwrite, Planned, RestoreOptions, RestoreStats};
use crate::Result;

/// The snapshot's names in each directory of the restore, by the directory's key.
pub(crate) fn children_by_dir(entries: &[Entry]) -> HashMap<Vec<u8>, HashSet<Vec<u8>>> {
    let mut map: HashMap<Vec<u8>, HashSet<Vec<u8>>> = HashMap::new();
    for e in entries {
        let key = e.key();
        let (dir, name) = match key.iter().rposition(|&b| b == b'/') {
            Some(i) => (key[..i].to_vec(), key[i + 1..].to_vec()),
            None => (Vec::new(), key.to_vec()),
        };
        map.entry(dir).or_default().insert(name);
    }
    map
}

/// `--dry-run`: what a restore with these options would do, without creating the target.
pub(crate) fn dry_run(
    repo: &Repository,
    entries: &[Entry],
    complete: &[Vec<Vec<u8>>],
    opts: &RestoreOptions,
    mut stats: RestoreStats,
) -> Result<RestoreStats> {
    // Opened only when it is a directory already: `Target::open` creates what is missing.
    let target = match std::fs::metadata(&opts.target) {
        Ok(m) if m.is_dir() => Some(Target::open(&opts.target)?),
        _ => None,
    };
    let shown = |rel: &Path| match &target {
        Some(t) => printable::path(&t.display(rel)),
        None => printable::path(&opts.target.join(rel)),
    };
    for e in entries {
        match e.node.kind {
            NodeKind::Dir => stats.dirs += 1,
            NodeKind::File => stats.files += 1,
            NodeKind::Symlink => stats.symlinks += 1,
            NodeKind::Hardlink => stats.hardlinks += 1,
            _ => stats.other += 1,
        }
        if e.node.kind == NodeKind::Dir {
            continue;
        }
        let existing = match &target {
            Some(t)
                if t.open_dir_if_there(e.rel.parent().unwrap_or(Path::new("")))?
                    .is_some() =>
            {
                let there = std::fs::symlink_metadata(t.display(&e.rel)).is_ok();
                match (there, e.node.kind) {
                    (false, _) => None,
                    // Only a regular file is opened (a device node is never opened to look).
                    (true, NodeKind::File) => Some(t.existing_file(&e.rel)?),
                    (true, _) => Some(None),
                }
            }
            _ => None,
        };
        let action = match (existing, e.node.kind, opts.overwrite) {
            (None, _, _) => "restore",
            (Some(Some(_)), NodeKind::File, Overwrite::Never) => "keep",
            (Some(Some((file, _))), NodeKind::File, Overwrite::IfChanged) => {
                let same = file.metadata().map(|m| m.len()).ok() == Some(e.node.size)
                    && crate::verify::matches(repo, file, &e.node.content);
                if same {
                    "keep"
                } else {
                    "replace"
                }
            }
            _ => "replace",
        };
        if action == "keep" {
            stats.unchanged += 1;
        } else {
            stats.bytes += e.node.size;
        }
        stats.planned.push(Planned {
            action,
            path: shown(&e.rel),
        });
    }
    if let (true, Some(t)) = (opts.delete, &target) {
        let extras = crate::extras::find(t, complete, &children_by_dir(entries), &opts.excludes)?;
        let would = crate::extras::remove(t, &extras.found, true)?;
        stats.deleted = would.count;
        for rel in &extras.other_mounts {
            let warning = crate::extras::left_on_other_mount(&t.display(rel));
            stats.warnings.push(warning);
        }
        stats.warnings.extend(would.warnings);
        for x in extras.found {
            stats.planned.push(Planned {
                action: "delete",
                path: shown(&x.rel),
            });
        }
    }
    Ok(stats)
}
