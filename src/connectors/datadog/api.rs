//! The Datadog REST client: keys in `DD-API-KEY` / `DD-APPLICATION-KEY`, Datadog's
//! error bodies (`{"errors": [...]}`) turned into typed errors, and its rate limits
//! honoured per integration.
//!
//! Datadog limits each endpoint and says so in `X-RateLimit-Limit`, `-Period`,
//! `-Remaining` and `-Reset` (seconds until the window resets). A response with
//! `-Remaining: 0` or a 429 blocks the integration until the reset. A caller that may
//! wait (a route action) sleeps until then, up to `max_wait`, and sends; one that may
//! not (a poll, run inside the integration's actor) gets `RateLimited` at once and
//! its breaker and limiter hold the next attempt back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{ACCEPT, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::time::Instant;

use crate::connectors::ConnectorError;
use crate::connectors::http::{self, Answer};
use crate::lock;
use crate::secret::Secret;

pub const API_KEY_HEADER: &str = "DD-API-KEY";
pub const APPLICATION_KEY_HEADER: &str = "DD-APPLICATION-KEY";
/// When Datadog sends no `X-RateLimit-Reset` with a 429.
const DEFAULT_RESET: Duration = Duration::from_secs(10);

/// The keys a request is made with, and whose rate limit it counts against.
pub struct Keys<'a> {
    /// The integration the keys belong to (the limit is kept per integration); empty
    /// while an authorization is being completed.
    pub owner: &'a str,
    pub api_key: &'a Secret,
    pub application_key: Option<&'a Secret>,
}

/// Whether a request may wait for a rate limit to reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    No,
    UpTo(Duration),
}

/// A failed request, as Datadog answered it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatadogError {
    /// 401 or 403: the keys are wrong, revoked, or lack a permission.
    #[error("Datadog refused the keys ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("Datadog found nothing there: {0}")]
    NotFound(String),
    #[error("Datadog refused the request ({status}): {message}")]
    BadRequest { status: u16, message: String },
    #[error("Datadog's rate limit is reached for {0:?}")]
    RateLimited(Duration),
    /// A 5xx, a timeout, or no connection.
    #[error("{0}")]
    Unavailable(String),
}

impl From<DatadogError> for ConnectorError {
    fn from(error: DatadogError) -> Self {
        match error {
            DatadogError::Refused { .. } => ConnectorError::Unauthorized(error.to_string()),
            DatadogError::NotFound(_) | DatadogError::BadRequest { .. } => {
                ConnectorError::Invalid(error.to_string())
            }
            DatadogError::RateLimited(retry_after) => ConnectorError::RateLimited { retry_after },
            DatadogError::Unavailable(_) => ConnectorError::Unavailable(error.to_string()),
        }
    }
}

pub struct DatadogApi {
    http: reqwest::Client,
    /// Until when each integration is held back by Datadog's rate limit.
    blocked: Mutex<HashMap<String, Instant>>,
}

impl DatadogApi {
    pub fn new(timeout: Duration) -> Self {
        Self {
            http: crate::connectors::http::client(timeout),
            blocked: Mutex::default(),
        }
    }

    /// Sends one request to `base` + `path` and decodes a 2xx JSON answer (`null`
    /// for an empty body).
    pub async fn call(
        &self,
        base: &str,
        keys: &Keys<'_>,
        method: Method,
        path: &str,
        body: Option<&Value>,
        wait: Wait,
    ) -> Result<Value, DatadogError> {
        // A 429 is waited out and the request sent once more, when the caller may wait.
        let mut limited_once = false;
        loop {
            self.wait_for_reset(keys.owner, wait).await?;
            match self.send(base, keys, method.clone(), path, body).await {
                Err(DatadogError::RateLimited(_)) if wait != Wait::No && !limited_once => {
                    limited_once = true;
                }
                outcome => return outcome,
            }
        }
    }

