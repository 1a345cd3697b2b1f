//! Timestamps of the function logs: Unix microseconds, written as RFC 3339
//! UTC with microseconds (read back, and `--since`, by [`crate::since`]).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        let us = 1_764_242_358_123_456; // 2025-11-27T11:19:18.123456Z
        assert_eq!(format_us(us), "2025-11-27T11:19:18.123456Z");
        assert_eq!(crate::since::parse_rfc3339(&format_us(us)), Some(us));
        assert_eq!(date_of(us), "2025-11-27");
        assert_eq!(format_us(0), "1970-01-01T00:00:00.000000Z");
        for leap in ["2024-02-29T23:59:59Z", "2000-03-01T00:00:00Z"] {
            let v = crate::since::parse_rfc3339(leap).unwrap();
            assert_eq!(format_us(v).replace(".000000", ""), leap);
        }
    }
}
