//! Flow control per target: a semaphore bounds the requests in flight, a token bucket the
//! request rate. A request first takes a slot, then a token, and is sent at once: so the rate
//! is held at the moment requests leave, however many tasks queue up behind the slots.

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{Mutex, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

/// The limits of one target.
pub(crate) struct Limiter {
    slots: Arc<Semaphore>,
    bucket: Option<Mutex<TokenBucket>>,
}

impl Limiter {
    /// At most `concurrency` requests in flight and, with a rate, at most
    /// `burst + rate × t` requests in any window of `t` seconds.
    pub(crate) fn new(concurrency: usize, rate: Option<f64>, burst: u32) -> Self {
        Limiter {
            slots: Arc::new(Semaphore::new(concurrency)),
            bucket: rate.map(|rate| Mutex::new(TokenBucket::new(rate, burst))),
        }
    }

    /// Waits for a slot and a token. The returned permit holds the slot until it is dropped
    /// (`None` only if the semaphore was closed, which never happens).
    /// Cancel-safe: a caller that gives up while waiting for a slot takes nothing; one that
    /// gives up waiting for its token leaves the token spent (the limit errs on the safe side).
    pub(crate) async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.slots.clone().acquire_owned().await.ok()?;
        if let Some(bucket) = &self.bucket {
            let ready_at = bucket.lock().await.reserve(Instant::now());
            tokio::time::sleep_until(ready_at).await;
        }
        Some(permit)
    }
}

/// A token bucket that hands out reservations: a caller is told when its token is there.
/// Tokens may go negative; each reservation then waits `1 / rate` behind the previous one.
struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: u32) -> Self {
        let capacity = f64::from(burst.max(1));
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            updated: Instant::now(),
        }
    }

    /// Takes one token and says when it may be used.
    fn reserve(&mut self, now: Instant) -> Instant {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.updated = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            now
        } else {
            now + Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_paces_reservations_after_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 2);
        bucket.updated = start;
        let times: Vec<Duration> = (0..5)
            .map(|_| bucket.reserve(start).duration_since(start))
            .collect();
        let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![0, 0, 100, 200, 300]);
        // After an idle second the bucket is full again, never fuller than its capacity.
        let later = start + Duration::from_secs(2);
        assert_eq!(bucket.reserve(later), later);
        assert_eq!(bucket.reserve(later), later);
        assert!(bucket.reserve(later) > later);
    }

    #[tokio::test(start_paused = true)]
    async fn the_limiter_bounds_slots_and_rate() {
        let limiter = Arc::new(Limiter::new(2, Some(5.0), 1));
        let first = limiter.acquire().await;
        let second = limiter.acquire().await;
        let third = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                let _permit = limiter.acquire().await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!third.is_finished(), "a third request waits for a slot");
        let freed = Instant::now();
        drop(first);
        let sent = third.await.unwrap();
        assert_eq!(sent, freed, "the bucket refilled while the slot was taken");
        drop(second);
    }
}
