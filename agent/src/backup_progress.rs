//! `drvault backup`'s one-line progress display on stderr, only when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use drvault_repo::format::Summary;

pub struct Progress {
    started: Instant,
    last: Instant,
}

impl Progress {
    pub fn on_terminal() -> Option<Self> {
        std::io::stderr().is_terminal().then(|| Progress {
            started: Instant::now(),
            last: Instant::now(),
        })
    }
}

impl drvault_backup::Progress for Progress {
    /// Redraws at most four times a second.
    fn update(&mut self, s: &Summary) {
        if self.last.elapsed() < Duration::from_millis(250) {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64();
        let files = s.files_new + s.files_changed + s.files_unchanged;
        let mib = s.bytes_read as f64 / (1024.0 * 1024.0);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K[{secs:6.1}s] {files} files, {} dirs, {mib:.1} MiB read ({:.1} MiB/s), {} errors",
            s.dirs,
            mib / secs.max(0.001),
            s.errors
        );
        let _ = err.flush();
    }

    fn finish(&mut self) {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
}
