//! A fake Google on loopback for the GCP connector: the OAuth token endpoint (the
//! JWT-bearer grant, verifying each assertion with the service account's public key
//! and enforcing `aud`, `iss` and the one-hour limit, answering Google's error bodies),
//! token info, Cloud Resource Manager's `projects.get` (which can refuse with
//! `PERMISSION_DENIED`), Google's signing keys (JWKS, rotatable), and a Pub/Sub
//! push sender that signs OIDC tokens with them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

pub const PROJECT: &str = "acme-prod";
pub const CLIENT_EMAIL: &str = "switchboard@acme-prod.iam.gserviceaccount.com";
pub const KEY_ID: &str = "0f3e9d1c2b4a59687766554433221100aabbccdd";
pub const PUSH_ACCOUNT: &str = "pubsub-push@acme-prod.iam.gserviceaccount.com";
pub const SUBSCRIPTION: &str = "projects/acme-prod/subscriptions/alerts-push";
pub const SERVICE_ACCOUNT_PEM: &str = include_str!("../fixtures/gcp-service-account.pem");
const SERVICE_ACCOUNT_PUBLIC: &str = include_str!("../fixtures/gcp-service-account.pub.pem");
/// Google's signing keys: (kid, private PEM, public JWK).
pub const OIDC_KEYS: [(&str, &str, &str); 2] = [
    (
        "google-oidc-1",
        include_str!("../fixtures/google-oidc-1.pem"),
        include_str!("../fixtures/google-oidc-1.jwk.json"),
    ),
    (
        "google-oidc-2",
        include_str!("../fixtures/google-oidc-2.pem"),
        include_str!("../fixtures/google-oidc-2.jwk.json"),
    ),
];
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

#[derive(Default)]
pub struct FakeGoogleState {
    pub base_url: Mutex<String>,
    /// Access tokens minted.
    pub minted: AtomicU32,
    /// Every verified assertion: its `kid` and claims.
    pub assertions: Mutex<Vec<(String, Value)>>,
    /// `expires_in` of the tokens it mints (Google: 3599).
    pub token_lifetime: Mutex<u64>,
    /// Refuse assertions with `invalid_grant` (the key was deleted) while set.
    pub invalid_grant: AtomicBool,
    /// Live access tokens: token → scope.
    pub tokens: Mutex<HashMap<String, String>>,
    /// `projects.get` answers `PERMISSION_DENIED` while set.
    pub deny_project: AtomicBool,
    /// The kids Google's JWKS lists now (indexes into [`OIDC_KEYS`]).
    pub published: Mutex<Vec<usize>>,
    pub jwks_fetches: AtomicU32,
    /// The JWKS endpoint answers 503 while set.
    pub jwks_down: AtomicBool,
}

pub struct FakeGoogle {
    pub addr: SocketAddr,
    pub state: Arc<FakeGoogleState>,
}

type Shared = State<Arc<FakeGoogleState>>;

impl FakeGoogle {
    pub async fn start() -> FakeGoogle {
        let state = Arc::new(FakeGoogleState::default());
        *state.token_lifetime.lock().unwrap() = 3599;
        *state.published.lock().unwrap() = vec![0];
        let app = Router::new()
            .route("/token", post(token))
            .route("/tokeninfo", get(token_info))
            .route("/v1/projects/{id}", get(project))
            .route("/oauth2/v3/certs", get(certs))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        *state.base_url.lock().unwrap() = format!("http://{addr}");
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeGoogle { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The `[connectors.gcp]` section pointing at this fake.
    pub fn config_section(&self) -> String {
        format!(
            "[connectors.gcp]\ntoken_url = \"{}\"\ntokeninfo_url = \"{}\"\n\
             resource_manager_url = \"{}\"\njwks_url = \"{}\"\njwks_refetch_interval = \"300ms\"\n",
            self.url("/token"),
            self.url("/tokeninfo"),
            self.url(""),
            self.url("/oauth2/v3/certs"),
        )
    }

    /// The service-account key file Google hands out, its `token_uri` this fake.
    pub fn service_account_key(&self) -> Value {
        json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": KEY_ID,
            "private_key": SERVICE_ACCOUNT_PEM,
            "client_email": CLIENT_EMAIL,
            "client_id": "104648735294671234567",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.url("/token"),
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "universe_domain": "googleapis.com"
        })
    }
}

/// The OIDC token Pub/Sub push puts in `Authorization`, signed with Google's key
/// `key` (an index into [`OIDC_KEYS`]); `changes` replace or (as null) remove claims.
pub fn push_token(key: usize, audience: &str, changes: Value) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "aud": audience,
        "azp": "113774264463038321964",
        "email": PUSH_ACCOUNT,
        "email_verified": true,
        "exp": now + 3600,
        "iat": now,
        "iss": "https://accounts.google.com",
        "sub": "113774264463038321964"
    });
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    sign(key, &claims, OIDC_KEYS[key].0)
}

/// Signs `claims` with Google's key `key`, naming `kid` in the header.
pub fn sign(key: usize, claims: &Value, kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_string());
    let encoding = EncodingKey::from_rsa_pem(OIDC_KEYS[key].1.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &encoding).unwrap()
}

