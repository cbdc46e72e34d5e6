//! Cron schedules with an optional seconds field: `"0 30 2 * * *"` (02:30:00 daily),
//! `"*/5 * * * * *"` (every five seconds), classic five-field `"30 2 * * *"` (seconds = 0),
//! and `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
//!
//! Fields: [second] minute hour day-of-month month day-of-week. Each is `*`, a value, a range
//! `a-b`, a step `*/n`, `a-b/n` or `a/n`, or a comma list of those; months and weekdays also
//! take English names (`jan`, `mon`), and weekday 7 is Sunday like 0. As in Vixie cron, when
//! both day fields are restricted a day matches if either does, and a field that starts with
//! `*` (`*`, `*/2`) does not count as restricted.
//!
//! Daylight-saving changes, as Vixie cron handles them: a schedule at a fixed time (minute and
//! hour not starting with `*`) that falls in the hour skipped in spring runs right after the
//! change, and in the hour repeated in autumn runs once; schedules with `*` in the minute or
//! hour run by the wall clock.

use anyhow::{bail, Context, Result};

#[cfg(test)]
mod vs_croner;
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
    /// Minute and hour are fixed (neither starts with `*`): a run at a fixed wall-clock time.
    fixed_time: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct FieldSpec {
    what: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The first name's value (1 for months, 0 for weekdays).
    names_from: u32,
}

const SECOND: FieldSpec = FieldSpec {
    what: "second",
    min: 0,
    max: 59,
    names: &[],
    names_from: 0,
};
const MINUTE: FieldSpec = FieldSpec {
    what: "minute",
    min: 0,
    max: 59,
    names: &[],
    names_from: 0,
};
const HOUR: FieldSpec = FieldSpec {
    what: "hour",
    min: 0,
    max: 23,
    names: &[],
    names_from: 0,
};
const DAY: FieldSpec = FieldSpec {
    what: "day of month",
    min: 1,
    max: 31,
    names: &[],
    names_from: 0,
};
const MONTH: FieldSpec = FieldSpec {
    what: "month",
    min: 1,
    max: 12,
    names: &MONTHS,
    names_from: 1,
};
const WEEKDAY: FieldSpec = FieldSpec {
    what: "day of week",
    min: 0,
    max: 7,
    names: &WEEKDAYS,
    names_from: 0,
};

impl FieldSpec {
    fn value(&self, text: &str) -> Result<u32> {
        let lower = text.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + self.names_from);
        }
        let v: u32 = text
            .parse()
            .with_context(|| format!("{} {text:?} is not a number", self.what))?;
        if v < self.min || v > self.max {
            bail!("{} {v} is outside {}-{}", self.what, self.min, self.max);
        }
        Ok(v)
    }

    /// The bit set of the values a field allows.
    fn parse(&self, field: &str) -> Result<u64> {
        let mut bits = 0u64;
        for item in field.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s
                        .parse()
                        .with_context(|| format!("{} step {s:?} is not a number", self.what))?;
                    if step == 0 {
                        bail!("{} step must be at least 1", self.what);
                    }
                    (r, step)
                }
                None => (item, 1),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    bail!("{} range {range:?} runs backwards", self.what);
                }
                (a, b)
            } else {
                let a = self.value(range)?;
                // "a/n" means from a to the end in steps of n.
                (a, if item.contains('/') { self.max } else { a })
            };
            let mut v = lo;
            while v <= hi {
                bits |= 1 << v;
                v += step;
            }
        }
        Ok(bits)
    }
}

impl std::str::FromStr for Schedule {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 0 1 1 *",
            "@monthly" => "0 0 0 1 * *",
            "@weekly" => "0 0 0 * * 0",
            "@daily" | "@midnight" => "0 0 0 * * *",
            "@hourly" => "0 0 * * * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let fields: Vec<&str> = match fields.len() {
            5 => std::iter::once("0").chain(fields).collect(),
            6 => fields,
            n => bail!(
                "schedule {text:?} has {n} fields; write [second] minute hour day month weekday, \
                 e.g. \"0 30 2 * * *\" or \"*/5 * * * * *\""
            ),
        };
        let context = || format!("schedule {text:?}");
        let seconds = SECOND.parse(fields[0]).with_context(context)?;
        let minutes = MINUTE.parse(fields[1]).with_context(context)?;
        let hours = HOUR.parse(fields[2]).with_context(context)?;
        let days = DAY.parse(fields[3]).with_context(context)?;
        let months = MONTH.parse(fields[4]).with_context(context)?;
        let mut weekdays = WEEKDAY.parse(fields[5]).with_context(context)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Schedule {
            seconds,
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_restricted: !fields[3].starts_with('*'),
            weekdays_restricted: !fields[5].starts_with('*'),
            fixed_time: !fields[1].starts_with('*') && !fields[2].starts_with('*'),
        })
    }
}

