//! Passphrase sources, in order: --password-file, $DRVAULT_PASSWORD, a systemd credential
//! ($CREDENTIALS_DIRECTORY/drvault-password), a prompt on the terminal. Never argv.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context, Result};
use drvault_keyring::Credential;
use zeroize::Zeroizing;

/// A key file for a new key-file slot: every byte of it.
pub fn read_key_file(f: &Path) -> Result<Zeroizing<Vec<u8>>> {
    warn_if_exposed(f);
    let raw = Zeroizing::new(
        std::fs::read(f).with_context(|| format!("cannot read key file {}", f.display()))?,
    );
    if raw.is_empty() {
        bail!("key file {} is empty", f.display());
    }
    Ok(raw)
}

/// A new passphrase: from `file` if given, else prompted twice on the terminal.
pub fn read_new(file: Option<&Path>) -> Result<Zeroizing<Vec<u8>>> {
    if let Some(f) = file {
        warn_if_exposed(f);
        let raw = Zeroizing::new(
            std::fs::read(f)
                .with_context(|| format!("cannot read password file {}", f.display()))?,
        );
        let line = Credential::file(&raw).line().to_vec();
        if line.is_empty() {
            bail!(
                "password file {} has an empty first line; write the new passphrase on it",
                f.display()
            );
        }
        return Ok(Zeroizing::new(line));
    }
    if !std::io::stdin().is_terminal() {
        bail!("no new passphrase: use --new-password-file FILE (no terminal to prompt on)");
    }
    let first = Zeroizing::new(rpassword::prompt_password("New passphrase: ")?);
    let second = Zeroizing::new(rpassword::prompt_password("Repeat the new passphrase: ")?);
    if *first != *second {
        bail!("the passphrases do not match");
    }
    Ok(Zeroizing::new(first.as_bytes().to_vec()))
}

/// A password file others can read is a passphrase others have: say so (not fatal: the
/// repository still opens, and refusing would lock an operator out in an incident).
fn warn_if_exposed(f: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(f) {
        let mode = m.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "password file {} is readable by group or others (mode {:o}): chmod 600 it",
                f.display(),
                mode & 0o777
            );
        }
    }
}

/// The passphrase (or key file, or recovery key) that opens the repository. A file's first
/// line is the passphrase and its every byte a key file: each slot takes what its kind needs.
pub fn read(file: Option<&Path>, confirm: bool) -> Result<Credential> {
    if let Some(f) = file {
        warn_if_exposed(f);
        let raw = Zeroizing::new(
            std::fs::read(f)
                .with_context(|| format!("cannot read password file {}", f.display()))?,
        );
        return nonempty(
            Credential::file(&raw),
            &format!("password file {}", f.display()),
        );
    }
    if let Some(v) = std::env::var_os("DRVAULT_PASSWORD") {
        use std::os::unix::ffi::OsStrExt;
        return nonempty(Credential::passphrase(v.as_bytes()), "$DRVAULT_PASSWORD");
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let p = Path::new(&dir).join("drvault-password");
        if p.exists() {
            let raw = Zeroizing::new(
                std::fs::read(&p)
                    .with_context(|| format!("cannot read credential {}", p.display()))?,
            );
            return nonempty(
                Credential::file(&raw),
                &format!("credential {}", p.display()),
            );
        }
    }
    if !std::io::stdin().is_terminal() {
        bail!("no passphrase: use --password-file FILE, $DRVAULT_PASSWORD or a systemd credential (no terminal to prompt on)");
    }
    let first = Zeroizing::new(rpassword::prompt_password("Repository passphrase: ")?);
    if confirm {
        let second = Zeroizing::new(rpassword::prompt_password("Repeat the passphrase: ")?);
        if *first != *second {
            bail!("the passphrases do not match");
        }
    }
    Ok(Credential::passphrase(first.as_bytes()))
}

/// An empty source is a mistake to name, not a wrong passphrase to report.
fn nonempty(c: Credential, source: &str) -> Result<Credential> {
    if c.is_empty() {
        bail!("{source} is empty: it must hold the repository's passphrase (or key file)");
    }
    Ok(c)
}
