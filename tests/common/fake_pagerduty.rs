//! A fake PagerDuty on loopback that speaks the protocols switchboard uses: the REST
//! API of each region under its own path prefix (`/us/...`, `/eu/...`) with
//! `Token token=` and `Bearer` auth, PagerDuty's error bodies (`{"error": {"message",
//! "code", "errors"}}`) and rate-limit answers; the identity service's OAuth token
//! endpoint with refresh-token rotation and an id_token naming the region; webhook
//! subscriptions whose secret is returned once; incidents with `From`; the Events API
//! v2 folding events by `dedup_key`; and a signer that signs deliveries with one or
//! more secrets. It records what it was asked; knobs make it misbehave.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::Notify;

pub const USER_KEY: &str = "u+pagerduty-user-key-for-tests";
pub const ACCOUNT_KEY: &str = "pagerduty-account-key-for-tests";
pub const CLIENT_ID: &str = "pd-client-id";
pub const CLIENT_SECRET: &str = "pd-client-secret";
pub const GOOD_CODE: &str = "pd-good-code";
pub const USER_EMAIL: &str = "jane@acme.test";
pub const ACCOUNT_ID: &str = "PACCT01";

/// A REST call as the fake saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub region: String,
    pub method: String,
    pub path: String,
    pub authorization: String,
    pub from: Option<String>,
    pub body: Value,
}

#[derive(Default)]
pub struct FakePagerDutyState {
    /// The region the account lives in: keys and tokens work only there.
    pub home: Mutex<String>,
    pub calls: Mutex<Vec<Call>>,
    /// Valid OAuth access tokens and refresh tokens.
    pub access_tokens: Mutex<Vec<String>>,
    pub refresh_tokens: Mutex<Vec<String>>,
    pub refreshed: AtomicU32,
    next_token: AtomicU32,
    /// Lifetime of access tokens, in seconds.
    pub expires_in: AtomicU64,
    /// The scopes a token answer grants (PagerDuty drops unknown ones silently).
    pub granted: Mutex<String>,
    /// Webhook subscriptions by id: the body as created, its secret, whether
    /// PagerDuty has it temporarily disabled.
    pub subscriptions: Mutex<BTreeMap<String, (Value, String, bool)>>,
    pub deleted_subscriptions: Mutex<Vec<String>>,
    /// Incidents by id: (number, status).
    pub incidents: Mutex<BTreeMap<String, (u64, String)>>,
    /// Incident writes: (incident id, status or note, `From`).
    pub writes: Mutex<Vec<(String, String, String)>>,
    /// While set, an incident write waits for this before it is answered.
    pub hold_writes: Mutex<Option<Arc<Notify>>>,
    /// Events API v2 events received.
    pub enqueued: Mutex<Vec<Value>>,
    /// Incidents the Events API opened, by dedup key: (incident id, status).
    pub alerts: Mutex<BTreeMap<String, (String, String)>>,
    /// Answer the next N REST requests with a 429, resetting in this many seconds
    /// (`None`: without the `ratelimit-*` headers).
    pub rate_limit_next: Mutex<Option<(usize, Option<u64>)>>,
    /// When each rate-limited request and the next one came.
    pub request_times: Mutex<Vec<(String, std::time::Instant)>>,
}

pub struct FakePagerDuty {
    pub addr: SocketAddr,
    pub state: Arc<FakePagerDutyState>,
}

type Shared = State<Arc<FakePagerDutyState>>;

impl FakePagerDuty {
    /// A fake whose account lives in `home` (`us` or `eu`).
    pub async fn start(home: &str) -> FakePagerDuty {
        let state = Arc::new(FakePagerDutyState::default());
        *state.home.lock().unwrap() = home.to_string();
        state.expires_in.store(3600, Ordering::SeqCst);
        *state.granted.lock().unwrap() = "write".to_string();
        let app = Router::new()
            .route("/{region}/abilities", get(abilities))
            .route("/{region}/users/me", get(users_me))
            .route("/{region}/webhook_subscriptions", post(create_subscription))
            .route(
                "/{region}/webhook_subscriptions/{id}",
                get(get_subscription).delete(delete_subscription),
            )
            .route(
                "/{region}/webhook_subscriptions/{id}/enable",
                post(enable_subscription),
            )
            .route(
                "/{region}/incidents/{id}",
                put(update_incident).get(get_incident),
            )
            .route("/{region}/incidents/{id}/notes", post(add_note))
            .route("/identity/oauth/token", post(token))
            .route("/events/{region}/v2/enqueue", post(enqueue))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakePagerDuty { addr, state }
    }

