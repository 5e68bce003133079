//! Cron expressions with seconds, evaluated in an IANA time zone.
//!
//! Parsing and evaluation use [`croner`], which follows the Open Cron Pattern Specification's
//! daylight-saving rules; the time-zone rules come from [`chrono_tz`], compiled into the binary
//! (so every replica of one build computes the same fire times whatever the host's zoneinfo):
//!
//! - **Spring forward (gap).** A *fixed-time* schedule (seconds, minute and hour each a single
//!   value, e.g. `0 30 2 * * *`) whose wall-clock time does not exist that day fires **once, at
//!   the first valid instant after the gap** (03:00 local for a 02:00→03:00 jump). An interval
//!   schedule (`0 */15 * * * *`) simply has no fires inside the gap.
//! - **Fall back (overlap).** A fixed-time schedule fires **once**, at the first of the two
//!   instants. An interval schedule fires at both: "every 15 minutes" stays every 15 minutes
//!   of real time.
//!
//! Fire times are returned as UTC instants, which is also how they are named on the wire: the
//! two 01:30 fires of an overlap hour have different ids.

use std::{fmt, str::FromStr};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::{
    parser::{CronParser, Seconds},
    Cron,
};

/// A cron expression in a time zone: a standard five-field crontab line (minute, hour, day of
/// month, month, day of week; it fires at second 0) or six fields with seconds first (second,
/// minute, hour, day of month, month, day of week).
///
/// ```
/// use jetq_scheduler::CronSchedule;
/// let nightly = CronSchedule::parse("0 0 3 * * *", "Europe/Berlin").unwrap();
/// let after = "2026-03-28T12:00:00Z".parse().unwrap();
/// // 03:00 in Berlin on 29 March 2026 is already summer time (UTC+2).
/// assert_eq!(nightly.next_after(after).unwrap().to_rfc3339(), "2026-03-29T01:00:00+00:00");
/// ```
#[derive(Clone)]
pub struct CronSchedule {
    expression: String,
    zone: Tz,
    cron: Cron,
}

/// A cron expression or time zone that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CronError {
    /// The expression does not parse (the message says why).
    #[error("invalid cron expression {expression:?}: {problem} (expected five fields: minute hour day-of-month month day-of-week, e.g. \"30 2 * * *\", or six with seconds first, e.g. \"0 30 2 * * *\")")]
    Expression {
        /// The expression as given.
        expression: String,
        /// The parser's explanation.
        problem: String,
    },
    /// The time zone is not an IANA name known to this build.
    #[error(
        "unknown time zone {zone:?} (expected an IANA name such as \"UTC\" or \"Europe/Berlin\")"
    )]
    Zone {
        /// The zone as given.
        zone: String,
    },
}

impl CronSchedule {
    /// Parses `expression` (five fields, or six with seconds first) for the IANA time zone
    /// `zone`.
    pub fn parse(expression: &str, zone: &str) -> Result<Self, CronError> {
        let zone = Tz::from_str(zone.trim()).map_err(|_| CronError::Zone {
            zone: zone.to_owned(),
        })?;
        Self::new(expression, zone)
    }

    /// Parses `expression` (five fields, or six with seconds first) for a time zone.
    pub fn new(expression: &str, zone: Tz) -> Result<Self, CronError> {
        let cron = CronParser::builder()
            // Five fields as in a crontab (second 0), or six with seconds first.
            .seconds(Seconds::Optional)
            .build()
            .parse(expression.trim())
            .map_err(|err| CronError::Expression {
                expression: expression.to_owned(),
                problem: err.to_string(),
            })?;
        Ok(CronSchedule {
            expression: expression.trim().to_owned(),
            zone,
            cron,
        })
    }

    /// The expression, trimmed.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone the expression is evaluated in.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first fire strictly after `after`, or `None` if there is none (within the next few
    /// hundred years, or the pattern never matches).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let from = floor_second(after).with_timezone(&self.zone);
        let next = self.cron.find_next_occurrence(&from, false).ok()?;
        let next = next.with_timezone(&Utc);
        // Defensive: the contract is "strictly after", whatever the library does at the edges.
        if next > after {
            Some(next)
        } else {
            self.next_after(after + TimeDelta::seconds(1))
        }
    }

    /// The last fire at or before `at`, or `None` if there is none.
    pub fn last_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let from = floor_second(at).with_timezone(&self.zone);
        let previous = self.cron.find_previous_occurrence(&from, true).ok()?;
        Some(previous.with_timezone(&Utc))
    }

    /// The fires in `(after, until]`, in order, computed lazily.
    pub fn fires_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let mut cursor = after;
        std::iter::from_fn(move || {
            let next = self.next_after(cursor)?;
            if next > until {
                return None;
            }
            cursor = next;
            Some(next)
        })
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression && self.zone == other.zone
    }
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?} in {})", self.expression, self.zone)
    }
}

