//! A polled provider for the tests: a fake event feed on loopback (paged, bearer
//! authenticated, able to fail like a provider that is down) and the `feed` connector
//! that polls it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use switchboard::connectors::ingress::IncomingEvent;
use switchboard::connectors::{
    AuthorizationStart, AuthorizeRequest, Authorized, CallbackRequest, Connector, ConnectorError,
    CredentialValue, Credentials, Polled,
};
use switchboard::store::events::DeliveryScope;
use switchboard::store::integrations::Integration;

pub const API_KEY: &str = "feed-api-key";

#[derive(Default)]
pub struct FeedState {
    /// The feed's events, oldest first: `(id, type)`.
    pub events: Mutex<Vec<(String, String)>>,
    pub page_size: AtomicUsize,
    /// Answer 503 to every request while set.
    pub failing: AtomicBool,
    pub requests: AtomicUsize,
    /// When each request came.
    pub request_times: Mutex<Vec<std::time::Instant>>,
}

/// The fake feed: `GET /events?cursor=<offset>` with `Authorization: Bearer <key>`
/// answers `{"events": [...], "next_cursor": "<offset>", "has_more": bool}`.
pub struct FakeFeed {
    pub state: Arc<FeedState>,
    pub addr: SocketAddr,
}

impl FakeFeed {
    pub async fn start(page_size: usize) -> FakeFeed {
        let state = Arc::new(FeedState::default());
        state.page_size.store(page_size, Ordering::SeqCst);
        let app = axum::Router::new()
            .route("/events", axum::routing::get(page))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeFeed { state, addr }
    }

    /// Appends events `first..first + count` (`ev-<n>`).
    pub fn publish(&self, first: usize, count: usize) {
        let mut events = self.state.events.lock().unwrap();
        for n in first..first + count {
            events.push((format!("ev-{n}"), "alert.triggered".to_string()));
        }
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }
}

async fn page(
    State(state): State<Arc<FeedState>>,
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    state
        .request_times
        .lock()
        .unwrap()
        .push(std::time::Instant::now());
    if state.failing.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"errors": ["the feed is down"]})),
        )
            .into_response();
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {API_KEY}"))
    {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"errors": ["bad key"]})),
        )
            .into_response();
    }
    let from: usize = query
        .get("cursor")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let events = state.events.lock().unwrap();
    let size = state.page_size.load(Ordering::SeqCst);
    let to = (from + size).min(events.len());
    let page: Vec<Value> = events[from.min(to)..to]
        .iter()
        .map(|(id, kind)| json!({"id": id, "type": kind}))
        .collect();
    axum::Json(
        json!({"events": page, "next_cursor": to.to_string(), "has_more": to < events.len()}),
    )
    .into_response()
}

/// The `feed` connector: an API key, and every integration polls the feed.
pub struct FeedConnector {
    pub base_url: String,
    client: reqwest::Client,
    /// The feed's per-tenant quota, if it has one.
    quota: Option<switchboard_actors::Quota>,
}

impl FeedConnector {
    pub fn new(feed: &FakeFeed) -> Self {
        switchboard::install_crypto_provider();
        Self {
            base_url: format!("http://{}", feed.addr),
            client: reqwest::Client::new(),
            quota: None,
        }
    }

    /// The same connector, its tenants limited to `quota`.
    pub fn with_quota(mut self, quota: switchboard_actors::Quota) -> Self {
        self.quota = Some(quota);
        self
    }
}

#[async_trait::async_trait]
impl Connector for FeedConnector {
    fn name(&self) -> &str {
        "feed"
    }

    async fn authorize(
        &self,
        _request: &AuthorizeRequest,
    ) -> Result<AuthorizationStart, ConnectorError> {
        Ok(AuthorizationStart::api_key(&["api_key"]))
    }

    async fn complete(&self, request: &CallbackRequest) -> Result<Authorized, ConnectorError> {
        let key = request
            .credentials
            .get("api_key")
            .ok_or_else(|| ConnectorError::Invalid("api_key is required".into()))?;
        Ok(Authorized {
            external_id: None,
            metadata: json!({}),
            reveal: None,
            credentials: vec![CredentialValue {
                credential_type: "api_key".into(),
                secret: key.clone(),
                expires_at: None,
            }],
        })
    }

    async fn validate(&self, _credentials: &Credentials) -> Result<(), ConnectorError> {
        Ok(())
    }

    fn tenant_quota(&self) -> Option<switchboard_actors::Quota> {
        self.quota
    }

    fn polls(&self, _integration: &Integration) -> bool {
        true
    }

    async fn poll(
        &self,
        credentials: &Credentials,
        cursor: Option<&str>,
    ) -> Result<Polled, ConnectorError> {
        let key = credentials
            .get("api_key")
            .ok_or_else(|| ConnectorError::Unauthorized("no api key".into()))?;
        let response = self
            .client
            .get(format!(
                "{}/events?cursor={}",
                self.base_url,
                cursor.unwrap_or("0")
            ))
            .bearer_auth(key.expose())
            .send()
            .await
            .map_err(|e| ConnectorError::Unavailable(format!("feed unreachable: {e}")))?;
        match response.status().as_u16() {
            200 => {}
            401 => {
                return Err(ConnectorError::Unauthorized(
                    "the feed refused the key".into(),
                ));
            }
            status => {
                return Err(ConnectorError::Unavailable(format!(
                    "the feed answered {status}"
                )));
            }
        }
        let page: Value = response
            .json()
            .await
            .map_err(|e| ConnectorError::Unavailable(format!("unreadable page: {e}")))?;
        let events = page["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|event| IncomingEvent {
                delivery_id: event["id"].as_str().unwrap_or_default().to_string(),
                // The feed is the tenant's own: its ids are unique within it.
                scope: DeliveryScope::Integration,
                event_type: event["type"].as_str().unwrap_or("event").to_string(),
                occurred_at: None,
                payload: event.to_string(),
            })
            .collect();
        Ok(Polled {
            events,
            cursor: page["next_cursor"].as_str().map(str::to_string),
            more: page["has_more"].as_bool().unwrap_or(false),
        })
    }
}
