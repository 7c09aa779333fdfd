//! A fake Slack on loopback: the Web API methods switchboard calls (form or JSON
//! bodies, `{"ok": false, "error": ...}` answers, 429 with Retry-After) and a Socket
//! Mode WebSocket server (hello, envelopes, acknowledgements, disconnects).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

pub const CLIENT_ID: &str = "1111.2222";
pub const CLIENT_SECRET: &str = "slack-client-secret";
pub const SIGNING_SECRET: &str = "slack-signing-secret";
pub const APP_TOKEN: &str = "xapp-1-A0001-test";
pub const GOOD_CODE: &str = "slack-good-code";
pub const TEAM: &str = "T0001";
pub const BOT_USER: &str = "U0BOT";

/// One Socket Mode connection as the fake sees it.
pub struct SocketConnection {
    pub send: mpsc::UnboundedSender<Message>,
    pub open: Arc<AtomicBool>,
}

#[derive(Debug, Clone)]
pub struct Ack {
    pub envelope_id: String,
    pub payload: Option<Value>,
    pub at: Instant,
    pub connection: usize,
}

#[derive(Default)]
pub struct FakeSlackState {
    /// Valid bot tokens.
    pub tokens: Mutex<Vec<String>>,
    pub refresh_tokens: Mutex<Vec<String>>,
    pub rotation: AtomicBool,
    /// Lifetime of rotated tokens, in seconds (Slack: 43200).
    pub expires_in: AtomicU32,
    pub refreshed: AtomicU32,
    pub revoked: Mutex<Vec<String>>,
    /// Messages posted: the request bodies of chat.postMessage.
    pub posted: Mutex<Vec<Value>>,
    pub post_times: Mutex<Vec<Instant>>,
    /// Messages updated: the request bodies of chat.update.
    pub updated: Mutex<Vec<Value>>,
    /// Emails of the workspace's users, by user id (what users.info reads).
    pub emails: Mutex<HashMap<String, String>>,
    /// The workspace the next install binds (the fake's own team when unset).
    pub next_team: Mutex<Option<String>>,
    /// What was posted to interactions' response_urls.
    pub responses: Mutex<Vec<Value>>,
    /// Answer the next chat.postMessage with 429 and this Retry-After.
    pub post_limited: Mutex<Option<u64>>,
    /// Answer the next apps.connections.open with `{"ok":false,"error":"ratelimited"}`.
    pub open_limited: AtomicBool,
    /// At most this many open Socket Mode connections (Slack's is 10 per app); beyond
    /// it apps.connections.open answers `too_many_websockets`.
    pub max_connections: Mutex<Option<usize>>,
    pub opened: AtomicU32,
    pub thread: Mutex<Vec<Value>>,
    pub connections: Mutex<Vec<SocketConnection>>,
    pub acks: Mutex<Vec<Ack>>,
    /// When each envelope was sent, by id.
    pub sent_at: Mutex<HashMap<String, Instant>>,
    pub ws_url: Mutex<String>,
    /// Every envelope frame sent, with the connection it went to last.
    sent: Mutex<Vec<(String, usize, String)>>,
    pub redelivered: AtomicU32,
    /// WebSocket pings received from the client.
    pub pings: AtomicU32,
    next_token: AtomicU32,
}

