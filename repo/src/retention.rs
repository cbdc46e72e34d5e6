//! Retention: which snapshots a policy keeps, and why (docs/DECISIONS.md "Retention").
//!
//! Snapshots are grouped (by default by host and set of paths) and each group is judged on its
//! own. Within a group, newest first:
//! - `last N` keeps the N newest;
//! - `hourly/daily/weekly/monthly/yearly N` keep the newest snapshot of each of the N most
//!   recent hours/days/ISO weeks/months/years (UTC) that have a snapshot;
//! - `within D` keeps every snapshot taken within D before the group's newest one;
//! - a snapshot carrying a protected tag is always kept.
//!
//! A snapshot is kept when any rule keeps it; every rule that does is named.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub last: Option<usize>,
    pub hourly: Option<usize>,
    pub daily: Option<usize>,
    pub weekly: Option<usize>,
    pub monthly: Option<usize>,
    pub yearly: Option<usize>,
    pub within: Option<Duration>,
    pub tags: Vec<String>,
}

impl Policy {
    /// True when the policy keeps nothing at all (applying it would remove every snapshot).
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
            && self.hourly.is_none()
            && self.daily.is_none()
            && self.weekly.is_none()
            && self.monthly.is_none()
            && self.yearly.is_none()
            && self.within.is_none()
            && self.tags.is_empty()
    }
}

/// What retention needs to know of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub time: DateTime<Utc>,
    pub group: String,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub id: String,
    pub time: String,
    pub group: String,
    pub keep: bool,
    /// The rules that keep it, e.g. `last`, `daily 3`, `within 7d`, `tag release`.
    pub reasons: Vec<String>,
}

fn bucket(kind: &str, t: &DateTime<Utc>) -> (i32, u32, u32, u32) {
    match kind {
        "hourly" => (t.year(), t.ordinal(), t.hour(), 0),
        "daily" => (t.year(), t.ordinal(), 0, 0),
        "weekly" => {
            let w = t.iso_week();
            (w.year(), w.week(), 0, 0)
        }
        "monthly" => (t.year(), t.month(), 0, 0),
        _ => (t.year(), 0, 0, 0),
    }
}

/// Decides every snapshot, newest first within each group; groups in name order.
pub fn apply(policy: &Policy, snapshots: &[Candidate]) -> Vec<Decision> {
    let mut groups: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(&s.group).or_default().push(s);
    }
    let mut out = Vec::new();
    for (_, mut list) in groups {
        list.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
        let newest = list.first().map(|s| s.time);
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); list.len()];
        if let Some(n) = policy.last {
            for r in reasons.iter_mut().take(n) {
                r.push("last".into());
            }
        }
        let rules = [
            ("hourly", policy.hourly),
            ("daily", policy.daily),
            ("weekly", policy.weekly),
            ("monthly", policy.monthly),
            ("yearly", policy.yearly),
        ];
        for (kind, n) in rules {
            let Some(n) = n else { continue };
            let mut seen = 0;
            let mut last_bucket = None;
            for (i, s) in list.iter().enumerate() {
                if seen >= n {
                    break;
                }
                let b = bucket(kind, &s.time);
                if last_bucket != Some(b) {
                    last_bucket = Some(b);
                    seen += 1;
                    reasons[i].push(format!("{kind} {seen}"));
                }
            }
        }
        if let (Some(d), Some(newest)) = (policy.within, newest) {
            let limit = newest - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
            for (i, s) in list.iter().enumerate() {
                if s.time >= limit {
                    reasons[i].push("within".into());
                }
            }
        }
        for (i, s) in list.iter().enumerate() {
            for t in &policy.tags {
                if s.tags.contains(t) {
                    reasons[i].push(format!("tag {t}"));
                }
            }
        }
        for (s, r) in list.iter().zip(reasons) {
            out.push(Decision {
                id: s.id.clone(),
                time: s.time.to_rfc3339(),
                group: s.group.clone(),
                keep: !r.is_empty(),
                reasons: r,
            });
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
    }

    fn snaps(times: &[&str]) -> Vec<Candidate> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate {
                id: format!("s{i:02}"),
                time: at(t),
                group: "host /data".into(),
                tags: vec![],
            })
            .collect()
    }

    fn kept(d: &[Decision]) -> Vec<(&str, String)> {
        d.iter()
            .filter(|d| d.keep)
            .map(|d| (d.id.as_str(), d.reasons.join(", ")))
            .collect()
    }

    /// Golden: a fixed set of snapshot times and the exact set each policy keeps, with reasons.
    #[test]
    fn golden_keep_sets() {
        let s = snaps(&[
            "2026-01-15T10:00:00Z", // s00
            "2026-02-01T09:00:00Z", // s01
            "2026-02-20T09:00:00Z", // s02
            "2026-03-01T02:00:00Z", // s03
            "2026-03-01T23:00:00Z", // s04 same day as s03
            "2026-03-02T01:00:00Z", // s05 Monday of ISO week 10
            "2026-03-07T12:00:00Z", // s06 Saturday, week 10
            "2026-03-08T12:00:00Z", // s07 Sunday, week 10
            "2026-03-09T00:30:00Z", // s08 Monday, week 11
            "2026-03-09T00:45:00Z", // s09 same hour as s08
        ]);
        let p = Policy {
            last: Some(2),
            daily: Some(3),
            weekly: Some(2),
            monthly: Some(3),
            ..Default::default()
        };
        let d = apply(&p, &s);
        assert_eq!(
            kept(&d),
            vec![
                ("s09", "last, daily 1, weekly 1, monthly 1".to_string()),
                ("s08", "last".to_string()),
                ("s07", "daily 2, weekly 2".to_string()),
                ("s06", "daily 3".to_string()),
                ("s02", "monthly 2".to_string()),
                ("s00", "monthly 3".to_string()),
            ]
        );
        assert_eq!(d.iter().filter(|d| !d.keep).count(), 4);

        let p = Policy {
            hourly: Some(3),
            yearly: Some(5),
            ..Default::default()
        };
        assert_eq!(
            kept(&apply(&p, &s)),
            vec![
                ("s09", "hourly 1, yearly 1".to_string()),
                ("s07", "hourly 2".to_string()),
                ("s06", "hourly 3".to_string()),
            ]
        );

        let p = Policy {
            within: Some(Duration::from_secs(2 * 86_400)),
            ..Default::default()
        };
        assert_eq!(
            kept(&apply(&p, &s)).iter().map(|k| k.0).collect::<Vec<_>>(),
            vec!["s09", "s08", "s07", "s06"]
        );
    }

    #[test]
    fn tags_protect_and_groups_are_judged_apart() {
        let mut s = snaps(&[
            "2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z",
            "2026-01-03T00:00:00Z",
        ]);
        s[0].tags = vec!["release".into()];
        s[1].group = "other /etc".into();
        let p = Policy {
            last: Some(1),
            tags: vec!["release".into()],
            ..Default::default()
        };
        let d = apply(&p, &s);
        assert_eq!(
            kept(&d),
            vec![
                ("s02", "last".to_string()),
                ("s00", "tag release".to_string()),
                ("s01", "last".to_string())
            ]
        );
        assert!(Policy::default().is_empty());
        assert!(!p.is_empty());
    }
}
