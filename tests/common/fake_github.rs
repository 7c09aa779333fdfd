//! A fake GitHub on loopback that speaks the REST shapes switchboard uses: app JWT
//! checks (RS256, GitHub's claim rules), installations, installation access tokens,
//! paginated repository lists with `Link` headers, GitHub's error bodies and its
//! rate-limit answers. Knobs make it misbehave on purpose.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard::connectors::github::signature;
use switchboard::secret::Secret;

use super::TestDaemon;

pub const APP_ID: &str = "12345";
pub const APP_SLUG: &str = "switchboard-test";
pub const WEBHOOK_SECRET: &str = "github-webhook-secret-for-tests";
pub const CLIENT_ID: &str = "Iv1.switchboardtest";
pub const CLIENT_SECRET: &str = "github-client-secret-for-tests";
pub const PRIVATE_KEY_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/github-app-test-key.pem"
);
const PUBLIC_KEY: &str = include_str!("../fixtures/github-app-test-key.pub.pem");

#[derive(Debug, Clone, Deserialize)]
pub struct SeenClaims {
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
}

#[derive(Default)]
pub struct FakeGithubState {
    /// Installations of the app, by id: (account login, repositories).
    pub installations: Mutex<HashMap<u64, (String, Vec<String>)>>,
    /// Installation tokens handed out: token -> installation id.
    pub tokens: Mutex<HashMap<String, u64>>,
    pub claims: Mutex<Vec<SeenClaims>>,
    pub minted: AtomicU32,
    pub requests: AtomicU32,
    pub deleted: Mutex<Vec<u64>>,
    /// Answer the next N app-JWT calls with 401, as GitHub does for a bad JWT.
    pub refuse_jwt: AtomicU32,
    /// Answer the next request with a secondary rate limit; `Some(n)` adds retry-after: n.
    pub secondary_limit: Mutex<Option<Option<u64>>>,
    /// Answer installation lookups with `x-ratelimit-remaining: 0`, resetting in this many seconds.
    pub exhausted_for: Mutex<Option<u64>>,
    /// Seconds an installation token lives (GitHub: 3600).
    pub token_lifetime: Mutex<i64>,
    pub base_url: Mutex<String>,
    /// User authorizations GitHub would send to the setup URL: code -> the
    /// installations that user can access. A code is exchanged once.
    pub user_codes: Mutex<HashMap<String, Vec<u64>>>,
    /// User tokens handed out for those codes: token -> installations.
    pub user_tokens: Mutex<HashMap<String, Vec<u64>>>,
}

pub struct FakeGithub {
    pub addr: SocketAddr,
    pub state: Arc<FakeGithubState>,
}

impl FakeGithub {
    pub async fn start() -> FakeGithub {
        let state = Arc::new(FakeGithubState::default());
        *state.token_lifetime.lock().unwrap() = 3600;
        let app = Router::new()
            .route(
                "/app/installations/{id}",
                get(installation).delete(delete_installation),
            )
            .route("/app/installations/{id}/access_tokens", post(access_token))
            .route("/installation/repositories", get(repositories))
            .route("/login/oauth/access_token", post(exchange_code))
            .route("/user/installations", get(user_installations))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        *state.base_url.lock().unwrap() = format!("http://{addr}");
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeGithub { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An installation of the app with `repositories` (named `owner/repo-N`).
    pub fn install(&self, id: u64, account: &str, repositories: usize) {
        let names = (1..=repositories)
            .map(|n| format!("{account}/repo-{n:03}"))
            .collect();
        self.state
            .installations
            .lock()
            .unwrap()
            .insert(id, (account.to_string(), names));
    }

    /// The code GitHub sends to the setup URL after someone who can access
    /// `installations` installed the app.
    pub fn installer(&self, code: &str, installations: &[u64]) {
        self.state
            .user_codes
            .lock()
            .unwrap()
            .insert(code.to_string(), installations.to_vec());
    }

    /// The `[connectors.github]` section pointing at this fake.
    pub fn config_section(&self) -> String {
        format!(
            "[connectors.github]\napp_id = \"{APP_ID}\"\napp_slug = \"{APP_SLUG}\"\n\
             private_key_file = \"{PRIVATE_KEY_PATH}\"\nwebhook_secret = \"{WEBHOOK_SECRET}\"\n\
             client_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n\
             api_base_url = \"{url}\"\nweb_base_url = \"{url}\"\n",
            url = self.url()
        )
    }
}

type Shared = State<Arc<FakeGithubState>>;

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"message": message, "documentation_url": "https://docs.github.com/rest"})),
    )
        .into_response()
}

