//! Rate limits: a token bucket shared by every worker, kept as one number in the limits bucket.
//!
//! The bucket is the generic cell rate algorithm (GCRA): the entry holds the *theoretical
//! arrival time* `tat`. With `interval = 1 s / rate` and `tolerance = (burst − 1) × interval`,
//! a task arriving at `now` may start at `max(now, max(tat, now) − tolerance)`, and the entry
//! becomes `max(tat, now) + interval`. Every start reserves its turn, so a task over the limit
//! knows exactly when its token comes: the worker stores the reservation under the task's
//! sequence and hands the task back until then (one hand-back, not one per poll). Over any
//! window of length `w`, at most `burst + w × rate` tasks start.

use serde::{Deserialize, Serialize};

use super::FlowError;

/// A rate limit: `rate` tasks per second on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    rate: f64,
    burst: u32,
    per_key: bool,
}

impl RateLimit {
    /// `rate` tasks per second with a burst of `burst` tasks.
    ///
    /// ```
    /// use jetq_contract::flow::RateLimit;
    /// assert!(RateLimit::new(14.0, 14).is_ok());
    /// assert!(RateLimit::new(-1.0, 1).is_err());
    /// assert!(RateLimit::new(1.0, 0).is_err());
    /// ```
    pub fn new(rate: f64, burst: u32) -> Result<RateLimit, FlowError> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(FlowError::InvalidRate { rate });
        }
        if burst == 0 {
            return Err(FlowError::InvalidBurst);
        }
        Ok(RateLimit {
            rate,
            burst,
            per_key: false,
        })
    }

    /// `count` tasks per `period` (e.g. 100 per minute), with a burst of `burst`.
    pub fn per(
        count: f64,
        period: std::time::Duration,
        burst: u32,
    ) -> Result<RateLimit, FlowError> {
        let seconds = period.as_secs_f64();
        if seconds <= 0.0 {
            return Err(FlowError::InvalidRate {
                rate: f64::INFINITY,
            });
        }
        RateLimit::new(count / seconds, burst)
    }

    /// One bucket per `Jetq-Limit-Key` (e.g. per tenant) instead of one per task type. Tasks
    /// without the header share the type's bucket.
    pub fn per_key(mut self) -> Self {
        self.per_key = true;
        self
    }

    /// Tasks per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Tasks allowed at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Whether each limit key has its own bucket.
    pub fn is_per_key(&self) -> bool {
        self.per_key
    }

    /// Microseconds between two tokens (at least 1).
    pub fn interval_micros(&self) -> i64 {
        ((1_000_000.0 / self.rate).round() as i64).max(1)
    }

    /// Reserves the next token for a task arriving at `now` on a bucket whose theoretical
    /// arrival time is `tat` (`None`: no entry, a full bucket). All instants in microseconds.
    pub fn reserve(&self, tat: Option<i64>, now: i64) -> Reservation {
        let interval = self.interval_micros();
        let tolerance = interval.saturating_mul(i64::from(self.burst) - 1);
        let tat = tat.unwrap_or(now).max(now);
        Reservation {
            start: now.max(tat.saturating_sub(tolerance)),
            tat: tat.saturating_add(interval),
        }
    }
}

/// A reserved token: when the task may start, and the bucket's new state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// When the task may start (microseconds); `now` when a token was free.
    pub start: i64,
    /// The bucket's new theoretical arrival time.
    pub tat: i64,
}

/// The value of a rate bucket's entry: `{"tat":"<timestamp>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateState {
    /// The theoretical arrival time, in the protocol's timestamp form.
    pub tat: String,
}

/// The value of a task's reservation entry (`resv.<sequence>`): when it may start, and the
/// rate entry it was taken from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateReservation {
    /// When the task may start.
    pub at: String,
    /// The rate entry's key.
    pub limit: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts of `n` tasks all arriving at `now`.
    fn starts(limit: RateLimit, n: usize, now: i64) -> Vec<i64> {
        let mut tat = None;
        (0..n)
            .map(|_| {
                let reservation = limit.reserve(tat, now);
                tat = Some(reservation.tat);
                reservation.start
            })
            .collect()
    }

    #[test]
    fn a_burst_starts_at_once_and_the_rest_are_spaced_by_the_interval() {
        let limit = RateLimit::new(10.0, 3).unwrap();
        assert_eq!(
            starts(limit, 6, 0),
            vec![0, 0, 0, 100_000, 200_000, 300_000]
        );
    }

    #[test]
    fn no_window_holds_more_than_burst_plus_rate_times_its_length() {
        let limit = RateLimit::new(14.0, 5).unwrap();
        let mut tat = None;
        let mut all = Vec::new();
        // Arrivals every 10 ms for 3 s, some of them late.
        for i in 0..300i64 {
            let now = i * 10_000;
            let reservation = limit.reserve(tat, now);
            tat = Some(reservation.tat);
            all.push(reservation.start);
        }
        all.sort();
        for (i, start) in all.iter().enumerate() {
            let in_second = all[i..]
                .iter()
                .take_while(|s| **s < start + 1_000_000)
                .count();
            assert!(
                in_second <= 5 + 14,
                "{in_second} starts in the second from {start}"
            );
        }
    }

    #[test]
    fn bad_rates_are_refused() {
        assert_eq!(
            RateLimit::new(f64::NAN, 1)
                .map(|_| ())
                .unwrap_err()
                .to_string(),
            "invalid rate NaN: a rate limit must be a positive, finite number of tasks per second"
        );
        assert!(RateLimit::new(0.0, 1).is_err());
        assert!(RateLimit::per(10.0, std::time::Duration::ZERO, 1).is_err());
        assert_eq!(
            RateLimit::per(60.0, std::time::Duration::from_secs(60), 1)
                .unwrap()
                .interval_micros(),
            1_000_000
        );
    }
}
