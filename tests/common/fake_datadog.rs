//! A fake Datadog on loopback that speaks the API switchboard uses: every site under
//! its own path prefix (`/us1/api/...`, `/eu1/api/...`), keys in `DD-API-KEY` and
//! `DD-APPLICATION-KEY` accepted only on the tenant's home site, key validation (v2
//! and v1), webhook configuration, the v2 event stream with page cursors, posted
//! events, Datadog's error bodies (`{"errors": [...]}`) and its rate-limit answers.
//! It records what it was asked; knobs make it misbehave.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{Value, json};

pub const API_KEY: &str = "dd-api-key-for-tests-0123456789abcdef";
pub const APPLICATION_KEY: &str = "dd-application-key-for-tests-0123456789";
pub const SITES: [&str; 7] = ["us1", "us3", "us5", "eu1", "ap1", "ap2", "us1-fed"];
pub const SECRET_HEADER: &str = "X-Switchboard-Webhook-Secret";

/// One event of the stream: its v2 id, the v1 id the webhook's `$ID` carries, the
/// monitor title and its time (epoch ms).
#[derive(Debug, Clone)]
pub struct StreamEvent {
    pub v1_id: String,
    pub title: String,
    pub timestamp: i64,
    pub monitor_id: u64,
    pub group: String,
}

#[derive(Default)]
pub struct FakeDatadogState {
    /// The site where the keys are valid.
    pub home: Mutex<String>,
    /// `validate_keys` answers 404 (an old site) while set: the v1 check is used.
    pub validate_keys_missing: AtomicBool,
    /// `validate_keys` answers with the window spent (`X-RateLimit-Remaining: 0`),
    /// resetting in this many seconds.
    pub validate_keys_exhausted_for: Mutex<Option<u64>>,
    /// Every request: (site, method, path).
    pub requests: Mutex<Vec<(String, String, String)>>,
    /// Webhooks configured, by name: the body as posted.
    pub webhooks: Mutex<BTreeMap<String, Value>>,
    pub deleted_webhooks: Mutex<Vec<String>>,
    /// The event stream, oldest first.
    pub stream: Mutex<Vec<StreamEvent>>,
    pub page_size: AtomicUsize,
    /// Every query of the stream: its parameters.
    pub stream_queries: Mutex<Vec<BTreeMap<String, String>>>,
    /// Events posted to `/api/v1/events`, with when they came.
    pub posted: Mutex<Vec<(std::time::Instant, Value)>>,
    /// Answer the next N posts of events with a 429 resetting in this many seconds
    /// (`None`: a 429 without Datadog's headers).
    pub rate_limit_posts: Mutex<Option<(usize, Option<u64>)>>,
}

pub struct FakeDatadog {
    pub addr: SocketAddr,
    pub state: Arc<FakeDatadogState>,
}

type Shared = State<Arc<FakeDatadogState>>;

impl FakeDatadog {
    /// A fake whose tenant's keys belong to `home`.
    pub async fn start(home: &str) -> FakeDatadog {
        let state = Arc::new(FakeDatadogState::default());
        *state.home.lock().unwrap() = home.to_string();
        state.page_size.store(100, Ordering::SeqCst);
        let app = Router::new()
            .route("/{site}/api/v2/validate_keys", get(validate_keys))
            .route("/{site}/api/v1/validate", get(validate))
            .route(
                "/{site}/api/v1/integration/webhooks/configuration/webhooks",
                post(create_webhook),
            )
            .route(
                "/{site}/api/v1/integration/webhooks/configuration/webhooks/{name}",
                get(get_webhook).delete(delete_webhook),
            )
            .route("/{site}/api/v2/events", get(list_events))
            .route("/{site}/api/v1/events", post(post_event))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeDatadog { addr, state }
    }

    /// The `[connectors.datadog]` section pointing every site at this fake, plus `extra`
    /// settings of the section.
    pub fn config_section(&self, extra: &str) -> String {
        let sites: String = SITES
            .iter()
            .map(|site| format!("\"{site}\" = \"http://{}/{site}\"\n", self.addr))
            .collect();
        format!("[connectors.datadog]\n{extra}\n[connectors.datadog.site_urls]\n{sites}")
    }

