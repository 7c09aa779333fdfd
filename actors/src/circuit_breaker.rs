//! A circuit breaker with resilience4j's semantics, as a pure state machine.
//!
//! - `Closed`: every call goes through; outcomes fill a count-based sliding window. Once
//!   the window holds at least `minimum_calls` outcomes and the failure rate reaches
//!   `failure_rate_threshold`, the breaker opens.
//! - `Open`: calls are refused with [`CallRejected`], which says how long until the next
//!   trial. After `wait_in_open` the next call moves the breaker to half-open.
//! - `HalfOpen`: `permitted_calls_in_half_open` trial calls go through, others are refused.
//!   Once all of them have reported, the breaker closes (failure rate under the threshold)
//!   or opens again.
//!
//! Time comes from an injected [`Clock`], so tests drive it by hand.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::health::Timestamp;

/// Where the breaker takes the time from.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
    /// Wall-clock time, only for reports.
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// tokio's clock: real time in production, paused and advanced by hand in tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Instant>>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self {
            now: Arc::new(Mutex::new(Instant::now())),
        }
    }
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The breaker's settings, named after resilience4j's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Percentage (0-100] of failed calls in the window at which the breaker opens.
    pub failure_rate_threshold: f64,
    /// How many of the most recent calls the window holds.
    pub sliding_window_size: u32,
    /// No decision is taken before the window holds this many calls.
    pub minimum_calls: u32,
    /// How long the breaker stays open before letting trial calls through.
    #[serde(with = "humantime_serde")]
    pub wait_in_open: Duration,
    /// How many trial calls the half-open breaker lets through.
    pub permitted_calls_in_half_open: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate_threshold: 50.0,
            sliding_window_size: 20,
            minimum_calls: 10,
            wait_in_open: Duration::from_secs(30),
            permitted_calls_in_half_open: 3,
        }
    }
}

impl BreakerConfig {
    /// Every problem with these settings, each naming its field.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.failure_rate_threshold > 0.0 && self.failure_rate_threshold <= 100.0) {
            problems.push("failure_rate_threshold must be in (0, 100]".to_string());
        }
        if self.sliding_window_size == 0 {
            problems.push("sliding_window_size must be at least 1".to_string());
        }
        if self.minimum_calls == 0 {
            problems.push("minimum_calls must be at least 1".to_string());
        }
        if self.permitted_calls_in_half_open == 0 {
            problems.push("permitted_calls_in_half_open must be at least 1".to_string());
        }
        problems
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A call the breaker did not let through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker is {state}: next trial in {retry_in:?}")]
pub struct CallRejected {
    pub state: BreakerState,
    /// Time until the breaker lets a trial call through (zero when half-open and its
    /// trial calls are all in flight).
    pub retry_in: Duration,
}

/// The outcome of a call made through [`CircuitBreaker::call`].
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    #[error(transparent)]
    Rejected(CallRejected),
    #[error(transparent)]
    Inner(E),
}

/// The last change of state, for health reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
    pub at: Timestamp,
}

/// What a health report shows of a breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerSnapshot {
    pub state: BreakerState,
    /// Calls in the window (closed) or trial calls reported (half-open).
    pub calls: u32,
    pub failures: u32,
    /// Percentage of failures among `calls`; `None` below the minimum number of calls.
    pub failure_rate: Option<f64>,
    pub last_transition: Option<Transition>,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { issued: u32 },
}

pub struct CircuitBreaker<C: Clock = TokioClock> {
    config: BreakerConfig,
    clock: C,
    phase: Phase,
    /// `true` for a failure; oldest first. Closed: the sliding window. Half-open: trial results.
    outcomes: VecDeque<bool>,
    last_transition: Option<Transition>,
}

impl<C: Clock> fmt::Debug for CircuitBreaker<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("phase", &self.phase)
            .field("outcomes", &self.outcomes.len())
            .finish()
    }
}

impl CircuitBreaker<TokioClock> {
    pub fn new(config: BreakerConfig) -> Self {
        Self::with_clock(config, TokioClock)
    }
}

impl<C: Clock> CircuitBreaker<C> {
    pub fn with_clock(config: BreakerConfig, clock: C) -> Self {
        Self {
            outcomes: VecDeque::with_capacity(config.sliding_window_size as usize),
            config,
            clock,
            phase: Phase::Closed,
            last_transition: None,
        }
    }

