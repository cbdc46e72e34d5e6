//! Fetches file contents pack by pack, in parallel, and writes each blob at its offsets.
//!
//! Blobs are grouped by pack and neighbouring blobs are read with one ranged request, so each
//! pack is read at most once per restore; memory is bounded by packs in flight × span size.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use drvault_repo::blob::open_blob;
use drvault_repo::format::{paths, BlobKind, PackEntry};
use drvault_repo::{Id, Repository};
use futures::{StreamExt, TryStreamExt};
use tokio::runtime::Handle;

use crate::error::is_damage;
use crate::files::Files;
use crate::{Error, Result};

/// Largest gap between two wanted blobs that is read through rather than split.
const MAX_GAP: u64 = 256 * 1024;
/// Largest single ranged read.
const MAX_SPAN: u64 = 2 * 1024 * 1024;
/// Most plaintext one span may open: what bounds a span's memory, since data compresses
/// (2 MiB of text packs can hold 10 MiB of plaintext). 4 MiB peaked 9 MiB higher in a 2 GiB
/// restore.
const MAX_SPAN_PLAIN: u64 = 2 * 1024 * 1024;

struct Want {
    entry: PackEntry,
    /// (file number, offset in file)
    targets: Vec<(u32, u64)>,
}

/// Bytes of one restored file that could not be written: the blob holding them is damaged or
/// missing on every target.
#[derive(Debug, Clone)]
pub(crate) struct Hole {
    pub file: u32,
    pub start: u64,
    pub end: u64,
    pub reason: String,
}

/// Writes the content of `files` (each created by the writer of its first blob and installed by
/// the writer of its last). Returns the bytes written and the ranges that could not be (after
/// every target was tried).
pub(crate) fn write_contents(
    rt: &Handle,
    repo: Arc<Repository>,
    files: &Arc<Files>,
    parallel: usize,
    progress: Option<&crate::options::ProgressSink>,
) -> Result<(u64, Vec<Hole>)> {
    let total: u64 = files.list.iter().map(|f| f.size).sum();
    let mut holes = Vec::new();
    let mut by_pack: HashMap<Id, HashMap<Id, Want>> = HashMap::new();
    for (n, file) in files.list.iter().enumerate() {
        let mut offset = 0u64;
        for id in &file.content {
            let Some(loc) = repo.locate(id) else {
                // The blob's length is unknown, so is where the rest of the file goes.
                holes.push(Hole {
                    file: n as u32,
                    start: offset,
                    end: file.size.max(offset),
                    reason: format!("blob {id} is in no index of the repository"),
                });
                break;
            };
            by_pack
                .entry(loc.pack)
                .or_default()
                .entry(*id)
                .or_insert_with(|| Want {
                    entry: loc.entry,
                    targets: Vec::new(),
                })
                .targets
                .push((n as u32, offset));
            offset += u64::from(loc.entry.raw_length);
        }
    }
    let spans: Vec<(Id, Vec<Want>)> = by_pack
        .into_iter()
        .flat_map(|(pack, wants)| {
            let mut wants: Vec<Want> = wants.into_values().collect();
            wants.sort_by_key(|w| w.entry.offset);
            split_spans(wants).into_iter().map(move |s| (pack, s))
        })
        .collect();
    let (written, damaged) = rt.block_on(async {
        futures::stream::iter(spans)
            .map(|(pack, wants)| fetch_span(repo.clone(), files.clone(), pack, wants))
            .buffer_unordered(parallel.max(1))
            .try_fold((0u64, Vec::new()), |(n, mut all), (m, holes)| async move {
                all.extend(holes);
                if let Some(p) = progress {
                    (p.0)(n + m, total);
                }
                Ok((n + m, all))
            })
            .await
    })?;
    holes.extend(damaged);
    Ok((written, holes))
}

/// Groups the wanted blobs of one pack (sorted by offset) into spans read with one request
/// each: neighbours, at most [`MAX_SPAN`] read and [`MAX_SPAN_PLAIN`] opened.
fn split_spans(wants: Vec<Want>) -> Vec<Vec<Want>> {
    let mut spans: Vec<Vec<Want>> = Vec::new();
    let mut plain = 0u64;
    for w in wants {
        let start = u64::from(w.entry.offset);
        let raw = u64::from(w.entry.raw_length);
        let extend = spans.last().is_some_and(|s| {
            let first = u64::from(s[0].entry.offset);
            let last = &s[s.len() - 1].entry;
            let end = u64::from(last.offset) + u64::from(last.length);
            start <= end + MAX_GAP
                && start + u64::from(w.entry.length) - first <= MAX_SPAN
                && plain + raw <= MAX_SPAN_PLAIN
        });
        match spans.last_mut() {
            Some(s) if extend => {
                s.push(w);
                plain += raw;
            }
            _ => {
                spans.push(vec![w]);
                plain = raw;
            }
        }
    }
    spans
}

/// Reads one span and writes its blobs. When the span cannot be read intact from any target,
/// each blob is read on its own, so only the damaged ones are lost.
async fn fetch_span(
    repo: Arc<Repository>,
    files: Arc<Files>,
    pack: Id,
    wants: Vec<Want>,
) -> Result<(u64, Vec<Hole>)> {
    match read_span(&repo, &pack, &wants).await {
        Ok(plains) => Ok((write_span(files, wants, plains).await?, Vec::new())),
        Err(e) if !is_damage(&e) => Err(e.into()),
        Err(e) if wants.len() == 1 => Ok((0, holes_of(&wants[0], &e))),
        Err(_) => {
            let mut written = 0;
            let mut holes = Vec::new();
            for want in wants {
                let one = std::slice::from_ref(&want);
                match read_span(&repo, &pack, one).await {
                    Ok(plains) => written += write_span(files.clone(), vec![want], plains).await?,
                    Err(e) if is_damage(&e) => holes.extend(holes_of(&want, &e)),
                    Err(e) => return Err(e.into()),
                }
            }
            Ok((written, holes))
        }
    }
}

