//! Points in time as people write them: RFC 3339 times, and the one
//! `--since` grammar every CLI subcommand and the logs API's `since=`
//! share (a duration back from now, an RFC 3339 time, or `@` Unix seconds).

use std::time::{SystemTime, UNIX_EPOCH};

/// What `--since` accepts, for error messages and help texts.
pub const GRAMMAR: &str = "a duration back from now (30s, 10m, 2h, 1d, 1w), \
an RFC 3339 time (2026-01-31T12:00:00Z, with .fraction or ±HH:MM; no zone is UTC) \
or @ and Unix seconds (@1769860800)";

/// A `--since` value that is none of the forms of [`GRAMMAR`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a time: expected {GRAMMAR}")]
pub struct SinceError {
    input: String,
}

/// A `--since` argument, resolved to Unix microseconds when it was parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Since {
    pub unix_us: u64,
}

impl Since {
    /// Unix milliseconds (rounded down).
    pub fn unix_ms(self) -> u64 {
        self.unix_us / 1000
    }
}

impl std::str::FromStr for Since {
    type Err = SinceError;

    /// Resolves durations against the clock now (for clap's value parser).
    fn from_str(s: &str) -> Result<Since, SinceError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        parse_since(s, now).map(|unix_us| Since { unix_us })
    }
}

/// `--since` against `now` (Unix microseconds); Unix microseconds.
/// A bare number is refused: its unit would be a guess.
pub fn parse_since(s: &str, now: u64) -> Result<u64, SinceError> {
    let t = s.trim();
    let err = || SinceError {
        input: s.to_string(),
    };
    if let Some(secs) = t.strip_prefix('@') {
        let secs = digits(secs).ok_or_else(err)? as u64;
        return secs.checked_mul(1_000_000).ok_or_else(err);
    }
    if let Some(us) = parse_rfc3339(t) {
        return Ok(us);
    }
    // No zone: UTC (the form `ember audit list` always took). Only when
    // the text ends in a digit, so a zone cannot be doubled.
    if t.ends_with(|c: char| c.is_ascii_digit()) {
        if let Some(us) = parse_rfc3339(&format!("{t}Z")) {
            return Ok(us);
        }
    }
    let unit = t.chars().last().ok_or_else(err)?;
    let mult: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Err(err()),
    };
    let n = t.strip_suffix(unit).and_then(digits).ok_or_else(err)? as u64;
    Ok(now.saturating_sub(n.saturating_mul(mult * 1_000_000)))
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` (a space may replace the
/// `T`) into Unix microseconds. Times before 1970 are refused.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let s = s.trim();
    let (date, rest) = (s.get(..10)?, s.get(10..)?);
    let sep = rest.chars().next()?;
    if !matches!(sep, 'T' | 't' | ' ') {
        return None;
    }
    let rest = &rest[1..];
    let mut dp = date.split('-');
    let (y, mo, d) = (
        digits(dp.next()?)?,
        digits(dp.next()?)?,
        digits(dp.next()?)?,
    );
    let (hms, rest) = (rest.get(..8)?, rest.get(8..)?);
    let mut tp = hms.split(':');
    let (h, mi, sec) = (
        digits(tp.next()?)?,
        digits(tp.next()?)?,
        digits(tp.next()?)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let (frac_us, zone) = match rest.strip_prefix('.') {
        Some(f) => {
            let n = f.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return None;
            }
            let mut us = 0i64;
            for (i, b) in f.bytes().take(n.min(6)).enumerate() {
                us += i64::from(b - b'0') * 10i64.pow(5 - i as u32);
            }
            (us, &f[n..])
        }
        None => (0, rest),
    };
    let offset_s = match zone {
        "Z" | "z" => 0,
        z if z.len() == 6
            && (z.starts_with('+') || z.starts_with('-'))
            && z.get(3..4) == Some(":") =>
        {
            let v = digits(z.get(1..3)?)? * 3600 + digits(z.get(4..6)?)? * 60;
            if z.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    u64::try_from(secs * 1_000_000 + frac_us).ok()
}

/// Days from 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`, the inverse of [`crate::util::civil_from_days`]).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn digits(s: &str) -> Option<i64> {
    (!s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_fractions_and_bad_input() {
        let z = parse_rfc3339("2025-11-27T11:19:18Z").unwrap();
        assert_eq!(parse_rfc3339("2025-11-27T12:19:18+01:00"), Some(z));
        assert_eq!(parse_rfc3339("2025-11-27 10:49:18-00:30"), Some(z));
        assert_eq!(parse_rfc3339("2025-11-27T11:19:18.5Z"), Some(z + 500_000));
        for bad in [
            "",
            "2025-11-27",
            "2025-13-01T00:00:00Z",
            "2025-11-27T11:19:18",
            "2025-11-27T11:19:18.Z",
            "1969-12-31T23:59:59Z",
            "2025-11-27T11:19:18+0100",
            "２０２５-11-27T11:19:18Z",
            "2025-11-27T11:19:18+0ü:0",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn since_takes_durations_times_and_at_seconds() {
        let now = 10_000_000_000_000;
        assert_eq!(parse_since("10m", now), Ok(now - 600_000_000));
        assert_eq!(parse_since("2h", now), Ok(now - 7_200_000_000));
        assert_eq!(parse_since(" 30s ", now), Ok(now - 30_000_000));
        assert_eq!(parse_since("1w", now), Ok(now - 604_800_000_000));
        assert_eq!(parse_since("99999999d", now), Ok(0));
        assert_eq!(parse_since("1970-01-01T00:00:01Z", now), Ok(1_000_000));
        assert_eq!(parse_since("@1700000000", now), Ok(1_700_000_000_000_000));
        assert_eq!(
            parse_since("2023-11-14T22:13:20.123Z", now),
            Ok(1_700_000_000_123_000)
        );
        // No zone is UTC; an offset is honoured.
        assert_eq!(
            parse_since("2000-02-29T00:00:00", now),
            Ok(951_782_400_000_000)
        );
        assert_eq!(
            parse_since("2000-02-29 01:00:00+01:00", now),
            Ok(951_782_400_000_000)
        );
        for bad in [
            "",
            "m",
            "10x",
            "-5m",
            "1.5h",
            "yesterday",
            "10ü",
            "1€",
            "123",
            "@",
            "@-1",
            "@1.5",
            "@99999999999999999999",
            "2023-13-01T00:00:00",
            "2023-11-14T22:13:20ZZ",
            "2023-11-14",
        ] {
            assert!(parse_since(bad, now).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_error_names_the_input_and_the_grammar() {
        let e = parse_since("1x", 0).unwrap_err().to_string();
        assert!(
            e.starts_with("\"1x\" is not a time: expected a duration"),
            "{e}"
        );
        assert!(e.contains("@1769860800") && e.contains("RFC 3339"), "{e}");
        let arg: Result<Since, _> = "1w".parse();
        assert!(arg.is_ok());
    }
}
