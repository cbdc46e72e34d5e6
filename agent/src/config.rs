//! The configuration file: one repository stored on several targets.
//!
//! ```toml
//! [repository]
//! write_quorum = 2            # default: all targets
//! read_order = ["local", "eu"] # default: the order of [[targets]]
//! [[targets]]
//! name = "local"
//! url = "file:///var/backups/drvault"
//! ```

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

mod jobs;
pub use jobs::{AgentSection, Job, JobConfig, JobKind};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub repository: RepositorySection,
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub keys: KeysSection,
    #[serde(default)]
    pub drills: Vec<DrillPlan>,
    #[serde(default)]
    pub agent: AgentSection,
    #[serde(default)]
    pub jobs: Vec<JobConfig>,
}

/// A restore drill (`[[drills]]`), run by `drtest run --plan NAME`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillPlan {
    pub name: String,
    /// Backed-up paths to restore (default: the whole snapshot).
    #[serde(default)]
    pub paths: Vec<String>,
    /// A backup job of `[[jobs]]` whose paths (and host) the drill restores, instead of `paths`.
    pub job: Option<String>,
    /// Only snapshots of this host (default: any host).
    pub host: Option<String>,
    /// "latest" (default) or an RFC 3339 time: the newest snapshot at or before it.
    pub snapshot: Option<String>,
    /// Targets that count as lost in this scenario.
    #[serde(default)]
    pub exclude_targets: Vec<String>,
    /// Where to restore (default: a scratch directory under the state directory, removed after).
    pub restore_dir: Option<PathBuf>,
    /// Commands run against the restored data (`{restore_dir}` is replaced), each within
    /// `validate_timeout`.
    #[serde(default)]
    pub validate: Vec<String>,
    pub validate_timeout: Option<String>,
    /// Environment variables the validation commands get, beyond the allowlist (see
    /// `drill::validate`): nothing else of drvault's environment reaches them.
    #[serde(default)]
    pub validate_env: BTreeMap<String, String>,
    /// Objectives, e.g. "30m" and "24h".
    pub rto_objective: String,
    pub rpo_objective: String,
}

/// The automatic key rotation policy (`drvault key rotate --if-due`, and the agent's schedule).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysSection {
    /// Start a new data-key epoch when the active one is this old (default "90d").
    pub rotate_every: Option<String>,
    /// ... or when this many blobs are sealed under it (default 2^28, a sixteenth of the 2^32
    /// messages AES-GCM with random nonces allows per key).
    pub rotate_after_blobs: Option<u64>,
}

/// The rotation policy with its defaults applied.
#[derive(Debug, Clone, Copy)]
pub struct RotationPolicy {
    pub max_age: std::time::Duration,
    pub max_blobs: u64,
}

