//! Rate limiting over governor: quotas per key, waiting with jitter, and a "blocked
//! until" that a provider's `Retry-After` sets.
//!
//! Keys are whatever the caller rate-limits by (an API method, a tier, `()` for one
//! quota). A key with a quota of its own uses it; any other key shares the default
//! quota's rate but gets its own bucket. Time is tokio's, so paused-time tests drive it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub use governor::Quota;
use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use rand::Rng;
use serde::Serialize;
use tokio::time::Instant;

/// governor's view of tokio's clock, so that paused time applies to quotas too.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioGovernorClock;

impl governor::clock::Clock for TokioGovernorClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

type Bucket = governor::RateLimiter<
    NotKeyed,
    InMemoryState,
    TokioGovernorClock,
    NoOpMiddleware<std::time::Instant>,
>;

/// What a health report shows of a limiter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LimiterSnapshot {
    /// How long every call still waits because of a provider's `Retry-After`.
    pub blocked_for_ms: Option<u64>,
    /// Keys currently blocked by a `Retry-After` of their own.
    pub blocked_keys: usize,
    /// Keys with a bucket (seen at least once).
    pub keys: usize,
}

pub struct RateLimiter<K = ()> {
    /// The rate of keys without a quota of their own; `None` leaves them unlimited.
    default_quota: Option<Quota>,
    quotas: HashMap<K, Quota>,
    buckets: Mutex<HashMap<K, Arc<Bucket>>>,
    /// Set by a provider's `Retry-After` for everything this limiter guards.
    blocked_until: Mutex<Option<Instant>>,
    key_blocked_until: Mutex<HashMap<K, Instant>>,
    /// Each wait is stretched by up to this much, so that waiters do not wake together.
    jitter: Duration,
}

impl<K> std::fmt::Debug for RateLimiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("default_quota", &self.default_quota)
            .field("jitter", &self.jitter)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter whose keys share `default_quota`'s rate, each with its own bucket.
    pub fn new(default_quota: Option<Quota>) -> Self {
        Self {
            default_quota,
            quotas: HashMap::new(),
            buckets: Mutex::new(HashMap::new()),
            blocked_until: Mutex::new(None),
            key_blocked_until: Mutex::new(HashMap::new()),
            jitter: Duration::from_millis(50),
        }
    }

    /// Gives `key` a quota of its own (Slack's per-method tiers, for example).
    pub fn with_quota(mut self, key: K, quota: Quota) -> Self {
        self.quotas.insert(key, quota);
        self
    }

    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Takes one cell for `key` now, or says how long until one is free.
    pub fn try_acquire(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        if let Some(until) = self.blocked_until_for(key)
            && until > now
        {
            return Err(until - now);
        }
        let Some(bucket) = self.bucket(key) else {
            return Ok(());
        };
        bucket
            .check()
            .map_err(|not_until| not_until.wait_time_from(TokioGovernorClock.now()))
    }

    /// Waits until a cell for `key` is free and takes it.
    pub async fn acquire(&self, key: &K) {
        while let Err(wait) = self.try_acquire(key) {
            tokio::time::sleep(wait + self.jitter_sample()).await;
        }
    }

    /// Blocks every key for `retry_after` (a provider's `Retry-After` for the whole account).
    pub fn block_for(&self, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut blocked = lock(&self.blocked_until);
        *blocked = Some(blocked.map_or(until, |current| current.max(until)));
    }

    /// Blocks one key for `retry_after` (a `Retry-After` for one method or tier).
    pub fn block_key_for(&self, key: K, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut blocked = lock(&self.key_blocked_until);
        let entry = blocked.entry(key).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Until when `key` is blocked by a `Retry-After`, if it is.
    pub fn blocked_until_for(&self, key: &K) -> Option<Instant> {
        let now = Instant::now();
        let global = (*lock(&self.blocked_until)).filter(|until| *until > now);
        let own = lock(&self.key_blocked_until)
            .get(key)
            .copied()
            .filter(|until| *until > now);
        global.max(own)
    }

    pub fn snapshot(&self) -> LimiterSnapshot {
        let now = Instant::now();
        let blocked_for_ms = (*lock(&self.blocked_until))
            .filter(|until| *until > now)
            .map(|until| u64::try_from((until - now).as_millis()).unwrap_or(u64::MAX));
        LimiterSnapshot {
            blocked_for_ms,
            blocked_keys: lock(&self.key_blocked_until)
                .values()
                .filter(|until| **until > now)
                .count(),
            keys: lock(&self.buckets).len(),
        }
    }

    fn bucket(&self, key: &K) -> Option<Arc<Bucket>> {
        let quota = self.quotas.get(key).copied().or(self.default_quota)?;
        let mut buckets = lock(&self.buckets);
        let bucket = buckets.entry(key.clone()).or_insert_with(|| {
            Arc::new(governor::RateLimiter::direct_with_clock(
                quota,
                TokioGovernorClock,
            ))
        });
        Some(Arc::clone(bucket))
    }

    fn jitter_sample(&self) -> Duration {
        if self.jitter.is_zero() {
            return Duration::ZERO;
        }
        let nanos = u64::try_from(self.jitter.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

/// Reads a `Retry-After` header: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded maps stay consistent even if a holder panicked: every update is one step.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn per_second(n: u32) -> Quota {
        Quota::per_second(NonZeroU32::new(n).expect("non-zero"))
    }

    #[tokio::test(start_paused = true)]
    async fn keys_with_their_own_quota_use_it() {
        let limiter = RateLimiter::new(Some(per_second(1)))
            .with_quota("chat.postMessage", per_second(3))
            .with_jitter(Duration::ZERO);
        for _ in 0..3 {
            limiter
                .try_acquire(&"chat.postMessage")
                .expect("within tier");
        }
        assert!(limiter.try_acquire(&"chat.postMessage").is_err());
        limiter.try_acquire(&"auth.test").expect("own bucket");
        let wait = limiter
            .try_acquire(&"auth.test")
            .expect_err("default quota spent");
        assert!(wait <= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_for_the_next_free_cell() {
        let limiter: RateLimiter<()> = RateLimiter::new(Some(per_second(2)));
        let start = Instant::now();
        for _ in 0..6 {
            limiter.acquire(&()).await;
        }
        // 2 cells at once, then one every 500 ms (plus at most 50 ms of jitter per wait).
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(2_250), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_blocks_until_it_has_passed() {
        let limiter: RateLimiter<&str> = RateLimiter::new(None).with_jitter(Duration::ZERO);
        limiter.try_acquire(&"any").expect("unlimited");
        limiter.block_for(Duration::from_secs(30));
        let wait = limiter.try_acquire(&"any").expect_err("blocked");
        assert_eq!(wait, Duration::from_secs(30));
        assert_eq!(limiter.snapshot().blocked_for_ms, Some(30_000));

        let start = Instant::now();
        limiter.acquire(&"any").await;
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        assert_eq!(limiter.snapshot().blocked_for_ms, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_blocked_by_retry_after_leaves_others_alone() {
        let limiter: RateLimiter<&str> = RateLimiter::new(None);
        limiter.block_key_for("chat.postMessage", Duration::from_secs(5));
        assert!(limiter.try_acquire(&"chat.postMessage").is_err());
        limiter.try_acquire(&"auth.test").expect("other method");
        assert_eq!(limiter.snapshot().blocked_keys, 1);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
