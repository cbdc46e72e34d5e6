use drvault_repo::format::Snapshot;
use drvault_repo::Id;

use crate::{Error, Result};

/// Which snapshot to restore.
#[derive(Debug, Clone, Default)]
pub struct SnapshotSpec {
    /// "latest", a full ID or a unique prefix; `None` means latest.
    pub id: Option<String>,
    /// Only snapshots taken at or before this instant (ns since the epoch).
    pub at_ns: Option<i64>,
    pub host: Option<String>,
    /// Only snapshots carrying every one of these tags.
    pub tags: Vec<String>,
    /// Only snapshots whose backed-up paths include every one of these (compared by component:
    /// "/etc/" and "/etc" are the same path).
    pub paths: Vec<Vec<u8>>,
    /// Also snapshots whose writer is not what they claim (`Snapshot::untrusted`): without it
    /// "latest" and `at_ns` pass over them and an ID naming one is refused.
    pub trust_host: bool,
}

impl SnapshotSpec {
    /// True when `s` passes the host, tag and path filters (not the time).
    pub fn admits(&self, s: &Snapshot) -> bool {
        self.host.as_ref().is_none_or(|h| &s.host == h)
            && self.tags.iter().all(|t| s.tags.contains(t))
            && self.paths.iter().all(|p| {
                let want = normal(p);
                s.paths.iter().any(|q| normal(q) == want)
            })
    }
}

/// A path's non-empty components.
fn normal(p: &[u8]) -> Vec<&[u8]> {
    p.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect()
}

/// Picks a snapshot from `snaps` (sorted oldest first).
pub fn select_snapshot<'a>(
    snaps: &'a [(Id, Snapshot)],
    spec: &SnapshotSpec,
) -> Result<&'a (Id, Snapshot)> {
    let id = spec.id.as_deref().map(str::trim);
    if id == Some("") {
        return Err(Error::Invalid(
            "the snapshot is empty: give an ID (or a prefix of one, as `drvault snapshots` \
             lists them) or \"latest\""
                .into(),
        ));
    }
    let candidates = snaps
        .iter()
        .filter(|(_, s)| spec.admits(s))
        .filter(|(_, s)| spec.at_ns.is_none_or(|at| s.time_ns <= at));
    match id {
        None | Some("latest") => {
            let mut passed_over = Vec::new();
            let chosen = candidates
                .filter(|(id, s)| {
                    let doubtful = s.untrusted.is_some() && !spec.trust_host;
                    if doubtful {
                        passed_over.push(id.short());
                    }
                    !doubtful
                })
                .max_by_key(|(id, s)| (s.time_ns, *id))
                .ok_or_else(|| Error::NoSnapshot(describe(snaps, spec)));
            if !passed_over.is_empty() {
                tracing::warn!(
                    "passed over snapshots not to be trusted ({}); --trust-host takes them",
                    passed_over.join(", ")
                );
            }
            chosen
        }
        Some(prefix) => {
            let prefix = prefix.to_ascii_lowercase();
            // An ID, or the name of an object holding the snapshot (what drvault before 0.7
            // showed as its ID, until re-encryption renamed it).
            let mut found = candidates.filter(|(id, s)| {
                id.to_hex().starts_with(&prefix)
                    || s.stored_as.iter().any(|o| o.to_hex().starts_with(&prefix))
            });
            let first = found
                .next()
                .ok_or_else(|| Error::NoSnapshot(describe(snaps, spec)))?;
            if found.next().is_some() {
                return Err(Error::Ambiguous(prefix));
            }
            if let (Some(why), false) = (&first.1.untrusted, spec.trust_host) {
                return Err(Error::Repo(drvault_repo::Error::NotPermitted(format!(
                    "snapshot {} is not to be trusted: {why}; take it with --trust-host if you \
                     know where it came from",
                    first.0.short()
                ))));
            }
            Ok(first)
        }
    }
}

