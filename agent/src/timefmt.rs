//! Times as users type them and as drvault prints them. Every command prints
//! `2026-12-01 20:53:31` (UTC, as `drvault snapshots` heads its column) in text and RFC 3339 in
//! JSON, and every option that takes a time accepts both, a bare date, and a time with a zone.

use anyhow::{bail, Result};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// What a time given to the day, minute or second stands for: that unit's first instant (a
/// range's start) or its last (`--at 2026-12-01 20:53:31` includes the snapshot taken at
/// 20:53:31.4, which `snapshots` prints as 20:53:31; `--at 2026-12-01` is the end of that day).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateMeans {
    StartOfDay,
    EndOfDay,
}

/// The last nanosecond of a unit that starts at `start` and lasts `unit`.
fn end_of(start: DateTime<Utc>, unit: chrono::Duration) -> DateTime<Utc> {
    start + unit - chrono::Duration::nanoseconds(1)
}

/// How long the unit `text` was given to is: none with a fraction of a second.
fn precision(text: &str) -> chrono::Duration {
    let time = text.split(['T', ' ']).nth(1).unwrap_or("");
    let clock = time.split(['Z', 'z', '+', '-']).next().unwrap_or("");
    if clock.contains('.') {
        chrono::Duration::nanoseconds(1)
    } else if clock.matches(':').count() >= 2 {
        chrono::Duration::seconds(1)
    } else {
        chrono::Duration::minutes(1)
    }
}

/// The forms accepted, for messages.
pub const FORMS: &str = "2026-12-01 20:53:31 (UTC, as `drvault snapshots` prints), \
     2026-12-01T20:53:31Z or with an offset (+01:00), or a date (2026-12-01)";

/// Parses a time given as `drvault snapshots` prints it (UTC), as RFC 3339 (with `T` or a space,
/// `Z` or an offset), to the minute, or as a bare date.
pub fn parse(text: &str, date: DateMeans) -> Result<DateTime<Utc>> {
    let t = text.trim();
    let round = |v: DateTime<Utc>| match date {
        DateMeans::StartOfDay => v,
        DateMeans::EndOfDay => end_of(v, precision(t)),
    };
    if let Ok(v) = DateTime::parse_from_rfc3339(t) {
        return Ok(round(v.with_timezone(&Utc)));
    }
    for zoned in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f %:z",
        "%Y-%m-%dT%H:%M%:z",
    ] {
        if let Ok(v) = DateTime::parse_from_str(t, zoned) {
            return Ok(round(v.with_timezone(&Utc)));
        }
    }
    let bare = t.strip_suffix(" UTC").unwrap_or(t);
    for naive in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(v) = NaiveDateTime::parse_from_str(bare, naive) {
            return Ok(round(v.and_utc()));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(bare, "%Y-%m-%d") {
        let start = d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
        return Ok(match date {
            DateMeans::StartOfDay => start,
            DateMeans::EndOfDay => end_of(start, chrono::Duration::days(1)),
        });
    }
    bail!("{text:?} is not a time drvault reads; give {FORMS}")
}

/// A time for text output.
pub fn shown(ns: i64) -> String {
    DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// An RFC 3339 time (as stored in records) for text output; kept as is if it does not parse.
pub fn shown_rfc3339(text: &str) -> String {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .map_or_else(|| text.to_string(), shown)
}

/// A time for JSON output.
pub fn rfc3339(ns: i64) -> String {
    DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_snapshots_prints_and_common_forms() {
        let want = DateTime::parse_from_rfc3339("2026-12-01T20:53:31Z")
            .unwrap()
            .with_timezone(&Utc);
        for text in [
            "2026-12-01 20:53:31",
            "2026-12-01 20:53:31 UTC",
            "2026-12-01T20:53:31",
            "2026-12-01T20:53:31Z",
            "2026-12-01 20:53:31Z",
            "2026-12-01T21:53:31+01:00",
            "2026-12-01 21:53:31+01:00",
            " 2026-12-01 20:53:31 ",
        ] {
            assert_eq!(parse(text, DateMeans::StartOfDay).unwrap(), want, "{text}");
        }
        assert_eq!(
            parse("2026-12-01 20:53", DateMeans::StartOfDay).unwrap(),
            want - chrono::Duration::seconds(31)
        );
        let start = parse("2026-12-01", DateMeans::StartOfDay).unwrap();
        let end = parse("2026-12-01", DateMeans::EndOfDay).unwrap();
        assert_eq!(start.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(
            end - start,
            chrono::Duration::days(1) - chrono::Duration::nanoseconds(1)
        );
        assert_eq!(
            shown(want.timestamp_nanos_opt().unwrap()),
            "2026-12-01 20:53:31"
        );
        // As an upper bound, a time covers the whole second (or minute) it names.
        let second_end = parse("2026-12-01 20:53:31", DateMeans::EndOfDay).unwrap();
        assert_eq!(
            second_end - want,
            chrono::Duration::nanoseconds(999_999_999)
        );
        let zoned_end = parse("2026-12-01T21:53:31+01:00", DateMeans::EndOfDay).unwrap();
        assert_eq!(zoned_end, second_end);
        let exact = parse("2026-12-01T20:53:31.5Z", DateMeans::EndOfDay).unwrap();
        assert_eq!(exact - want, chrono::Duration::milliseconds(500));
        let minute_end = parse("2026-12-01 20:53", DateMeans::EndOfDay).unwrap();
        assert_eq!(
            minute_end.to_rfc3339(),
            "2026-12-01T20:53:59.999999999+00:00"
        );
    }

    #[test]
    fn refuses_other_text_naming_the_forms() {
        for text in [
            "yesterday",
            "2026-13-01",
            "20:53:31",
            "",
            "2026-12-01 25:00:00",
        ] {
            let e = parse(text, DateMeans::EndOfDay).unwrap_err().to_string();
            assert!(e.contains("2026-12-01 20:53:31"), "{e}");
        }
    }
}
