//! Timestamps of the function logs: Unix microseconds, written as RFC 3339
//! UTC with microseconds, and the `--since` forms (`10m`, `2h`, an RFC 3339
//! time, or a raw microsecond value) turned back into microseconds.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::util::civil_from_days;

/// Now, in Unix microseconds.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// `2026-11-27T11:19:18.123456Z`
pub fn format_us(us: u64) -> String {
    let secs = us / 1_000_000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        us % 1_000_000
    )
}

/// The UTC date of `us` as `2026-11-27` (log stream names start with it).
pub fn date_of(us: u64) -> String {
    let (y, m, d) = civil_from_days((us / 1_000_000 / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days from 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`, the inverse of [`civil_from_days`]).
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
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
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

/// `--since`: `30s`, `10m`, `2h`, `1d`, `1w` before `now`, or an RFC 3339
/// time (a bare number is refused: its unit would be a guess). Returns
/// Unix microseconds.
pub fn parse_since(s: &str, now: u64) -> Result<u64, String> {
    let s = s.trim();
    if let Some(us) = parse_rfc3339(s) {
        return Ok(us);
    }
    let unit = s.chars().last().unwrap_or(' ');
    let mult: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => 0,
    };
    let n = s.strip_suffix(unit).and_then(digits).filter(|_| mult > 0);
    match n {
        Some(n) => Ok(now.saturating_sub((n as u64).saturating_mul(mult * 1_000_000))),
        None => Err(format!(
            "since {s:?} must be a duration like 30s, 10m, 2h, 1d, or an RFC 3339 time"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        let us = 1_764_242_358_123_456; // 2025-11-27T11:19:18.123456Z
        assert_eq!(format_us(us), "2025-11-27T11:19:18.123456Z");
        assert_eq!(parse_rfc3339(&format_us(us)), Some(us));
        assert_eq!(date_of(us), "2025-11-27");
        assert_eq!(format_us(0), "1970-01-01T00:00:00.000000Z");
        for leap in ["2024-02-29T23:59:59Z", "2000-03-01T00:00:00Z"] {
            let v = parse_rfc3339(leap).unwrap();
            assert_eq!(format_us(v).replace(".000000", ""), leap);
        }
    }

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
    fn since_accepts_durations_times_and_micros() {
        let now = 10_000_000_000;
        assert_eq!(parse_since("10m", now), Ok(now - 600_000_000));
        assert_eq!(parse_since("2h", now), Ok(now - 7_200_000_000));
        assert_eq!(parse_since("30s", now), Ok(now - 30_000_000));
        assert_eq!(parse_since("1970-01-01T00:00:01Z", now), Ok(1_000_000));
        assert_eq!(parse_since("99999d", now), Ok(0));
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
        ] {
            assert!(parse_since(bad, now).is_err(), "{bad:?}");
        }
    }
}
