//! Socket Mode: the `slack:socket` actor and its WebSocket client.
//!
//! `apps.connections.open` (with the app-level token) gives a `wss://` URL; a
//! connection is usable once Slack's `hello` arrives. Every envelope (`events_api`,
//! `slash_commands`, `interactive`) is stored through the inbox first and then
//! acknowledged with `{"envelope_id"}` (with the bot's answer as `payload` for a slash
//! command when Slack accepts one); an envelope that cannot be stored is not
//! acknowledged, so Slack sends it again. Envelopes are handled concurrently, so the
//! inbox's group commit keeps acknowledgements fast under load.
//!
//! - `disconnect` with `warning` or `refresh_requested`: the replacement connection is
//!   opened (up to its `hello`) before the old one is closed, and the old one keeps
//!   reading meanwhile: no envelope is lost in the switch.
//! - `disconnect` with `link_disabled`: Socket Mode was turned off for the app; the
//!   client backs off to the cap and says so in its health.
//! - A dropped socket reconnects with full-jitter backoff; connections are pinged,
//!   and one silent for two ping intervals is dropped.
//! - 429 and `ratelimited` from `apps.connections.open` wait the asked time.
//! - `too_many_websockets` (Slack allows 10 connections per app, and every node of a
//!   cluster holds one): the client waits [`TOO_MANY_WEBSOCKETS_WAIT`] before asking
//!   again and says so in its health (`state: too_many_websockets`); the other
//!   connections keep receiving the app's events meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::{Value, json};
use switchboard_actors::{Backoff, ChildSpec, HealthReport, Status, Timestamp};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};

use super::events::{self, Classified};
use super::web_api::{Auth, SlackError};
use super::{NAME, Shared};
use crate::connectors::ConnectorContext;
use crate::lock;
use crate::pipeline::inbox;
use crate::store::events::{DeliveryScope, NewEvent};
use crate::store::integrations;

pub const ACTOR: &str = "slack:socket";
/// How long a workspace's integration is remembered by the client.
const TEAM_FOR: Duration = Duration::from_secs(5);
/// Slack wants an acknowledgement within 3 seconds; storing gets most of that.
const STORE_WITHIN: Duration = Duration::from_millis(2500);
const HELLO_WITHIN: Duration = Duration::from_secs(10);

pub fn child_spec(shared: Arc<Shared>, context: ConnectorContext) -> ChildSpec {
    ChildSpec::actor(ACTOR, "socket_mode", move || {
        (SocketModeActor, (Arc::clone(&shared), context.clone()))
    })
    .observed_with::<SocketMsg>()
}

pub enum SocketMsg {
    Observe(RpcReplyPort<HealthReport>),
}

switchboard_actors::observable!(SocketMsg::Observe);

/// How long a client refused with `too_many_websockets` waits before asking again:
/// long, since the connections over the limit are other nodes' and stay open.
pub const TOO_MANY_WEBSOCKETS_WAIT: Duration = Duration::from_secs(60);

/// What the health report shows, written by the client as it goes.
#[derive(Debug, Default)]
struct Progress {
    state: &'static str,
    open_connections: usize,
    connections_opened: u64,
    reconnects: u64,
    last_hello_at: Option<Timestamp>,
    last_disconnect_reason: Option<String>,
    retry_in_ms: Option<u64>,
    last_error: Option<String>,
}

pub struct SocketModeActor;

pub struct SocketState {
    client: JoinHandle<()>,
    progress: Arc<Mutex<Progress>>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    envelopes: AtomicU64,
    acked: AtomicU64,
    not_stored: AtomicU64,
}

impl Actor for SocketModeActor {
    type Msg = SocketMsg;
    type State = SocketState;
    type Arguments = (Arc<Shared>, ConnectorContext);