/// Every request first meets the knobs: a pending secondary rate limit.
fn limited(state: &FakeGithubState) -> Option<Response> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let pending = state.secondary_limit.lock().unwrap().take()?;
    let mut response = error(
        StatusCode::FORBIDDEN,
        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
    );
    if let Some(seconds) = pending {
        response
            .headers_mut()
            .insert("retry-after", seconds.to_string().parse().unwrap());
    }
    Some(response)
}

/// GitHub's checks on an app JWT: RS256 with the app's key, `iss` the app id, not
/// expired, `iat` not in the future, and at most 10 minutes between them.
fn check_jwt(state: &FakeGithubState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    if state
        .refuse_jwt
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "'Expiration time' claim ('exp') is too far in the future",
        )));
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            error(
                StatusCode::UNAUTHORIZED,
                "A JSON web token could not be decoded",
            )
        })?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[APP_ID]);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.leeway = 0;
    let key = DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap();
    let claims = jsonwebtoken::decode::<SeenClaims>(token, &key, &validation)
        .map_err(|_| {
            error(
                StatusCode::UNAUTHORIZED,
                "A JSON web token could not be decoded",
            )
        })?
        .claims;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if claims.iat > now + 1 || claims.exp.saturating_sub(claims.iat) > 600 {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "'Expiration time' claim ('exp') is too far in the future",
        )));
    }
    state.claims.lock().unwrap().push(claims);
    Ok(())
}

fn installation_json(id: u64, account: &str) -> Value {
    json!({
        "id": id,
        "account": {"login": account, "id": id * 10, "type": "Organization"},
        "repository_selection": "selected",
        "permissions": {"contents": "read", "pull_requests": "write", "metadata": "read"},
        "suspended_at": null,
        "app_id": APP_ID.parse::<u64>().unwrap(),
    })
}

async fn installation(State(state): Shared, Path(id): Path<u64>, headers: HeaderMap) -> Response {
    if let Some(limited) = limited(&state) {
        return limited;
    }
    if let Err(refused) = check_jwt(&state, &headers) {
        return *refused;
    }
    let mut response = match state.installations.lock().unwrap().get(&id) {
        Some((account, _)) => Json(installation_json(id, account)).into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    };
    if let Some(seconds) = *state.exhausted_for.lock().unwrap() {
        let reset = chrono::Utc::now().timestamp() as u64 + seconds;
        let headers = response.headers_mut();
        headers.insert("x-ratelimit-limit", "5000".parse().unwrap());
        headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
        headers.insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
    }
    response
}

