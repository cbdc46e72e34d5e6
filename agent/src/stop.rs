//! The process's stop request: SIGTERM in the agent, Ctrl-C in `drvault backup`. The signal
//! handlers cancel one process-wide token, and every operation started here is given a clone
//! of it ([`token`]); the libraries only see the token they are passed.

use std::sync::OnceLock;

use drvault_repo::cancel::Cancel;

static TOKEN: OnceLock<Cancel> = OnceLock::new();

/// The token the signal handlers cancel.
pub fn token() -> Cancel {
    TOKEN.get_or_init(Cancel::new).clone()
}

pub fn request() {
    token().cancel();
}

/// Whether `e` says the operation stopped on such a request (at a clean point).
pub fn is_interrupted(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<drvault_backup::Error>(),
            Some(drvault_backup::Error::Interrupted)
        ) || matches!(
            c.downcast_ref::<drvault_repo::Error>(),
            Some(drvault_repo::Error::Interrupted)
        )
    })
}

/// Ctrl-C or SIGTERM stops the running operation at its next clean point (a backup indexes what
/// it uploaded, a prune or re-encryption leaves what the next run continues from); a second one
/// ends the process at once.
pub fn on_signals(rt: &tokio::runtime::Runtime) {
    use tokio::signal::unix::{signal, SignalKind};
    rt.spawn(async {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        for n in 0.. {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if n > 0 {
                std::process::exit(130);
            }
            eprintln!("drvault: stopping at the next clean point (again to stop at once)");
            request();
        }
    });
}
