//! How numbers, counts and names are shown to people, by every command.

/// Bytes in a human unit.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// "1 snapshot", "2 snapshots"; "1 directory", "2 directories".
pub fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else if let Some(stem) = one.strip_suffix('y') {
        format!("{n} {stem}ies")
    } else if ["s", "x", "ch", "sh"].iter().any(|e| one.ends_with(e)) {
        format!("{n} {one}es")
    } else {
        format!("{n} {one}s")
    }
}

/// A name or path for display: lossy UTF-8 with control characters escaped.
pub fn printable(bytes: &[u8]) -> String {
    drvault_repo::printable::bytes(bytes)
}