    pub fn api_base(&self, region: &str) -> String {
        format!("http://{}/{region}", self.addr)
    }

    /// The `[connectors.pagerduty]` section pointing at this fake (with the OAuth
    /// app), plus `extra` settings.
    pub fn config_section(&self, extra: &str) -> String {
        let addr = self.addr;
        format!(
            "[connectors.pagerduty]\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n\
             identity_base_url = \"http://{addr}/identity\"\n{extra}\n\
             [connectors.pagerduty.api_urls]\nus = \"http://{addr}/us\"\neu = \"http://{addr}/eu\"\n\
             [connectors.pagerduty.events_urls]\nus = \"http://{addr}/events/us\"\neu = \"http://{addr}/events/eu\"\n"
        )
    }

    pub fn open_incident(&self, id: &str, number: u64) {
        self.state
            .incidents
            .lock()
            .unwrap()
            .insert(id.to_string(), (number, "triggered".to_string()));
    }

    pub fn incident_status(&self, id: &str) -> Option<String> {
        self.state
            .incidents
            .lock()
            .unwrap()
            .get(id)
            .map(|(_, s)| s.clone())
    }

    pub fn only_subscription(&self) -> (String, Value, String) {
        let subscriptions = self.state.subscriptions.lock().unwrap();
        assert_eq!(subscriptions.len(), 1, "{subscriptions:?}");
        let (id, (body, secret, _)) = subscriptions.iter().next().unwrap();
        (id.clone(), body.clone(), secret.clone())
    }

    pub fn calls_to(&self, path_part: &str) -> Vec<Call> {
        self.state
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path.contains(path_part))
            .cloned()
            .collect()
    }
}

/// An incident webhook event as PagerDuty delivers it.
pub fn incident_event(
    event_type: &str,
    incident: &str,
    number: u64,
    status: &str,
    agent: &str,
) -> Value {
    json!({"event": {
        "id": uuid::Uuid::new_v4().to_string(),
        "event_type": event_type,
        "resource_type": "incident",
        "occurred_at": chrono::Utc::now().to_rfc3339(),
        "agent": {"id": "PUSER1", "summary": agent, "type": "user_reference"},
        "client": null,
        "data": {"id": incident, "type": "incident", "number": number, "status": status,
            "title": "Disk full on db-1", "urgency": "high",
            "html_url": format!("https://acme.pagerduty.com/incidents/{incident}"),
            "service": {"id": "PSVC1", "summary": "Checkout", "type": "service_reference"},
            "assignees": [{"id": "PUSER2", "summary": "Sam Roe", "type": "user_reference"}],
            "escalation_policy": {"id": "PEP1", "summary": "Default"},
            "priority": null}
    }})
}

/// Delivers `body` to `url` as PagerDuty does: signed `v1=` with each of `secrets`,
/// under `webhook_id`. The status and answer.
pub async fn deliver(
    http: &reqwest::Client,
    url: &str,
    body: &[u8],
    signature: Option<String>,
    webhook_id: &str,
) -> (u16, Value) {
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", "PagerDuty-Webhook/V3.0")
        .header("x-webhook-id", webhook_id)
        .header("x-webhook-subscription", "PSUB")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("x-pagerduty-signature", signature);
    }
    let response = request.send().await.expect("daemon answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The `X-PagerDuty-Signature` of `body` under each of `secrets`.
pub fn sign(secrets: &[&str], body: &[u8]) -> String {
    use hmac::Mac;
    secrets
        .iter()
        .map(|secret| {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(body);
            format!("v1={}", hex::encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn error(status: StatusCode, message: &str, code: u32, errors: &[&str]) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "code": code, "errors": errors}})),
    )
        .into_response()
}

