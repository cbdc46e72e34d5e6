//! The newest keyring a host has seen, remembered outside the repository.
//!
//! Keyring objects are chosen by generation, and a storage provider decides which objects a
//! listing shows: by withholding the newest one it could serve an older generation — one from
//! before a compromised slot's epoch was retired, or one written before the keyring bound the
//! repository's `config` (FORMAT.md section 5), which lets it change the chunker sizes again.
//! Each host remembers the highest generation it opened, and whether that one was bound, in its
//! state directory, under a name derived from the ID key (which every generation of one
//! repository shares and no provider can choose); an older or unbound keyring after that is
//! refused as an integrity failure.

use std::path::{Path, PathBuf};

use drvault_keyring::Keys;

use crate::{Error, Id, Result};

/// What a host remembers of a repository's keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    generation: u64,
    bound: bool,
}

impl Seen {
    fn of(keyring: &Keys) -> Self {
        Seen {
            generation: keyring.generation(),
            bound: keyring.config_hash().is_some(),
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        let generation = words.next()?.parse().ok()?;
        let bound = match words.next()? {
            "bound" => true,
            "unbound" => false,
            _ => return None,
        };
        Some(Seen { generation, bound })
    }

    fn render(&self) -> String {
        let bound = if self.bound { "bound" } else { "unbound" };
        format!("{} {bound}\n", self.generation)
    }
}

/// The file that remembers `keyring`'s repository under the state directory `state_root`.
fn memory_file(state_root: &Path, keyring: &Keys) -> PathBuf {
    let name = Id::of_plaintext(keyring.id_key(), b"drvault keyring memory v1");
    state_root.join("keyrings").join(name.to_hex())
}

/// Refuses a keyring older than (or, once one was bound, not bound like) the newest this host
/// opened, then remembers it when it is newer. A memory that cannot be read or written is not
/// an error: it is a cache, and losing it only loses the protection it adds.
pub(super) fn check_and_remember(state_root: &Path, keyring: &Keys) -> Result<()> {
    let file = memory_file(state_root, keyring);
    let now = Seen::of(keyring);
    let before = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| Seen::parse(&t));
    if let Some(before) = before {
        if now.generation < before.generation || (before.bound && !now.bound) {
            return Err(Error::integrity(
                "keyring/",
                format!(
                    "this host opened keyring generation {}{} before, and the repository now \
                     offers only generation {}{}: a target withholds the newest keyring or \
                     rolled it back (run `drvault check --all-targets` to see which; if the \
                     repository itself was restored from an older copy on purpose, remove {})",
                    before.generation,
                    if before.bound {
                        " (bound to the config)"
                    } else {
                        ""
                    },
                    now.generation,
                    if now.bound {
                        ""
                    } else {
                        " (not bound to the config)"
                    },
                    file.display()
                ),
            ));
        }
        if before == now {
            return Ok(());
        }
    }
    if let Some(dir) = file.parent() {
        if std::fs::create_dir_all(dir).is_ok() {
            let tmp = file.with_extension("tmp");
            if std::fs::write(&tmp, now.render()).is_ok() {
                let _ = std::fs::rename(&tmp, &file);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_or_unbound_keyring_is_refused_once_a_newer_one_was_seen() {
        let dir = std::env::temp_dir().join(format!("drvault-rollback-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        use drvault_keyring::Keyring;
        let full = |k: &Keyring| Keys::full(k.clone());
        let old = Keyring::generate(0).expect("keyring");
        let mut new = old.clone();
        new.rotate(1).expect("rotate");
        assert!(new.generation() > old.generation());
        check_and_remember(&dir, &full(&old)).expect("first open");
        check_and_remember(&dir, &full(&new)).expect("newer");
        let err = check_and_remember(&dir, &full(&old)).expect_err("rolled back");
        assert!(err.to_string().contains("withholds"), "{err}");
        let mut bound = new.clone();
        bound.bind_config([7; 32]);
        check_and_remember(&dir, &full(&bound)).expect("bound, same generation");
        check_and_remember(&dir, &full(&new)).expect_err("unbound after bound");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_memory_is_forgotten() {
        assert_eq!(Seen::parse("garbage"), None);
        assert_eq!(
            Seen::parse("12 bound\n"),
            Some(Seen {
                generation: 12,
                bound: true
            })
        );
    }
}