    async fn pre_start(
        &self,
        _myself: ActorRef<SocketMsg>,
        (shared, context): Self::Arguments,
    ) -> Result<SocketState, ActorProcessingErr> {
        let progress = Arc::new(Mutex::new(Progress {
            state: "connecting",
            ..Progress::default()
        }));
        let counters = Arc::new(Counters::default());
        let client = Client {
            shared,
            context,
            progress: Arc::clone(&progress),
            counters: Arc::clone(&counters),
            teams: Arc::default(),
        };
        Ok(SocketState {
            client: tokio::spawn(client.run()),
            progress,
            counters,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SocketMsg>,
        state: &mut SocketState,
    ) -> Result<(), ActorProcessingErr> {
        // Dropping the connection tasks closes their sockets; unacknowledged envelopes
        // are sent again by Slack to the next connection.
        state.client.abort();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<SocketMsg>,
        message: SocketMsg,
        state: &mut SocketState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SocketMsg::Observe(reply) => {
                let progress = lock(&state.progress);
                let status = match progress.state {
                    "connected" => Status::Running,
                    "link_disabled" => Status::Stopped,
                    "backing_off" => Status::Backoff,
                    _ => Status::Starting,
                };
                let mut report = HealthReport::new(ACTOR, "socket_mode", status)
                    .with_detail("state", progress.state)
                    .with_detail("open_connections", progress.open_connections)
                    .with_detail("connections_opened", progress.connections_opened)
                    .with_detail("reconnects", progress.reconnects)
                    .with_detail("last_hello_at", progress.last_hello_at)
                    .with_detail(
                        "last_disconnect_reason",
                        progress.last_disconnect_reason.clone(),
                    )
                    .with_detail("retry_in_ms", progress.retry_in_ms)
                    .with_detail(
                        "envelopes",
                        state.counters.envelopes.load(Ordering::Relaxed),
                    )
                    .with_detail("acked", state.counters.acked.load(Ordering::Relaxed))
                    .with_detail(
                        "not_stored",
                        state.counters.not_stored.load(Ordering::Relaxed),
                    );
                report.last_error = progress.last_error.clone();
                let _ = reply.send(report);
            }
        }
        Ok(())
    }
}

/// The organization and integration a workspace is bound to.
type Owner = (String, String);
/// A workspace's owner (or none) and when that was looked up.
type KnownTeam = (Option<Owner>, Instant);

/// What a connection tells the client that manages it.
enum Signal {
    /// Slack asked to move on (`disconnect`); the connection keeps reading until closed.
    Disconnect {
        id: u64,
        reason: String,
    },
    Closed {
        id: u64,
        error: Option<String>,
    },
}

struct Connection {
    close: oneshot::Sender<()>,
}

#[derive(Clone)]
struct Client {
    shared: Arc<Shared>,
    context: ConnectorContext,
    progress: Arc<Mutex<Progress>>,
    counters: Arc<Counters>,
    /// Workspaces' integrations, by team id.
    teams: Arc<Mutex<HashMap<String, KnownTeam>>>,
}

impl Client {
    fn backoff(&self) -> Backoff {
        Backoff::new(
            self.shared.config.reconnect_base,
            self.shared.config.reconnect_cap,
        )
    }

    fn set_state(&self, state: &'static str) {
        lock(&self.progress).state = state;
    }

    /// Opens connections for as long as the actor lives.
    async fn run(self) {
        let (signals_tx, mut signals) = mpsc::channel::<Signal>(16);
        let mut open: HashMap<u64, Connection> = HashMap::new();
        let mut next_id = 0u64;
        let mut failures = 0u32;
        loop {
            if open.is_empty() {
                next_id += 1;
                match self.connect(next_id, signals_tx.clone()).await {
                    Ok(connection) => {
                        failures = 0;
                        open.insert(next_id, connection);
                    }
                    Err(wait) => {
                        failures += 1;
                        self.wait(wait, failures).await;
                        continue;
                    }
                }
            }
            lock(&self.progress).open_connections = open.len();
            let Some(signal) = signals.recv().await else {
                return;
            };
            match signal {
                Signal::Disconnect { reason, .. } if reason == "link_disabled" => {
                    warn!("Slack disabled Socket Mode for this app (link_disabled): backing off");
                    for (_, connection) in open.drain() {
                        let _ = connection.close.send(());
                    }
                    {
                        let mut progress = lock(&self.progress);
                        progress.last_disconnect_reason = Some(reason);
                        progress.last_error = Some(
                            "Socket Mode is disabled for this app (link_disabled)".to_string(),
                        );
                    }
                    self.set_state("link_disabled");
                    let cap = self.shared.config.reconnect_cap;
                    lock(&self.progress).retry_in_ms = Some(cap.as_millis() as u64);
                    tokio::time::sleep(cap).await;
                }
                Signal::Disconnect { id, reason } => {
                    info!(
                        reason,
                        "Slack asked for a new connection: opening it before closing the old one"
                    );
                    lock(&self.progress).last_disconnect_reason = Some(reason);
                    // The old connection keeps reading until the new one said hello.
                    let mut attempt = 0;
                    loop {
                        next_id += 1;
                        match self.connect(next_id, signals_tx.clone()).await {
                            Ok(connection) => {
                                open.insert(next_id, connection);
                                break;
                            }
                            Err(wait) => {
                                attempt += 1;
                                if !open.contains_key(&id) {
                                    break;
                                }
                                self.wait(wait, attempt).await;
                            }
                        }
                    }
                    if let Some(old) = open.remove(&id) {
                        let _ = old.close.send(());
                    }
                }
                Signal::Closed { id, error } => {
                    if open.remove(&id).is_some() {
                        if let Some(error) = &error {
                            warn!(error = %error, "Socket Mode connection dropped");
                            lock(&self.progress).last_error = Some(error.clone());
                        }
                        if open.is_empty() {
                            lock(&self.progress).reconnects += 1;
                            self.set_state("connecting");
                            // A first quick try; repeated failures back off in `connect`'s caller.
                            failures = 1;
                            self.wait(None, failures).await;
                        }
                    }
                }
            }
        }
    }

