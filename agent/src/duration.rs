//! Durations written the way operators write them in config files: "500ms", "30s", "5m",
//! "24h", "7d", or combinations such as "1h30m".

use std::time::Duration;

use anyhow::{bail, Result};

/// The accepted forms, for messages.
pub const FORMS: &str =
    "a number and a unit, e.g. \"30s\", \"5m\", \"30 min\", \"24h\", \"7d\" or \
     \"1h30m\" (units: ms, s/sec/seconds, m/min/minutes, h/hours, d/days, w/weeks)";

pub fn parse(text: &str) -> Result<Duration> {
    let t = text.trim();
    if t.is_empty() {
        bail!("empty duration; write {FORMS}");
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            bail!("duration {text:?}: expected a number at {rest:?}; write {FORMS}");
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| anyhow::anyhow!("duration {text:?} is too large"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let seconds = |k: u64| Duration::from_secs(n.saturating_mul(k));
        let part = match unit.to_ascii_lowercase().as_str() {
            "ms" | "msec" => Duration::from_millis(n),
            "s" | "sec" | "secs" | "second" | "seconds" => seconds(1),
            "m" | "min" | "mins" | "minute" | "minutes" => seconds(60),
            "h" | "hr" | "hrs" | "hour" | "hours" => seconds(3600),
            "d" | "day" | "days" => seconds(86_400),
            "w" | "week" | "weeks" => seconds(7 * 86_400),
            "" => bail!("duration {text:?}: the number {n} has no unit; write {FORMS}"),
            other => bail!("duration {text:?}: unknown unit {other:?}; write {FORMS}"),
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn accepts_units_and_combinations() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse(" 7d ").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse("30 min").unwrap(), Duration::from_secs(1800));
        assert_eq!(
            parse("1 hour 30 minutes").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(parse("2w").unwrap(), Duration::from_secs(14 * 86_400));
    }

    #[test]
    fn errors_name_the_accepted_forms() {
        for bad in ["30", "30 fortnights", "min"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("\"30 min\"") && e.contains("units:"), "{e}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in [
            "",
            "30",
            "s",
            "3x",
            "-1s",
            "1.5h",
            "99999999999999999999999s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