pub struct FakeSlack {
    pub addr: SocketAddr,
    pub state: Arc<FakeSlackState>,
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let state = Arc::new(FakeSlackState::default());
        let app = Router::new()
            .route("/api/{method}", post(method))
            .route(
                "/hooks/{*rest}",
                post(
                    |State(state): State<Arc<FakeSlackState>>, Json(body): Json<Value>| async move {
                        state.responses.lock().unwrap().push(body);
                        "ok"
                    },
                ),
            )
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let ws = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *state.ws_url.lock().unwrap() = format!("ws://{}/link", ws.local_addr().unwrap());
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = ws.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(serve_socket(state, stream));
            }
        });
        FakeSlack { addr, state }
    }

    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// The `[connectors.slack]` section pointing at this fake.
    pub fn config_section(&self, socket_mode: bool, extra: &str) -> String {
        format!(
            "[connectors.slack]\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n\
             signing_secret = \"{SIGNING_SECRET}\"\napp_token = \"{APP_TOKEN}\"\n\
             scopes = [\"app_mentions:read\", \"chat:write\", \"commands\", \"im:history\"]\n\
             socket_mode = {socket_mode}\napi_base_url = \"{}\"\nweb_base_url = \"https://slack.test\"\n\
             hooks_base_url = \"http://{}/hooks\"\n\
             reconnect_base = \"20ms\"\nreconnect_cap = \"200ms\"\nping_interval = \"1s\"\n{extra}",
            self.api_url(),
            self.addr
        )
    }

    /// Where an interaction's `response_url` points at this fake.
    pub fn response_url(&self) -> String {
        format!("http://{}/hooks/actions/{TEAM}/1/abc", self.addr)
    }

    pub fn open_connections(&self) -> Vec<usize> {
        self.state
            .connections
            .lock()
            .unwrap()
            .iter()
            .enumerate()
            .filter(|(_, c)| c.open.load(Ordering::SeqCst))
            .map(|(i, _)| i)
            .collect()
    }

    /// Sends an envelope on connection `index`; its envelope id.
    pub fn send_envelope(
        &self,
        index: usize,
        kind: &str,
        payload: Value,
        accepts_response_payload: bool,
    ) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let envelope = json!({
            "envelope_id": id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
            "retry_attempt": 0,
            "retry_reason": "",
        });
        self.state
            .sent_at
            .lock()
            .unwrap()
            .insert(id.clone(), Instant::now());
        let frame = envelope.to_string();
        self.state
            .sent
            .lock()
            .unwrap()
            .push((id.clone(), index, frame.clone()));
        let connections = self.state.connections.lock().unwrap();
        connections[index]
            .send
            .send(Message::Text(frame.into()))
            .expect("connection open");
        id
    }

    pub fn send_frame(&self, index: usize, frame: Value) {
        let connections = self.state.connections.lock().unwrap();
        let _ = connections[index]
            .send
            .send(Message::Text(frame.to_string().into()));
    }

    /// Drops connection `index` without a close handshake.
    pub fn drop_connection(&self, index: usize) {
        let connections = self.state.connections.lock().unwrap();
        connections[index].open.store(false, Ordering::SeqCst);
        let _ = connections[index].send.send(Message::Close(None));
    }

    pub fn ack_of(&self, envelope_id: &str) -> Option<Ack> {
        self.state
            .acks
            .lock()
            .unwrap()
            .iter()
            .find(|a| a.envelope_id == envelope_id)
            .cloned()
    }

    /// Waits (up to `within`) for the acknowledgement of an envelope.
    pub async fn wait_ack(&self, envelope_id: &str, within: Duration) -> Option<Ack> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(ack) = self.ack_of(envelope_id) {
                return Some(ack);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    /// Waits (up to `within`) until exactly the connections `open` are open; the
    /// ones that are.
    pub async fn wait_open(&self, open: &[usize], within: Duration) -> Vec<usize> {
        let deadline = Instant::now() + within;
        loop {
            let now_open = self.open_connections();
            if now_open == open || Instant::now() >= deadline {
                return now_open;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn serve_socket(state: Arc<FakeSlackState>, stream: tokio::net::TcpStream) {
    let Ok(socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut incoming) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let open = Arc::new(AtomicBool::new(true));
    let index = {
        let mut connections = state.connections.lock().unwrap();
        connections.push(SocketConnection {
            send: tx.clone(),
            open: Arc::clone(&open),
        });
        connections.len() - 1
    };
    let hello = json!({"type": "hello", "num_connections": 1,
        "debug_info": {"host": "applink-fake", "approximate_connection_time": 18060},
        "connection_info": {"app_id": "A0001"}});
    let _ = tx.send(Message::Text(hello.to_string().into()));
    let writer_open = Arc::clone(&open);
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            let closing = matches!(message, Message::Close(_));
            if closing {
                // An abrupt drop: no close frame, the TCP connection just goes.
                writer_open.store(false, Ordering::SeqCst);
                return;
            }
            if sink.send(message).await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(frame)) = incoming.next().await {
        if !open.load(Ordering::SeqCst) {
            break;
        }
        if let Message::Ping(_) = frame {
            state.pings.fetch_add(1, Ordering::SeqCst);
        }
        if let Message::Text(text) = frame {
            let value: Value = serde_json::from_str(&text).unwrap_or_default();
            if let Some(id) = value["envelope_id"].as_str() {
                state.acks.lock().unwrap().push(Ack {
                    envelope_id: id.to_string(),
                    payload: value.get("payload").cloned(),
                    at: Instant::now(),
                    connection: index,
                });
            }
        }
    }
    open.store(false, Ordering::SeqCst);
    writer.abort();
    redeliver(state, index).await;
}

/// What Slack does with envelopes a closed connection did not acknowledge: sends
/// them again on another connection.
async fn redeliver(state: Arc<FakeSlackState>, closed: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let target = state
            .connections
            .lock()
            .unwrap()
            .iter()
            .enumerate()
            .rev()
            .find(|(i, c)| *i != closed && c.open.load(Ordering::SeqCst))
            .map(|(i, c)| (i, c.send.clone()));
        let Some((index, send)) = target else {
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let acked: Vec<String> = state
            .acks
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.envelope_id.clone())
            .collect();
        let mut sent = state.sent.lock().unwrap();
        for (id, connection, frame) in sent.iter_mut() {
            if *connection == closed && !acked.contains(id) {
                *connection = index;
                state.redelivered.fetch_add(1, Ordering::SeqCst);
                let _ = send.send(Message::Text(frame.clone().into()));
            }
        }
        return;
    }
}

fn ok(body: Value) -> Response {
    let mut body = body;
    body["ok"] = json!(true);
    Json(body).into_response()
}

fn slack_error(code: &str) -> Response {
    Json(json!({"ok": false, "error": code})).into_response()
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string()
}

fn basic_is_the_client(headers: &HeaderMap) -> bool {
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Basic {expected}"))
}

fn form_or_json(headers: &HeaderMap, body: &[u8]) -> HashMap<String, Value> {
    let json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        serde_json::from_slice::<HashMap<String, Value>>(body).unwrap_or_default()
    } else {
        url::form_urlencoded::parse(body)
            .into_owned()
            .map(|(k, v)| (k, Value::String(v)))
            .collect()
    }
}

impl FakeSlackState {
    fn mint(&self) -> (String, String) {
        let n = self.next_token.fetch_add(1, Ordering::SeqCst) + 1;
        let (bot, refresh) = (format!("xoxb-fake-{n}"), format!("xoxe-1-refresh-{n}"));
        self.tokens.lock().unwrap().push(bot.clone());
        self.refresh_tokens.lock().unwrap().push(refresh.clone());
        (bot, refresh)
    }

    fn token_answer(&self) -> Value {
        let (bot, refresh) = self.mint();
        let team = self
            .next_team
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| TEAM.to_string());
        let mut answer = json!({
            "access_token": bot,
            "token_type": "bot",
            "scope": "app_mentions:read,chat:write,commands,im:history",
            "bot_user_id": BOT_USER,
            "app_id": "A0001",
            "team": {"id": team, "name": "Acme Workspace"},
            "enterprise": null,
            "is_enterprise_install": false,
        });
        if self.rotation.load(Ordering::SeqCst) {
            answer["refresh_token"] = json!(refresh);
            answer["expires_in"] = json!(self.expires_in.load(Ordering::SeqCst));
        }
        answer
    }
}

