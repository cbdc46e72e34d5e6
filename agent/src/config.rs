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

/// The rotation policy (with the section's defaults applied by [`KeysSection::policy`]).
pub use drvault_repo::keys::RotationPolicy;

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
    /// Object lock (S3): `"compliance"` or `"governance"`, with `object_lock_retention`.
    pub object_lock_mode: Option<String>,
    /// How long every object written stays locked, e.g. `"30d"`.
    pub object_lock_retention: Option<String>,
}

impl TargetConfig {
    /// The target's object lock, checked against the rule in `drvault_repo::lock`.
    pub fn lock(&self) -> Result<Option<drvault_repo::lock::LockPolicy>> {
        use drvault_repo::lock::{LockMode, LockPolicy};
        match (&self.object_lock_mode, &self.object_lock_retention) {
            (None, None) => Ok(None),
            (Some(mode), Some(retention)) => {
                let mode =
                    LockMode::parse(mode).with_context(|| format!("target {}", self.name))?;
                let retention = crate::duration::parse(retention)
                    .with_context(|| format!("target {}: object_lock_retention", self.name))?;
                Ok(Some(
                    LockPolicy::new(mode, retention)
                        .with_context(|| format!("target {}", self.name))?,
                ))
            }
            _ => bail!(
                "target {}: give both object_lock_mode and object_lock_retention, or neither",
                self.name
            ),
        }
    }
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

/// How much of the configuration file a command needs to be right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Every section (the agent, drills): any error stops the command.
    All,
    /// Only where the repository is (`[repository]`, `[[targets]]`); an error elsewhere is a
    /// warning and that section is left out, so a typo in `[[jobs]]` does not block a restore.
    Storage,
    /// Nothing (`--repo` names the repository): any error is a warning and the file's
    /// sections that still parse are used.
    Nothing,
}

impl Config {
    /// Reads and validates a configuration file; every section must be right.
    pub fn load(path: &Path) -> Result<Self> {
        Ok(Self::load_with(path, Strictness::All)?.0)
    }

