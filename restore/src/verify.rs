//! Re-reads restored files and checks every chunk against the snapshot's blob IDs.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use drvault_repo::{Id, Repository};

use crate::files::Files;
use crate::{Error, Result};

/// Re-reads each file `which` names (under its temporary name, before its metadata is
/// applied); returns how many matched and, for those that did not, the entry and the reason.
pub(crate) fn verify_files(
    repo: &Repository,
    files: &Files,
    which: &[usize],
) -> Result<(u64, Vec<(usize, String)>)> {
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| -> Result<(u64, Vec<(usize, String)>)> {
                    let mut n = 0;
                    let mut failed = Vec::new();
                    let mut buf = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&k) = which.get(i) else {
                            return Ok((n, failed));
                        };
                        let file = &files.list[k];
                        let temp = files.temp_path(k);
                        let id = file.id().ok_or_else(|| {
                            Error::Invalid(format!("{} was not created", temp.display()))
                        })?;
                        let f = files.target().reopen_temp(&temp, id, false)?.file;
                        match verify_one(
                            repo,
                            f,
                            &files.target().display(&temp),
                            &file.content,
                            &mut buf,
                        ) {
                            Ok(()) => n += 1,
                            Err(Error::Verify { reason, .. }) => {
                                failed.push((file.entry, format!("verification failed: {reason}")))
                            }
                            Err(e) => return Err(e),
                        }
                    }
                })
            })
            .collect();
        let mut total = 0;
        let mut failed = Vec::new();
        for h in handles {
            let (n, f) = h
                .join()
                .map_err(|_| Error::Invalid("verify worker panicked".into()))??;
            total += n;
            failed.extend(f);
        }
        Ok((total, failed))
    })
}

/// True when `f` holds exactly the chunks `content` names.
pub(crate) fn matches(repo: &Repository, f: std::fs::File, content: &[Id]) -> bool {
    let mut buf = Vec::new();
    verify_one(repo, f, Path::new(""), content, &mut buf).is_ok()
}

fn verify_one(
    repo: &Repository,
    mut f: std::fs::File,
    path: &Path,
    content: &[Id],
    buf: &mut Vec<u8>,
) -> Result<()> {
    for (i, id) in content.iter().enumerate() {
        let loc = repo.locate(id).ok_or_else(|| Error::Verify {
            path: path.to_path_buf(),
            reason: format!("blob {id} is not indexed"),
        })?;
        buf.resize(loc.entry.raw_length as usize, 0);
        f.read_exact(buf).map_err(|e| Error::Verify {
            path: path.to_path_buf(),
            reason: format!("chunk {i}: {e}"),
        })?;
        if repo.blob_id(buf) != *id {
            return Err(Error::Verify {
                path: path.to_path_buf(),
                reason: format!("chunk {i} differs from the snapshot"),
            });
        }
    }
    let mut extra = [0u8; 1];
    if f.read(&mut extra).map_err(crate::error::io(path))? != 0 {
        return Err(Error::Verify {
            path: path.to_path_buf(),
            reason: "file is longer than in the snapshot".into(),
        });
    }
    Ok(())
}
