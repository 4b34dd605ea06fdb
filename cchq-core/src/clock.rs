//! Dates and times: the clock (`now`, seconds since the epoch) and the UTC formats cchq writes
//! (`format_utc` for people, `rfc3339` in records, `iso8601_basic` for AWS signatures). UTC only,
//! computed by civil-from-days: no time zone database.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Nanoseconds since the epoch: a value that changes between calls, to make names unique (not a
/// measure of time).
pub fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Seconds since the epoch of `time` (0 before the epoch).
pub fn secs_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The UTC calendar date `(year, month, day)` of a day count since the epoch (civil-from-days, no
/// time zone database needed).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DD HH:MM UTC` for a timestamp.
pub fn format_utc(ts: u64) -> String {
    let (y, m, d) = civil_from_days(i64::try_from(ts / 86_400).unwrap_or(0));
    let rem = ts % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix timestamp.
pub fn rfc3339(ts: u64) -> String {
    let day = format_utc(ts);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        &day[..10],
        (ts % 86_400) / 3600,
        (ts % 3600) / 60,
        ts % 60
    )
}

/// `YYYYMMDDTHHMMSSZ` (ISO 8601's basic format, UTC) for a Unix timestamp.
pub fn iso8601_basic(secs: u64) -> String {
    let (y, m, d) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let s = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(1_795_000_000), "2026-11-18 11:06 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00 UTC");
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_708_805), "2026-11-26T16:00:05Z");
    }

    #[test]
    fn basic_format() {
        assert_eq!(iso8601_basic(1_440_938_160), "20150830T123600Z");
        assert_eq!(iso8601_basic(0), "19700101T000000Z");
    }
}