    /// The sites asked to validate keys, in order.
    pub fn validations(&self) -> Vec<String> {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, path)| path.contains("validate"))
            .map(|(site, _, _)| site.clone())
            .collect()
    }

    /// Appends an alert to the stream, happening now.
    pub fn publish(&self, v1_id: &str, transition: &str, monitor_id: u64) {
        self.state.stream.lock().unwrap().push(StreamEvent {
            v1_id: v1_id.to_string(),
            title: format!("[{transition} on {{host:web-1}}] CPU high"),
            timestamp: chrono::Utc::now().timestamp_millis(),
            monitor_id,
            group: "host:web-1".to_string(),
        });
    }

    pub fn webhook(&self, name: &str) -> Option<Value> {
        self.state.webhooks.lock().unwrap().get(name).cloned()
    }
}

/// Sends a monitor notification as Datadog sends it to a webhook: the payload
/// template filled in, the custom headers as configured.
pub async fn notify(
    http: &reqwest::Client,
    webhook: &Value,
    fill: &[(&str, &str)],
) -> (u16, Value) {
    // Each variable is a quoted string of its own in the template: replaced whole.
    // Those not given stay as they are (Datadog leaves a variable it cannot fill).
    let mut payload = webhook["payload"].as_str().unwrap().to_string();
    for (name, value) in fill {
        payload = payload.replace(&format!("\"${name}\""), &Value::from(*value).to_string());
    }
    let headers: BTreeMap<String, String> =
        serde_json::from_str(webhook["custom_headers"].as_str().unwrap()).unwrap();
    let mut request = http
        .post(webhook["url"].as_str().unwrap())
        .header("content-type", "application/json")
        .header("user-agent", "Datadog-Webhook/1.0");
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    let response = request.body(payload).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn errors(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"errors": [message]}))).into_response()
}

/// Records the request and checks the keys: Datadog's 403 when they are wrong here.
fn refused(
    state: &FakeDatadogState,
    site: &str,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    needs_application_key: bool,
) -> Option<Response> {
    state
        .requests
        .lock()
        .unwrap()
        .push((site.to_string(), method.to_string(), path.to_string()));
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let home = *state.home.lock().unwrap() == site;
    let api_ok = home && header("dd-api-key") == Some(API_KEY);
    let app_ok = !needs_application_key || header("dd-application-key") == Some(APPLICATION_KEY);
    (!(api_ok && app_ok)).then(|| errors(StatusCode::FORBIDDEN, "Forbidden"))
}

async fn validate_keys(
    State(state): Shared,
    Path(site): Path<String>,
    headers: HeaderMap,
) -> Response {
    if state.validate_keys_missing.load(Ordering::SeqCst) {
        state
            .requests
            .lock()
            .unwrap()
            .push((site, "GET".into(), "/api/v2/validate_keys".into()));
        return errors(StatusCode::NOT_FOUND, "Not Found");
    }
    if let Some(refused) = refused(
        &state,
        &site,
        "GET",
        "/api/v2/validate_keys",
        &headers,
        true,
    ) {
        return refused;
    }
    let mut response = Json(json!({"status": "ok"})).into_response();
    if let Some(reset) = *state.validate_keys_exhausted_for.lock().unwrap() {
        let headers = response.headers_mut();
        headers.insert("x-ratelimit-limit", "60".parse().unwrap());
        headers.insert("x-ratelimit-period", "60".parse().unwrap());
        headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
        headers.insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
    }
    response
}

async fn validate(State(state): Shared, Path(site): Path<String>, headers: HeaderMap) -> Response {
    if let Some(refused) = refused(&state, &site, "GET", "/api/v1/validate", &headers, false) {
        return refused;
    }
    Json(json!({"valid": true})).into_response()
}

async fn create_webhook(
    State(state): Shared,
    Path(site): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let path = "/api/v1/integration/webhooks/configuration/webhooks";
    if let Some(refused) = refused(&state, &site, "POST", path, &headers, true) {
        return refused;
    }
    let Some(name) = body["name"].as_str() else {
        return errors(
            StatusCode::BAD_REQUEST,
            "Invalid Parameter: name is required",
        );
    };
    let mut webhooks = state.webhooks.lock().unwrap();
    if webhooks.contains_key(name) {
        return errors(
            StatusCode::CONFLICT,
            "Webhook with this name already exists",
        );
    }
    webhooks.insert(name.to_string(), body.clone());
    Json(body).into_response()
}

