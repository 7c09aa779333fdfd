//! The Slack Web API client: form-encoded or JSON calls with a bearer token, Slack's
//! `{"ok": false, "error": "..."}` answers turned into typed errors, each workspace's
//! calls held to Slack's per-method tiers, and a 429's `Retry-After` honoured.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, RETRY_AFTER};
use serde_json::Value;
use switchboard_actors::{Quota, RateLimiter, parse_retry_after};

use crate::connectors::ConnectorError;
use crate::secret::Secret;

/// A 429 asking for longer than this is not waited out inside one call: the caller
/// gets `RateLimited` and comes back later.
const LONGEST_WAIT: Duration = Duration::from_secs(30);

/// A Slack answer with `ok: false`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlackError {
    /// The token is no good: `invalid_auth`, `token_revoked`, `token_expired`,
    /// `account_inactive`, `not_authed`.
    #[error("Slack refused the token: {0}")]
    Auth(String),
    #[error("Slack rate limited {method}, retry after {retry_after:?}")]
    RateLimited {
        method: String,
        retry_after: Duration,
    },
    /// Any other `error` code (`channel_not_found`, `invalid_code`, ...).
    #[error("Slack answered {0}")]
    Api(String),
    #[error("Slack unavailable: {0}")]
    Unavailable(String),
}

impl SlackError {
    pub fn code(&self) -> Option<&str> {
        match self {
            SlackError::Auth(code) | SlackError::Api(code) => Some(code),
            _ => None,
        }
    }
}

impl From<SlackError> for ConnectorError {
    fn from(error: SlackError) -> Self {
        match error {
            SlackError::Auth(code) => ConnectorError::Unauthorized(code),
            SlackError::RateLimited { retry_after, .. } => {
                ConnectorError::RateLimited { retry_after }
            }
            SlackError::Api(code) => ConnectorError::Invalid(format!("Slack answered {code}")),
            SlackError::Unavailable(message) => ConnectorError::Unavailable(message),
        }
    }
}

const AUTH_ERRORS: [&str; 5] = [
    "invalid_auth",
    "token_revoked",
    "token_expired",
    "account_inactive",
    "not_authed",
];

/// Slack's documented tier of a method, per workspace.
fn tier(method: &str) -> Quota {
    let per_minute = |n: u32| Quota::per_minute(NonZeroU32::new(n).expect("non-zero"));
    match method {
        // "Special": about one message a second per channel, short bursts allowed.
        "chat.postMessage" => {
            Quota::per_second(NonZeroU32::MIN).allow_burst(NonZeroU32::new(10).expect("10"))
        }
        // Tier 1, with room for a reconnect or two at once.
        "apps.connections.open" => per_minute(1).allow_burst(NonZeroU32::new(5).expect("5")),
        "auth.revoke" | "conversations.replies" => per_minute(50),
        "auth.test" | "oauth.v2.access" => per_minute(100),
        _ => per_minute(20),
    }
}

const METHODS: [&str; 6] = [
    "chat.postMessage",
    "apps.connections.open",
    "auth.revoke",
    "conversations.replies",
    "auth.test",
    "oauth.v2.access",
];

pub struct SlackWebApi {
    http: reqwest::Client,
    base_url: String,
    /// One limiter per workspace (or app token), keyed by method.
    limiters: Mutex<HashMap<String, Arc<RateLimiter<&'static str>>>>,
}

/// How a call authenticates.
pub enum Auth<'a> {
    Bearer(&'a Secret),
    /// HTTP Basic with the app's client id and secret (`oauth.v2.access`).
    Client {
        id: &'a str,
        secret: &'a Secret,
    },
}

impl SlackWebApi {
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        Self {
            http: crate::connectors::http::client(timeout),
            base_url: base_url.trim_end_matches('/').to_string(),
            limiters: Mutex::default(),
        }
    }

    fn limiter(&self, scope: &str) -> Arc<RateLimiter<&'static str>> {
        let mut limiters = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        let limiter = limiters.entry(scope.to_string()).or_insert_with(|| {
            let mut limiter = RateLimiter::new(Some(tier("")));
            for method in METHODS {
                limiter = limiter.with_quota(method, tier(method));
            }
            Arc::new(limiter)
        });
        Arc::clone(limiter)
    }

    /// Calls `method` with a form body, as the workspace (or app) `scope`.
    pub async fn form(
        &self,
        scope: &str,
        method: &'static str,
        auth: Auth<'_>,
        form: &[(&str, &str)],
    ) -> Result<Value, SlackError> {
        self.call(scope, method, auth, Body::Form(form)).await
    }

    /// Calls `method` with a JSON body (`chat.postMessage` with blocks).
    pub async fn json(
        &self,
        scope: &str,
        method: &'static str,
        token: &Secret,
        body: &Value,
    ) -> Result<Value, SlackError> {
        self.call(scope, method, Auth::Bearer(token), Body::Json(body))
            .await
    }

    async fn call(
        &self,
        scope: &str,
        method: &'static str,
        auth: Auth<'_>,
        body: Body<'_>,
    ) -> Result<Value, SlackError> {
        let limiter = self.limiter(scope);
        let url = format!("{}/{method}", self.base_url);
        let mut waited = false;
        loop {
            limiter.acquire(&method).await;
            let mut request = self.http.post(&url);
            request = match &auth {
                Auth::Bearer(token) => {
                    request.header(AUTHORIZATION, format!("Bearer {}", token.expose()))
                }
                Auth::Client { id, secret } => request.basic_auth(id, Some(secret.expose())),
            };
            request = match &body {
                Body::Form(form) => request.form(form),
                Body::Json(json) => request.json(json),
            };
            let response = request
                .send()
                .await
                .map_err(|e| SlackError::Unavailable(format!("{method}: {e}")))?;
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after)
                    .unwrap_or(Duration::from_secs(1));
                limiter.block_key_for(method, retry_after);
                if waited || retry_after > LONGEST_WAIT {
                    return Err(SlackError::RateLimited {
                        method: method.to_string(),
                        retry_after,
                    });
                }
                // Honoured once here: the limiter holds this method back until then.
                waited = true;
                continue;
            }
            if status.is_server_error() {
                return Err(SlackError::Unavailable(format!(
                    "{method} answered {status}"
                )));
            }
            let answer: Value = response.json().await.map_err(|e| {
                SlackError::Unavailable(format!("{method}: unreadable answer: {e}"))
            })?;
            if answer["ok"].as_bool() == Some(true) {
                return Ok(answer);
            }
            let code = answer["error"]
                .as_str()
                .unwrap_or("unknown_error")
                .to_string();
            return Err(if AUTH_ERRORS.contains(&code.as_str()) {
                SlackError::Auth(code)
            } else if code == "ratelimited" {
                SlackError::RateLimited {
                    method: method.to_string(),
                    retry_after: Duration::from_secs(1),
                }
            } else {
                SlackError::Api(code)
            });
        }
    }
}

enum Body<'a> {
    Form(&'a [(&'a str, &'a str)]),
    Json(&'a Value),
}
