//! Timestamps on the wire: RFC 3339 in UTC with microseconds.

use std::time::{Duration, SystemTime};

/// Formats `at` as RFC 3339 UTC with microseconds, e.g. `2026-11-27T07:00:00.123456Z`.
pub fn format(at: SystemTime) -> String {
    humantime::format_rfc3339_micros(at).to_string()
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
    fn accepts_other_precisions() {
        assert!(parse("2026-11-27T07:00:00Z").is_some());
        assert!(parse("2026-11-27T07:00:00.5Z").is_some());
        assert!(parse("not a time").is_none());
    }
}