async fn get_webhook(
    State(state): Shared,
    Path((site, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/api/v1/integration/webhooks/configuration/webhooks/{name}");
    if let Some(refused) = refused(&state, &site, "GET", &path, &headers, true) {
        return refused;
    }
    match state.webhooks.lock().unwrap().get(&name) {
        Some(webhook) => Json(webhook.clone()).into_response(),
        None => errors(StatusCode::NOT_FOUND, "Webhook not found"),
    }
}

async fn delete_webhook(
    State(state): Shared,
    Path((site, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/api/v1/integration/webhooks/configuration/webhooks/{name}");
    if let Some(refused) = refused(&state, &site, "DELETE", &path, &headers, true) {
        return refused;
    }
    if state.webhooks.lock().unwrap().remove(&name).is_none() {
        return errors(StatusCode::NOT_FOUND, "Webhook not found");
    }
    state.deleted_webhooks.lock().unwrap().push(name);
    StatusCode::OK.into_response()
}

/// `GET /api/v2/events`: the stream's events in `[filter[from], filter[to]]`, oldest
/// first, `page[limit]` at a time, `meta.page.after` while more remain.
async fn list_events(
    State(state): Shared,
    Path(site): Path<String>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(refused) = refused(&state, &site, "GET", "/api/v2/events", &headers, true) {
        return refused;
    }
    state.stream_queries.lock().unwrap().push(query.clone());
    let number = |name: &str| query.get(name).and_then(|v| v.parse::<i64>().ok());
    let (Some(from), Some(to)) = (number("filter[from]"), number("filter[to]")) else {
        return errors(
            StatusCode::BAD_REQUEST,
            "filter[from] and filter[to] are required",
        );
    };
    let offset = match query.get("page[cursor]") {
        None => 0,
        Some(cursor) => match base64::engine::general_purpose::STANDARD
            .decode(cursor)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|text| text.strip_prefix("offset:")?.parse::<usize>().ok())
        {
            Some(offset) => offset,
            None => return errors(StatusCode::BAD_REQUEST, "Invalid page cursor"),
        },
    };
    let limit = number("page[limit]")
        .map_or(10, |l| l as usize)
        .min(state.page_size.load(Ordering::SeqCst));
    let matching: Vec<StreamEvent> = state
        .stream
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.timestamp >= from && e.timestamp <= to)
        .cloned()
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|e| {
            json!({
                "id": format!("AAAA{}", e.v1_id),
                "type": "event",
                "attributes": {
                    "tags": ["env:prod", format!("monitor:{}", e.monitor_id)],
                    "timestamp": chrono::DateTime::from_timestamp_millis(e.timestamp).unwrap().to_rfc3339(),
                    "message": "%%% CPU is high %%%",
                    "attributes": {
                        "evt": {"id": e.v1_id, "source_id": 36, "type": "query_alert_monitor"},
                        "title": e.title,
                        "timestamp": e.timestamp,
                        "monitor_id": e.monitor_id,
                        "monitor_groups": [e.group],
                        "aggregation_key": format!("{}-{}", e.monitor_id, e.group),
                        "status": "error",
                        "priority": "normal"
                    }
                }
            })
        })
        .collect();
    let next = offset + page.len();
    let mut meta = json!({"elapsed": 3, "request_id": "fake", "status": "done", "page": {}});
    if next < matching.len() {
        meta["page"]["after"] = base64::engine::general_purpose::STANDARD
            .encode(format!("offset:{next}"))
            .into();
    }
    Json(json!({"data": page, "meta": meta})).into_response()
}

async fn post_event(
    State(state): Shared,
    Path(site): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refused) = refused(&state, &site, "POST", "/api/v1/events", &headers, false) {
        return refused;
    }
    {
        let mut limited = state.rate_limit_posts.lock().unwrap();
        if let Some((count, reset)) = limited.as_mut()
            && *count > 0
        {
            *count -= 1;
            let reset = *reset;
            drop(limited);
            state
                .posted
                .lock()
                .unwrap()
                .push((std::time::Instant::now(), json!({"refused": 429})));
            let mut response = errors(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
            if let Some(reset) = reset {
                let headers = response.headers_mut();
                headers.insert("x-ratelimit-limit", "500".parse().unwrap());
                headers.insert("x-ratelimit-period", "60".parse().unwrap());
                headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
                headers.insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
            }
            return response;
        }
    }
    state
        .posted
        .lock()
        .unwrap()
        .push((std::time::Instant::now(), body.clone()));
    (
        StatusCode::ACCEPTED,
        Json(json!({"status": "ok", "event": {"id": 1, "title": body["title"], "tags": body["tags"]}})),
    )
        .into_response()
}
