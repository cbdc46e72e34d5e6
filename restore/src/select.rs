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
}

/// Picks a snapshot from `snaps` (sorted oldest first).
pub fn select_snapshot<'a>(
    snaps: &'a [(Id, Snapshot)],
    spec: &SnapshotSpec,
) -> Result<&'a (Id, Snapshot)> {
    let candidates = snaps
        .iter()
        .filter(|(_, s)| spec.host.as_ref().is_none_or(|h| &s.host == h))
        .filter(|(_, s)| spec.at_ns.is_none_or(|at| s.time_ns <= at));
    match spec.id.as_deref() {
        None | Some("latest") => candidates
            .max_by_key(|(id, s)| (s.time_ns, *id))
            .ok_or_else(|| Error::NoSnapshot(describe(spec))),
        Some(prefix) => {
            let prefix = prefix.to_ascii_lowercase();
            let mut found = candidates.filter(|(id, _)| id.to_hex().starts_with(&prefix));
            let first = found
                .next()
                .ok_or_else(|| Error::NoSnapshot(describe(spec)))?;
            if found.next().is_some() {
                return Err(Error::Ambiguous(prefix));
            }
            Ok(first)
        }
    }
}

fn describe(spec: &SnapshotSpec) -> String {
    let mut s = spec.id.clone().unwrap_or_else(|| "latest".into());
    if let Some(at) = spec.at_ns {
        let t = chrono::DateTime::from_timestamp_nanos(at);
        s.push_str(&format!(" at or before {}", t.to_rfc3339()));
    }
    if let Some(h) = &spec.host {
        s.push_str(&format!(" on host {h}"));
    }
    s
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
}
