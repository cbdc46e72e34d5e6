//! What remote targets and the S3 calls object_store does not make share: time limits and
//! retries ([`Tuning`]) and reading a setting from a target's options or the environment.
//! Its own module so that `remote` (which opens targets, with their lock) and `lock` (which
//! signs its own S3 requests) both use it without using each other.

use std::collections::BTreeMap;
use std::time::Duration;

use object_store::{BackoffConfig, ClientConfigKey, RetryConfig};

/// Time limits and retries for remote targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Limit for one whole request, body included (a 16 MiB pack needs 4.5 Mbit/s to fit in 30 s).
    pub request_timeout: Duration,
    /// Retries of a failed request, with exponential backoff.
    pub max_retries: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_retries: 2,
        }
    }
}

impl Tuning {
    /// The longest one operation may take, retries and backoff included: the bound drvault
    /// enforces itself on top of object_store's own limits.
    pub fn operation_deadline(&self) -> Duration {
        let attempts = self.max_retries as u32 + 1;
        (self.connect_timeout + self.request_timeout) * attempts + self.max_backoff() * attempts
    }

    /// The limit for the one cheap request that opens a run (see `Store::probe`): a stalled
    /// target is found out in seconds rather than after a full round of request retries.
    pub fn probe_deadline(&self) -> Duration {
        self.connect_timeout + self.request_timeout.min(Duration::from_secs(10))
    }

    fn max_backoff(&self) -> Duration {
        Duration::from_secs(2)
    }

    pub(crate) fn retry(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: self.max_backoff(),
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: self.request_timeout * (self.max_retries as u32 + 1),
        }
    }

    /// Our time limits as object_store client settings. They are applied as configuration keys
    /// (not `with_client_options`, which would drop client settings taken from the environment,
    /// such as `AWS_ALLOW_HTTP`); a target's own `options` still override them.
    pub(crate) fn client_settings(&self) -> [(ClientConfigKey, String); 2] {
        [
            (
                ClientConfigKey::ConnectTimeout,
                format!("{}ms", self.connect_timeout.as_millis()),
            ),
            (
                ClientConfigKey::Timeout,
                format!("{}ms", self.request_timeout.as_millis()),
            ),
        ]
    }
}

/// The value of a setting from a target's options or, failing that, the environment.
pub(crate) fn setting(options: &BTreeMap<String, String>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| options.get(*k).cloned())
        .or_else(|| {
            keys.iter()
                .find_map(|k| std::env::var(k.to_ascii_uppercase()).ok())
        })
}
