//! A process-wide request to stop at the next clean point (SIGTERM in the agent, Ctrl-C in
//! `drvault backup`): the backup walk checks it between entries, so what was uploaded is
//! indexed and the next backup continues from it.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// The error a backup returns when it stopped on request.
#[derive(Debug, thiserror::Error)]
#[error("the backup was stopped on request; what it uploaded is indexed and the next backup continues from it")]
pub struct Interrupted;
