//! What every command needs: where the repository and the state are, a runtime, the passphrase.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use drvault_repo::store::Store;
use drvault_repo::target::Target;
use drvault_repo::Repository;
use tokio::runtime::Runtime;

use crate::cli::Global;
use crate::config::{Config, Strictness};

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn home_dir(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into())).join(fallback)
    })
}

/// The embedded default repository: /var/lib/drvault/repo for root, else the user's data dir.
pub fn default_repo() -> String {
    if is_root() {
        "/var/lib/drvault/repo".into()
    } else {
        home_dir("XDG_DATA_HOME", ".local/share")
            .join("drvault/repo")
            .display()
            .to_string()
    }
}

/// The state directory: `--state-dir`/`DRVAULT_STATE_DIR`, else /var/lib/drvault for root,
/// else the user's state directory.
pub fn state_dir(g: &Global) -> PathBuf {
    g.state_dir.clone().unwrap_or_else(|| {
        if is_root() {
            PathBuf::from("/var/lib/drvault")
        } else {
            home_dir("XDG_STATE_HOME", ".local/state").join("drvault")
        }
    })
}

/// Opens one configured target; a missing local directory is an empty target, not an error,
/// since the other targets still hold the repository.
fn open_target(
    t: &crate::config::TargetConfig,
    tuning: &drvault_repo::remote::Tuning,
    create: bool,
) -> Result<Target> {
    match Target::open_url_locked(&t.name, &t.url, &t.options, tuning, create, t.lock()?) {
        Err(drvault_repo::Error::NoRepository { .. }) => {
            Ok(Target::open_missing_local(&t.name, &t.url)?)
        }
        other => Ok(other?),
    }
}

pub struct Context {
    pub rt: Runtime,
    pub repo_location: String,
    pub state_dir: PathBuf,
    /// Targets from the configuration file, used when no --repo is given.
    config: Option<Config>,
    /// `[[drills]]` from the configuration file.
    drills: Vec<crate::config::DrillPlan>,
    /// The key rotation policy (`[keys]`, or the defaults).
    pub rotation: crate::config::RotationPolicy,
}

impl Context {
    /// A context from the configuration file, holding right only the sections `strict`
    /// names; the rest, when wrong, is left out with a warning. With `--repo` the file's
    /// targets are not used, so nothing in it need be right.
    pub fn new(g: &Global, strict: Strictness) -> Result<Self> {
        let strict = match (strict, &g.repo) {
            (Strictness::Storage, Some(_)) => Strictness::Nothing,
            (s, _) => s,
        };
        let file = match crate::config::locate(g.config.as_deref(), is_root()) {
            Some(path) => {
                let (config, warnings) = Config::load_with(&path, strict)?;
                for w in warnings {
                    tracing::warn!("{w}");
                }
                Some(config)
            }
            None => None,
        };
        Self::with_config(g, file)
    }