fn has(bits: u64, v: u32) -> bool {
    bits & (1 << v) != 0
}

impl Schedule {
    fn day_matches(&self, d: NaiveDate) -> bool {
        let dom = has(self.days, d.day());
        let dow = has(self.weekdays, d.weekday().num_days_from_sunday());
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            _ => dom && dow,
        }
    }

    /// The first time strictly after `after` that the schedule names, in `after`'s time zone.
    /// A fixed time skipped by a daylight-saving change runs at the first instant after the
    /// change; a fixed time repeated by one runs once (see the module documentation).
    /// `None` only for a schedule that never fires (such as 31 February).
    pub fn next_after<Tz: TimeZone>(&self, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        let tz = after.timezone();
        let start = after.naive_local().with_nanosecond(0)? + Duration::seconds(1);
        let mut t: NaiveDateTime = start;
        // Each step moves to the start of the next matching unit; eight years cover every
        // calendar combination that can match at all.
        let limit = start + Duration::days(8 * 366);
        while t < limit {
            let d = t.date();
            if !has(self.months, d.month()) {
                let (y, m) = if d.month() == 12 {
                    (d.year() + 1, 1)
                } else {
                    (d.year(), d.month() + 1)
                };
                t = NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if !self.day_matches(d) {
                t = d.succ_opt()?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if !has(self.hours, t.hour()) {
                t = d.and_hms_opt(t.hour(), 0, 0)? + Duration::hours(1);
                continue;
            }
            if !has(self.minutes, t.minute()) {
                t = d.and_hms_opt(t.hour(), t.minute(), 0)? + Duration::minutes(1);
                continue;
            }
            if !has(self.seconds, t.second()) {
                t += Duration::seconds(1);
                continue;
            }
            match tz.from_local_datetime(&t) {
                chrono::LocalResult::Single(dt) if dt > *after => return Some(dt),
                chrono::LocalResult::Single(_) => {}
                chrono::LocalResult::Ambiguous(first, _) if first > *after => return Some(first),
                // The repeated hour's second pass: a fixed time has run already.
                chrono::LocalResult::Ambiguous(_, second) if !self.fixed_time => {
                    if second > *after {
                        return Some(second);
                    }
                }
                chrono::LocalResult::Ambiguous(..) => {}
                chrono::LocalResult::None if self.fixed_time => {
                    // Skipped by the clock moving forward: run when the clock resumes.
                    let mut resume = t;
                    for _ in 0..(4 * 60) {
                        resume += Duration::minutes(1);
                        let resumed = match tz.from_local_datetime(&resume) {
                            chrono::LocalResult::Single(dt) => Some(dt),
                            chrono::LocalResult::Ambiguous(first, _) => Some(first),
                            chrono::LocalResult::None => None,
                        };
                        if let Some(dt) = resumed {
                            // The first instant of the new time, to the minute.
                            let start = dt.clone() - Duration::seconds(i64::from(dt.second()));
                            let at = if start > *after { start } else { dt };
                            if at > *after {
                                return Some(at);
                            }
                            break;
                        }
                    }
                }
                chrono::LocalResult::None => {}
            }
            t += Duration::seconds(1);
        }
        None
    }
}

impl Schedule {
    /// The longest time between two runs over the next `horizon` from `from` (the first run
    /// counts from `from`), looking at no more than `max_runs` runs: `None` when it never fires.
    pub fn longest_gap<Tz: TimeZone>(
        &self,
        from: &DateTime<Tz>,
        horizon: Duration,
        max_runs: usize,
    ) -> Option<Duration> {
        let end = from.clone() + horizon;
        let mut last = from.clone();
        let mut longest = Duration::zero();
        for _ in 0..max_runs {
            let next = self.next_after(&last)?;
            longest = longest.max(next.clone() - last.clone());
            if next > end {
                break;
            }
            last = next;
        }
        Some(longest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn next(schedule: &str, after: &str) -> String {
        let s: Schedule = schedule.parse().expect("valid schedule");
        s.next_after(&at(after))
            .expect("fires")
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string()
    }

    #[test]
    fn six_fields_with_seconds() {
        assert_eq!(
            next("0 30 2 * * *", "2026-11-25T01:00:00Z"),
            "2026-11-25T02:30:00"
        );
        assert_eq!(
            next("0 30 2 * * *", "2026-11-25T02:30:00Z"),
            "2026-11-26T02:30:00"
        );
        assert_eq!(
            next("*/5 * * * * *", "2026-11-25T10:00:03Z"),
            "2026-11-25T10:00:05"
        );
        assert_eq!(
            next("*/5 * * * * *", "2026-11-25T10:00:59Z"),
            "2026-11-25T10:01:00"
        );
        assert_eq!(
            next("0 0 * * * *", "2026-12-31T23:59:59Z"),
            "2027-01-01T00:00:00"
        );
    }

    #[test]
    fn five_fields_mean_second_zero() {
        assert_eq!(
            next("30 2 * * *", "2026-11-25T03:00:00Z"),
            "2026-11-26T02:30:00"
        );
        assert_eq!(
            next("@hourly", "2026-11-25T03:00:00Z"),
            "2026-11-25T04:00:00"
        );
        assert_eq!(
            next("@weekly", "2026-11-25T03:00:00Z"),
            "2026-11-29T00:00:00"
        );
    }

    #[test]
    fn lists_ranges_steps_and_names() {
        assert_eq!(
            next("0 0 9-17/4 * * mon-fri", "2026-11-27T18:00:00Z"),
            "2026-11-30T09:00:00"
        );
        assert_eq!(
            next("0 15,45 * * * *", "2026-11-25T10:20:00Z"),
            "2026-11-25T10:45:00"
        );
        assert_eq!(
            next("0 0 0 1 jan,jul *", "2026-11-25T00:00:00Z"),
            "2027-01-01T00:00:00"
        );
        // Weekday 7 is Sunday.
        assert_eq!(
            next("0 0 0 * * 7", "2026-11-25T00:00:00Z"),
            "2026-11-29T00:00:00"
        );
        assert_eq!(
            next("10/20 * * * * *", "2026-11-25T00:00:31Z"),
            "2026-11-25T00:00:50"
        );
    }

    #[test]
    fn day_fields_combine_like_cron() {
        // Both restricted: the 1st of the month or any Friday.
        assert_eq!(
            next("0 0 0 1 * fri", "2026-11-25T00:00:00Z"),
            "2026-11-27T00:00:00"
        );
        assert_eq!(
            next("0 0 0 29 2 *", "2026-03-01T00:00:00Z"),
            "2028-02-29T00:00:00"
        );
    }

    #[test]
    fn a_step_in_a_day_field_does_not_restrict_it_as_in_vixie_cron() {
        // "*/2" days and Fridays: Vixie cron treats "*/2" as unrestricted, so both must match
        // (an odd day that is a Friday), not either.
        assert_eq!(
            next("0 0 0 */2 * fri", "2026-11-27T00:00:00Z"),
            "2026-12-11T00:00:00"
        );
    }

    /// A zone one hour ahead of UTC that moves its clocks forward at 2026-03-29 01:00 UTC
    /// (02:00 becomes 03:00) and back at 2026-10-25 01:00 UTC (03:00 becomes 02:00): central
    /// Europe's rule for 2026.
    #[derive(Debug, Clone, Copy)]
    struct Cet;

    fn cet_offset(utc: &NaiveDateTime) -> chrono::FixedOffset {
        let spring = NaiveDate::from_ymd_opt(2026, 3, 29)
            .and_then(|d| d.and_hms_opt(1, 0, 0))
            .expect("date");
        let autumn = NaiveDate::from_ymd_opt(2026, 10, 25)
            .and_then(|d| d.and_hms_opt(1, 0, 0))
            .expect("date");
        let hours = if *utc >= spring && *utc < autumn {
            2
        } else {
            1
        };
        chrono::FixedOffset::east_opt(hours * 3600).expect("offset")
    }

    impl TimeZone for Cet {
        type Offset = chrono::FixedOffset;
        fn from_offset(_: &chrono::FixedOffset) -> Self {
            Cet
        }
        fn offset_from_local_date(
            &self,
            _: &NaiveDate,
        ) -> chrono::LocalResult<chrono::FixedOffset> {
            chrono::LocalResult::None
        }
        fn offset_from_local_datetime(
            &self,
            local: &NaiveDateTime,
        ) -> chrono::LocalResult<chrono::FixedOffset> {
            let fits: Vec<chrono::FixedOffset> = [1, 2]
                .iter()
                .filter_map(|h| chrono::FixedOffset::east_opt(h * 3600))
                .filter(|o| {
                    cet_offset(&(*local - Duration::seconds(i64::from(o.local_minus_utc())))) == *o
                })
                .collect();
            match fits.as_slice() {
                [one] => chrono::LocalResult::Single(*one),
                // The earlier instant has the larger offset.
                [a, b] if a.local_minus_utc() > b.local_minus_utc() => {
                    chrono::LocalResult::Ambiguous(*a, *b)
                }
                [a, b] => chrono::LocalResult::Ambiguous(*b, *a),
                _ => chrono::LocalResult::None,
            }
        }
        fn offset_from_utc_date(&self, _: &NaiveDate) -> chrono::FixedOffset {
            chrono::FixedOffset::east_opt(3600).expect("offset")
        }
        fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> chrono::FixedOffset {
            cet_offset(utc)
        }
    }

    fn next_cet(schedule: &str, after_utc: &str) -> String {
        let s: Schedule = schedule.parse().expect("valid schedule");
        let after = at(after_utc).with_timezone(&Cet);
        s.next_after(&after)
            .expect("fires")
            .with_timezone(&Utc)
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    #[test]
    fn a_fixed_time_skipped_in_spring_runs_when_the_clock_resumes() {
        // 02:30 does not exist on 29 March: the daily run happens at 03:00 CEST (01:00 UTC).
        assert_eq!(
            next_cet("0 30 2 * * *", "2026-03-28T23:00:00Z"),
            "2026-03-29T01:00:00Z"
        );
        // And the day after at 02:30 CEST again.
        assert_eq!(
            next_cet("0 30 2 * * *", "2026-03-29T01:00:00Z"),
            "2026-03-30T00:30:00Z"
        );
        // A schedule by the wall clock simply goes on in the new time.
        assert_eq!(
            next_cet("0 */15 * * * *", "2026-03-29T00:50:00Z"),
            "2026-03-29T01:00:00Z"
        );
    }

    #[test]
    fn a_fixed_time_repeated_in_autumn_runs_once() {
        // 02:30 happens twice on 25 October: first at 02:30 CEST (00:30 UTC) ...
        assert_eq!(
            next_cet("0 30 2 * * *", "2026-10-24T23:00:00Z"),
            "2026-10-25T00:30:00Z"
        );
        // ... and not again at 02:30 CET (01:30 UTC), even asked from between the two.
        assert_eq!(
            next_cet("0 30 2 * * *", "2026-10-25T01:10:00Z"),
            "2026-10-26T01:30:00Z"
        );
    }

    #[test]
    fn the_longest_gap_between_runs_is_measured() {
        let s: Schedule = "0 0 3 * * sun".parse().expect("parses");
        let from = at("2026-12-03T00:00:00Z");
        assert_eq!(
            s.longest_gap(&from, Duration::days(60), 100),
            Some(Duration::days(7))
        );
        let never: Schedule = "0 0 0 31 2 *".parse().expect("parses");
        assert_eq!(never.longest_gap(&from, Duration::days(60), 100), None);
    }

    #[test]
    fn never_firing_schedule_gives_none() {
        let s: Schedule = "0 0 0 31 2 *".parse().expect("parses");
        assert!(s.next_after(&at("2026-01-01T00:00:00Z")).is_none());
    }

    #[test]
    fn bad_schedules_are_refused_with_the_reason() {
        for (bad, why) in [
            ("* * * *", "4 fields"),
            ("60 * * * * *", "second 60 is outside 0-59"),
            ("0 0 25 * * *", "hour 25 is outside 0-23"),
            ("*/0 * * * * *", "step must be at least 1"),
            ("0 0 0 * foo *", "month \"foo\" is not a number"),
            ("0 0 0 10-2 * *", "runs backwards"),
            ("", "0 fields"),
        ] {
            let e = format!("{:#}", bad.parse::<Schedule>().expect_err(bad));
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
