//! Runs file-system work over a list on one thread per core.

use crate::{Error, Result};

/// Items a worker of [`for_each_parallel`] takes at a time: neighbours (files of one directory)
/// go to one thread, so two threads rarely wait on the same directory's lock in the kernel.
const BATCH: usize = 64;

/// Runs `f` over `items` on one thread per core; returns the warnings, or the first error.
pub(crate) fn for_each_parallel<T: Sync>(
    items: &[T],
    f: impl Fn(&T) -> Result<Vec<String>> + Sync,
) -> Result<Vec<String>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<Vec<String>> {
                    let mut warnings = Vec::new();
                    loop {
                        let first = next.fetch_add(BATCH, std::sync::atomic::Ordering::Relaxed);
                        if first >= items.len() {
                            return Ok(warnings);
                        }
                        let batch = &items[first..(first + BATCH).min(items.len())];
                        for item in batch {
                            warnings.extend(f(item)?);
                        }
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            all.extend(
                w.join()
                    .map_err(|_| Error::Invalid("restore worker panicked".into()))??,
            );
        }
        Ok(all)
    })
}