    /// The current state; an open breaker whose wait is over reads as half-open.
    pub fn state(&self) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if self.clock.now() < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to make one call. On `Ok`, report its outcome with [`CircuitBreaker::record_success`]
    /// or [`CircuitBreaker::record_failure`].
    pub fn try_acquire(&mut self) -> Result<(), CallRejected> {
        let now = self.clock.now();
        if let Phase::Open { until } = self.phase {
            if now < until {
                return Err(CallRejected {
                    state: BreakerState::Open,
                    retry_in: until - now,
                });
            }
            self.transition(Phase::HalfOpen { issued: 0 });
        }
        if let Phase::HalfOpen { issued } = &mut self.phase {
            if *issued >= self.config.permitted_calls_in_half_open {
                return Err(CallRejected {
                    state: BreakerState::HalfOpen,
                    retry_in: Duration::ZERO,
                });
            }
            *issued += 1;
        }
        Ok(())
    }

    pub fn record_success(&mut self) {
        self.record(false);
    }

    pub fn record_failure(&mut self) {
        self.record(true);
    }

    /// Runs `call` through the breaker, counting an `Err` as a failure.
    pub async fn call<T, E, F>(&mut self, call: F) -> Result<T, BreakerError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.try_acquire().map_err(BreakerError::Rejected)?;
        let result = call.await;
        self.record(result.is_err());
        result.map_err(BreakerError::Inner)
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let calls = u32::try_from(self.outcomes.len()).unwrap_or(u32::MAX);
        let failures = self.failures();
        let decided = match self.phase {
            Phase::HalfOpen { .. } => calls > 0,
            _ => calls >= self.minimum_calls(),
        };
        BreakerSnapshot {
            state: self.state(),
            calls,
            failures,
            failure_rate: decided.then(|| f64::from(failures) * 100.0 / f64::from(calls)),
            last_transition: self.last_transition.clone(),
        }
    }

    fn record(&mut self, failed: bool) {
        match self.phase {
            // A late result of a call let through before the breaker opened changes nothing.
            Phase::Open { .. } => {}
            Phase::Closed => {
                if self.outcomes.len() >= self.config.sliding_window_size as usize {
                    self.outcomes.pop_front();
                }
                self.outcomes.push_back(failed);
                let calls = u32::try_from(self.outcomes.len()).unwrap_or(u32::MAX);
                if calls >= self.minimum_calls() && self.failure_rate_reached(calls) {
                    self.open();
                }
            }
            Phase::HalfOpen { .. } => {
                self.outcomes.push_back(failed);
                let calls = u32::try_from(self.outcomes.len()).unwrap_or(u32::MAX);
                if calls >= self.config.permitted_calls_in_half_open {
                    if self.failure_rate_reached(calls) {
                        self.open();
                    } else {
                        self.transition(Phase::Closed);
                    }
                }
            }
        }
    }

    /// resilience4j never waits for more calls than the window can hold.
    fn minimum_calls(&self) -> u32 {
        self.config
            .minimum_calls
            .min(self.config.sliding_window_size)
    }

    fn failures(&self) -> u32 {
        u32::try_from(self.outcomes.iter().filter(|failed| **failed).count()).unwrap_or(u32::MAX)
    }

    fn failure_rate_reached(&self, calls: u32) -> bool {
        f64::from(self.failures()) * 100.0 / f64::from(calls) >= self.config.failure_rate_threshold
    }

    fn open(&mut self) {
        let until = self.clock.now() + self.config.wait_in_open;
        self.transition(Phase::Open { until });
    }

    fn transition(&mut self, to: Phase) {
        let from = self.state_of(&self.phase);
        let to_state = self.state_of(&to);
        self.phase = to;
        self.outcomes.clear();
        self.last_transition = Some(Transition {
            from,
            to: to_state,
            at: Timestamp(self.clock.wall()),
        });
    }

    fn state_of(&self, phase: &Phase) -> BreakerState {
        match phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_rate_threshold: 50.0,
            sliding_window_size: 4,
            minimum_calls: 4,
            wait_in_open: Duration::from_secs(10),
            permitted_calls_in_half_open: 2,
        }
    }

    fn breaker() -> (CircuitBreaker<ManualClock>, ManualClock) {
        let clock = ManualClock::default();
        (CircuitBreaker::with_clock(config(), clock.clone()), clock)
    }

    fn run(breaker: &mut CircuitBreaker<ManualClock>, outcomes: &[bool]) {
        for failed in outcomes {
            breaker.try_acquire().expect("call permitted");
            if *failed {
                breaker.record_failure();
            } else {
                breaker.record_success();
            }
        }
    }

    fn open_breaker() -> (CircuitBreaker<ManualClock>, ManualClock) {
        let (mut breaker, clock) = breaker();
        run(&mut breaker, &[true, true, false, false]);
        assert_eq!(breaker.state(), BreakerState::Open);
        (breaker, clock)
    }

    #[test]
    fn stays_closed_below_the_minimum_number_of_calls() {
        let (mut breaker, _) = breaker();
        run(&mut breaker, &[true, true, true]);
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.snapshot().failure_rate, None);
    }

    #[rstest]
    #[case(&[true, false, false, false], BreakerState::Closed)]
    #[case(&[true, true, false, false], BreakerState::Open)]
    #[case(&[false, false, false, false, true, true], BreakerState::Open)]
    // The first failure slides out of the window: the last four hold one failure.
    #[case(&[true, false, false, false, false, false, true], BreakerState::Closed)]
    fn opens_when_the_window_failure_rate_reaches_the_threshold(
        #[case] outcomes: &[bool],
        #[case] expected: BreakerState,
    ) {
        let (mut breaker, _) = breaker();
        run(&mut breaker, outcomes);
        assert_eq!(breaker.state(), expected);
    }

    #[test]
    fn open_breaker_refuses_calls_with_the_time_until_the_next_trial() {
        let (mut breaker, clock) = open_breaker();
        clock.advance(Duration::from_secs(4));
        let rejected = breaker.try_acquire().expect_err("open breaker refuses");
        assert_eq!(rejected.state, BreakerState::Open);
        assert_eq!(rejected.retry_in, Duration::from_secs(6));
        let transition = breaker
            .snapshot()
            .last_transition
            .expect("transition recorded");
        assert_eq!(
            (transition.from, transition.to),
            (BreakerState::Closed, BreakerState::Open)
        );
    }

    #[test]
    fn half_open_permits_only_its_trial_calls() {
        let (mut breaker, clock) = open_breaker();
        clock.advance(Duration::from_secs(10));
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        breaker.try_acquire().expect("first trial");
        breaker.try_acquire().expect("second trial");
        let rejected = breaker.try_acquire().expect_err("no third trial");
        assert_eq!(rejected.state, BreakerState::HalfOpen);
    }

    #[test]
    fn successful_trials_close_the_breaker() {
        let (mut breaker, clock) = open_breaker();
        clock.advance(Duration::from_secs(10));
        run(&mut breaker, &[false, false]);
        assert_eq!(breaker.state(), BreakerState::Closed);
        // The window starts afresh after closing.
        assert_eq!(breaker.snapshot().calls, 0);
    }

    #[rstest]
    #[case(&[true, true])]
    #[case(&[false, true])]
    fn failed_trials_open_the_breaker_again(#[case] trials: &[bool]) {
        let (mut breaker, clock) = open_breaker();
        clock.advance(Duration::from_secs(10));
        run(&mut breaker, trials);
        assert_eq!(breaker.state(), BreakerState::Open);
        let transition = breaker
            .snapshot()
            .last_transition
            .expect("transition recorded");
        assert_eq!(
            (transition.from, transition.to),
            (BreakerState::HalfOpen, BreakerState::Open)
        );
        let rejected = breaker.try_acquire().expect_err("open again");
        assert_eq!(rejected.retry_in, Duration::from_secs(10));
    }

    #[tokio::test]
    async fn call_counts_errors_as_failures() {
        let (mut breaker, _) = breaker();
        for _ in 0..4 {
            let result: Result<(), BreakerError<&str>> = breaker.call(async { Err("boom") }).await;
            assert!(matches!(result, Err(BreakerError::Inner("boom"))));
        }
        let result: Result<(), BreakerError<&str>> = breaker.call(async { Ok(()) }).await;
        assert!(matches!(result, Err(BreakerError::Rejected(_))));
    }

    #[test]
    fn config_problems_name_their_fields() {
        let bad = BreakerConfig {
            failure_rate_threshold: 0.0,
            sliding_window_size: 0,
            ..BreakerConfig::default()
        };
        let problems = bad.problems();
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("failure_rate_threshold"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("sliding_window_size"))
        );
    }
}
