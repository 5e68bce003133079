//! Timestamps on the wire: RFC 3339 in UTC with microseconds.

use std::time::{Duration, SystemTime};

/// The last instant RFC 3339's four-digit years can write: 9999-12-31T23:59:59.999999Z.
const LAST_WRITABLE: Duration = Duration::from_micros(253_402_300_799_999_999);

/// Formats `at` as RFC 3339 UTC with microseconds, e.g. `2026-11-27T07:00:00.123456Z`.
///
/// Times outside what the format can write are clamped: before 1970 to the epoch, after
/// 9999 to its last microsecond (only a broken clock or a caller's nonsense due time gets
/// there, and a timestamp header must not panic the enqueue).
pub fn format(at: SystemTime) -> String {
    // humantime panics outside these bounds.
    let since_epoch = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .min(LAST_WRITABLE);
    humantime::format_rfc3339_micros(SystemTime::UNIX_EPOCH + since_epoch).to_string()
}

/// The current time, formatted with [`format`].
pub fn now() -> String {
    format(SystemTime::now())
}

/// Parses an RFC 3339 timestamp written by [`format`] or by another language's producer.
pub fn parse(value: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(value.trim_end_matches('Z'))
        .ok()
        .or_else(|| humantime::parse_rfc3339(value).ok())
}

/// How long ago `value` was, or `None` if it does not parse or lies in the future.
pub fn age(value: &str) -> Option<Duration> {
    SystemTime::now().duration_since(parse(value)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_microseconds() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_790_000_000_123_456);
        let text = format(at);
        assert!(text.ends_with('Z'));
        assert_eq!(parse(&text), Some(at));
    }

    #[test]
    fn clamps_what_four_digit_years_cannot_write_instead_of_panicking() {
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(86_400);
        assert_eq!(format(before), "1970-01-01T00:00:00.000000Z");
        let after = SystemTime::UNIX_EPOCH + LAST_WRITABLE + Duration::from_secs(86_400 * 400);
        assert_eq!(format(after), "9999-12-31T23:59:59.999999Z");
    }

    #[test]
    fn accepts_other_precisions() {
        assert!(parse("2026-11-27T07:00:00Z").is_some());
        assert!(parse("2026-11-27T07:00:00.5Z").is_some());
        assert!(parse("not a time").is_none());
    }
}
