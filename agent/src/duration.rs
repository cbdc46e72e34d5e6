//! Durations written the way operators write them in config files: "500ms", "30s", "5m",
//! "24h", "7d", or combinations such as "1h30m".

use std::time::Duration;

use anyhow::{bail, Result};

pub fn parse(text: &str) -> Result<Duration> {
    let t = text.trim();
    if t.is_empty() {
        bail!("empty duration; write e.g. \"30s\", \"5m\", \"24h\"");
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            bail!("duration {text:?}: expected a number at {rest:?}");
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| anyhow::anyhow!("duration {text:?} is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            "" => bail!("duration {text:?}: a unit is required (ms, s, m, h, d)"),
            other => bail!("duration {text:?}: unknown unit {other:?} (use ms, s, m, h, d)"),
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
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in [
            "",
            "30",
            "s",
            "5 m",
            "3x",
            "-1s",
            "1.5h",
            "99999999999999999999999s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