async fn method(
    State(state): State<Arc<FakeSlackState>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let args = form_or_json(&headers, &body);
    let arg = |name: &str| {
        args.get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let token_ok = || state.tokens.lock().unwrap().contains(&bearer(&headers));
    match method.as_str() {
        "oauth.v2.access" => {
            if !basic_is_the_client(&headers) {
                return slack_error("invalid_client_id");
            }
            if arg("grant_type") == "refresh_token" {
                let refresh = arg("refresh_token");
                let mut known = state.refresh_tokens.lock().unwrap();
                if !known.contains(&refresh) {
                    return slack_error("invalid_refresh_token");
                }
                // Rotation: the old refresh token is spent.
                known.retain(|r| r != &refresh);
                drop(known);
                state.refreshed.fetch_add(1, Ordering::SeqCst);
                return ok(state.token_answer());
            }
            if arg("code") != GOOD_CODE {
                return slack_error("invalid_code");
            }
            ok(state.token_answer())
        }
        "auth.test" => {
            if !token_ok() {
                return slack_error("invalid_auth");
            }
            ok(
                json!({"url": "https://acme.slack.com/", "team": "Acme Workspace", "team_id": TEAM, "user_id": BOT_USER, "bot_id": "B0001"}),
            )
        }
        "auth.revoke" => {
            let token = bearer(&headers);
            state.tokens.lock().unwrap().retain(|t| t != &token);
            state.revoked.lock().unwrap().push(token);
            ok(json!({"revoked": true}))
        }
        "chat.postMessage" => {
            if !token_ok() {
                return slack_error("invalid_auth");
            }
            if let Some(seconds) = state.post_limited.lock().unwrap().take() {
                let mut response = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(json!({"ok": false, "error": "ratelimited"})),
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert("retry-after", seconds.to_string().parse().unwrap());
                state.post_times.lock().unwrap().push(Instant::now());
                return response;
            }
            state.post_times.lock().unwrap().push(Instant::now());
            let mut posted = state.posted.lock().unwrap();
            posted.push(json!(args));
            // Each message its own ts, as Slack's.
            let ts = format!("1700000000.{:06}", 200 + posted.len() - 1);
            ok(json!({"channel": arg("channel"), "ts": ts, "message": {"text": arg("text")}}))
        }
        "chat.update" => {
            if !token_ok() {
                return slack_error("invalid_auth");
            }
            let count = state.posted.lock().unwrap().len();
            let ts = arg("ts");
            let known = (0..count).any(|n| format!("1700000000.{:06}", 200 + n) == ts);
            if !known {
                return slack_error("message_not_found");
            }
            state.updated.lock().unwrap().push(json!(args));
            ok(json!({"channel": arg("channel"), "ts": ts, "text": arg("text")}))
        }
        "users.info" => {
            if !token_ok() {
                return slack_error("invalid_auth");
            }
            let user = arg("user");
            match state.emails.lock().unwrap().get(&user) {
                Some(email) => ok(json!({"user": {"id": user, "profile": {"email": email}}})),
                None => slack_error("user_not_found"),
            }
        }
        "conversations.replies" => {
            if !token_ok() {
                return slack_error("invalid_auth");
            }
            ok(json!({"messages": state.thread.lock().unwrap().clone(), "has_more": false}))
        }
        "apps.connections.open" => {
            if bearer(&headers) != APP_TOKEN {
                return slack_error("invalid_auth");
            }
            if state.open_limited.swap(false, Ordering::SeqCst) {
                return slack_error("ratelimited");
            }
            let open = state
                .connections
                .lock()
                .unwrap()
                .iter()
                .filter(|c| c.open.load(Ordering::SeqCst))
                .count();
            if state
                .max_connections
                .lock()
                .unwrap()
                .is_some_and(|max| open >= max)
            {
                return slack_error("too_many_websockets");
            }
            state.opened.fetch_add(1, Ordering::SeqCst);
            ok(json!({"url": state.ws_url.lock().unwrap().clone()}))
        }
        _ => slack_error("unknown_method"),
    }
}
