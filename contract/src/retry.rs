//! Exponential backoff with jitter: the delay before attempt `n + 1` after attempt `n` failed.

use std::time::Duration;

/// How long to wait before retrying a failed attempt.
///
/// The delay after attempt `n` (1-based) is `initial × multiplier^(n-1)`, capped at `max`, then
/// spread by ± `jitter` (a fraction) so tasks that failed together do not retry in lockstep.
///
/// ```
/// use jetq_contract::RetryPolicy;
/// use std::time::Duration;
/// let policy = RetryPolicy::exponential(Duration::from_secs(1)).jitter(0.0);
/// assert_eq!(policy.delay(1), Duration::from_secs(1));
/// assert_eq!(policy.delay(3), Duration::from_secs(4));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay after the first failed attempt.
    pub initial: Duration,
    /// Growth factor per further attempt (1.0 gives a constant delay).
    pub multiplier: f64,
    /// Upper bound of the delay before jitter.
    pub max: Duration,
    /// Fraction of the delay added or removed at random, 0.0 ..= 1.0.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(3600),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff from `initial`, doubling, at most one hour, ±20 % jitter.
    pub fn exponential(initial: Duration) -> Self {
        RetryPolicy {
            initial,
            ..RetryPolicy::default()
        }
    }

    /// The same delay after every attempt (plus jitter).
    pub fn constant(delay: Duration) -> Self {
        RetryPolicy {
            initial: delay,
            multiplier: 1.0,
            max: delay,
            jitter: 0.2,
        }
    }

    /// Sets the growth factor.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier.max(1.0);
        self
    }

    /// Sets the cap before jitter.
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Sets the jitter fraction (clamped to 0.0 ..= 1.0).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// The delay after failed attempt `attempt` (1-based), jitter included.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(1000) as i32;
        let base = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = base.min(self.max.as_secs_f64());
        let spread = if self.jitter > 0.0 {
            let factor = rand::random_range(-self.jitter..=self.jitter);
            capped * (1.0 + factor)
        } else {
            capped
        };
        Duration::from_secs_f64(spread.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_and_caps() {
        let p = RetryPolicy::exponential(Duration::from_millis(100))
            .max(Duration::from_secs(1))
            .jitter(0.0);
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(200));
        assert_eq!(p.delay(4), Duration::from_millis(800));
        assert_eq!(p.delay(5), Duration::from_secs(1));
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let p = RetryPolicy::constant(Duration::from_secs(10)).jitter(0.5);
        let delays: Vec<_> = (0..200).map(|_| p.delay(3)).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= Duration::from_secs(5) && *d <= Duration::from_secs(15)));
        assert!(delays.iter().any(|d| *d != delays[0]), "jitter must vary");
    }
}