fn describe(snaps: &[(Id, Snapshot)], spec: &SnapshotSpec) -> String {
    let mut s = spec.id.clone().unwrap_or_else(|| "latest".into());
    if let Some(h) = &spec.host {
        s.push_str(&format!(" of host {h}"));
    }
    for t in &spec.tags {
        s.push_str(&format!(" tagged {t}"));
    }
    for p in &spec.paths {
        s.push_str(&format!(" of path {}", drvault_repo::printable::bytes(p)));
    }
    if let Some(at) = spec.at_ns {
        s.push_str(&format!(" at or before {}", shown_time(at)));
        let oldest = snaps
            .iter()
            .filter(|(_, s)| spec.admits(s))
            .min_by_key(|(id, s)| (s.time_ns, *id));
        match oldest {
            Some((id, o)) => s.push_str(&format!(
                "; the oldest such snapshot is {} of {}",
                id.short(),
                shown_time(o.time_ns)
            )),
            None => s.push_str("; there is no such snapshot at any time"),
        }
    }
    s.push_str(" (`drvault snapshots` lists them)");
    s
}

/// A time as `drvault snapshots` prints it.
fn shown_time(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use drvault_repo::format::Summary;

    fn snap(t: i64, host: &str) -> Snapshot {
        Snapshot {
            version: 1,
            time_ns: t,
            host: host.into(),
            username: String::new(),
            paths: vec![],
            tags: vec![],
            parent: None,
            tree: Id([0; 32]),
            summary: Summary::default(),
            program_version: String::new(),
            audit: None,
            writer: None,
            untrusted: None,
            stored_as: Vec::new(),
        }
    }

    #[test]
    fn point_in_time_picks_newest_at_or_before() {
        let snaps = vec![
            (Id([1; 32]), snap(100, "a")),
            (Id([2; 32]), snap(200, "a")),
            (Id([3; 32]), snap(300, "b")),
        ];
        let pick = |at: Option<i64>, host: Option<&str>| {
            select_snapshot(
                &snaps,
                &SnapshotSpec {
                    id: None,
                    at_ns: at,
                    host: host.map(String::from),
                    ..Default::default()
                },
            )
            .map(|s| s.0)
        };
        assert_eq!(pick(None, None).ok(), Some(Id([3; 32])));
        assert_eq!(pick(Some(250), None).ok(), Some(Id([2; 32])));
        assert_eq!(pick(Some(200), None).ok(), Some(Id([2; 32])));
        assert_eq!(pick(Some(300), Some("a")).ok(), Some(Id([2; 32])));
        assert!(matches!(pick(Some(99), None), Err(Error::NoSnapshot(_))));
        let by_prefix = |p: &str| {
            select_snapshot(
                &snaps,
                &SnapshotSpec {
                    id: Some(p.into()),
                    ..Default::default()
                },
            )
        };
        assert_eq!(by_prefix("0202").ok().map(|s| s.0), Some(Id([2; 32])));
        assert!(matches!(by_prefix("ff"), Err(Error::NoSnapshot(_))));
    }

    #[test]
    fn latest_honours_tags_and_paths_and_names_the_oldest() {
        let mut etc = snap(100, "a");
        etc.paths = vec![b"/etc".to_vec()];
        etc.tags = vec!["daily".into()];
        let mut home = snap(200, "a");
        home.paths = vec![b"/home/".to_vec(), b"/srv".to_vec()];
        let mut etc2 = snap(300, "a");
        etc2.paths = vec![b"/etc".to_vec()];
        let snaps = vec![(Id([1; 32]), etc), (Id([2; 32]), home), (Id([3; 32]), etc2)];
        let pick = |spec: SnapshotSpec| select_snapshot(&snaps, &spec).map(|s| s.0);
        let of_path = |p: &str| SnapshotSpec {
            paths: vec![p.as_bytes().to_vec()],
            ..Default::default()
        };
        assert_eq!(pick(of_path("/home")).ok(), Some(Id([2; 32])));
        assert_eq!(pick(of_path("/etc/")).ok(), Some(Id([3; 32])));
        let tagged = SnapshotSpec {
            tags: vec!["daily".into()],
            ..Default::default()
        };
        assert_eq!(pick(tagged).ok(), Some(Id([1; 32])));
        assert!(matches!(pick(of_path("/var")), Err(Error::NoSnapshot(_))));
        let too_early = SnapshotSpec {
            at_ns: Some(50),
            ..of_path("/etc")
        };
        match pick(too_early) {
            Err(Error::NoSnapshot(m)) => {
                assert!(m.contains("the oldest such snapshot is 01010101"), "{m}");
                assert!(m.contains("1970-01-01 00:00:00 UTC"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        let empty = SnapshotSpec {
            id: Some(String::new()),
            ..Default::default()
        };
        assert!(matches!(pick(empty), Err(Error::Invalid(_))));
    }
}
