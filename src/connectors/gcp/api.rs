//! Google's OAuth token endpoint, token info and Cloud Resource Manager, with
//! Google's error bodies turned into typed errors: OAuth's
//! `{"error", "error_description"}` and the APIs' `{"error": {"code", "message", "status"}}`.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::connectors::ConnectorError;
use crate::secret::Secret;

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

pub struct GoogleApi {
    http: reqwest::Client,
}

/// An access token and how long it lives.
pub struct AccessToken {
    pub token: Secret,
    pub expires_in: Duration,
}

/// What token info says of an access token.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenInfo {
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub email: String,
}

/// The outcome of a call that needs a permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission {
    Granted,
    /// Google's `PERMISSION_DENIED`, with its message.
    Denied(String),
}

/// reqwest's message names the URL, and token info's carries the access token.
fn unreachable(error: reqwest::Error) -> ConnectorError {
    ConnectorError::Unavailable(format!("Google unreachable: {}", error.without_url()))
}

/// The part of an answer that failed, by status.
fn failure(status: StatusCode, message: String, retry_after: Option<Duration>) -> ConnectorError {
    match status {
        StatusCode::TOO_MANY_REQUESTS => ConnectorError::RateLimited {
            retry_after: retry_after.unwrap_or(Duration::from_secs(30)),
        },
        StatusCode::UNAUTHORIZED => {
            ConnectorError::Unauthorized(format!("Google refused the token: {message}"))
        }
        status if status.is_server_error() => {
            ConnectorError::Unavailable(format!("Google failed ({status}): {message}"))
        }
        status => {
            ConnectorError::Invalid(format!("Google refused the request ({status}): {message}"))
        }
    }
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(switchboard_actors::parse_retry_after)
}

impl GoogleApi {
    pub fn new(timeout: Duration) -> Self {
        Self {
            http: crate::connectors::http::client(timeout),
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Exchanges a signed assertion for an access token. `invalid_grant` (a deleted
    /// key, a skewed clock) is `Unauthorized` with Google's description.
    pub async fn exchange(
        &self,
        token_url: &str,
        assertion: &Secret,
    ) -> Result<AccessToken, ConnectorError> {
        let response = self
            .http
            .post(token_url)
            .form(&[
                ("grant_type", JWT_BEARER),
                ("assertion", assertion.expose()),
            ])
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let wait = retry_after(&response);
        let answer: Value = response.json().await.unwrap_or_default();
        if status.is_success() {
            let token = answer["access_token"].as_str().ok_or_else(|| {
                ConnectorError::Unavailable("Google's token answer has no access_token".into())
            })?;
            return Ok(AccessToken {
                token: Secret::new(token),
                expires_in: Duration::from_secs(answer["expires_in"].as_u64().unwrap_or(3600)),
            });
        }
        let error = answer["error"].as_str().unwrap_or("unknown_error");
        let description = answer["error_description"].as_str().unwrap_or(error);
        if matches!(
            error,
            "invalid_grant" | "unauthorized_client" | "invalid_client"
        ) {
            return Err(ConnectorError::Unauthorized(format!(
                "Google refused the service account's key: {description} ({error})"
            )));
        }
        Err(failure(status, format!("{description} ({error})"), wait))
    }

    /// Token info for an access token: its scopes and whose it is.
    pub async fn token_info(
        &self,
        tokeninfo_url: &str,
        token: &Secret,
    ) -> Result<TokenInfo, ConnectorError> {
        let url = url::Url::parse_with_params(tokeninfo_url, [("access_token", token.expose())])
            .map_err(|e| ConnectorError::Invalid(format!("tokeninfo_url: {e}")))?;
        let response = self.http.get(url).send().await.map_err(unreachable)?;
        let status = response.status();
        let wait = retry_after(&response);
        let answer: Value = response.json().await.unwrap_or_default();
        if status.is_success() {
            return serde_json::from_value(answer)
                .map_err(|e| ConnectorError::Unavailable(format!("unexpected token info: {e}")));
        }
        let description = answer["error_description"]
            .as_str()
            .or(answer["error"].as_str())
            .unwrap_or("no reason given");
        if status == StatusCode::BAD_REQUEST {
            // Token info answers 400 for a token that is not valid (any more).
            return Err(ConnectorError::Unauthorized(format!(
                "Google says the access token is not valid: {description}"
            )));
        }
        Err(failure(status, description.to_string(), wait))
    }

    /// `projects.get`: a real call that needs `resourcemanager.projects.get`.
    pub async fn get_project(
        &self,
        resource_manager_url: &str,
        token: &Secret,
        project_id: &str,
    ) -> Result<Permission, ConnectorError> {
        let project: String = url::form_urlencoded::byte_serialize(project_id.as_bytes()).collect();
        let response = self
            .http
            .get(format!(
                "{}/v1/projects/{project}",
                resource_manager_url.trim_end_matches('/')
            ))
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let wait = retry_after(&response);
        let answer: Value = response.json().await.unwrap_or_default();
        if status.is_success() {
            return Ok(Permission::Granted);
        }
        let message = answer["error"]["message"]
            .as_str()
            .unwrap_or("no reason given")
            .to_string();
        if status == StatusCode::FORBIDDEN || answer["error"]["status"] == "PERMISSION_DENIED" {
            return Ok(Permission::Denied(message));
        }
        Err(failure(status, message, wait))
    }
}
