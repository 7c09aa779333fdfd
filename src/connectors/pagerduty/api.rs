//! PagerDuty's APIs: the REST API (`Token token=` for API keys, `Bearer` for OAuth
//! tokens, `From` on writes), the Events API v2, and the identity service's token
//! endpoint. Error bodies become typed errors, and rate limits are kept per
//! integration.
//!
//! PagerDuty allows 960 REST requests a minute per key or user token: requests are
//! paced per integration under that quota. A 429 holds the integration back for
//! `ratelimit-reset` seconds, or, without the header, for a backoff that doubles with
//! each 429 in a row. A caller that may wait (a route action, a click) sleeps through
//! it, up to a bound; one that may not gets `RateLimited` at once.

use std::num::NonZeroU32;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use switchboard_actors::{Quota, RateLimiter};

use crate::connectors::ConnectorError;
use crate::connectors::http::{self, Answer};
use crate::secret::Secret;

pub const REST_ACCEPT: &str = "application/vnd.pagerduty+json;version=2";
/// The first hold after a 429 without `ratelimit-reset`; doubled with each one after.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// How a request authenticates.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    /// A REST API key (account or user).
    Token(&'a Secret),
    /// An OAuth access token.
    Bearer(&'a Secret),
}

/// Who makes a request: whose quota it counts against, with what.
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    /// The integration (the limit is kept per integration).
    pub owner: &'a str,
    pub auth: Auth<'a>,
    /// The `From` header: the PagerDuty user an incident write is made as.
    pub from: Option<&'a str>,
}

/// Whether a request may wait for a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    No,
    UpTo(Duration),
}

/// A failed request, as PagerDuty answered it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PagerDutyError {
    /// 401: the key or token is wrong, revoked or expired.
    #[error("PagerDuty refused the credentials: {0}")]
    Unauthorized(String),
    /// 403: the credentials are good but may not do this (a read-only key, a scope).
    #[error("PagerDuty forbids this: {0}")]
    Forbidden(String),
    #[error("PagerDuty found nothing there: {0}")]
    NotFound(String),
    /// Any other 4xx, with PagerDuty's error code when it gave one.
    #[error("PagerDuty refused the request ({status}): {message}")]
    BadRequest { status: u16, message: String },
    #[error("PagerDuty's rate limit is reached for {0:?}")]
    RateLimited(Duration),
    /// A 5xx, a timeout, or no connection.
    #[error("{0}")]
    Unavailable(String),
}

impl From<PagerDutyError> for ConnectorError {
    fn from(error: PagerDutyError) -> Self {
        match error {
            PagerDutyError::Unauthorized(_) => ConnectorError::Unauthorized(error.to_string()),
            PagerDutyError::Forbidden(_)
            | PagerDutyError::NotFound(_)
            | PagerDutyError::BadRequest { .. } => ConnectorError::Invalid(error.to_string()),
            PagerDutyError::RateLimited(retry_after) => ConnectorError::RateLimited { retry_after },
            PagerDutyError::Unavailable(_) => ConnectorError::Unavailable(error.to_string()),
        }
    }
}

pub struct PagerDutyApi {
    http: reqwest::Client,
    /// Pacing per integration, and the holds a 429 sets.
    limiter: RateLimiter<String>,
    /// Holds after 429s without `ratelimit-reset`, per integration.
    backoffs: http::Backoffs,
}

impl PagerDutyApi {
    pub fn new(timeout: Duration, requests_per_minute: u32) -> Self {
        let quota =
            Quota::per_minute(NonZeroU32::new(requests_per_minute).unwrap_or(NonZeroU32::MIN));
        Self {
            http: http::client(timeout),
            limiter: RateLimiter::new(Some(quota)),
            backoffs: http::Backoffs::new(BACKOFF_START, BACKOFF_CAP),
        }
    }

