//! The keyring in storage: the newest one, whether it changed since this process opened it,
//! writing a new generation (and the host keyring beside it), and the epoch of each stored
//! object. Key management (`crate::keys`) is built on these (docs/FORMAT.md §6).

use std::collections::BTreeMap;
use std::time::Duration;

use drvault_keyring::ENVELOPE_OVERHEAD;

use super::*;
use crate::format::AuditRef;

/// How long the maintenance lease lasts between renewals.
pub const LEASE_TTL: Duration = Duration::from_secs(600);

impl Repository {
    /// The newest keyring in storage (another process may have changed it since this one opened).
    pub async fn current_keyring(&self) -> Result<Keyring> {
        let opened = self.keyring()?;
        let current = Self::load_keyring(&self.store, opened.master().clone()).await?;
        // A key operation built on an older keyring than the one this process opened (the
        // provider withholding the newest) would bring back retired epochs: refuse it.
        if current.generation() < opened.generation()
            || (opened.config_hash().is_some() && current.config_hash().is_none())
        {
            return Err(Error::integrity(
                paths::KEYRING,
                format!(
                    "the repository now offers keyring generation {}, older than generation {} \
                this process opened: a target withholds the newest keyring (run `drvault \
                check --all-targets`)",
                    current.generation(),
                    opened.generation()
                ),
            ));
        }
        Ok(current)
    }

    /// Where this repository's catalog lives, when a state directory was given.
    pub fn catalog_dir(&self) -> Option<std::path::PathBuf> {
        self.state_dir.clone()
    }

    /// False when another process changed the keyring (a rotation) since this one opened it.
    pub async fn keyring_is_current(&self) -> Result<bool> {
        if self.keys.keyring().is_none() {
            // A host: its host keyring is rebuilt with every keyring generation.
            let current = self.current_host_keyring().await?;
            return Ok(current.generation() == self.keys.generation());
        }
        Ok(self.current_keyring().await?.generation() == self.keys.generation())
    }

    /// The newest host keyring in storage, for a process a host key opened.
    pub async fn current_host_keyring(&self) -> Result<drvault_keyring::HostKeyring> {
        let slot = self
            .keys
            .host_slot()
            .ok_or_else(|| Error::Internal("a host keyring without a host key".into()))?;
        Self::load_host_keyring(&self.store, slot).await
    }

    /// Seals and stores a keyring and, once the repository takes host keys, the host keyring
    /// of the same generation, in that order: a crash between the two leaves hosts on the
    /// previous host keyring, whose epochs the new keyring still holds (the other order could
    /// leave hosts sealing to an epoch no stored keyring has the secret of). The next key
    /// operation writes the host keyring again. Returns their object names.
    ///
    /// `log_head` is where the audit log stands (`crate::audit::head_anchor`): a keyring that
    /// takes host keys records it, so a log cut later is found from the keyring too.
    pub(crate) async fn save_keyring(
        &self,
        kr: &Keyring,
        log_head: Option<AuditRef>,
    ) -> Result<Vec<String>> {
        // Every key operation binds the config: older keyrings gain the binding here.
        let mut kr = kr.clone();
        kr.bind_config(self.config.binding());
        if kr.takes_hosts() {
            kr.set_audit_anchor(log_head.map(|a| (a.seq, a.hash)));
        }
        let mut names = Vec::new();
        let sealed = kr.seal()?;
        let name = paths::keyring(&Id::of_stored(&sealed));
        self.store.put_new(&name, sealed.into(), true).await?;
        names.push(name);
        crate::failpoint::hit("keyring.before-host-keyring").await;
        if let Some(sealed) = kr.seal_host_keyring()? {
            let name = paths::keyring(&Id::of_stored(&sealed));
            self.store.put_new(&name, sealed.into(), true).await?;
            names.push(name);
        }
        Ok(names)
    }

    /// Deletes every keyring object but those in `keep`. After a retirement or a new master key
    /// the older objects still hold the retired keys or open with the old master key.
    pub(crate) async fn delete_other_keyrings(&self, keep: &[String]) -> Result<()> {
        for l in self
            .store
            .list_complete(paths::KEYRING, "delete superseded keyring objects")
            .await?
        {
            if !keep.contains(&l.name) {
                self.store.delete(&l.name).await?;
            }
        }
        Ok(())
    }

    /// The epoch of every pack, index and snapshot object, read from its envelope header.
    /// With `deciding`, the listing must be complete (every target answered): the result is
    /// what re-encryption deletes packs and retires epochs on.
    pub async fn object_epochs(
        &self,
        prefixes: &[&str],
        deciding: Option<&str>,
    ) -> Result<BTreeMap<String, u32>> {
        let mut names = Vec::new();
        for p in prefixes {
            names.extend(match deciding {
                Some(action) => self.store.list_names_complete(p, action).await?,
                None => self.store.list_names(p).await?,
            });
        }
        futures::stream::iter(names)
            .map(|name| async move {
                // Every object starts with an envelope (a pack with its first blob's).
                let head = self
                    .store
                    .get_range(&name, 0..ENVELOPE_OVERHEAD as u64)
                    .await?;
                let epoch = Header::parse_prefix(&head)
                    .map_err(|e| Error::integrity(&name, e))?
                    .epoch;
                Ok::<_, Error>((name, epoch))
            })
            .buffer_unordered(16)
            .try_collect()
            .await
    }
}
