//! Host keys (docs/FORMAT.md section 6, "Host keys"): making a repository take them (format
//! version 2: the keyring gains the host secrets; index objects and prune marks move under
//! index keys that hosts hold) and adding a host's put-only key slot.

use drvault_keyring::{Header, ObjectKind};

use super::*;
use crate::format::{IndexFile, RepoFile};
use crate::lease::Lease;

/// What `migrate` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MigrateReport {
    /// False when the repository already took host keys (the run only finished the rewrite).
    pub keyring_upgraded: bool,
    pub indexes_rewritten: u64,
    pub marks_rewritten: u64,
}

const MIGRATE_ACTION: &str = "migrate the repository to format version 2";

/// Upgrades the repository in place to take host keys, resumably: first the keyring (host
/// secrets, and the host keyring beside it), then every index object and prune mark still
/// sealed under a data key is sealed again under its epoch's index key (new ones are
/// already). Running it again finishes an interrupted run; on a repository that needs
/// nothing it changes nothing. Recorded in the audit log (`repository.migrate`).
pub async fn migrate(repo: &Repository) -> Result<MigrateReport> {
    Admin { repo }.migrate().await
}

/// Adds a put-only key slot for host `host` (its label): it backs up and deduplicates
/// against the whole repository but opens nothing stored. Upgrades the repository first
/// when it does not take host keys yet. Returns the slot's object name.
/// Recorded in the audit log (`key.add`, kind `host`).
pub async fn add_host_key(
    repo: &Repository,
    host: &str,
    passphrase: &[u8],
    kdf: KdfParams,
) -> Result<String> {
    Admin { repo }.add_host_key(host, passphrase, kdf).await
}

impl Admin<'_> {
    async fn migrate(&self) -> Result<MigrateReport> {
        self.repo.keyring()?;
        self.repo
            .store()
            .ensure_deletable("migrate", &[paths::INDEX, paths::PRUNE])
            .await?;
        self.repo.audit().ready("repository.migrate").await?;
        let migrated = self.migrate_inner().await;
        self.repo
            .audit()
            .record_outcome("repository.migrate", migrated, |r| {
                serde_json::json!({
                    "format": 2,
                    "keyring_upgraded": r.keyring_upgraded,
                    "indexes_rewritten": r.indexes_rewritten,
                    "marks_rewritten": r.marks_rewritten,
                })
            })
            .await
    }

    async fn migrate_inner(&self) -> Result<MigrateReport> {
        let lease = Lease::acquire(self.repo.store(), "migration", LEASE_TTL).await?;
        let result = async {
            let mut report = MigrateReport::default();
            let mut kr = self.repo.current_keyring().await?;
            if kr.enable_hosts()? {
                self.save_keyring(&kr).await?;
                report.keyring_upgraded = true;
            }
            crate::failpoint::hit("migrate.after-keyring").await;
            // This process seals with the upgraded keyring from here on.
            let upgraded = self.repo.with_keyring(kr);
            let upgraded = Admin { repo: &upgraded };
            // Listed again until a pass finds nothing left: a backup that opened the repository
            // before the upgrade may still write index objects under a data key meanwhile.
            for _pass in 0..3 {
                let mut rewritten = 0;
                for name in self
                    .repo
                    .store()
                    .list_names_complete(paths::INDEX, MIGRATE_ACTION)
                    .await?
                {
                    lease.keep_alive(self.repo.store()).await?;
                    if upgraded.reseal_shared::<IndexFile>(&name).await? {
                        rewritten += 1;
                    }
                }
                report.indexes_rewritten += rewritten;
                if rewritten == 0 {
                    break;
                }
            }
            for name in self
                .repo
                .store()
                .list_names_complete(paths::PRUNE, MIGRATE_ACTION)
                .await?
            {
                lease.keep_alive(self.repo.store()).await?;
                if upgraded.reseal_mark(&name).await? {
                    report.marks_rewritten += 1;
                }
            }
            Ok(report)
        }
        .await;
        lease.release(self.repo.store()).await?;
        result
    }

    /// Seals one object of a shareable kind again under the index key when it is still sealed
    /// under a data key: the new object first, then the old one goes. True when it did.
    async fn reseal_shared<T: RepoFile>(&self, name: &str) -> Result<bool> {
        let bytes = match self.repo.store().get(name).await {
            Ok(b) => b,
            // Replaced meanwhile (a prune consolidating indexes, a mark removed).
            Err(Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let header = Header::parse(&bytes).map_err(|e| Error::integrity(name, e))?;
        if Some(header.kind) == T::KIND.shared() {
            return Ok(false);
        }
        let file: T = self.repo.open_file(name, &bytes)?;
        let sealed = self.repo.seal_file(&file)?;
        let new_name = format!("{}{}", T::DIR, Id::of_stored(&sealed));
        self.repo
            .store()
            .put_new(&new_name, sealed.into(), true)
            .await?;
        self.repo.store().delete(name).await?;
        Ok(true)
    }

    /// A prune mark sealed again under the index key, with the authentication full keys add
    /// (`write_mark`): the new mark first, then the old one goes. True when it did.
    async fn reseal_mark(&self, name: &str) -> Result<bool> {
        let bytes = match self.repo.store().get(name).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let header = Header::parse(&bytes).map_err(|e| Error::integrity(name, e))?;
        if header.kind == ObjectKind::SharedPruneMark {
            return Ok(false);
        }
        let mark: crate::format::PruneMark = self.repo.open_file(name, &bytes)?;
        self.repo.write_prune_mark(&mark).await?;
        self.repo.store().delete(name).await?;
        Ok(true)
    }

    async fn add_host_key(&self, host: &str, passphrase: &[u8], kdf: KdfParams) -> Result<String> {
        self.repo.keyring()?;
        if host.is_empty()
            || host.len() > drvault_keyring::MAX_LABEL
            || host.chars().any(char::is_control)
        {
            return Err(Error::Usage(format!(
                "the host name {host:?} must be 1 to {} bytes without control characters",
                drvault_keyring::MAX_LABEL
            )));
        }
        if passphrase.is_empty() {
            return Err(Error::Usage("refusing an empty passphrase".into()));
        }
        if !self.repo.current_keyring().await?.takes_hosts() {
            self.migrate().await?;
        }
        self.repo.audit().ready("key.add").await?;
        let added = async {
            let kr = self.repo.current_keyring().await?;
            let pass = zeroize::Zeroizing::new(passphrase.to_vec());
            let now = unix_now();
            let host = host.to_string();
            let slot = tokio::task::spawn_blocking(move || {
                KeySlot::create_host(now, kdf, &pass, &host, &kr)
            })
            .await
            .map_err(Error::task)??;
            let bytes = slot.encode();
            let name = paths::key(&Id::of_stored(&bytes));
            self.repo.store().put_new(&name, bytes.into(), true).await?;
            Ok(name)
        }
        .await;
        self.repo.audit().record_outcome("key.add",
            added,
            |name| serde_json::json!({ "slot": paths::short(name), "kind": "host", "label": host }),
        )
        .await
    }
}