    async fn send(
        &self,
        base: &str,
        keys: &Keys<'_>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, DatadogError> {
        let mut request = self
            .http
            .request(method, format!("{base}{path}"))
            .header(ACCEPT, "application/json")
            .header(API_KEY_HEADER, keys.api_key.expose());
        if let Some(application_key) = keys.application_key {
            request = request.header(APPLICATION_KEY_HEADER, application_key.expose());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let Answer {
            status,
            headers,
            text,
        } = http::send(request, "Datadog")
            .await
            .map_err(DatadogError::Unavailable)?;
        let reset = header_u64(&headers, "x-ratelimit-reset").map(Duration::from_secs);
        if status == StatusCode::TOO_MANY_REQUESTS {
            let wait = reset.unwrap_or(DEFAULT_RESET);
            self.block(keys.owner, wait);
            return Err(DatadogError::RateLimited(wait));
        }
        if header_u64(&headers, "x-ratelimit-remaining") == Some(0)
            && let Some(reset) = reset
        {
            // The last request of the window was just spent.
            self.block(keys.owner, reset);
        }
        if status.is_success() {
            let text = if text.trim().is_empty() {
                "null"
            } else {
                &text
            };
            return serde_json::from_str(text).map_err(|e| {
                DatadogError::Unavailable(format!("unexpected answer from Datadog: {e}"))
            });
        }
        let message = error_message(&text);
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => DatadogError::Refused {
                status: status.as_u16(),
                message,
            },
            StatusCode::NOT_FOUND => DatadogError::NotFound(message),
            status if status.is_server_error() => {
                DatadogError::Unavailable(format!("Datadog failed ({status}): {message}"))
            }
            status => DatadogError::BadRequest {
                status: status.as_u16(),
                message,
            },
        })
    }

    /// Waits until the owner's rate limit resets, when the caller may wait that long;
    /// otherwise says how long is left.
    async fn wait_for_reset(&self, owner: &str, wait: Wait) -> Result<(), DatadogError> {
        let Some(left) = self.blocked_for(owner) else {
            return Ok(());
        };
        match wait {
            Wait::UpTo(most) if left <= most => {
                tokio::time::sleep(left).await;
                Ok(())
            }
            _ => Err(DatadogError::RateLimited(left)),
        }
    }

    fn blocked_for(&self, owner: &str) -> Option<Duration> {
        let blocked = lock(&self.blocked);
        let until = *blocked.get(owner)?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    fn block(&self, owner: &str, wait: Duration) {
        let until = Instant::now() + wait;
        let mut blocked = lock(&self.blocked);
        blocked.retain(|_, at| *at > Instant::now());
        let entry = blocked.entry(owner.to_string()).or_insert(until);
        *entry = (*entry).max(until);
    }
}

/// Datadog's error bodies are `{"errors": ["..."]}`.
fn error_message(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| {
            let errors: Vec<String> = v["errors"]
                .as_array()?
                .iter()
                .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                .collect();
            (!errors.is_empty()).then(|| errors.join("; "))
        })
        .unwrap_or_else(|| text.chars().take(200).collect())
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datadogs_error_bodies_are_read() {
        assert_eq!(
            error_message(r#"{"errors": ["Forbidden", "API key is invalid"]}"#),
            "Forbidden; API key is invalid"
        );
        assert_eq!(error_message("plain text"), "plain text");
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_integration_waits_only_when_it_may() {
        let api = DatadogApi::new(Duration::from_secs(1));
        api.block("i1", Duration::from_secs(5));
        assert_eq!(
            api.wait_for_reset("i1", Wait::No).await,
            Err(DatadogError::RateLimited(Duration::from_secs(5)))
        );
        assert!(
            api.wait_for_reset("i1", Wait::UpTo(Duration::from_secs(2)))
                .await
                .is_err(),
            "longer than it may wait"
        );
        let started = Instant::now();
        api.wait_for_reset("i1", Wait::UpTo(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(
            api.wait_for_reset("i2", Wait::No).await,
            Ok(()),
            "per integration"
        );
    }
}