fn holes_of(want: &Want, e: &drvault_repo::Error) -> Vec<Hole> {
    want.targets
        .iter()
        .map(|&(file, offset)| Hole {
            file,
            start: offset,
            end: offset + u64::from(want.entry.raw_length),
            reason: e.to_string(),
        })
        .collect()
}

/// Reads and opens the blobs of `wants` (neighbours in one pack), trying every target.
async fn read_span(
    repo: &Arc<Repository>,
    pack: &Id,
    wants: &[Want],
) -> drvault_repo::Result<Vec<Vec<u8>>> {
    let name = paths::pack(pack);
    let start = u64::from(wants[0].entry.offset);
    let last = &wants[wants.len() - 1].entry;
    let end = u64::from(last.offset) + u64::from(last.length);
    let entries: Arc<Vec<PackEntry>> = Arc::new(wants.iter().map(|w| w.entry).collect());
    // Decryption and decompression are CPU work: off the async workers. A copy that fails to
    // verify sends the read on to the next target.
    repo.store()
        .get_range_with(&name, start..end, |bytes| {
            let (repo, entries, name) = (repo.clone(), entries.clone(), name.clone());
            async move {
                tokio::task::spawn_blocking(move || open_all(&repo, &name, start, &bytes, &entries))
                    .await
                    .map_err(|e| {
                        drvault_repo::Error::Invalid(format!("restore worker failed: {e}"))
                    })?
            }
        })
        .await
}

/// Writes the opened blobs of one span into their files: each file once opened (or created),
/// all its blobs from this span written, then handed back to [`Files::wrote`], which installs
/// it when that was its last blob.
async fn write_span(files: Arc<Files>, wants: Vec<Want>, plains: Vec<Vec<u8>>) -> Result<u64> {
    tokio::task::spawn_blocking(move || -> Result<u64> {
        // (file, offset, blob)
        let mut writes: Vec<(u32, u64, usize)> = wants
            .iter()
            .enumerate()
            .flat_map(|(b, w)| w.targets.iter().map(move |&(f, o)| (f, o, b)))
            .collect();
        writes.sort_unstable();
        let mut written = 0;
        for group in writes.chunk_by(|a, b| a.0 == b.0) {
            let n = group[0].0 as usize;
            let temp = files.open(n)?;
            for &(_, offset, b) in group {
                // An all-zero blob writes nothing and stays a hole (files are created sparse
                // at their full size); it does not count as written.
                let wrote = write_sparse(&temp.file, &plains[b], offset)
                    .map_err(|e| files.target().io_error(&files.temp_path(n), e))?;
                if wrote {
                    written += plains[b].len() as u64;
                }
            }
            files.wrote(n, group.len(), temp)?;
        }
        Ok(written)
    })
    .await
    .map_err(|e| Error::Invalid(format!("restore worker failed: {e}")))?
}

/// File-system block size holes are kept at (as `cp --sparse=always` does).
const BLOCK: u64 = 4096;

/// Writes `plain` at `offset` of a file created sparse, skipping every block-aligned run of
/// zeros: those stay holes. Returns whether anything was written.
fn write_sparse(f: &std::fs::File, plain: &[u8], offset: u64) -> std::io::Result<bool> {
    let mut wrote = false;
    let mut run: Option<usize> = None;
    let mut i = 0usize;
    while i < plain.len() {
        let to_boundary = (BLOCK - (offset + i as u64) % BLOCK) as usize;
        let end = (i + to_boundary).min(plain.len());
        let zero = plain[i..end].iter().all(|&b| b == 0);
        match (zero, run) {
            (false, None) => run = Some(i),
            (true, Some(start)) => {
                f.write_all_at(&plain[start..i], offset + start as u64)?;
                wrote = true;
                run = None;
            }
            _ => {}
        }
        i = end;
    }
    if let Some(start) = run {
        f.write_all_at(&plain[start..], offset + start as u64)?;
        wrote = true;
    }
    Ok(wrote)
}

/// Opens every blob of a span read from `start` of pack `name`.
fn open_all(
    repo: &Repository,
    name: &str,
    start: u64,
    bytes: &[u8],
    entries: &[PackEntry],
) -> drvault_repo::Result<Vec<Vec<u8>>> {
    entries
        .iter()
        .map(|e| {
            let from = (u64::from(e.offset) - start) as usize;
            let sealed = bytes.get(from..from + e.length as usize).ok_or_else(|| {
                drvault_repo::Error::Integrity {
                    object: name.to_string(),
                    reason: format!("blob {} lies outside the bytes read", e.id),
                }
            })?;
            open_blob(repo.keys(), BlobKind::Data, &e.id, e.raw_length, sealed).map_err(|err| {
                match err {
                    drvault_repo::Error::Integrity { reason, .. } => {
                        drvault_repo::Error::Integrity {
                            object: format!("{name} (blob {})", e.id),
                            reason,
                        }
                    }
                    other => other,
                }
            })
        })
        .collect()
}