    async fn wait(&self, asked: Option<Duration>, attempt: u32) {
        let delay = self.backoff().delay(attempt).max(asked.unwrap_or_default());
        {
            let mut progress = lock(&self.progress);
            progress.retry_in_ms = Some(delay.as_millis() as u64);
            if !["link_disabled", "too_many_websockets"].contains(&progress.state) {
                progress.state = "backing_off";
            }
        }
        tokio::time::sleep(delay).await;
        lock(&self.progress).retry_in_ms = None;
    }

    /// Asks Slack for a URL, connects, waits for `hello` and starts the connection's
    /// tasks. `Err` carries how long Slack asked to wait, if it did.
    async fn connect(
        &self,
        id: u64,
        signals: mpsc::Sender<Signal>,
    ) -> Result<Connection, Option<Duration>> {
        let fail = |error: String, wait: Option<Duration>| {
            warn!(error = %error, "Socket Mode connection not opened");
            lock(&self.progress).last_error = Some(error);
            wait
        };
        let Some(app_token) = self.shared.config.app_token.as_ref() else {
            return Err(fail("connectors.slack.app_token is not set".into(), None));
        };
        let answer = self
            .shared
            .api
            .form("app", "apps.connections.open", Auth::Bearer(app_token), &[])
            .await
            .map_err(|error| match error {
                SlackError::RateLimited { retry_after, .. } => fail(
                    format!("apps.connections.open rate limited: retry after {retry_after:?}"),
                    Some(retry_after),
                ),
                SlackError::Api(code) if code == "too_many_websockets" => {
                    lock(&self.progress).state = "too_many_websockets";
                    fail(
                        "apps.connections.open: too_many_websockets (Slack allows 10 Socket \
                         Mode connections per app, other nodes' included): asking again later"
                            .into(),
                        Some(TOO_MANY_WEBSOCKETS_WAIT),
                    )
                }
                other => fail(format!("apps.connections.open: {other}"), None),
            })?;
        let url = answer["url"]
            .as_str()
            .ok_or_else(|| fail("apps.connections.open gave no url".into(), None))?;
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| fail(format!("WebSocket connect failed: {e}"), None))?;
        let (mut sink, mut stream) = socket.split();
        // Nothing counts before Slack's hello.
        let hello = tokio::time::timeout(HELLO_WITHIN, async {
            while let Some(frame) = stream.next().await {
                match frame {
                    Ok(Message::Text(text)) => {
                        let value: Value = serde_json::from_str(&text).unwrap_or_default();
                        if value["type"] == "hello" {
                            return Ok(value);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            Err("closed before hello".to_string())
        })
        .await
        .map_err(|_| fail("no hello within 10 s".into(), None))?
        .map_err(|e| fail(format!("no hello: {e}"), None))?;
        debug!(hello = %hello, "Socket Mode hello");
        {
            let mut progress = lock(&self.progress);
            progress.state = "connected";
            progress.connections_opened += 1;
            progress.last_hello_at = Some(Timestamp::now());
            progress.last_error = None;
        }
        info!(connection = id, "Socket Mode connected");

        let (out_tx, mut out_rx) = mpsc::channel::<Message>(1024);
        let (close_tx, mut close_rx) = oneshot::channel::<()>();
        let ping_every = self.shared.config.ping_interval;
        // The writer: acknowledgements and pings. It ends once the reader stopped and
        // every envelope in flight was acknowledged (all senders gone), then closes.
        let writer = tokio::spawn(async move {
            let mut ping = tokio::time::interval(ping_every);
            ping.tick().await;
            loop {
                tokio::select! {
                    message = out_rx.recv() => match message {
                        Some(message) => {
                            if sink.send(message).await.is_err() {
                                return;
                            }
                        }
                        None => break,
                    },
                    _ = ping.tick() => {
                        if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = sink.send(Message::Close(None)).await;
        });
        // The reader: envelopes, handled concurrently; disconnect requests; silence.
        let client = self.clone();
        tokio::spawn(async move {
            let silent_after = ping_every * 2 + Duration::from_secs(1);
            let error = loop {
                let next = tokio::select! {
                    next = tokio::time::timeout(silent_after, stream.next()) => next,
                    // Replaced: stop reading; what is in flight is still acknowledged.
                    _ = &mut close_rx => break None,
                };
                let frame = match next {
                    Err(_) => break Some("no traffic for two ping intervals".to_string()),
                    Ok(None) => break Some("the connection closed".to_string()),
                    Ok(Some(Err(e))) => break Some(e.to_string()),
                    Ok(Some(Ok(frame))) => frame,
                };
                let text = match frame {
                    Message::Text(text) => text,
                    Message::Close(_) => break Some("Slack closed the connection".to_string()),
                    _ => continue,
                };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    warn!("Socket Mode frame that is not JSON ignored");
                    continue;
                };
                match value["type"].as_str() {
                    Some("disconnect") => {
                        let reason = value["reason"].as_str().unwrap_or("unknown").to_string();
                        let _ = signals.send(Signal::Disconnect { id, reason }).await;
                    }
                    Some("hello") => {}
                    Some(_) if value["envelope_id"].is_string() => {
                        client.counters.envelopes.fetch_add(1, Ordering::Relaxed);
                        let (client, out) = (client.clone(), out_tx.clone());
                        tokio::spawn(async move { client.handle_envelope(value, out).await });
                    }
                    other => debug!(frame_type = ?other, "Socket Mode frame ignored"),
                }
            };
            drop(out_tx);
            if error.is_some() {
                // The socket is gone: nothing more can be written.
                writer.abort();
            }
            let _ = signals.send(Signal::Closed { id, error }).await;
        });
        Ok(Connection { close: close_tx })
    }

    /// Stores one envelope, then acknowledges it (with the bot's answer to a slash
    /// command). Not stored, not acknowledged: Slack sends it again.
    async fn handle_envelope(&self, envelope: Value, out: mpsc::Sender<Message>) {
        let envelope_id = envelope["envelope_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let kind = envelope["type"].as_str().unwrap_or_default();
        let payload = &envelope["payload"];
        let Some(Classified {
            team_id,
            event_type,
            delivery_id,
        }) = events::classify(kind, payload)
        else {
            // Nothing to store (an unknown envelope type): acknowledge so it stops.
            let _ = out.send(ack(&envelope_id, None)).await;
            return;
        };
        let owner = match self.integration_of(&team_id).await {
            Ok(owner) => owner,
            Err(error) => {
                warn!(error = %error, "Socket Mode envelope not stored (store unavailable): not acknowledged");
                self.counters.not_stored.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let event = NewEvent {
            organization_id: owner.as_ref().map(|(org, _)| org.clone()),
            integration_id: owner.as_ref().map(|(_, id)| id.clone()),
            connector_type: NAME.to_string(),
            event_type: event_type.clone(),
            delivery_id: delivery_id.unwrap_or_else(|| envelope_id.clone()),
            delivery_scope: DeliveryScope::Provider,
            payload: payload.to_string(),
            occurred_at: None,
            // Nobody can process it: kept, dead with the reason (replayable once bound).
            dead_reason: owner
                .is_none()
                .then(|| format!("no integration is bound to Slack workspace {team_id}")),
        };
        // Within STORE_WITHIN, or an error saying it was not stored in time.
        if let Err(error) = inbox::store(&self.context.intake, event, STORE_WITHIN).await {
            warn!(error = %error, "Socket Mode envelope not stored: not acknowledged");
            self.counters.not_stored.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let answer = match (&owner, kind, envelope["accepts_response_payload"].as_bool()) {
            (Some((organization, _)), "slash_commands", Some(true)) => Some(
                self.shared
                    .slash_command_response(organization, payload)
                    .await,
            ),
            _ => None,
        };
        if out.send(ack(&envelope_id, answer)).await.is_ok() {
            self.counters.acked.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The organization and integration a workspace is bound to, remembered for
    /// `TEAM_FOR` (a read per envelope costs the acknowledgement's tail on
    /// PostgreSQL). An event routed to an integration revoked meanwhile is marked
    /// dead by the inbox's sweep.
    async fn integration_of(&self, team_id: &str) -> Result<Option<Owner>, String> {
        if let Some((owner, at)) = lock(&self.teams).get(team_id)
            && at.elapsed() < TEAM_FOR
        {
            return Ok(owner.clone());
        }
        let found = integrations::find_by_account(&self.context.store, NAME, team_id)
            .await
            .map_err(|e| e.to_string())?
            .map(|i| (i.organization_id, i.id));
        lock(&self.teams).insert(team_id.to_string(), (found.clone(), Instant::now()));
        Ok(found)
    }
}

fn ack(envelope_id: &str, payload: Option<Value>) -> Message {
    let mut ack = json!({"envelope_id": envelope_id});
    if let Some(payload) = payload {
        ack["payload"] = payload;
    }
    Message::Text(ack.to_string().into())
}
