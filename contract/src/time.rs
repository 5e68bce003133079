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

/// Parses a timestamp header or field in the form every jetq reader accepts
/// (docs/PROTOCOL.md §3, "Timestamps"): `YYYY-MM-DDTHH:MM:SS`, an optional fraction of 1 to 9
/// digits (cut to microseconds), then `Z` or a numeric offset `+HH:MM` / `-HH:MM` (converted to
/// UTC). `T` and `Z` may be lower case. Anything else (no zone, a space for `T`, a leap
/// second, an impossible date) is `None`.
pub fn parse(value: &str) -> Option<SystemTime> {
    const DATE_TIME: &[u8] = b"dddd-dd-ddTdd:dd:dd";
    let bytes = value.as_bytes();
    if bytes.len() < DATE_TIME.len() + 1 {
        return None;
    }
    let (head, mut rest) = bytes.split_at(DATE_TIME.len());
    let shape_ok = head.iter().zip(DATE_TIME).all(|(&b, &shape)| match shape {
        b'd' => b.is_ascii_digit(),
        b'T' => b == b'T' || b == b't',
        other => b == other,
    });
    if !shape_ok {
        return None;
    }
    let mut micros = [b'0'; 6];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        for (slot, digit) in micros.iter_mut().zip(&fraction[..digits]) {
            *slot = *digit;
        }
        rest = &fraction[digits..];
    }
    let offset_secs: i64 = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()) =>
        {
            let hours = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let minutes = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            if hours > 23 || minutes > 59 {
                return None;
            }
            let secs = hours * 3600 + minutes * 60;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    // Rebuilt in the one form humantime checks strictly (ranges, days of the month).
    let mut canonical = head.to_vec();
    canonical[10] = b'T';
    canonical.push(b'.');
    canonical.extend_from_slice(&micros);
    canonical.push(b'Z');
    let local = humantime::parse_rfc3339(std::str::from_utf8(&canonical).ok()?).ok()?;
    let shift = Duration::from_secs(offset_secs.unsigned_abs());
    if offset_secs >= 0 {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    }
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
    fn accepts_other_precisions_and_offsets() {
        let at = |text| parse(text).map(format);
        assert_eq!(
            at("2026-11-27T07:00:00Z").unwrap(),
            "2026-11-27T07:00:00.000000Z"
        );
        assert_eq!(
            at("2026-11-27T07:00:00.5Z").unwrap(),
            "2026-11-27T07:00:00.500000Z"
        );
        assert_eq!(
            at("2026-11-27T07:00:00.123456789+00:00").unwrap(),
            "2026-11-27T07:00:00.123456Z"
        );
        assert_eq!(at("2026-11-27t08:30:00+01:30z"), None);
        assert_eq!(
            at("2026-11-27T08:30:00+01:30").unwrap(),
            "2026-11-27T07:00:00.000000Z"
        );
        assert_eq!(
            at("2026-11-27T05:00:00-02:00").unwrap(),
            "2026-11-27T07:00:00.000000Z"
        );
        for bad in [
            "not a time",
            "2026-11-27T07:00:00",
            "2026-11-27 07:00:00Z",
            "2026-11-27T07:00:00.Z",
            "2026-11-27T07:00:00.1234567890Z",
            "2026-02-30T07:00:00Z",
            "2026-11-27T07:00:00+24:00",
            "2026-11-27T07:00:00+0100",
            "2026-11-27T07:00:00Zjunk",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
