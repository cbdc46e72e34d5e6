//! The restore: walk the snapshot's trees, create entries, write contents, link, apply metadata.
//!
//! Order matters for safety: directories and files first, hard links next, symlinks last, so
//! nothing is ever written through a symlink the snapshot supplied.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use drvault_repo::format::{validate_name, NodeKind, Snapshot};
use drvault_repo::{printable, Id, Repository};
use tokio::runtime::Handle;

use crate::collect::{collect, prefix_matches, Entry};
use crate::files::{Files, Lost, RestoredFile};
use crate::fsops::{FileId, MetaKind, Target};
use crate::parallel::for_each_parallel;
use crate::{Error, Result};

use crate::options::{DamagedFile, Overwrite, RestoreOptions, RestoreStats};

/// Restores snapshot `id` (or the parts `opts.includes` names) into `opts.target`. Fails with
/// [`Error::NothingSelected`] when an include names nothing in the snapshot, and with
/// [`Error::Damaged`] (listing each file) when some files could not be restored intact.
pub fn restore(
    rt: &Handle,
    repo: Arc<Repository>,
    (id, snapshot): (&Id, &Snapshot),
    opts: &RestoreOptions,
) -> Result<RestoreStats> {
    let mut stats = RestoreStats::default();
    let mut matched: Vec<bool> = opts.includes.iter().map(|i| i.is_empty()).collect();
    let (mut entries, lost_dirs, complete) = collect(
        rt,
        &repo,
        snapshot.tree,
        (&opts.includes, &opts.excludes),
        &mut matched,
    )?;
    // An include below a directory whose listing is lost is reported with that directory.
    let below_lost = |inc: &Vec<Vec<u8>>| {
        lost_dirs.iter().any(|(i, _)| {
            let dir: Vec<Vec<u8>> = entries[*i]
                .key()
                .split(|&b| b == b'/')
                .map(<[u8]>::to_vec)
                .collect();
            inc.len() >= dir.len() && prefix_matches(inc, &dir)
        })
    };
    let missing: Vec<String> = opts
        .includes
        .iter()
        .zip(&matched)
        .filter(|(inc, m)| !**m && !below_lost(inc))
        .map(|(inc, _)| format!("/{}", printable::bytes(&inc.join(&b'/'))))
        .collect();
    if !missing.is_empty() {
        let paths: Vec<String> = snapshot.paths.iter().map(|p| printable::bytes(p)).collect();
        return Err(Error::NothingSelected {
            what: format!("--include {}", missing.join(", ")),
            snapshot: id.short(),
            paths: paths.join(", "),
        });
    }
    if opts.dry_run {
        return crate::dry_run::dry_run(&repo, &entries, &complete, opts, stats);
    }
    let target = Arc::new(Target::open(&opts.target)?);
    crate::hwm("start");
    for (i, why) in &lost_dirs {
        stats.damaged.push(DamagedFile {
            path: printable::path(&target.display(&entries[*i].rel)),
            ranges: Vec::new(),
            reason: format!("directory not restored, nor anything below it: {why}"),
        });
    }
    // The snapshot's names per directory, lost directories included: `--delete` must never take
    // a directory whose listing could not be read for something the snapshot lacks.
    let wanted = opts
        .delete
        .then(|| crate::dry_run::children_by_dir(&entries));
    let dropped: HashSet<usize> = lost_dirs.iter().map(|(i, _)| *i).collect();
    let mut index = 0;
    entries.retain(|_| {
        index += 1;
        !dropped.contains(&(index - 1))
    });
    crate::hwm("collected");
    let as_root = rustix::process::geteuid().is_root();
    let shown = |e: &Entry| printable::path(&target.display(&e.rel));
    // What each entry is once created: checked again at every later open.
    let ids: Vec<OnceLock<FileId>> = entries.iter().map(|_| OnceLock::new()).collect();

    let mut later: Vec<usize> = Vec::new();
    // Directories first (sequentially: parents before children), then every file and FIFO
    // created in parallel: each is a few system calls.
    let mut to_create: Vec<usize> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        match e.node.kind {
            NodeKind::Dir => {
                let _ = ids[i].set(target.mkdir(&e.rel)?);
                stats.dirs += 1;
            }
            NodeKind::File => {
                stats.files += 1;
                to_create.push(i);
            }
            NodeKind::Fifo => {
                stats.other += 1;
                to_create.push(i);
            }
            NodeKind::Symlink | NodeKind::Hardlink => later.push(i),
            NodeKind::CharDevice | NodeKind::BlockDevice | NodeKind::Socket => {
                stats.skipped += 1;
                stats
                    .warnings
                    .push(format!("{}: device node or socket not restored", shown(e)));
            }
        }
    }
    // `--delete`: what the snapshot does not have goes before anything is written, so the
    // directories' times set at the end are the snapshot's.
    // What a killed restore left under temporary names goes, whether or not --delete was given.
    let stale = crate::extras::stale_temps(&target, &complete)?;
    crate::extras::remove_stale(&target, &stale)?;
    if opts.delete {
        let extras = crate::extras::find(
            &target,
            &complete,
            wanted.as_ref().unwrap_or(&HashMap::new()),
            &opts.excludes,
        )?;
        let removed = crate::extras::remove(&target, &extras.found, false)?;
        stats.deleted = removed.count;
        for rel in &extras.other_mounts {
            let warning = crate::extras::left_on_other_mount(&target.display(rel));
            stats.warnings.push(warning);
        }
        stats.warnings.extend(removed.warnings);
    }
    drvault_repo::failpoint::hit_blocking("restore.after-dirs");
    let kept = std::sync::atomic::AtomicU64::new(0);
    // `--overwrite never`: the file there stays as it is, metadata included.
    let untouched: Vec<std::sync::atomic::AtomicBool> = entries
        .iter()
        .map(|_| std::sync::atomic::AtomicBool::new(false))
        .collect();
    // FIFOs are made now; files are created by the writer of their first blob (files.rs).
    for_each_parallel(&to_create, |&i| {
        let e = &entries[i];
        if e.node.kind == NodeKind::File && opts.overwrite != Overwrite::Always {
            if let Some((file, id)) = target.existing_file(&e.rel)? {
                let same = opts.overwrite == Overwrite::Never
                    || (file.metadata().map(|m| m.len()).ok() == Some(e.node.size)
                        && crate::verify::matches(&repo, file, &e.node.content));
                if same {
                    let _ = ids[i].set(id);
                    kept.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if opts.overwrite == Overwrite::Never {
                        untouched[i].store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    return Ok(Vec::new());
                }
            }
        }
        if e.node.kind == NodeKind::Fifo {
            let _ = ids[i].set(target.mkfifo(&e.rel)?);
        }
        Ok(Vec::new())
    })?;
    stats.unchanged = kept.into_inner();
    // Files are written under temporary names and renamed once complete. Their blob lists move
    // into the writers' list: nothing reads an entry's content from here on.
    let mut list: Vec<RestoredFile> = Vec::with_capacity(stats.files as usize);
    for &i in &to_create {
        let node = &mut entries[i].node;
        if node.kind == NodeKind::File && ids[i].get().is_none() {
            list.push(RestoredFile::new(
                std::mem::take(&mut node.content),
                node.size,
                i,
            ));
        }
    }
    let entries = Arc::new(entries);
    let created = |i: usize| {
        ids[i]
            .get()
            .copied()
            .ok_or_else(|| Error::Invalid(format!("{} was not created", shown(&entries[i]))))
    };
    let files = Arc::new(Files::new(
        list,
        target.clone(),
        entries.clone(),
        !opts.verify,
        as_root,
    ));
    crate::hwm("created");
    drvault_repo::failpoint::hit_blocking("restore.before-contents");
    // From here on a failure that stops the restore removes the temporary files first.
    let written = crate::fetch::write_contents(
        rt,
        repo.clone(),
        &files,
        opts.parallel,
        opts.progress.as_ref(),
    );
    let (bytes, holes) = match written {
        Ok(w) => w,
        Err(e) => {
            files.discard_unfinished();
            return Err(e);
        }
    };
    stats.bytes = bytes;
    crate::hwm("written");
    let mut lost = damage_by_file(&files.list, holes);
    let finished = (|| {
        if opts.verify {
            files.create_rest(&lost)?;
            let sound: Vec<usize> = (0..files.list.len())
                .filter(|&n| !lost.contains_key(&files.list[n].entry))
                .collect();
            let (verified, failed) = crate::verify::verify_files(&repo, &files, &sound)?;
            stats.verified_files = verified;
            for (entry, reason) in failed {
                lost.insert(entry, (Vec::new(), reason));
            }
        }
        // Complete files not installed by their last writer take their metadata and names;
        // damaged ones are removed.
        files.finish(&lost)
    })();
    if let Err(e) = finished {
        files.discard_unfinished();
        return Err(e);
    }
    stats.warnings.extend(files.take_warnings());
    // Files written by this restore got their metadata as they were installed.
    let mut installed = vec![false; entries.len()];
    for f in files.list.iter() {
        installed[f.entry] = f.installed();
        if let Some(id) = f.id() {
            // Installed as root, the file is the snapshot owner's now, which later checks of it
            // (a hard link to it) expect.
            let id = match f.installed() && as_root {
                true => id.owned_by(entries[f.entry].node.uid),
                false => id,
            };
            let _ = ids[f.entry].set(id);
        }
    }
    // Paths of files that hard links in this restore point to.
    let link_sources: HashSet<&[u8]> = entries
        .iter()
        .filter(|e| e.node.kind == NodeKind::Hardlink)
        .map(|e| e.node.target.as_slice())
        .collect();
    let link_source_entry: HashMap<&[u8], usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.node.kind == NodeKind::File && link_sources.contains(e.key()))
        .map(|(i, e)| (e.key(), i))
        .collect();
    stats.files -= lost.len() as u64;
    let mut lost_keys: HashMap<&[u8], usize> = HashMap::new();
    for (&i, (ranges, reason)) in &lost {
        lost_keys.insert(entries[i].key(), i);
        stats.damaged.push(DamagedFile {
            path: shown(&entries[i]),
            ranges: ranges.clone(),
            reason: reason.clone(),
        });
    }

    for &i in &later {
        let e = &entries[i];
        match e.node.kind {
            NodeKind::Hardlink => {
                let source_comps: Vec<&[u8]> = e.node.target.split(|&b| b == b'/').collect();
                if source_comps.iter().any(|c| validate_name(c).is_err()) {
                    return Err(Error::Repo(drvault_repo::Error::Integrity {
                        object: format!("hard link {}", shown(e)),
                        reason: "link source is not a path inside the snapshot".into(),
                    }));
                }
                if let Some(&src) = lost_keys.get(e.node.target.as_slice()) {
                    stats.damaged.push(DamagedFile {
                        path: shown(e),
                        ranges: Vec::new(),
                        reason: format!(
                            "hard link to {}, which could not be restored",
                            shown(&entries[src])
                        ),
                    });
                    continue;
                }
                match link_source_entry.get(e.node.target.as_slice()) {
                    Some(&src) => {
                        target.hard_link(&entries[src].rel, created(src)?, &e.rel)?;
                        stats.hardlinks += 1;
                    }
                    None => stats.warnings.push(format!(
                        "{}: hard link to {} not restored (its source is not part of this restore)",
                        shown(e),
                        printable::bytes(&e.node.target)
                    )),
                }
            }
            _ => {
                let _ = ids[i].set(target.symlink(&e.rel, &e.node.target)?);
                stats.symlinks += 1;
            }
        }
    }

    // Metadata: everything but directories, then directories deepest first (their mtimes and
    // read-only modes must come after everything inside them is written).
    let with_metadata: Vec<usize> = (0..entries.len())
        .filter(|&i| {
            matches!(
                entries[i].node.kind,
                NodeKind::File | NodeKind::Fifo | NodeKind::Symlink
            ) && !lost.contains_key(&i)
                && !installed[i]
                && !untouched[i].load(std::sync::atomic::Ordering::Relaxed)
        })
        .collect();
    drvault_repo::failpoint::hit_blocking("restore.before-metadata");
    let warnings = for_each_parallel(&with_metadata, |&i| {
        let e = &entries[i];
        let kind = if e.node.kind == NodeKind::Symlink {
            MetaKind::Symlink
        } else {
            MetaKind::Other
        };
        target.apply_metadata(&e.rel, created(i)?, &e.node, kind, as_root)
    })?;
    stats.warnings.extend(warnings);
    drvault_repo::failpoint::hit_blocking("restore.before-dir-metadata");
    for (i, e) in entries.iter().enumerate().rev() {
        if e.node.kind == NodeKind::Dir {
            let w = target.apply_metadata(&e.rel, created(i)?, &e.node, MetaKind::Dir, as_root)?;
            stats.warnings.extend(w);
        }
    }
    if stats.damaged.is_empty() {
        Ok(stats)
    } else {
        stats.damaged.sort_by(|a, b| a.path.cmp(&b.path));
        Err(Error::Damaged(Box::new(stats)))
    }
}

/// The damaged byte ranges of each file (by entry), merged, with the first reason.
fn damage_by_file(files: &[RestoredFile], holes: Vec<crate::fetch::Hole>) -> Lost {
    let mut by_file: Lost = HashMap::new();
    for h in holes {
        let entry = files[h.file as usize].entry;
        let slot = by_file
            .entry(entry)
            .or_insert_with(|| (Vec::new(), h.reason.clone()));
        slot.0.push((h.start, h.end));
    }
    for (ranges, _) in by_file.values_mut() {
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for &(s, e) in ranges.iter() {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *ranges = merged;
    }
    by_file
}