/// A push delivery's body: `data` base64-encoded as Pub/Sub does.
pub fn delivery(message_id: &str, data: &Value) -> Value {
    json!({
        "message": {
            "attributes": {"origin": "cloud-monitoring"},
            "data": base64::engine::general_purpose::STANDARD.encode(data.to_string()),
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": "2026-12-04T10:00:00.123Z",
            "publish_time": "2026-12-04T10:00:00.123Z"
        },
        "subscription": SUBSCRIPTION
    })
}

/// A Cloud Monitoring incident notification, as it arrives through Pub/Sub.
pub fn incident(state: &str) -> Value {
    json!({"version": "1.2", "incident": {
        "incident_id": "0.nbz3uavqjrwl",
        "scoping_project_id": PROJECT,
        "url": "https://console.cloud.google.com/monitoring/alerting/incidents/0.nbz3uavqjrwl?project=acme-prod",
        "state": state,
        "started_at": 1764842400,
        "summary": "Request latency for checkout is above the threshold of 2.000 with a value of 3.140.",
        "policy_name": "Checkout latency",
        "condition_name": "p99 latency above 2 s"
    }})
}

/// Pushes `body` to `url` as Pub/Sub does: (status, answer).
pub async fn push(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)",
        );
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.body(body.to_string()).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn token(State(state): Shared, body: String) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return oauth_error("unsupported_grant_type", "Invalid grant_type: ");
    }
    let Some(assertion) = form.get("assertion") else {
        return oauth_error("invalid_request", "Missing required parameter: assertion");
    };
    if state.invalid_grant.load(Ordering::SeqCst) {
        return oauth_error("invalid_grant", "Invalid JWT Signature.");
    }
    let Ok(header) = jsonwebtoken::decode_header(assertion) else {
        return oauth_error("invalid_grant", "Invalid JWT: not a JWT.");
    };
    if header.kid.as_deref() != Some(KEY_ID) || header.alg != Algorithm::RS256 {
        return oauth_error("invalid_grant", "Invalid JWT Signature.");
    }
    let audience = format!("{}/token", state.base_url.lock().unwrap());
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[&audience]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    validation.leeway = 0;
    let key = DecodingKey::from_rsa_pem(SERVICE_ACCOUNT_PUBLIC.as_bytes()).unwrap();
    let claims = match jsonwebtoken::decode::<Value>(assertion, &key, &validation) {
        Ok(data) => data.claims,
        Err(_) => return oauth_error("invalid_grant", "Invalid JWT Signature."),
    };
    let (iat, exp) = (claims["iat"].as_i64(), claims["exp"].as_i64());
    let now = chrono::Utc::now().timestamp();
    let short_lived =
        matches!((iat, exp), (Some(iat), Some(exp)) if exp - iat <= 3600 && iat <= now + 60);
    if !short_lived {
        return oauth_error(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        );
    }
    let Some(scope) = claims["scope"].as_str().filter(|s| !s.is_empty()) else {
        return oauth_error(
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        );
    };
    state
        .assertions
        .lock()
        .unwrap()
        .push((KEY_ID.to_string(), claims.clone()));
    let n = state.minted.fetch_add(1, Ordering::SeqCst) + 1;
    let access_token = format!("ya29.fake-{n}-{}", uuid::Uuid::new_v4().simple());
    state
        .tokens
        .lock()
        .unwrap()
        .insert(access_token.clone(), scope.to_string());
    Json(json!({
        "access_token": access_token,
        "expires_in": *state.token_lifetime.lock().unwrap(),
        "token_type": "Bearer"
    }))
    .into_response()
}

async fn token_info(
    State(state): Shared,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let scope = query
        .get("access_token")
        .and_then(|t| state.tokens.lock().unwrap().get(t).cloned());
    match scope {
        Some(scope) => Json(json!({
            "azp": "104648735294671234567", "aud": "104648735294671234567",
            "scope": scope, "exp": (chrono::Utc::now().timestamp() + 3000).to_string(),
            "expires_in": "3000", "email": CLIENT_EMAIL, "email_verified": "true",
            "access_type": "online"
        }))
        .into_response(),
        None => oauth_error("invalid_token", "Invalid Value"),
    }
}

async fn project(State(state): Shared, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let known = token.is_some_and(|t| state.tokens.lock().unwrap().contains_key(&t));
    if !known {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}})),
        )
            .into_response();
    }
    if state.deny_project.load(Ordering::SeqCst) || id != PROJECT {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"error": {"code": 403, "message": "The caller does not have permission", "status": "PERMISSION_DENIED"}})),
        )
            .into_response();
    }
    Json(json!({"projectNumber": "415104041262", "projectId": id, "lifecycleState": "ACTIVE", "name": "Acme production"}))
        .into_response()
}

async fn certs(State(state): Shared) -> Response {
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if state.jwks_down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let keys: Vec<Value> = state
        .published
        .lock()
        .unwrap()
        .iter()
        .map(|&i| serde_json::from_str(OIDC_KEYS[i].2).unwrap())
        .collect();
    Json(json!({"keys": keys})).into_response()
}