impl KeysSection {
    pub fn policy(&self) -> Result<RotationPolicy> {
        let max_age = match &self.rotate_every {
            Some(d) => crate::duration::parse(d).context("[keys] rotate_every")?,
            None => std::time::Duration::from_secs(90 * 86_400),
        };
        let max_blobs = self.rotate_after_blobs.unwrap_or(1 << 28);
        if max_age.is_zero() || max_blobs == 0 || max_blobs > 1 << 31 {
            bail!(
                "[keys]: rotate_every must be positive and rotate_after_blobs between 1 and 2^31"
            );
        }
        Ok(RotationPolicy { max_age, max_blobs })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositorySection {
    pub write_quorum: Option<usize>,
    pub read_order: Option<Vec<String>>,
    /// Limits for remote targets (docs/DECISIONS.md): e.g. "5s", "60s", 3.
    pub connect_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub max_retries: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub name: String,
    pub url: String,
    /// object_store configuration keys, passed through unchanged.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// Option keys whose values are credentials: object_store's keys and their aliases
/// (`secret_access_key`, `session_token`, `account_key`, `master_key`, `sas_key`, `client_secret`,
/// `bearer_token`, `service_account_key`, ...).
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "key"
        || k.ends_with("_key")
        || [
            "secret",
            "password",
            "token",
            "sas",
            "access_key",
            "account_key",
            "service_account_key",
        ]
        .iter()
        .any(|s| k.contains(s))
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let config: Config = toml::from_str(&text)
            .with_context(|| format!("config {} is not valid", path.display()))?;
        let mode = std::fs::metadata(path)?.permissions().mode();
        // Its drill plans and hooks run commands as the agent's user: only the owner may write it.
        if mode & 0o022 != 0 {
            bail!(
                "config {} is writable by others than its owner (mode {:o}), who could make drvault \
                 run their commands: chmod go-w it",
                path.display(),
                mode & 0o777
            );
        }
        let has_secrets = config
            .targets
            .iter()
            .any(|t| t.options.keys().any(|k| is_secret(k)));
        if has_secrets && mode & 0o077 != 0 {
            bail!(
                "config {} holds credentials but is readable by others (mode {:o}): chmod 600 it, \
                 or take the credentials from the environment",
                path.display(),
                mode & 0o777
            );
        }
        config.validate()?;
        config.jobs()?;
        config.agent.metrics_address()?;
        config.tuning()?;
        config.keys.policy()?;
        for d in &config.drills {
            crate::duration::parse(&d.rto_objective)
                .with_context(|| format!("drill {}: rto_objective", d.name))?;
            crate::duration::parse(&d.rpo_objective)
                .with_context(|| format!("drill {}: rpo_objective", d.name))?;
            if let Some(t) = &d.validate_timeout {
                crate::duration::parse(t)
                    .with_context(|| format!("drill {}: validate_timeout", d.name))?;
            }
            if let Some(job) = &d.job {
                match config.jobs.iter().find(|j| &j.name == job) {
                    Some(j) if j.kind == JobKind::Backup => {}
                    Some(_) => bail!("drill {}: job {job:?} is not a backup job", d.name),
                    None => bail!("drill {}: job {job:?} is not a [[jobs]] entry", d.name),
                }
                if !d.paths.is_empty() {
                    bail!("drill {}: give either `job` or `paths`, not both", d.name);
                }
            }
            for t in &d.exclude_targets {
                if !config.targets.iter().any(|c| &c.name == t) {
                    bail!(
                        "drill {}: exclude_targets names {t:?}, which is not a target",
                        d.name
                    );
                }
            }
        }
        Ok(config)
    }

    /// The drill plans, with a plan that names a backup job given that job's paths and host.
    pub fn resolved_drills(&self) -> Vec<DrillPlan> {
        let mut plans = self.drills.clone();
        for p in &mut plans {
            let Some(job) = p
                .job
                .as_ref()
                .and_then(|n| self.jobs.iter().find(|j| &j.name == n))
            else {
                continue;
            };
            if p.paths.is_empty() {
                p.paths = job.paths.clone();
            }
            if p.host.is_none() {
                p.host = job.host.clone();
            }
        }
        plans
    }

    /// The `[[jobs]]`, validated.
    pub fn jobs(&self) -> Result<Vec<Job>> {
        let plans: Vec<String> = self.drills.iter().map(|d| d.name.clone()).collect();
        jobs::validate_jobs(&self.jobs, &plans)
    }

    fn validate(&self) -> Result<()> {
        let mut names = std::collections::BTreeSet::new();
        for t in &self.targets {
            if t.name.is_empty() || !names.insert(t.name.as_str()) {
                bail!("target names must be non-empty and unique ({:?})", t.name);
            }
        }
        if let Some(q) = self.repository.write_quorum {
            if q == 0 || q > self.targets.len() {
                bail!(
                    "write_quorum {q} must be between 1 and the number of targets ({})",
                    self.targets.len()
                );
            }
        }
        if let Some(order) = &self.repository.read_order {
            for n in order {
                if !names.contains(n.as_str()) {
                    bail!("read_order names {n:?}, which is not a target");
                }
            }
        }
        Ok(())
    }

    /// Time limits and retries for remote targets.
    pub fn tuning(&self) -> Result<drvault_repo::remote::Tuning> {
        let mut t = drvault_repo::remote::Tuning::default();
        let r = &self.repository;
        if let Some(d) = &r.connect_timeout {
            t.connect_timeout =
                crate::duration::parse(d).context("[repository] connect_timeout")?;
        }
        if let Some(d) = &r.request_timeout {
            t.request_timeout =
                crate::duration::parse(d).context("[repository] request_timeout")?;
        }
        if let Some(n) = r.max_retries {
            if n > 10 {
                bail!("[repository] max_retries {n} is more than 10");
            }
            t.max_retries = n;
        }
        if t.connect_timeout.is_zero() || t.request_timeout.is_zero() {
            bail!("[repository] timeouts must be longer than zero");
        }
        Ok(t)
    }

    /// Targets in read order: `read_order` first, then the rest in file order.
    pub fn ordered_targets(&self) -> Vec<&TargetConfig> {
        let mut out: Vec<&TargetConfig> = Vec::new();
        for n in self.repository.read_order.iter().flatten() {
            if let Some(t) = self.targets.iter().find(|t| &t.name == n) {
                out.push(t);
            }
        }
        for t in &self.targets {
            if !out.iter().any(|o| o.name == t.name) {
                out.push(t);
            }
        }
        out
    }
}

/// The configuration file to use: `--config`/`DRVAULT_CONFIG`, else the default location if it exists.
pub fn locate(explicit: Option<&Path>, is_root: bool) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    let default = if is_root {
        PathBuf::from("/etc/drvault/drvault.toml")
    } else {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into()))
                    .join(".config")
            });
        base.join("drvault/drvault.toml")
    };
    default.exists().then_some(default)
}

#[cfg(test)]
mod tests {
    #[test]
    fn object_store_credential_aliases_count_as_secrets() {
        for key in [
            "aws_secret_access_key",
            "secret_access_key",
            "aws_session_token",
            "token",
            "azure_storage_account_key",
            "account_key",
            "master_key",
            "azure_storage_master_key",
            "sas_key",
            "azure_storage_sas_key",
            "client_secret",
            "bearer_token",
            "google_service_account_key",
            "service_account_key",
        ] {
            assert!(super::is_secret(key), "{key}");
        }
        for key in ["region", "endpoint", "bucket", "allow_http"] {
            assert!(!super::is_secret(key), "{key}");
        }
    }
}
