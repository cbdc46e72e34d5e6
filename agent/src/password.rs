//! Passphrase sources, in order: --password-file, $DRVAULT_PASSWORD, a systemd credential
//! ($CREDENTIALS_DIRECTORY/drvault-password), a prompt on the terminal. Never argv.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

/// A new passphrase: from `file` if given, else prompted twice on the terminal.
pub fn read_new(file: Option<&Path>) -> Result<Zeroizing<Vec<u8>>> {
    if let Some(f) = file {
        warn_if_exposed(f);
        let raw = Zeroizing::new(
            std::fs::read(f)
                .with_context(|| format!("cannot read password file {}", f.display()))?,
        );
        return Ok(first_line(&raw));
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

pub fn read(file: Option<&Path>, confirm: bool) -> Result<Zeroizing<Vec<u8>>> {
    if let Some(f) = file {
        warn_if_exposed(f);
        let raw = Zeroizing::new(
            std::fs::read(f)
                .with_context(|| format!("cannot read password file {}", f.display()))?,
        );
        return Ok(first_line(&raw));
    }
    if let Some(v) = std::env::var_os("DRVAULT_PASSWORD") {
        use std::os::unix::ffi::OsStrExt;
        return Ok(Zeroizing::new(v.as_bytes().to_vec()));
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let p = Path::new(&dir).join("drvault-password");
        if p.exists() {
            let raw = Zeroizing::new(
                std::fs::read(&p)
                    .with_context(|| format!("cannot read credential {}", p.display()))?,
            );
            return Ok(first_line(&raw));
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
    Ok(Zeroizing::new(first.as_bytes().to_vec()))
}

fn first_line(raw: &[u8]) -> Zeroizing<Vec<u8>> {
    let end = raw.iter().position(|&b| b == b'\n').unwrap_or(raw.len());
    let line = &raw[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Zeroizing::new(line.to_vec())
}
