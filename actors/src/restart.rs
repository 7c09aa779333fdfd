//! Restart policies: what a supervisor restarts, how often, and how long it waits.
//!
//! Everything here is pure (no actors, no clocks of its own) so that it can be unit
//! tested exhaustively; the supervisor feeds it instants from tokio's clock.

use std::collections::VecDeque;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Which children a supervisor restarts when one of them fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the child that exited.
    #[default]
    OneForOne,
    /// Every child: all are stopped (in reverse order) and started again (in order).
    OneForAll,
    /// The child that exited and every child started after it.
    RestForOne,
}

/// When a child is restarted after it exits, in OTP's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always restarted, whatever the reason it exited.
    #[default]
    Permanent,
    /// Restarted only when it exited abnormally (a panic, an error, a kill).
    Transient,
    /// Never restarted; removed from the supervisor once it exits.
    Temporary,
}

impl Restart {
    /// Whether a child of this type is restarted after exiting this way.
    pub fn restarts_after(self, abnormal: bool) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => abnormal,
            Restart::Temporary => false,
        }
    }
}

/// Exponential backoff with full jitter: `uniform(0, min(cap, base * 2^n))`.
///
/// Full jitter spreads the restarts of many children that failed together (a provider
/// outage takes down every integration at once) instead of restarting them in waves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// The upper bound of the delay after `attempt` recent restarts: `min(cap, base * 2^n)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        // 2^32 * base overflows any useful cap; saturate instead of wrapping.
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A delay drawn uniformly from `[0, ceiling(attempt)]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, &mut rand::rng())
    }

    /// As [`Backoff::delay`], with the caller's random source (for reproducible tests).
    pub fn delay_with<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let ceiling = self.ceiling(attempt);
        if ceiling.is_zero() {
            return Duration::ZERO;
        }
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=nanos))
    }
}

/// Restart intensity: at most `max_restarts` restarts within `window`; one more and the
/// supervisor gives up and fails upward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intensity {
    pub max_restarts: u32,
    pub window: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// The restart instants still inside a sliding window.
#[derive(Debug, Default, Clone)]
pub struct RestartWindow {
    instants: VecDeque<Instant>,
}

impl RestartWindow {
    /// Records a restart at `now` and returns how many fall inside `window` (this one included).
    pub fn record(&mut self, now: Instant, window: Duration) -> u32 {
        self.instants.push_back(now);
        self.count(now, window)
    }

    /// How many recorded restarts fall inside `window` ending at `now`.
    pub fn count(&mut self, now: Instant, window: Duration) -> u32 {
        while let Some(&oldest) = self.instants.front() {
            if now.saturating_duration_since(oldest) > window {
                self.instants.pop_front();
            } else {
                break;
            }
        }
        u32::try_from(self.instants.len()).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rstest::rstest;

    #[rstest]
    #[case(0, 100)]
    #[case(1, 200)]
    #[case(3, 800)]
    #[case(8, 25_600)]
    #[case(9, 30_000)]
    #[case(40, 30_000)]
    fn ceiling_doubles_until_the_cap(#[case] attempt: u32, #[case] millis: u64) {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        assert_eq!(backoff.ceiling(attempt), Duration::from_millis(millis));
    }

    #[rstest]
    #[case(0)]
    #[case(2)]
    #[case(5)]
    #[case(12)]
    fn every_delay_lies_within_zero_and_the_ceiling(#[case] attempt: u32) {
        let backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        let ceiling = backoff.ceiling(attempt);
        let mut rng = StdRng::seed_from_u64(u64::from(attempt));
        let draws: Vec<Duration> = (0..10_000)
            .map(|_| backoff.delay_with(attempt, &mut rng))
            .collect();
        assert!(draws.iter().all(|d| *d <= ceiling));
        // Full jitter: the draws spread over the whole range, not just near the top.
        assert!(draws.iter().any(|d| *d < ceiling / 10));
        assert!(draws.iter().any(|d| *d > ceiling * 9 / 10));
    }

    #[test]
    fn zero_base_never_waits() {
        let backoff = Backoff::new(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(backoff.delay(7), Duration::ZERO);
    }

    #[rstest]
    #[case(Restart::Permanent, false, true)]
    #[case(Restart::Permanent, true, true)]
    #[case(Restart::Transient, false, false)]
    #[case(Restart::Transient, true, true)]
    #[case(Restart::Temporary, false, false)]
    #[case(Restart::Temporary, true, false)]
    fn restart_types_follow_otp(
        #[case] restart: Restart,
        #[case] abnormal: bool,
        #[case] expected: bool,
    ) {
        assert_eq!(restart.restarts_after(abnormal), expected);
    }

    #[test]
    fn restart_window_forgets_old_restarts() {
        let start = Instant::now();
        let window = Duration::from_secs(10);
        let mut restarts = RestartWindow::default();
        assert_eq!(restarts.record(start, window), 1);
        assert_eq!(restarts.record(start + Duration::from_secs(5), window), 2);
        assert_eq!(restarts.record(start + Duration::from_secs(12), window), 2);
        assert_eq!(restarts.count(start + Duration::from_secs(30), window), 0);
    }
}