    /// A context for an already loaded configuration file (the agent keeps the last good one).
    pub fn with_config(g: &Global, file: Option<Config>) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            // Few blocking threads: each one can hold a malloc arena of freed pack buffers.
            .max_blocking_threads(4)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let drills = file
            .as_ref()
            .map(|c| c.resolved_drills())
            .unwrap_or_default();
        let rotation = match &file {
            Some(c) => c.keys.policy()?,
            None => crate::config::KeysSection::default().policy()?,
        };
        let config = match &g.repo {
            None => file.filter(|c| !c.targets.is_empty()),
            Some(_) => None,
        };
        let repo_location = match &config {
            Some(c) => c
                .ordered_targets()
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
            None => g.repo.clone().unwrap_or_else(default_repo),
        };
        Ok(Context {
            drills,
            rotation,
            rt,
            repo_location,
            state_dir: state_dir(g),
            config,
        })
    }

    /// The drill plans of the configuration file.
    pub fn drill_plans(&self) -> &[crate::config::DrillPlan] {
        &self.drills
    }

    /// The names of the configured targets (empty with a single --repo location).
    /// Values of the configured targets' credential options (to keep them out of evidence).
    pub fn secret_options(&self) -> Vec<String> {
        self.config
            .as_ref()
            .map(|c| {
                c.targets
                    .iter()
                    .flat_map(|t| t.options.iter())
                    .filter(|(k, _)| crate::config::is_secret(k))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn target_names(&self) -> Vec<String> {
        self.config
            .as_ref()
            .map(|c| c.ordered_targets().iter().map(|t| t.name.clone()).collect())
            .unwrap_or_default()
    }

    /// The repository's storage without the `excluded` targets (a failover scenario: they count
    /// as lost). Only reads are meant to go through it.
    pub fn store_without(&self, excluded: &[String]) -> Result<Store> {
        if excluded.is_empty() {
            return self.store(false);
        }
        let Some(config) = &self.config else {
            crate::exit::usage!("excluding targets needs a configuration file with [[targets]]");
        };
        for name in excluded {
            if !config.targets.iter().any(|t| &t.name == name) {
                crate::exit::usage!("{name:?} is not a configured target");
            }
        }
        let tuning = config.tuning()?;
        let mut targets = Vec::new();
        for t in config.ordered_targets() {
            if !excluded.contains(&t.name) {
                targets.push(open_target(t, &tuning, false)?);
            }
        }
        if targets.is_empty() {
            crate::exit::usage!(
                "the scenario excludes every target: nothing is left to restore from"
            );
        }
        let store = Store::new(targets, 1)?;
        self.rt.block_on(store.probe(tuning.probe_deadline()));
        Ok(store)
    }

    /// Opens the repository through `store`.
    pub fn open_with(&self, g: &Global, store: Store) -> Result<Arc<Repository>> {
        let pass = crate::password::read(g.password_file.as_deref(), false)?;
        let repo =
            self.rt
                .block_on(Repository::open(store, &pass, Some(self.state_dir.clone())))?;
        Ok(Arc::new(repo))
    }

    /// The repository's storage: the configured targets, or the single --repo location.
    pub fn store(&self, create: bool) -> Result<Store> {
        let Some(config) = &self.config else {
            let store = Store::open(&self.repo_location, create)?;
            let deadline = drvault_repo::remote::Tuning::default().probe_deadline();
            self.rt.block_on(store.probe(deadline));
            return Ok(store);
        };
        let tuning = config.tuning()?;
        let mut targets = Vec::new();
        for t in config.ordered_targets() {
            targets.push(open_target(t, &tuning, create)?);
        }
        let quorum = config.repository.write_quorum.unwrap_or(targets.len());
        let store = Store::new(targets, quorum)?;
        self.rt.block_on(store.probe(tuning.probe_deadline()));
        Ok(store)
    }

    /// Opens the repository without its index: a backup reads it after its session exists
    /// (`Repository::begin_backup`), check after noting the maintenance lease.
    pub fn open_without_index(&self, g: &Global) -> Result<Arc<Repository>> {
        let store = self.store(false)?;
        let pass = crate::password::read(g.password_file.as_deref(), false)?;
        let repo = self.rt.block_on(Repository::open_without_index(
            store,
            &pass,
            Some(self.state_dir.clone()),
        ))?;
        Ok(Arc::new(repo))
    }

    /// Runs one backup through the backup library, in `opened` (a repository opened without its
    /// index) or one it opens (and opens again when a rotation happened since the opening:
    /// nothing was written then). Warns of
    /// the objects a target missed.
    pub fn backup(
        &self,
        g: &Global,
        req: &drvault_backup::BackupRequest,
        controls: &mut drvault_backup::Controls,
        opened: Option<Arc<Repository>>,
    ) -> Result<drvault_backup::BackupOutcome> {
        let repo = match opened {
            Some(repo) => repo,
            None => self.open_without_index(g)?,
        };
        let out = match drvault_backup::run(&self.rt, repo, req, controls) {
            Err(drvault_backup::Error::Repo(drvault_repo::Error::KeyringChanged)) => {
                drvault_backup::run(&self.rt, self.open_without_index(g)?, req, controls)?
            }
            other => other?,
        };
        for (target, n) in &out.owed {
            eprintln!(
                "drvault: target {target} missed {n} objects (the write quorum holds them); \
                 run `drvault sync` once it is back"
            );
        }
        Ok(out)
    }

    /// Copies what each target misses from the others, then surveys them again for the
    /// catalog: what `drvault sync` and the agent's sync jobs do.
    pub fn sync_targets(&self) -> Result<drvault_repo::sync::SyncReport> {
        let store = self.store(false)?;
        let report = self.rt.block_on(drvault_repo::sync::sync(&store))?;
        let (_, names) = self.rt.block_on(drvault_repo::sync::survey(&store));
        if let Err(e) = self.rt.block_on(drvault_repo::sync::record_survey(
            &store,
            &self.state_dir,
            &names,
        )) {
            tracing::info!("owed objects not recorded in the catalog: {e}");
        }
        Ok(report)
    }

    pub fn open(&self, g: &Global) -> Result<Arc<Repository>> {
        let store = self.store(false)?;
        let pass = crate::password::read(g.password_file.as_deref(), false)?;
        let repo =
            self.rt
                .block_on(Repository::open(store, &pass, Some(self.state_dir.clone())))?;
        Ok(Arc::new(repo))
    }
}

/// A location compared as the user may write it: "/srv/repo/" and "/srv/repo" are one.
pub fn same_location(l: &str) -> String {
    let t = l.trim_end_matches('/');
    if t.is_empty() {
        l.to_string()
    } else {
        t.to_string()
    }
}

/// A snapshot path as components ("/etc/ssh" and "etc/ssh" are the same).
pub fn components(p: &std::path::Path) -> Vec<Vec<u8>> {
    p.components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        })
        .collect()
}
