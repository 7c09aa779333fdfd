//! The GitHub REST client: one request at a time, GitHub's errors turned into
//! [`ConnectorError`]s, and GitHub's rate limits remembered per credential.
//!
//! - Primary limit: a response with `x-ratelimit-remaining: 0` blocks that
//!   credential until `x-ratelimit-reset`; calls before then fail at once with
//!   `RateLimited`, which the integration actor feeds to its limiter.
//! - Secondary limits (403/429 "secondary rate limit"): `retry-after` when GitHub
//!   sends it, otherwise at least 60 s, doubling while they repeat (GitHub's advice).
//! - Lists follow the `Link: <...>; rel="next"` header.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::connectors::ConnectorError;
use crate::connectors::http::{self, Answer};
use crate::secret::Secret;

/// The REST API version this client speaks.
pub const API_VERSION: &str = "2022-11-28";
const SECONDARY_MIN: Duration = Duration::from_secs(60);
const SECONDARY_CAP: Duration = Duration::from_secs(15 * 60);
/// Pages followed at most for one list (100 items each).
const MAX_PAGES: usize = 100;

/// A failed call. A 401 is kept apart: the caller may mint a new token and retry.
#[derive(Debug)]
pub enum CallError {
    BadCredentials(String),
    Failed(ConnectorError),
}

impl From<CallError> for ConnectorError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::BadCredentials(message) => ConnectorError::Unauthorized(message),
            CallError::Failed(error) => error,
        }
    }
}

impl From<ConnectorError> for CallError {
    fn from(error: ConnectorError) -> Self {
        CallError::Failed(error)
    }
}

/// Who a request speaks for: the app (JWT) or one installation (its token). Rate
/// limits are remembered per principal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    App,
    Installation(String),
    /// A person, through the user token of an installation's setup.
    User,
}

#[derive(Default)]
struct Limit {
    blocked_until: Option<Instant>,
    /// Secondary limits in a row: the exponent of the next wait.
    secondary_strikes: u32,
}

pub struct GithubApi {
    http: reqwest::Client,
    base_url: String,
    limits: Mutex<HashMap<Principal, Limit>>,
}