/// Rounds down to the whole second.
pub(crate) fn floor_second(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::seconds(1)).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn fires(schedule: &CronSchedule, after: &str, until: &str) -> Vec<String> {
        schedule
            .fires_between(utc(after), utc(until))
            .map(|t| t.to_rfc3339())
            .collect()
    }

    #[test]
    fn every_second_and_sub_second_starts() {
        let s = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        let at = utc("2026-01-01T00:00:00.400Z");
        assert_eq!(s.next_after(at).unwrap(), utc("2026-01-01T00:00:01Z"));
        assert_eq!(
            s.next_after(utc("2026-01-01T00:00:00Z")).unwrap(),
            utc("2026-01-01T00:00:01Z")
        );
        assert_eq!(
            s.last_at_or_before(at).unwrap(),
            utc("2026-01-01T00:00:00Z")
        );
    }

    #[test]
    fn spring_forward_fixed_time_fires_once_at_end_of_gap() {
        // Europe/Berlin jumps from 02:00 to 03:00 on 29 March 2026: 02:30 does not exist.
        let s = CronSchedule::parse("0 30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            fires(&s, "2026-03-27T12:00:00Z", "2026-03-30T12:00:00Z"),
            vec![
                "2026-03-28T01:30:00+00:00", // 02:30 CET
                "2026-03-29T01:00:00+00:00", // 03:00 CEST: first valid instant after the gap
                "2026-03-30T00:30:00+00:00", // 02:30 CEST
            ]
        );
    }

    #[test]
    fn spring_forward_interval_skips_the_gap() {
        // America/New_York: 02:00 → 03:00 on 8 March 2026.
        let s = CronSchedule::parse("0 */30 * * * *", "America/New_York").unwrap();
        assert_eq!(
            fires(&s, "2026-03-08T06:00:00Z", "2026-03-08T07:30:00Z"),
            vec![
                "2026-03-08T06:30:00+00:00", // 01:30 EST
                "2026-03-08T07:00:00+00:00", // 03:00 EDT (02:00 and 02:30 do not exist)
                "2026-03-08T07:30:00+00:00", // 03:30 EDT
            ]
        );
    }

    #[test]
    fn fall_back_fixed_time_fires_once() {
        // Europe/Berlin: 03:00 CEST → 02:00 CET on 25 October 2026; 02:30 happens twice.
        let s = CronSchedule::parse("0 30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            fires(&s, "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z"),
            vec![
                "2026-10-25T00:30:00+00:00", // the first 02:30 (CEST)
                "2026-10-26T01:30:00+00:00", // next day, 02:30 CET
            ]
        );
    }

    #[test]
    fn fall_back_interval_fires_in_both_hours() {
        let s = CronSchedule::parse("0 0,30 * * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            fires(&s, "2026-10-24T23:45:00Z", "2026-10-25T01:45:00Z"),
            vec![
                "2026-10-25T00:00:00+00:00", // 02:00 CEST
                "2026-10-25T00:30:00+00:00", // 02:30 CEST
                "2026-10-25T01:00:00+00:00", // 02:00 CET
                "2026-10-25T01:30:00+00:00", // 02:30 CET
            ]
        );
    }

    #[test]
    fn half_hour_dst_zone() {
        // Australia/Lord_Howe moves by 30 minutes: 02:00 → 02:30 on 4 October 2026.
        let s = CronSchedule::parse("0 15 2 * * *", "Australia/Lord_Howe").unwrap();
        let fire = s
            .next_after(utc("2026-10-03T12:00:00Z"))
            .unwrap()
            .with_timezone(&chrono_tz::Australia::Lord_Howe);
        assert_eq!(fire.to_rfc3339(), "2026-10-04T02:30:00+11:00");
    }

    #[test]
    fn leap_days() {
        let s = CronSchedule::parse("0 0 12 29 2 *", "UTC").unwrap();
        assert_eq!(
            fires(&s, "2026-01-01T00:00:00Z", "2033-01-01T00:00:00Z"),
            vec!["2028-02-29T12:00:00+00:00", "2032-02-29T12:00:00+00:00"]
        );
        // The last day of February, every year.
        let last = CronSchedule::parse("0 0 0 L 2 *", "UTC").unwrap();
        assert_eq!(
            fires(&last, "2027-01-01T00:00:00Z", "2028-12-31T00:00:00Z"),
            vec!["2027-02-28T00:00:00+00:00", "2028-02-29T00:00:00+00:00"]
        );
    }

    #[test]
    fn time_zone_offsets_apply() {
        let s = CronSchedule::parse("0 0 9 * * MON-FRI", "Asia/Kolkata").unwrap();
        // Friday 27 Nov 2026 09:00 IST = 03:30 UTC; the next is Monday 30 Nov.
        assert_eq!(
            fires(&s, "2026-11-27T00:00:00Z", "2026-11-30T12:00:00Z"),
            vec!["2026-11-27T03:30:00+00:00", "2026-11-30T03:30:00+00:00"]
        );
    }

    #[test]
    fn rejects_bad_input_with_reasons() {
        let err = CronSchedule::parse("3 * * *", "UTC").unwrap_err();
        assert!(matches!(err, CronError::Expression { .. }), "{err}");
        assert!(err.to_string().contains("five fields"), "{err}");
        let err = CronSchedule::parse("0 0 25 * * *", "UTC").unwrap_err();
        assert!(err.to_string().contains("0 0 25 * * *"), "{err}");
        let err = CronSchedule::parse("0 61 * * * *", "UTC").unwrap_err();
        assert!(err.to_string().contains("0 61 * * * *"), "{err}");
        let err = CronSchedule::parse("0 0 3 * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(
            err,
            CronError::Zone {
                zone: "Mars/Olympus".into()
            }
        );
    }

    #[test]
    fn five_field_crontab_lines_fire_at_second_zero() {
        let crontab = CronSchedule::parse("30 2 * * *", "UTC").unwrap();
        let seconds = CronSchedule::parse("0 30 2 * * *", "UTC").unwrap();
        assert_eq!(
            fires(&crontab, "2026-05-01T00:00:00Z", "2026-05-03T00:00:00Z"),
            vec!["2026-05-01T02:30:00+00:00", "2026-05-02T02:30:00+00:00"]
        );
        assert_eq!(
            fires(&crontab, "2026-05-01T00:00:00Z", "2026-05-03T00:00:00Z"),
            fires(&seconds, "2026-05-01T00:00:00Z", "2026-05-03T00:00:00Z")
        );
        let every_five = CronSchedule::parse("*/5 * * * MON-FRI", "UTC").unwrap();
        assert_eq!(
            fires(&every_five, "2026-05-01T10:00:00Z", "2026-05-01T10:11:00Z"),
            vec!["2026-05-01T10:05:00+00:00", "2026-05-01T10:10:00+00:00"]
        );
    }

    #[test]
    fn impossible_dates_never_fire() {
        let s = CronSchedule::parse("0 0 0 30 2 *", "UTC").unwrap();
        assert_eq!(s.next_after(utc("2026-01-01T00:00:00Z")), None);
    }

    const ZONES: &[&str] = &[
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "America/Sao_Paulo",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
        "Pacific/Chatham",
        "America/St_Johns",
    ];
    const PATTERNS: &[&str] = &[
        "* * * * * *",
        "*/7 * * * * *",
        "0 */15 * * * *",
        "0 30 2 * * *",
        "0 0 0 * * *",
        "30 59 1 * * SUN",
        "0 0 12 29 2 *",
        "0 15,45 1-3 * * *",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Fires are strictly increasing, each is the next after the previous, and none lies
        /// in a wall-clock time the zone skips.
        #[test]
        fn next_fire_strictly_increases(
            start in 1_700_000_000i64..1_950_000_000i64,
            zone in 0..ZONES.len(),
            pattern in 0..PATTERNS.len(),
        ) {
            let s = CronSchedule::parse(PATTERNS[pattern], ZONES[zone]).unwrap();
            let mut cursor = Utc.timestamp_opt(start, 0).unwrap();
            for _ in 0..5 {
                let Some(next) = s.next_after(cursor) else { break };
                prop_assert!(next > cursor, "{next} after {cursor}");
                // Nothing fires in between (searching backwards from just before `next`).
                let back = s.last_at_or_before(next - TimeDelta::seconds(1));
                prop_assert!(back.is_none_or(|b| b <= cursor), "{back:?} between {cursor} and {next}");
                // The local wall-clock time round-trips (the instant is a real local time).
                let local = next.with_timezone(&s.zone());
                prop_assert_eq!(local.with_timezone(&Utc), next);
                cursor = next;
            }
        }

        /// `last_at_or_before` and `next_after` agree: the next fire after the last fire at or
        /// before `t` is after `t`.
        #[test]
        fn previous_and_next_agree(
            t in 1_700_000_000i64..1_950_000_000i64,
            zone in 0..ZONES.len(),
            pattern in 0..4usize,
        ) {
            let s = CronSchedule::parse(PATTERNS[pattern], ZONES[zone]).unwrap();
            let at = Utc.timestamp_opt(t, 0).unwrap();
            if let Some(last) = s.last_at_or_before(at) {
                prop_assert!(last <= at);
                let next = s.next_after(last).unwrap();
                prop_assert!(next > at, "last {last}, next {next}, at {at}");
            }
        }
    }
}
