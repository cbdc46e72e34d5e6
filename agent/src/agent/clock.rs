//! The scheduler's clock. In a release build it is the wall clock. The test build (feature
//! `failpoints`) can take its time from a file a test writes (`DRVAULT_TEST_CLOCK`: one RFC 3339
//! time), so that a daily schedule, the run after a missed one or a daylight-saving change is
//! tested end to end by moving that time, not by waiting for it. Only scheduling reads this
//! clock: job history, metrics and the repository keep real time.

use std::time::Duration;

use chrono::{DateTime, Local};

/// Longest sleep on a set clock: the test may move it at any moment.
#[cfg(feature = "failpoints")]
const SET_CLOCK_POLL: Duration = Duration::from_millis(100);

pub(super) struct Clock {
    #[cfg(feature = "failpoints")]
    set_by: Option<std::path::PathBuf>,
}

impl Clock {
    pub(super) fn from_env() -> Self {
        Clock {
            #[cfg(feature = "failpoints")]
            set_by: std::env::var_os("DRVAULT_TEST_CLOCK").map(Into::into),
        }
    }

    pub(super) fn now(&self) -> DateTime<Local> {
        #[cfg(feature = "failpoints")]
        if let Some(path) = &self.set_by {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            match DateTime::parse_from_rfc3339(text.trim()) {
                Ok(t) => return t.with_timezone(&Local),
                Err(e) => tracing::warn!("test clock {}: {e}", path.display()),
            }
        }
        Local::now()
    }

    /// How long to sleep before `next` is due (at most an hour, to plan again).
    pub(super) fn sleep_until(&self, next: Option<DateTime<Local>>) -> Duration {
        let sleep = next
            .map(|n| (n - self.now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(3600))
            .min(Duration::from_secs(3600));
        #[cfg(feature = "failpoints")]
        if self.set_by.is_some() {
            return sleep.min(SET_CLOCK_POLL);
        }
        sleep
    }
}
