//! switchboard-actors: a domain-free toolkit for supervised actor trees on ractor.
//!
//! ractor gives actors and links between them; a long-lived daemon needs more: what to
//! do when a child fails, how fast to retry, when to give up, how to see every actor's
//! health without waiting on a busy one, and how to keep a flaky dependency from being
//! hammered. This crate provides those pieces and knows nothing of the daemon's domain.
//!
//! - [`supervisor`]: OTP-style supervisors (strategies, restart types, intensity,
//!   backoff, ordered start and stop, dynamic children, explicit restarts).
//! - [`restart`]: the pure policy types the supervisor applies.
//! - [`circuit_breaker`]: a resilience4j-style breaker as a pure state machine.
//! - [`rate_limit`]: keyed quotas over governor, plus `Retry-After`.
//! - [`health`]: the health report tree and non-blocking observation.
//! - [`registry`]: stable, per-instance names for actors whose refs change on restart.

pub mod circuit_breaker;
pub mod health;
pub mod rate_limit;
pub mod registry;
pub mod restart;
pub mod supervisor;
#[cfg(feature = "testsuite")]
pub mod testing;

pub use circuit_breaker::{
    BreakerConfig, BreakerError, BreakerSnapshot, BreakerState, CallRejected, CircuitBreaker,
    Clock, ManualClock, TokioClock,
};
pub use health::{Failure, HealthReport, ObserveHealth, ReportCache, Status, Timestamp, observe};
pub use rate_limit::{LimiterSnapshot, Quota, RateLimiter, parse_retry_after};
pub use registry::Registry;
pub use restart::{Backoff, Intensity, Restart, Strategy};
pub use supervisor::{
    ChildSpec, ObserveOptions, StartContext, Supervisor, SupervisorError, SupervisorMsg,
    SupervisorRef, SupervisorSpec, leave_supervisor, observe_tree, observe_tree_with,
};