    /// One REST request to `base` + `path`; a 2xx JSON answer (`null` when empty).
    pub async fn rest(
        &self,
        base: &str,
        caller: &Caller<'_>,
        method: Method,
        path: &str,
        body: Option<&Value>,
        wait: Wait,
    ) -> Result<Value, PagerDutyError> {
        self.paced(caller.owner, wait, || {
            let mut request = self
                .http
                .request(method.clone(), format!("{base}{path}"))
                .header(ACCEPT, REST_ACCEPT)
                .header(
                    AUTHORIZATION,
                    match caller.auth {
                        Auth::Token(key) => format!("Token token={}", key.expose()),
                        Auth::Bearer(token) => format!("Bearer {}", token.expose()),
                    },
                );
            if let Some(from) = caller.from {
                request = request.header("From", from);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            request
        })
        .await
    }

    /// Sends an event to the Events API v2 (`/v2/enqueue`); its answer
    /// (`{"status", "message", "dedup_key"}`).
    pub async fn enqueue(
        &self,
        events_base: &str,
        owner: &str,
        event: &Value,
        wait: Wait,
    ) -> Result<Value, PagerDutyError> {
        self.paced(owner, wait, || {
            self.http
                .post(format!("{events_base}/v2/enqueue"))
                .json(event)
        })
        .await
    }

    /// Sends the request `build` makes under the owner's pacing. A 429 is waited out
    /// and the request sent once more, when the caller may wait.
    async fn paced(
        &self,
        owner: &str,
        wait: Wait,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Value, PagerDutyError> {
        let mut limited_once = false;
        loop {
            self.pace(owner, wait).await?;
            match self.answer(owner, build()).await {
                Err(PagerDutyError::RateLimited(_)) if wait != Wait::No && !limited_once => {
                    limited_once = true;
                }
                outcome => return outcome,
            }
        }
    }

    /// A form POST to the identity service's token endpoint: the token answer, or
    /// OAuth's `error` and `error_description`.
    pub async fn token(
        &self,
        identity_base: &str,
        form: &[(&str, &str)],
    ) -> Result<Value, PagerDutyError> {
        let request = self
            .http
            .post(format!("{identity_base}/oauth/token"))
            .header(ACCEPT, "application/json")
            .form(form);
        let Answer { status, text, .. } = http::send(request, "PagerDuty")
            .await
            .map_err(PagerDutyError::Unavailable)?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        if status.is_server_error() {
            return Err(PagerDutyError::Unavailable(format!(
                "PagerDuty's token endpoint failed ({status})"
            )));
        }
        let error = body["error"].as_str().unwrap_or("unknown_error");
        let message = match body["error_description"].as_str() {
            Some(description) => format!("{error}: {description}"),
            None => error.to_string(),
        };
        Err(PagerDutyError::Unauthorized(message))
    }

    /// Waits for a cell of the owner's quota (or a 429's hold to end), when the
    /// caller may wait that long; otherwise says how long is left.
    async fn pace(&self, owner: &str, wait: Wait) -> Result<(), PagerDutyError> {
        let key = owner.to_string();
        loop {
            match self.limiter.try_acquire(&key) {
                Ok(()) => return Ok(()),
                Err(left) => match wait {
                    Wait::UpTo(most) if left <= most => tokio::time::sleep(left).await,
                    _ => return Err(PagerDutyError::RateLimited(left)),
                },
            }
        }
    }

    async fn answer(
        &self,
        owner: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, PagerDutyError> {
        let Answer {
            status,
            headers,
            text,
        } = http::send(request, "PagerDuty")
            .await
            .map_err(PagerDutyError::Unavailable)?;
        let reset = header_u64(&headers, "ratelimit-reset").map(Duration::from_secs);
        if status == StatusCode::TOO_MANY_REQUESTS {
            let hold = reset.unwrap_or_else(|| self.backoffs.next(owner));
            self.limiter.block_key_for(owner.to_string(), hold);
            return Err(PagerDutyError::RateLimited(hold));
        }
        self.backoffs.reset(owner);
        if header_u64(&headers, "ratelimit-remaining") == Some(0)
            && let Some(reset) = reset
        {
            // The window's last request was just spent.
            self.limiter.block_key_for(owner.to_string(), reset);
        }
        if status.is_success() {
            let text = if text.trim().is_empty() {
                "null"
            } else {
                &text
            };
            return serde_json::from_str(text).map_err(|e| {
                PagerDutyError::Unavailable(format!("unexpected answer from PagerDuty: {e}"))
            });
        }
        let message = error_message(&text);
        Err(match status {
            StatusCode::UNAUTHORIZED => PagerDutyError::Unauthorized(message),
            StatusCode::FORBIDDEN => PagerDutyError::Forbidden(message),
            StatusCode::NOT_FOUND => PagerDutyError::NotFound(message),
            status if status.is_server_error() => {
                PagerDutyError::Unavailable(format!("PagerDuty failed ({status}): {message}"))
            }
            status => PagerDutyError::BadRequest {
                status: status.as_u16(),
                message,
            },
        })
    }
}

/// PagerDuty's REST errors are `{"error": {"message", "code", "errors": [...]}}`; the
/// Events API's are `{"status", "message", "errors": [...]}`.
pub fn error_message(text: &str) -> String {
    let Ok(body) = serde_json::from_str::<Value>(text) else {
        return text.chars().take(200).collect();
    };
    let error = if body["error"].is_object() {
        &body["error"]
    } else {
        &body
    };
    let mut message = error["message"]
        .as_str()
        .or_else(|| error["error"].as_str())
        .unwrap_or("no message")
        .to_string();
    if let Some(code) = error["code"].as_i64() {
        message.push_str(&format!(" (code {code})"));
    }
    let details: Vec<&str> = error["errors"]
        .as_array()
        .map(|errors| errors.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !details.is_empty() {
        message.push_str(": ");
        message.push_str(&details.join("; "));
    }
    message
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagerdutys_error_bodies_are_read() {
        assert_eq!(
            error_message(
                r#"{"error": {"message": "Invalid Input Provided", "code": 2001, "errors": ["Incident Already Resolved"]}}"#
            ),
            "Invalid Input Provided (code 2001): Incident Already Resolved"
        );
        assert_eq!(
            error_message(
                r#"{"status": "invalid event", "message": "Event object is invalid", "errors": ["'routing_key' is missing"]}"#
            ),
            "Event object is invalid: 'routing_key' is missing"
        );
        assert_eq!(error_message("<html>"), "<html>");
    }

    #[tokio::test(start_paused = true)]
    async fn an_integration_is_paced_and_held_alone() {
        // Two a minute: a burst of two, then one every 30 s.
        let api = PagerDutyApi::new(Duration::from_secs(1), 2);
        api.pace("i1", Wait::No).await.unwrap();
        api.pace("i1", Wait::No).await.unwrap();
        assert!(matches!(
            api.pace("i1", Wait::No).await,
            Err(PagerDutyError::RateLimited(left)) if left <= Duration::from_secs(30)
        ));
        let started = tokio::time::Instant::now();
        api.pace("i1", Wait::UpTo(Duration::from_secs(60)))
            .await
            .unwrap();
        let waited = started.elapsed();
        assert!(
            waited > Duration::from_secs(29) && waited <= Duration::from_secs(30),
            "{waited:?}"
        );
        api.limiter
            .block_key_for("i1".into(), Duration::from_secs(30));
        assert!(
            api.pace("i1", Wait::UpTo(Duration::from_secs(5)))
                .await
                .is_err()
        );
        assert_eq!(api.pace("i2", Wait::No).await, Ok(()), "per integration");
        assert_eq!(api.backoffs.next("i3"), Duration::from_secs(1));
        assert_eq!(api.backoffs.next("i3"), Duration::from_secs(2));
        assert_eq!(api.backoffs.next("i3"), Duration::from_secs(4));
    }
}
