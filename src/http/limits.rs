//! What every request meets before its handler, on every listener:
//!
//! - its head: too many or too large headers are a 431;
//! - its body: over `max_body_bytes` is a 413 (before reading it when the length is
//!   announced); it is read within `body_timeout` (408 otherwise) and only once it fits
//!   in the budget of bytes that all requests may hold buffered at once. A request over
//!   the budget waits `budget_wait`, then gets 503 with `Retry-After`, so that stalled
//!   uploads cannot take the daemon's memory. A `precheck` may refuse a request before
//!   its body is read (a webhook for an unknown integration is a 404 at once);
//! - its answer: every error is `{"error":{"code","message"}}`, including those axum
//!   and its extractors make (405, rejected paths and queries), and a 5xx never
//!   carries internal text.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tracing::warn;

use super::ApiError;
use super::server::RareLog;

/// Refuses a request before its body is read, from its method and path.
pub type Precheck =
    Arc<dyn Fn(&axum::http::Method, &str) -> BoxFuture<'static, Option<Response>> + Send + Sync>;

pub struct RequestLimits {
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// How long a request waits for room in the budget.
    pub budget_wait: Duration,
    /// The budget, in KiB: one permit per KiB buffered.
    budget: Semaphore,
    budget_kib: u32,
    pub precheck: Option<Precheck>,
    over_budget: RareLog,
    too_slow: RareLog,
}

impl RequestLimits {
    pub fn new(
        max_body_bytes: usize,
        body_timeout: Duration,
        max_header_bytes: usize,
        budget_bytes: u64,
        budget_wait: Duration,
    ) -> Self {
        // At least one largest body fits, or nothing large could ever be read.
        let budget_kib = u32::try_from(budget_bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(kib(max_body_bytes));
        Self {
            max_body_bytes,
            body_timeout,
            max_header_bytes,
            max_headers: 100,
            budget_wait,
            budget: Semaphore::new(budget_kib as usize),
            budget_kib,
            precheck: None,
            over_budget: RareLog::default(),
            too_slow: RareLog::default(),
        }
    }

    pub fn with_precheck(mut self, precheck: Precheck) -> Self {
        self.precheck = Some(precheck);
        self
    }
}

fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// The middleware: headers checked, the body read within the limits, then the handler.
pub async fn guard(
    State(limits): State<Arc<RequestLimits>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers.len() > limits.max_headers || header_bytes > limits.max_header_bytes {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request's headers are over {} bytes or {} fields",
                limits.max_header_bytes, limits.max_headers
            ),
        )
        .into_response();
    }
    if let Some(precheck) = &limits.precheck
        && let Some(refused) = precheck(request.method(), request.uri().path()).await
    {
        return refused;
    }
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    if announced.is_none_or(|n| n == 0) && !chunked {
        // No body: nothing to hold.
        return next.run(request).await;
    }
    if let Some(announced) = announced.filter(|n| *n > limits.max_body_bytes as u64) {
        // Read and dropped, not buffered: a client still sending when the connection
        // closes would not see the answer. Far too large, it is closed at once.
        if announced <= DRAIN_AT_MOST {
            let body = request.into_body();
            let _ = tokio::time::timeout(limits.body_timeout, drain(body)).await;
        }
        return too_large(limits.max_body_bytes);
    }
    let needed = announced.map_or(limits.max_body_bytes, |n| n as usize);
    let permits = kib(needed);
    let held =
        match tokio::time::timeout(limits.budget_wait, limits.budget.acquire_many(permits)).await {
            Ok(Ok(held)) => held,
            _ => {
                limits.over_budget.warn(|skipped| {
                    warn!(
                        budget_kib = limits.budget_kib,
                        times_since_last = skipped,
                        "request bodies over their memory budget: answered 503"
                    )
                });
                let mut refused = ApiError::unavailable(
                    "the daemon is busy reading other requests' bodies: retry in a moment",
                )
                .into_response();
                refused
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return refused;
            }
        };
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(
        limits.body_timeout,
        axum::body::to_bytes(body, limits.max_body_bytes),
    )
    .await;
    let bytes: Bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => {
            drop(held);
            // The only limit `to_bytes` enforces is the length; anything else is the
            // client going away mid-body.
            let over = std::error::Error::source(&error)
                .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
            return if over {
                too_large(limits.max_body_bytes)
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the body could not be read",
                )
                .into_response()
            };
        }
        Err(_) => {
            drop(held);
            limits.too_slow.warn(|skipped| {
                warn!(timeout = ?limits.body_timeout, times_since_last = skipped, "a request body did not arrive in time: answered 408")
            });
            let mut refused = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the body did not arrive within {}s",
                    limits.body_timeout.as_secs()
                ),
            )
            .into_response();
            refused
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return refused;
        }
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    // The handler is done with the body: its bytes leave the budget.
    drop(held);
    response
}

/// The most of a refused body read (and dropped) so that its sender sees the 413.
const DRAIN_AT_MOST: u64 = 16 * 1024 * 1024;

async fn drain(body: Body) {
    use http_body_util::BodyExt;
    let mut body = body;
    while let Some(Ok(_)) = body.frame().await {}
}

fn too_large(max: usize) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body is over the size limit ({max} bytes)"),
    )
    .into_response()
}

/// The middleware that makes every error answer JSON in our shape: errors made by
/// axum itself (405, extractor rejections) are plain text or empty.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let typed = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json") || t.starts_with("text/html"));
    if typed {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let message = if status.is_server_error() || text.is_empty() {
        // Never internal text: the reason phrase says enough.
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let mut answered = ApiError::new(status, code_for(status), message).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(value) = parts.headers.get(&name) {
            answered.headers_mut().insert(name, value.clone());
        }
    }
    answered
}

fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "invalid_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        status if status.is_server_error() => "internal",
        _ => "invalid_request",
    }
}