    /// Reads a configuration file, holding only the sections `strict` names to be right: the
    /// others are left out when they are wrong, with a warning (returned) naming the error.
    /// The file's permissions are always checked: they are about who can run commands as
    /// drvault, whatever the command.
    pub fn load_with(path: &Path, strict: Strictness) -> Result<(Self, Vec<String>)> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let mut warnings = Vec::new();
        let config: Config = if strict == Strictness::All {
            toml::from_str(&text)
                .with_context(|| format!("config {} is not valid", path.display()))?
        } else {
            Self::parse_by_section(path, &text, strict, &mut warnings)?
        };
        Self::check_permissions(path, &config)?;
        let config = if strict == Strictness::All {
            config.validate_all()?;
            config
        } else {
            config.validate_leniently(path, strict, &mut warnings)?
        };
        Ok((config, warnings))
    }

    /// Each top-level section on its own: a broken one is left out (or, when `strict` needs
    /// it, an error).
    fn parse_by_section(
        path: &Path,
        text: &str,
        strict: Strictness,
        warnings: &mut Vec<String>,
    ) -> Result<Config> {
        let shown = path.display();
        let table: toml::Table = match toml::from_str(text) {
            Ok(t) => t,
            Err(e) if strict == Strictness::Nothing => {
                warnings.push(format!(
                    "config {shown} is not valid TOML and was ignored: {e}"
                ));
                return Ok(Config::default());
            }
            Err(e) => {
                return Err(anyhow::Error::from(e).context(format!("config {shown} is not valid")))
            }
        };
        let mut config = Config::default();
        for (key, value) in table {
            let storage = matches!(key.as_str(), "repository" | "targets");
            let parsed: std::result::Result<(), toml::de::Error> = match key.as_str() {
                "repository" => value.try_into().map(|v| config.repository = v),
                "targets" => value.try_into().map(|v| config.targets = v),
                "keys" => value.try_into().map(|v| config.keys = v),
                "drills" => value.try_into().map(|v| config.drills = v),
                "agent" => value.try_into().map(|v| config.agent = v),
                "jobs" => value.try_into().map(|v| config.jobs = v),
                // `[[target]]` for `[[targets]]` would otherwise send the command to the default
                // repository: only a command that reads no section may go on.
                other if strict == Strictness::Storage => {
                    bail!("config {shown}: unknown section [{other}] (a typo? the sections are repository, targets, keys, drills, agent, jobs)")
                }
                other => {
                    warnings.push(format!(
                        "config {shown}: unknown section [{other}] ignored (a typo?)"
                    ));
                    Ok(())
                }
            };
            match parsed {
                Ok(()) => {}
                Err(e) if storage && strict == Strictness::Storage => {
                    return Err(anyhow::Error::from(e)
                        .context(format!("config {shown}: section [{key}] is not valid")))
                }
                Err(e) => warnings.push(format!(
                    "config {shown}: section [{key}] is not valid and was left out ({}); \
                     `drvault agent --print-schedule` checks the whole file",
                    e.to_string().trim()
                )),
            }
        }
        Ok(config)
    }

    /// Validates what `strict` needs; other sections that do not validate are left out.
    fn validate_leniently(
        mut self,
        path: &Path,
        strict: Strictness,
        warnings: &mut Vec<String>,
    ) -> Result<Config> {
        let shown = path.display();
        let storage = self.validate().and_then(|()| self.tuning().map(|_| ()));
        if let Err(e) = storage {
            if strict == Strictness::Storage {
                return Err(e.context(format!("config {shown} is not valid")));
            }
            warnings.push(format!("config {shown}: {e:#}; its targets were left out"));
            self.targets.clear();
            self.repository = RepositorySection::default();
        }
        if let Err(e) = self.keys.policy() {
            warnings.push(format!("config {shown}: [keys] left out: {e:#}"));
            self.keys = KeysSection::default();
        }
        if let Err(e) = self
            .jobs()
            .and_then(|_| self.agent.metrics_address().map(|_| ()))
        {
            warnings.push(format!(
                "config {shown}: [agent] and [[jobs]] left out: {e:#}"
            ));
            self.jobs.clear();
            self.agent = AgentSection::default();
        }
        if let Err(e) = self.validate_drills() {
            warnings.push(format!("config {shown}: [[drills]] left out: {e:#}"));
            self.drills.clear();
        }
        Ok(self)
    }

    fn check_permissions(path: &Path, config: &Config) -> Result<()> {
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
        Ok(())
    }

    fn validate_all(&self) -> Result<()> {
        self.validate()?;
        self.jobs()?;
        self.validate_lock_renewal()?;
        self.agent.metrics_address()?;
        self.tuning()?;
        self.keys.policy()?;
        self.validate_drills()
    }

    fn validate_drills(&self) -> Result<()> {
        let config = self;
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
        Ok(())
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
    /// The object lock rule (docs/DECISIONS.md, "Object lock"): prune renews locks, so the
    /// agent's prune jobs must run at least every quarter of the shortest retention. Without
    /// prune jobs here, prune runs elsewhere (cron, a maintenance host) and is not checked.
    fn validate_lock_renewal(&self) -> Result<()> {
        let Some(shortest) = self
            .targets
            .iter()
            .filter_map(|t| t.lock().ok().flatten())
            .min_by_key(|p| p.retention)
        else {
            return Ok(());
        };
        let every = shortest.renewal_interval();
        let limit = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
        let now = chrono::Local::now();
        for job in self.jobs()? {
            if job.config.kind != jobs::JobKind::Prune {
                continue;
            }
            let gap = job
                .schedule
                .longest_gap(&now, chrono::Duration::days(400), 20_000);
            if gap.is_none_or(|g| g > limit) {
                bail!(
                    "job {:?} prunes at most every {}, but the object lock of {} days needs a \
                     prune at least every {} (a quarter of the retention: prune renews the locks, \
                     and one failed run must do no harm); schedule it more often or lengthen \
                     object_lock_retention",
                    job.config.name,
                    gap.map_or("never".to_string(), |g| format!("{} h", g.num_hours())),
                    shortest.retention.as_secs() / 86_400,
                    format_args!("{} h", every.as_secs() / 3600)
                );
            }
        }
        Ok(())
    }

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
            t.lock()?;
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
    fn config(text: &str) -> anyhow::Result<super::Config> {
        let c: super::Config = toml::from_str(text)?;
        c.validate_all()?;
        Ok(c)
    }

    #[test]
    fn a_lock_needs_prune_jobs_every_quarter_retention() {
        let target =
            "[[targets]]\nname = \"s3\"\nurl = \"s3://b/p\"\nobject_lock_mode = \"compliance\"\n";
        let job = |schedule: &str| {
            format!("[[jobs]]\nname = \"prune\"\nkind = \"prune\"\nschedule = \"{schedule}\"\n")
        };
        // 30 days: a weekly prune is enough, a monthly one is not.
        let thirty = format!("{target}object_lock_retention = \"30d\"\n");
        config(&format!("{thirty}{}", job("0 0 3 * * sun"))).expect("weekly is enough");
        let err =
            config(&format!("{thirty}{}", job("0 0 3 1 * *"))).expect_err("monthly is not enough");
        assert!(
            format!("{err:#}").contains("at least every 180 h"),
            "{err:#}"
        );
        // Too short or too long a retention, or half the settings, are refused outright.
        for bad in ["1d", "20000d"] {
            assert!(config(&format!("{target}object_lock_retention = \"{bad}\"\n")).is_err());
        }
        assert!(config(target).is_err());
    }

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
