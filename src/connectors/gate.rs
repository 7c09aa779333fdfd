//! The guard an integration puts around the requests made to its provider: its
//! circuit breaker and its per-tenant rate limiter.
//!
//! The integration actor owns one and runs its own provider calls (validate, refresh)
//! through it; it also hands it to the connector's event handler, which runs each
//! provider request it makes through it. So the quota is spent on requests, never on
//! work that makes none: a handler that only reads its event (most GitHub events)
//! costs nothing, and a busy installation's events are not held to 5,000 an hour.

use std::future::Future;
use std::sync::Mutex;

use switchboard_actors::{
    BreakerConfig, BreakerSnapshot, CircuitBreaker, LimiterSnapshot, Quota, RateLimiter,
};

use super::ConnectorError;
use crate::lock;

pub struct ProviderGate {
    /// Held only between awaits, to ask or to record an outcome.
    breaker: Mutex<CircuitBreaker>,
    limiter: RateLimiter<()>,
}

/// A provider request that was not made, or failed.
#[derive(Debug)]
pub enum GateError {
    /// The breaker is open: the request was not made.
    Refused(String),
    Failed(ConnectorError),
}

impl GateError {
    pub fn message(&self) -> String {
        match self {
            GateError::Refused(reason) => reason.clone(),
            GateError::Failed(error) => error.to_string(),
        }
    }
}

impl From<GateError> for ConnectorError {
    fn from(error: GateError) -> Self {
        match error {
            GateError::Refused(reason) => ConnectorError::Unavailable(reason),
            GateError::Failed(error) => error,
        }
    }
}

impl ProviderGate {
    pub fn new(breaker: BreakerConfig, quota: Option<Quota>) -> Self {
        Self {
            breaker: Mutex::new(CircuitBreaker::new(breaker)),
            limiter: RateLimiter::new(quota),
        }
    }

    /// Runs one provider request: waits for the quota, asks the breaker, and records
    /// the outcome (a `Retry-After` also holds back the requests after it).
    pub async fn guard<T>(
        &self,
        request: impl Future<Output = Result<T, ConnectorError>>,
    ) -> Result<T, GateError> {
        self.limiter.acquire(&()).await;
        self.checked(request).await
    }

    /// The breaker's part of a request whose quota is taken.
    async fn checked<T>(
        &self,
        request: impl Future<Output = Result<T, ConnectorError>>,
    ) -> Result<T, GateError> {
        lock(&self.breaker)
            .try_acquire()
            .map_err(|rejected| GateError::Refused(rejected.to_string()))?;
        let result = request.await;
        match &result {
            Err(error) if error.is_provider_failure() => {
                lock(&self.breaker).record_failure();
                if let ConnectorError::RateLimited { retry_after } = error {
                    self.limiter.block_for(*retry_after);
                }
            }
            // The provider answered: a rejected credential says nothing of its health.
            _ => lock(&self.breaker).record_success(),
        }
        result.map_err(GateError::Failed)
    }

    /// [`ProviderGate::guard`] for an event handler, which does not wait for the quota:
    /// when it is spent the request is not made and the answer is
    /// [`ConnectorError::QuotaSpent`], so that the integration records what it
    /// processed so far and comes back to this event when the quota allows (its
    /// actor stays free meanwhile). An open breaker is the provider being unavailable.
    pub async fn call<T>(
        &self,
        request: impl Future<Output = Result<T, ConnectorError>>,
    ) -> Result<T, ConnectorError> {
        if let Err(retry_after) = self.limiter.try_acquire(&()) {
            return Err(ConnectorError::QuotaSpent { retry_after });
        }
        self.checked(request).await.map_err(ConnectorError::from)
    }

    pub fn breaker(&self) -> BreakerSnapshot {
        lock(&self.breaker).snapshot()
    }

    pub fn limiter(&self) -> LimiterSnapshot {
        self.limiter.snapshot()
    }
}