/// Who a request is, when its credentials are good in this region: `user` (a user
/// key or an OAuth token) or `account`.
fn caller(
    state: &FakePagerDutyState,
    region: &str,
    headers: &HeaderMap,
) -> Result<&'static str, Box<Response>> {
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if accept != "application/vnd.pagerduty+json;version=2" {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "Invalid Input Provided",
            2001,
            &["Accept must name version 2"],
        )));
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let home = *state.home.lock().unwrap() == region;
    let kind = if let Some(key) = auth.strip_prefix("Token token=") {
        match key {
            USER_KEY if home => Some("user"),
            ACCOUNT_KEY if home => Some("account"),
            _ => None,
        }
    } else if let Some(token) = auth.strip_prefix("Bearer ") {
        (home
            && state
                .access_tokens
                .lock()
                .unwrap()
                .iter()
                .any(|t| t == token))
        .then_some("user")
    } else {
        None
    };
    kind.ok_or_else(|| Box::new(error(StatusCode::UNAUTHORIZED, "Unauthorized", 2006, &[])))
}

/// Records the call, answers a knob's 429 if one is set, and checks the caller.
fn enter(
    state: &FakePagerDutyState,
    region: &str,
    method: &str,
    path: String,
    headers: &HeaderMap,
    body: Value,
) -> Result<&'static str, Box<Response>> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    state.calls.lock().unwrap().push(Call {
        region: region.to_string(),
        method: method.to_string(),
        path: path.clone(),
        authorization: header("authorization").unwrap_or_default(),
        from: header("from"),
        body,
    });
    state
        .request_times
        .lock()
        .unwrap()
        .push((path, std::time::Instant::now()));
    let mut limited = state.rate_limit_next.lock().unwrap();
    if let Some((left, reset)) = limited.as_mut()
        && *left > 0
    {
        {
            *left -= 1;
            let reset = *reset;
            if *left == 0 {
                *limited = None;
            }
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate Limit Exceeded",
                2020,
                &[],
            );
            if let Some(reset) = reset {
                let headers = response.headers_mut();
                headers.insert("ratelimit-limit", "960".parse().unwrap());
                headers.insert("ratelimit-remaining", "0".parse().unwrap());
                headers.insert("ratelimit-reset", reset.to_string().parse().unwrap());
            }
            return Err(Box::new(response));
        }
    }
    drop(limited);
    caller(state, region, headers)
}

async fn abilities(
    State(state): Shared,
    Path(region): Path<String>,
    headers: HeaderMap,
) -> Response {
    match enter(
        &state,
        &region,
        "GET",
        "/abilities".into(),
        &headers,
        Value::Null,
    ) {
        Ok(_) => {
            Json(json!({"abilities": ["teams", "read_only_users", "urgencies"]})).into_response()
        }
        Err(response) => *response,
    }
}

async fn users_me(
    State(state): Shared,
    Path(region): Path<String>,
    headers: HeaderMap,
) -> Response {
    match enter(&state, &region, "GET", "/users/me".into(), &headers, Value::Null) {
        Ok("user") => Json(json!({"user": {"id": "PUSER1", "type": "user", "name": "Jane Doe", "email": USER_EMAIL}})).into_response(),
        Ok(_) => error(
            StatusCode::BAD_REQUEST,
            "Invalid Input Provided",
            2001,
            &["Requests with an account-level API key cannot use this endpoint"],
        ),
        Err(response) => *response,
    }
}

async fn create_subscription(
    State(state): Shared,
    Path(region): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(response) = enter(
        &state,
        &region,
        "POST",
        "/webhook_subscriptions".into(),
        &headers,
        body.clone(),
    ) {
        return *response;
    }
    let subscription = &body["webhook_subscription"];
    if subscription["delivery_method"]["url"].as_str().is_none()
        || subscription["events"].as_array().is_none_or(Vec::is_empty)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid Input Provided",
            2001,
            &["delivery_method.url and events are required"],
        );
    }
    let mut subscriptions = state.subscriptions.lock().unwrap();
    let id = format!("PSUB{:03}", subscriptions.len() + 1);
    let secret = format!("pd-secret-{}", uuid::Uuid::new_v4().simple());
    subscriptions.insert(id.clone(), (body.clone(), secret.clone(), false));
    let mut answer = subscription.clone();
    answer["id"] = json!(id);
    answer["active"] = json!(true);
    answer["delivery_method"]["secret"] = json!(secret);
    (
        StatusCode::CREATED,
        Json(json!({"webhook_subscription": answer})),
    )
        .into_response()
}

