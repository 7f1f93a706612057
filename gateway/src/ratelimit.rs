//! Per-key rate limits: each API key may burst up to `burst` requests and
//! then `per_second` on average (GCRA, with `governor`: one atomic state per
//! key, keys sharded, no lock shared by every request). In-process, so with N
//! gateway replicas a key gets up to N times the rate; that bounds abuse, it
//! is not a quota.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as Gcra};

type Keyed<C> = Gcra<String, DefaultKeyedStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

pub struct RateLimiter<C: Clock + Clone = MonotonicClock> {
    /// `None`: limiting is off.
    limiter: Option<Keyed<C>>,
    clock: C,
}

impl RateLimiter {
    /// `per_second` zero turns limiting off.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self::with_clock(per_second, burst, MonotonicClock)
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    fn with_clock(per_second: u32, burst: u32, clock: C) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let quota = Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
            Gcra::dashmap_with_clock(quota, clock.clone())
        });
        Self { limiter, clock }
    }

    /// Takes one request's worth for `key_id`; when the key is over its rate,
    /// how long until it may send the next. One state per key that passed
    /// authentication, so memory is bounded by the keys that exist.
    pub fn acquire(&self, key_id: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter.check_key(&key_id.to_owned()).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::with_clock(2, 3, clock.clone());
        for _ in 0..3 {
            assert!(limiter.acquire("k").is_ok());
        }
        let wait = limiter.acquire("k").unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}");
        // Other keys have their own bucket.
        assert!(limiter.acquire("other").is_ok());
        clock.advance(Duration::from_millis(500));
        assert!(limiter.acquire("k").is_ok());
        assert!(limiter.acquire("k").is_err());
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let limiter = RateLimiter::new(0, 1);
        for _ in 0..1_000 {
            assert!(limiter.acquire("k").is_ok());
        }
    }
}