impl GithubApi {
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        Self {
            http: crate::connectors::http::client(timeout),
            base_url: base_url.trim_end_matches('/').to_string(),
            limits: Mutex::default(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Sends one request and decodes a 2xx JSON answer (`()` for 204).
    pub async fn call<T: DeserializeOwned>(
        &self,
        principal: &Principal,
        token: &Secret,
        method: Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, CallError> {
        let (_, text) = self.send(principal, token, method, url, body).await?;
        Ok(decode(&text)?)
    }

    /// Exchanges the `code` of a user authorization at `url` (GitHub's
    /// `/login/oauth/access_token`) for the user's token. GitHub answers a bad code
    /// with 200 and an `error` field.
    pub async fn exchange_code(
        &self,
        url: &str,
        client_id: &str,
        client_secret: &Secret,
        code: &Secret,
    ) -> Result<Secret, ConnectorError> {
        let response = self
            .http
            .post(url)
            .header(ACCEPT, "application/json")
            .form(&[
                ("client_id", client_id),
                ("client_secret", client_secret.expose()),
                ("code", code.expose()),
            ])
            .send()
            .await
            .map_err(|e| {
                ConnectorError::Unavailable(format!("GitHub unreachable: {}", e.without_url()))
            })?;
        let status = response.status();
        let answer: serde_json::Value = response
            .json()
            .await
            .map_err(|e| ConnectorError::Unavailable(format!("GitHub answer unreadable: {e}")))?;
        if let Some(error) = answer["error"].as_str() {
            let described = answer["error_description"].as_str().unwrap_or(error);
            return Err(ConnectorError::Invalid(format!(
                "GitHub refused the code: {described} ({error})"
            )));
        }
        match answer["access_token"].as_str() {
            Some(token) if status.is_success() => Ok(Secret::new(token)),
            _ => Err(ConnectorError::Unavailable(format!(
                "GitHub's code exchange answered {status} without a token"
            ))),
        }
    }

    /// Every item of a paginated list: `field` of each page (or the page itself when
    /// `field` is `None`), following `Link` until there is no next page.
    pub async fn list<T: DeserializeOwned>(
        &self,
        principal: &Principal,
        token: &Secret,
        path: &str,
        field: Option<&str>,
    ) -> Result<Vec<T>, CallError> {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut next = Some(self.url(&format!("{path}{separator}per_page=100")));
        let mut items = Vec::new();
        for _ in 0..MAX_PAGES {
            let Some(url) = next.take() else {
                return Ok(items);
            };
            let (headers, text) = self.send(principal, token, Method::GET, &url, None).await?;
            let page: serde_json::Value = decode(&text)?;
            let page = match field {
                Some(field) => page.get(field).cloned().unwrap_or_default(),
                None => page,
            };
            let page: Vec<T> = serde_json::from_value(page)
                .map_err(|e| ConnectorError::Unavailable(format!("unexpected list page: {e}")))?;
            items.extend(page);
            next = headers
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
        }
        Err(CallError::Failed(ConnectorError::Unavailable(format!(
            "{path}: more than {MAX_PAGES} pages"
        ))))
    }

    async fn send(
        &self,
        principal: &Principal,
        token: &Secret,
        method: Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(HeaderMap, String), CallError> {
        if let Some(wait) = self.blocked_for(principal) {
            return Err(ConnectorError::RateLimited { retry_after: wait }.into());
        }
        let mut request = self
            .http
            .request(method, url)
            .header(ACCEPT, "application/vnd.github+json")
            .header("x-github-api-version", API_VERSION)
            .header(AUTHORIZATION, format!("Bearer {}", token.expose()));
        if let Some(body) = body {
            request = request.json(body);
        }
        let Answer {
            status,
            headers,
            text,
        } = http::send(request, "GitHub")
            .await
            .map_err(ConnectorError::Unavailable)?;
        let remaining = header_u64(&headers, "x-ratelimit-remaining");
        let reset_in = header_u64(&headers, "x-ratelimit-reset").map(until_epoch);
        if status.is_success() {
            let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
            let limit = limits.entry(principal.clone()).or_default();
            limit.secondary_strikes = 0;
            // The last one of the window was just spent: wait for the reset.
            limit.blocked_until = match (remaining, reset_in) {
                (Some(0), Some(wait)) => Some(Instant::now() + wait),
                _ => None,
            };
            return Ok((headers, text));
        }
        let message = error_message(&text);
        if status == StatusCode::UNAUTHORIZED {
            return Err(CallError::BadCredentials(format!(
                "GitHub refused the credentials: {message}"
            )));
        }
        Err(CallError::Failed(match status {
            StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS => {
                let retry_after = headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(switchboard_actors::parse_retry_after);
                let secondary = message
                    .to_ascii_lowercase()
                    .contains("secondary rate limit");
                let wait = if secondary || retry_after.is_some() {
                    Some(self.secondary_limit(principal, retry_after))
                } else if remaining == Some(0) {
                    let wait = reset_in.unwrap_or(SECONDARY_MIN);
                    self.block(principal, wait);
                    Some(wait)
                } else {
                    None
                };
                match wait {
                    Some(retry_after) => ConnectorError::RateLimited { retry_after },
                    // A plain 403: the app lacks a permission, or the installation is suspended.
                    None => ConnectorError::Unauthorized(format!(
                        "GitHub refused ({status}): {message}"
                    )),
                }
            }
            StatusCode::NOT_FOUND => {
                ConnectorError::Invalid(format!("GitHub found nothing there: {message}"))
            }
            status if status.is_server_error() => {
                ConnectorError::Unavailable(format!("GitHub failed ({status}): {message}"))
            }
            status => {
                ConnectorError::Invalid(format!("GitHub refused the request ({status}): {message}"))
            }
        }))
    }

    fn blocked_for(&self, principal: &Principal) -> Option<Duration> {
        let limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let until = limits.get(principal)?.blocked_until?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    fn block(&self, principal: &Principal, wait: Duration) {
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        limits.entry(principal.clone()).or_default().blocked_until = Some(Instant::now() + wait);
    }

    /// Records a secondary limit and says how long to wait: GitHub's `retry-after`
    /// when it sent one, otherwise 60 s doubling with each one in a row.
    fn secondary_limit(&self, principal: &Principal, retry_after: Option<Duration>) -> Duration {
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let limit = limits.entry(principal.clone()).or_default();
        let strikes = limit.secondary_strikes;
        limit.secondary_strikes = strikes.saturating_add(1);
        let wait = retry_after.unwrap_or_else(|| {
            SECONDARY_MIN
                .saturating_mul(1 << strikes.min(8))
                .min(SECONDARY_CAP)
        });
        limit.blocked_until = Some(Instant::now() + wait);
        wait
    }
}

fn decode<T: DeserializeOwned>(text: &str) -> Result<T, ConnectorError> {
    // A 204 has no body: decode it as JSON null (which `()` accepts).
    let text = if text.trim().is_empty() { "null" } else { text };
    serde_json::from_str(text)
        .map_err(|e| ConnectorError::Unavailable(format!("unexpected answer from GitHub: {e}")))
}

/// GitHub's error bodies are `{"message": "...", "documentation_url": "..."}`.
fn error_message(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| text.chars().take(200).collect())
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// How long until a Unix time (zero when it passed).
fn until_epoch(at: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Duration::from_secs(at.saturating_sub(now))
}

/// The `rel="next"` target of a `Link` header.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| target.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_is_found_among_the_others() {
        let header = r#"<https://api.github.com/installation/repositories?per_page=100&page=2>; rel="next", <https://api.github.com/installation/repositories?per_page=100&page=3>; rel="last""#;
        assert_eq!(
            next_link(header).as_deref(),
            Some("https://api.github.com/installation/repositories?per_page=100&page=2")
        );
        let last = r#"<https://x/?page=1>; rel="prev", <https://x/?page=1>; rel="first""#;
        assert_eq!(next_link(last), None);
    }

    #[tokio::test(start_paused = true)]
    async fn secondary_limits_wait_at_least_a_minute_and_double() {
        let api = GithubApi::new("http://127.0.0.1:9", Duration::from_secs(1));
        let who = Principal::Installation("1".into());
        assert_eq!(api.secondary_limit(&who, None), Duration::from_secs(60));
        assert_eq!(api.secondary_limit(&who, None), Duration::from_secs(120));
        assert_eq!(
            api.secondary_limit(&who, Some(Duration::from_secs(7))),
            Duration::from_secs(7),
            "retry-after wins"
        );
        assert!(api.blocked_for(&who).is_some());
        assert!(api.blocked_for(&Principal::App).is_none(), "per principal");
    }
}