async fn delete_installation(
    State(state): Shared,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Response {
    if let Some(limited) = limited(&state) {
        return limited;
    }
    if let Err(refused) = check_jwt(&state, &headers) {
        return *refused;
    }
    match state.installations.lock().unwrap().remove(&id) {
        Some(_) => {
            state.deleted.lock().unwrap().push(id);
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn access_token(State(state): Shared, Path(id): Path<u64>, headers: HeaderMap) -> Response {
    if let Some(limited) = limited(&state) {
        return limited;
    }
    if let Err(refused) = check_jwt(&state, &headers) {
        return *refused;
    }
    if !state.installations.lock().unwrap().contains_key(&id) {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let n = state.minted.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("ghs_fake{id}x{n:04}");
    state.tokens.lock().unwrap().insert(token.clone(), id);
    let lifetime = *state.token_lifetime.lock().unwrap();
    let expires_at = (chrono::Utc::now() + chrono::Duration::seconds(lifetime))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    (
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "expires_at": expires_at,
            "permissions": {"contents": "read"},
            "repository_selection": "selected",
        })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Page {
    per_page: Option<usize>,
    page: Option<usize>,
}

async fn repositories(
    State(state): Shared,
    Query(page): Query<Page>,
    headers: HeaderMap,
) -> Response {
    if let Some(limited) = limited(&state) {
        return limited;
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        })
        .unwrap_or_default()
        .to_string();
    let Some(id) = state.tokens.lock().unwrap().get(&token).copied() else {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    };
    let all = state
        .installations
        .lock()
        .unwrap()
        .get(&id)
        .map(|(_, repos)| repos.clone())
        .unwrap_or_default();
    let per_page = page.per_page.unwrap_or(30).clamp(1, 100);
    let number = page.page.unwrap_or(1).max(1);
    let last = all.len().div_ceil(per_page).max(1);
    let items: Vec<Value> = all
        .iter()
        .skip((number - 1) * per_page)
        .take(per_page)
        .map(|name| json!({"full_name": name, "name": name.split('/').nth(1)}))
        .collect();
    let base = state.base_url.lock().unwrap().clone();
    let link = |n: usize, rel: &str| {
        format!("<{base}/installation/repositories?per_page={per_page}&page={n}>; rel=\"{rel}\"")
    };
    let mut links = Vec::new();
    if number < last {
        links.push(link(number + 1, "next"));
        links.push(link(last, "last"));
    }
    if number > 1 {
        links.push(link(number - 1, "prev"));
        links.push(link(1, "first"));
    }
    let mut response =
        Json(json!({"total_count": all.len(), "repositories": items})).into_response();
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", "5000".parse().unwrap());
    headers.insert("x-ratelimit-remaining", "4999".parse().unwrap());
    if !links.is_empty() {
        headers.insert("link", links.join(", ").parse().unwrap());
    }
    response
}

/// `POST /login/oauth/access_token` (a form): GitHub answers a bad code with 200 and
/// an error.
async fn exchange_code(State(state): Shared, body: axum::body::Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if field("client_id") != CLIENT_ID || field("client_secret") != CLIENT_SECRET {
        return Json(json!({
            "error": "incorrect_client_credentials",
            "error_description": "The client_id and/or client_secret passed are incorrect.",
        }))
        .into_response();
    }
    let Some(installations) = state.user_codes.lock().unwrap().remove(field("code")) else {
        return Json(json!({
            "error": "bad_verification_code",
            "error_description": "The code passed is incorrect or expired.",
            "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code",
        }))
        .into_response();
    };
    let token = format!("ghu_{}", field("code"));
    state
        .user_tokens
        .lock()
        .unwrap()
        .insert(token.clone(), installations);
    Json(json!({"access_token": token, "token_type": "bearer", "scope": ""})).into_response()
}

/// `GET /user/installations`: the installations of this app the user can access.
async fn user_installations(State(state): Shared, headers: HeaderMap) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let Some(ids) = state.user_tokens.lock().unwrap().get(token).cloned() else {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    };
    let installations = state.installations.lock().unwrap();
    let listed: Vec<Value> = ids
        .iter()
        .filter_map(|id| {
            installations
                .get(id)
                .map(|(account, _)| installation_json(*id, account))
        })
        .collect();
    Json(json!({"total_count": listed.len(), "installations": listed})).into_response()
}

// How a tenant and GitHub reach switchboard, for the tests of any connector that
// needs a connected GitHub.

/// Starts an installation for the token's organization: the state GitHub would carry.
pub async fn start_installation(daemon: &TestDaemon, token: &str) -> Value {
    daemon.authorize(token, "github").await
}

/// GitHub sends the browser back to the setup URL, with the `code` of the user's
/// authorization when the app asks for one during installation.
pub async fn setup_callback(
    daemon: &TestDaemon,
    state: &str,
    installation_id: &str,
    code: Option<&str>,
) -> (u16, String) {
    let code = code.map(|c| format!("&code={c}")).unwrap_or_default();
    let page = daemon
        .http
        .get(daemon.api_url(&format!(
            "/oauth/github/callback?installation_id={installation_id}&setup_action=install&state={state}{code}"
        )))
        .send()
        .await
        .unwrap();
    (page.status().as_u16(), page.text().await.unwrap())
}

/// The installation's owner installs the app for the token's organization.
pub async fn connect(
    github: &FakeGithub,
    daemon: &TestDaemon,
    token: &str,
    installation_id: u64,
) -> Value {
    let started = start_installation(daemon, token).await;
    let code = format!("code-{installation_id}-{}", uuid::Uuid::new_v4());
    github.installer(&code, &[installation_id]);
    let (status, page) = setup_callback(
        daemon,
        started["state"].as_str().unwrap(),
        &installation_id.to_string(),
        Some(&code),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let (status, listed) = daemon
        .call_api(token, "/integrations/list", json!({}))
        .await;
    assert_eq!(status, 200, "{listed}");
    listed["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["external_id"].as_str() == Some(installation_id.to_string().as_str()))
        .cloned()
        .expect("connected")
}

/// Sends a webhook as GitHub does.
pub async fn deliver(
    daemon: &TestDaemon,
    event: &str,
    delivery: &str,
    body: &Value,
    secret: &str,
) -> (u16, Value) {
    let body = serde_json::to_vec(body).unwrap();
    let response = daemon
        .http
        .post(daemon.api_url("/webhooks/github"))
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-github-hook-id", "1")
        .header("content-type", "application/json")
        .header(
            "x-hub-signature-256",
            signature::sign(&Secret::new(secret), &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub fn pull_request(installation_id: u64, number: u64) -> Value {
    json!({
        "action": "opened",
        "number": number,
        "pull_request": {"number": number, "title": "Add a feature", "html_url": format!("https://github.com/acme/repo-001/pull/{number}"), "merged": false},
        "repository": {"full_name": "acme/repo-001"},
        "sender": {"login": "octocat"},
        "installation": {"id": installation_id}
    })
}