async fn get_subscription(
    State(state): Shared,
    Path((region, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = enter(
        &state,
        &region,
        "GET",
        format!("/webhook_subscriptions/{id}"),
        &headers,
        Value::Null,
    ) {
        return *response;
    }
    match state.subscriptions.lock().unwrap().get(&id) {
        Some((body, _, disabled)) => {
            let mut answer = body["webhook_subscription"].clone();
            answer["id"] = json!(id);
            // Later reads never show the secret.
            answer["delivery_method"]["secret"] = Value::Null;
            answer["active"] = json!(true);
            answer["delivery_method"]["temporarily_disabled"] = json!(disabled);
            answer["temporarily_disabled"] = json!(disabled);
            Json(json!({"webhook_subscription": answer})).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "Not Found", 2100, &[]),
    }
}

async fn enable_subscription(
    State(state): Shared,
    Path((region, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = enter(
        &state,
        &region,
        "POST",
        format!("/webhook_subscriptions/{id}/enable"),
        &headers,
        Value::Null,
    ) {
        return *response;
    }
    match state.subscriptions.lock().unwrap().get_mut(&id) {
        Some(entry) => {
            entry.2 = false;
            Json(json!({"webhook_subscription": {"id": id, "active": true}})).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "Not Found", 2100, &[]),
    }
}

async fn delete_subscription(
    State(state): Shared,
    Path((region, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = enter(
        &state,
        &region,
        "DELETE",
        format!("/webhook_subscriptions/{id}"),
        &headers,
        Value::Null,
    ) {
        return *response;
    }
    match state.subscriptions.lock().unwrap().remove(&id) {
        Some(_) => {
            state.deleted_subscriptions.lock().unwrap().push(id);
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(StatusCode::NOT_FOUND, "Not Found", 2100, &[]),
    }
}

async fn get_incident(
    State(state): Shared,
    Path((region, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = enter(
        &state,
        &region,
        "GET",
        format!("/incidents/{id}"),
        &headers,
        Value::Null,
    ) {
        return *response;
    }
    match state.incidents.lock().unwrap().get(&id) {
        Some((number, status)) => Json(json!({"incident": {"id": id, "type": "incident", "incident_number": number, "status": status}})).into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found", 2100, &["Incident Not Found"]),
    }
}

async fn update_incident(
    State(state): Shared,
    Path((region, id)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(response) = enter(
        &state,
        &region,
        "PUT",
        format!("/incidents/{id}"),
        &headers,
        body.clone(),
    ) {
        return *response;
    }
    let hold = state.hold_writes.lock().unwrap().clone();
    if let Some(hold) = hold {
        hold.notified().await;
    }
    let Some(from) = headers.get("from").and_then(|v| v.to_str().ok()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid Input Provided",
            2001,
            &[
                "You must specify a user's email address in the \"From\" header to perform this action",
            ],
        );
    };
    if !from.ends_with("@acme.test") {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid Input Provided",
            2001,
            &["Requester User Not Found (From)"],
        );
    }
    let wanted = body["incident"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut incidents = state.incidents.lock().unwrap();
    let Some((number, status)) = incidents.get_mut(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            "Not Found",
            2100,
            &["Incident Not Found"],
        );
    };
    if status == "resolved" {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid Input Provided",
            2001,
            &["Incident Already Resolved"],
        );
    }
    *status = wanted.clone();
    state
        .writes
        .lock()
        .unwrap()
        .push((id.clone(), wanted.clone(), from.to_string()));
    Json(json!({"incident": {"id": id, "incident_number": number, "status": wanted}}))
        .into_response()
}

async fn add_note(
    State(state): Shared,
    Path((region, id)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(response) = enter(
        &state,
        &region,
        "POST",
        format!("/incidents/{id}/notes"),
        &headers,
        body.clone(),
    ) {
        return *response;
    }
    let Some(from) = headers.get("from").and_then(|v| v.to_str().ok()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid Input Provided",
            2001,
            &["From is required"],
        );
    };
    let content = body["note"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    state
        .writes
        .lock()
        .unwrap()
        .push((id, format!("note: {content}"), from.to_string()));
    (
        StatusCode::CREATED,
        Json(json!({"note": {"id": "PNOTE1", "content": content}})),
    )
        .into_response()
}

fn id_token(state: &FakePagerDutyState, addr_base: &str) -> String {
    let home = state.home.lock().unwrap().clone();
    let claims = json!({"iss": "https://identity.pagerduty.com", "aud": format!("{addr_base}/{home}"),
        "subdomain": "acme", "account_id": ACCOUNT_ID, "user_id": "PUSER1",
        "iat": chrono::Utc::now().timestamp(), "exp": chrono::Utc::now().timestamp() + 3600});
    let encode = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.c2lnbmF0dXJl",
        encode(&json!({"alg": "RS256", "typ": "JWT"})),
        encode(&claims)
    )
}

async fn token(State(state): Shared, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let oauth_error = |code: &str, description: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": code, "error_description": description})),
        )
            .into_response()
    };
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_client", "error_description": "Client authentication failed"}))).into_response();
    }
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            if form.get("code").map(String::as_str) != Some(GOOD_CODE) {
                return oauth_error(
                    "invalid_grant",
                    "The provided authorization grant is invalid, expired or revoked",
                );
            }
            if !form.contains_key("redirect_uri") {
                return oauth_error("invalid_request", "redirect_uri is missing");
            }
        }
        Some("refresh_token") => {
            let presented = form.get("refresh_token").cloned().unwrap_or_default();
            let mut valid = state.refresh_tokens.lock().unwrap();
            let Some(index) = valid.iter().position(|t| *t == presented) else {
                return oauth_error(
                    "invalid_grant",
                    "The refresh token is invalid or was already used",
                );
            };
            // Rotation: a refresh token works once.
            valid.remove(index);
            state.refreshed.fetch_add(1, Ordering::SeqCst);
        }
        _ => return oauth_error("unsupported_grant_type", "grant_type is not supported"),
    }
    let n = state.next_token.fetch_add(1, Ordering::SeqCst);
    let (access, refresh) = (format!("pd-access-{n}"), format!("pd-refresh-{n}"));
    state.access_tokens.lock().unwrap().push(access.clone());
    state.refresh_tokens.lock().unwrap().push(refresh.clone());
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Json(json!({
        "access_token": access, "token_type": "bearer", "refresh_token": refresh,
        "expires_in": state.expires_in.load(Ordering::SeqCst),
        "scope": state.granted.lock().unwrap().clone(),
        "id_token": id_token(&state, &format!("http://{host}")),
    }))
    .into_response()
}

async fn enqueue(
    State(state): Shared,
    Path(_region): Path<String>,
    Json(event): Json<Value>,
) -> Response {
    let invalid = |why: &str| {
        (StatusCode::BAD_REQUEST, Json(json!({"status": "invalid event", "message": "Event object is invalid", "errors": [why]}))).into_response()
    };
    let Some(routing_key) = event["routing_key"].as_str() else {
        return invalid("'routing_key' is missing");
    };
    if routing_key.len() != 32 {
        return invalid("Invalid routing key");
    }
    let action = event["event_action"].as_str().unwrap_or_default();
    let dedup_key = event["dedup_key"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if action == "trigger" && event["payload"]["summary"].as_str().is_none() {
        return invalid("'payload.summary' is missing");
    }
    state.enqueued.lock().unwrap().push(event.clone());
    let mut alerts = state.alerts.lock().unwrap();
    let count = alerts.len();
    match action {
        "trigger" => {
            let entry = alerts
                .entry(dedup_key.clone())
                .or_insert_with(|| (format!("PINCEV{count}"), "triggered".to_string()));
            if entry.1 == "resolved" {
                *entry = (format!("PINCEV{count}"), "triggered".to_string());
            }
        }
        "acknowledge" | "resolve" => {
            if let Some(entry) = alerts.get_mut(&dedup_key) {
                entry.1 = if action == "resolve" {
                    "resolved"
                } else {
                    "acknowledged"
                }
                .to_string();
            }
        }
        _ => return invalid("'event_action' must be trigger, acknowledge or resolve"),
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({"status": "success", "message": "Event processed", "dedup_key": dedup_key})),
    )
        .into_response()
}
