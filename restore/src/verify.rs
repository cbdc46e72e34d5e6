//! Re-reads restored files and checks every chunk against the snapshot's blob IDs.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use drvault_repo::{Id, Repository};

use crate::fsops::Target;
use crate::plan::RestoredFile;
use crate::{Error, Result};

pub(crate) fn verify_files(
    repo: &Repository,
    target: &Target,
    files: &[RestoredFile],
) -> Result<u64> {
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| -> Result<u64> {
                    let mut n = 0;
                    let mut buf = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(file) = files.get(i) else {
                            return Ok(n);
                        };
                        let f = target.open_file(&file.rel, file.id, false)?;
                        verify_one(repo, f, &target.display(&file.rel), &file.content, &mut buf)?;
                        n += 1;
                    }
                })
            })
            .collect();
        let mut total = 0;
        for h in handles {
            total += h
                .join()
                .map_err(|_| Error::Invalid("verify worker panicked".into()))??;
        }
        Ok(total)
    })
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
