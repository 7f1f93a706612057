//! Per-key token buckets: each API key may burst up to `burst` requests and
//! then `per_second` on average. In-process, so with N gateway replicas a key
//! gets up to N times the rate; that bounds abuse, it is not a quota.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// `per_second` zero turns limiting off.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second: f64::from(per_second), burst: f64::from(burst.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key_id`; when none is left, how long until one is.
    pub fn acquire(&self, key_id: &str) -> Result<(), Duration> {
        self.acquire_at(key_id, Instant::now())
    }

    fn acquire_at(&self, key_id: &str, now: Instant) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().expect("rate limiter poisoned");
        // One bucket per key that passed authentication, so the map is bounded by the keys that exist.
        let bucket = buckets.entry(key_id.to_owned()).or_insert(Bucket { tokens: self.burst, updated: now });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(2, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.acquire_at("k", start).is_ok());
        }
        let wait = limiter.acquire_at("k", start).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}");
        // Other keys have their own bucket.
        assert!(limiter.acquire_at("other", start).is_ok());
        assert!(limiter.acquire_at("k", start + Duration::from_millis(500)).is_ok());
        assert!(limiter.acquire_at("k", start + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let limiter = RateLimiter::new(0, 1);
        let now = Instant::now();
        for _ in 0..1_000 {
            assert!(limiter.acquire_at("k", now).is_ok());
        }
    }
}
