//! Webhook ingress: verify, store durably, then acknowledge.
//!
//! Nothing is stored before its signature checks out, and nothing is acknowledged
//! before it is stored: a store that cannot take the event answers 503 so that the
//! sender retries. A redelivery (same connector and delivery id) is acknowledged and
//! not stored again. Bodies over `pipeline.max_body_bytes` get 413.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use tracing::warn;

use super::ApiError;
use crate::connectors::webhook::{self, SIGNING_SECRET, WebhookConnector};
use crate::connectors::{github, slack};
use crate::integration::{CredentialStore, VaultCredentials};
use crate::lock;
use crate::pipeline::{inbox, standard_webhooks};
use crate::secret::Secret;
use crate::store::events::{self, DeliveryScope, NewEvent};
use crate::store::{Store, integrations};
use crate::tree::ActorTree;

pub struct IngressState {
    pub tree: Arc<ActorTree>,
    pub store: Store,
    pub tolerance: Duration,
    /// The GitHub App's webhook secret, when GitHub is configured.
    pub github_secret: Option<Secret>,
    /// The Slack connector's shared part, when Slack is configured.
    pub slack: Option<Arc<slack::Shared>>,
    /// Signing secrets by integration, so that a webhook costs no vault round trip.
    /// A failed verification looks the secret up again before refusing.
    pub secrets: Mutex<HashMap<String, Secret>>,
    /// Live webhook integrations, looked up again after `LIVE_FOR`; a revocation
    /// removes its entry at once.
    pub live: Mutex<HashMap<String, (Arc<integrations::Integration>, Instant)>>,
}

const LIVE_FOR: Duration = Duration::from_secs(5);

impl IngressState {
    pub fn new(
        tree: Arc<ActorTree>,
        store: Store,
        tolerance: Duration,
        github_secret: Option<Secret>,
        slack: Option<Arc<slack::Shared>>,
    ) -> Self {
        Self {
            tree,
            store,
            tolerance,
            github_secret,
            slack,
            secrets: Mutex::default(),
            live: Mutex::default(),
        }
    }

    /// Forgets what it knew of an integration (it was revoked).
    pub fn forget(&self, integration_id: &str) {
        lock(&self.live).remove(integration_id);
        lock(&self.secrets).remove(integration_id);
    }

    async fn live_webhook(
        &self,
        id: &str,
    ) -> Result<Option<Arc<integrations::Integration>>, ApiError> {
        if let Some((integration, at)) = lock(&self.live).get(id)
            && at.elapsed() < LIVE_FOR
        {
            return Ok(Some(Arc::clone(integration)));
        }
        let found = integrations::find_live(&self.store, id)
            .await
            .map_err(|_| ApiError::unavailable("the store is unavailable, retry"))?
            .filter(|i| {
                i.connector_type == webhook::NAME && i.status == integrations::STATUS_ACTIVE
            })
            .map(Arc::new);
        match &found {
            Some(integration) => {
                lock(&self.live).insert(id.to_string(), (Arc::clone(integration), Instant::now()));
            }
            None => {
                lock(&self.live).remove(id);
            }
        }
        Ok(found)
    }
}

const GENERIC_PREFIX: &str = "/webhooks/generic/";

/// Refuses a generic webhook for an unknown integration before its body is read
/// (see [`super::limits`]): a 404 costs no buffering.
pub fn precheck(state: Arc<IngressState>) -> super::limits::Precheck {
    Arc::new(move |method, path| {
        let id = path
            .strip_prefix(GENERIC_PREFIX)
            .filter(|id| *method == axum::http::Method::POST && !id.contains('/'))
            .map(str::to_string);
        let state = Arc::clone(&state);
        Box::pin(async move {
            let id = id?;
            match state.live_webhook(&id).await {
                Ok(Some(_)) => None,
                Ok(None) => Some(ApiError::not_found("no such webhook").into_response()),
                Err(error) => Some(error.into_response()),
            }
        })
    })
}

pub fn router(state: Arc<IngressState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/webhooks/generic/{integration_id}", post(generic))
        .route(GITHUB_PATH, post(github))
        .route("/webhooks/slack/events", post(slack_events))
        .route("/webhooks/slack/interactive", post(slack_interactive))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

pub const GITHUB_PATH: &str = "/webhooks/github";

/// GitHub's webhooks alone: for a connector-owned listener
/// (`connectors.github.webhook_listen`).
pub fn github_router(state: Arc<IngressState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route(GITHUB_PATH, post(github))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

fn invalid_signature(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
        error.to_string(),
    )
}

fn body_or_error(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is over the size limit",
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                rejection.body_text(),
            )
        }
    })
}

/// Stores a verified event through the inbox; a failure is a 503 so that the
/// provider retries.
async fn store_event(
    state: &IngressState,
    event: NewEvent,
    started: Instant,
) -> Result<events::Stored, ApiError> {
    let connector = event.connector_type.clone();
    let stored = inbox::store(state.tree.intake(), event, Duration::from_secs(10))
        .await
        .map_err(|error| {
            warn!(connector, error = %error, "webhook not stored: answered 503");
            ApiError::unavailable("the event could not be stored, retry")
        })?;
    state
        .tree
        .pipeline_metrics()
        .ingest_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(stored)
}

/// The longest delivery id kept: providers' ids are GUIDs and short strings.
pub const MAX_DELIVERY_ID: usize = 200;

/// A delivery id as a sender gave it in `what`: present, not empty, not over-long.
fn delivery_id(what: &str, value: Option<&str>) -> Result<String, ApiError> {
    let refuse =
        |message: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message);
    match value {
        None => Err(refuse(format!("missing {what}"))),
        Some("") => Err(refuse(format!("{what} is empty"))),
        Some(id) if id.len() > MAX_DELIVERY_ID => Err(refuse(format!(
            "{what} is longer than {MAX_DELIVERY_ID} bytes"
        ))),
        Some(id) => Ok(id.to_string()),
    }
}

/// The body as the text it is stored as, byte for byte: a body that is not UTF-8 is
/// refused rather than altered (the durable copy must be what the sender signed).
fn utf8_payload(body: &Bytes) -> Result<String, ApiError> {
    String::from_utf8(body.to_vec()).map_err(|_| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            "the body is not UTF-8 text; switchboard stores payloads exactly as signed, as text",
        )
    })
}

fn stored_json(stored: &events::Stored) -> Json<serde_json::Value> {
    Json(json!({"id": stored.id, "duplicate": stored.duplicate}))
}

/// GitHub App webhooks: X-Hub-Signature-256 over the raw body, X-GitHub-Delivery as
/// the de-duplication id, routed to the integration bound to `installation.id`.
/// An event for an installation bound to no organization (yet) is kept, dead with
/// that reason, never dropped.
async fn github(
    State(state): State<Arc<IngressState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let started = Instant::now();
    let secret = state
        .github_secret
        .as_ref()
        .ok_or_else(|| ApiError::not_found("GitHub is not configured"))?;
    let body = body_or_error(body)?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    github::signature::verify(
        secret,
        header(github::signature::SIGNATURE_256),
        header(github::signature::SIGNATURE_SHA1),
        &body,
    )
    .map_err(invalid_signature)?;
    let bad_request =
        |message: &str| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message);
    let name = header("x-github-event").ok_or_else(|| bad_request("missing X-GitHub-Event"))?;
    if name == "ping" {
        // GitHub's check that the hook works: nothing to store.
        return Ok(Json(json!({"ok": true})));
    }
    let delivery_id = delivery_id("X-GitHub-Delivery", header("x-github-delivery"))?;
    let text = utf8_payload(&body)?;
    let payload: serde_json::Value =
        serde_json::from_str(&text).map_err(|_| bad_request("the body is not JSON"))?;
    let installation = payload
        .pointer("/installation/id")
        .and_then(|id| id.as_u64())
        .map(|id| id.to_string());
    let integration = match &installation {
        Some(installation) => {
            integrations::find_by_account(&state.store, github::NAME, installation)
                .await
                .map_err(|_| ApiError::unavailable("the store is unavailable, retry"))?
        }
        None => None,
    };
    let event = NewEvent {
        organization_id: integration.as_ref().map(|i| i.organization_id.clone()),
        integration_id: integration.as_ref().map(|i| i.id.clone()),
        connector_type: github::NAME.to_string(),
        event_type: github::events::event_type(name, &payload),
        delivery_id,
        delivery_scope: DeliveryScope::Provider,
        payload: text,
        occurred_at: None,
    };
    let stored = store_event(&state, event, started).await?;
    if integration.is_none() {
        // Nobody can process it: kept, dead with the reason (replayable once bound).
        let reason = match &installation {
            Some(id) => format!("no integration is bound to GitHub App installation {id}"),
            None => "the event names no GitHub App installation".to_string(),
        };
        events::bury_unrouted(&state.store, &stored, &reason).await;
    }
    Ok(stored_json(&stored))
}

async fn generic(
    State(state): State<Arc<IngressState>>,
    Path(integration_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let started = Instant::now();
    let body = body_or_error(body)?;
    let integration = state
        .live_webhook(&integration_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such webhook"))?;

    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let verify = |secret: &Secret| {
        standard_webhooks::verify(
            secret,
            header(standard_webhooks::ID),
            header(standard_webhooks::TIMESTAMP),
            header(standard_webhooks::SIGNATURE),
            &body,
            state.tolerance,
            standard_webhooks::unix_now(),
        )
    };
    let cached = lock(&state.secrets).get(&integration.id).cloned();
    let verified = match cached.as_ref().map(verify) {
        Some(Ok(timestamp)) => Ok(timestamp),
        // Not cached yet, or the secret may have changed: ask the vault.
        _ => {
            let secret = signing_secret(&state, &integration).await?;
            let outcome = verify(&secret);
            lock(&state.secrets).insert(integration.id.clone(), secret);
            outcome
        }
    };
    let timestamp = verified.map_err(invalid_signature)?;

    let delivery_id = delivery_id(standard_webhooks::ID, header(standard_webhooks::ID))?;
    let event = NewEvent {
        organization_id: Some(integration.organization_id.clone()),
        integration_id: Some(integration.id.clone()),
        connector_type: webhook::NAME.to_string(),
        event_type: WebhookConnector::event_type(&body),
        delivery_id,
        // The sender chose this id: unique within this integration alone.
        delivery_scope: DeliveryScope::Integration,
        payload: utf8_payload(&body)?,
        occurred_at: chrono::DateTime::from_timestamp(timestamp, 0).map(|t| t.naive_utc()),
    };
    store_event(&state, event, started)
        .await
        .map(|stored| stored_json(&stored))
}

async fn signing_secret(
    state: &IngressState,
    integration: &integrations::Integration,
) -> Result<Secret, ApiError> {
    let credentials = VaultCredentials {
        store: state.store.clone(),
        vault: state.tree.vault(),
    };
    let loaded = credentials.load(integration).await.map_err(|error| {
        warn!(integration_id = %integration.id, error = %error, "signing secret unavailable");
        ApiError::unavailable("the signing secret is unavailable, retry")
    })?;
    loaded
        .get(SIGNING_SECRET)
        .cloned()
        .ok_or_else(|| ApiError::not_found("no such webhook"))
}

/// Checks a Slack request's v0 signature; the Slack connector's shared part on success.
fn verified_slack<'a>(
    state: &'a IngressState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<&'a Arc<slack::Shared>, ApiError> {
    let shared = state
        .slack
        .as_ref()
        .filter(|s| s.config.signing_secret.is_some())
        .ok_or_else(|| ApiError::not_found("Slack's Events API is not configured"))?;
    let secret = shared.config.signing_secret.as_ref().expect("filtered");
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    slack::signature::verify(
        secret,
        header(slack::signature::SIGNATURE),
        header(slack::signature::TIMESTAMP),
        body,
        shared.config.timestamp_tolerance,
        standard_webhooks::unix_now(),
    )
    .map_err(invalid_signature)?;
    Ok(shared)
}

/// Stores a Slack payload for the integration bound to its workspace (dead with the
/// reason when there is none). The organization, when the workspace is bound.
async fn store_slack(
    state: &IngressState,
    classified: slack::events::Classified,
    delivery_id: String,
    payload: String,
    started: Instant,
) -> Result<(events::Stored, Option<String>), ApiError> {
    let integration = integrations::find_by_account(&state.store, slack::NAME, &classified.team_id)
        .await
        .map_err(|_| ApiError::unavailable("the store is unavailable, retry"))?;
    let event = NewEvent {
        organization_id: integration.as_ref().map(|i| i.organization_id.clone()),
        integration_id: integration.as_ref().map(|i| i.id.clone()),
        connector_type: slack::NAME.to_string(),
        event_type: classified.event_type,
        delivery_id,
        delivery_scope: DeliveryScope::Provider,
        payload,
        occurred_at: None,
    };
    let stored = store_event(state, event, started).await?;
    if integration.is_none() {
        let reason = format!(
            "no integration is bound to Slack workspace {}",
            classified.team_id
        );
        events::bury_unrouted(&state.store, &stored, &reason).await;
    }
    Ok((stored, integration.map(|i| i.organization_id)))
}

/// The Events API: `url_verification` answered with its challenge; event callbacks
/// stored (de-duplicated on `event_id`, so `X-Slack-Retry-Num` retries count once).
async fn slack_events(
    State(state): State<Arc<IngressState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let started = Instant::now();
    let body = body_or_error(body)?;
    verified_slack(&state, &headers, &body)?;
    let bad_request =
        |message: &str| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message);
    let payload: serde_json::Value =
        serde_json::from_slice(&body).map_err(|_| bad_request("the body is not JSON"))?;
    match payload["type"].as_str() {
        Some("url_verification") => {
            return Ok(Json(json!({"challenge": payload["challenge"]})));
        }
        Some("event_callback") => {}
        _ => return Err(bad_request("not an event callback")),
    }
    let classified = slack::events::classify("events_api", &payload)
        .ok_or_else(|| bad_request("the event has no team_id or type"))?;
    let delivery_id = classified
        .delivery_id
        .clone()
        .ok_or_else(|| bad_request("the event has no event_id"))?;
    let delivery_id = self::delivery_id("event_id", Some(&delivery_id))?;
    let (stored, _) = store_slack(
        &state,
        classified,
        delivery_id,
        utf8_payload(&body)?,
        started,
    )
    .await?;
    Ok(stored_json(&stored))
}

/// Interactivity and slash commands (form-encoded): stored, then answered. A slash
/// command gets the bot's answer in the response.
async fn slack_interactive(
    State(state): State<Arc<IngressState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let started = Instant::now();
    let body = body_or_error(body)?;
    let shared = Arc::clone(verified_slack(&state, &headers, &body)?);
    let bad_request =
        |message: &str| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message);
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let (kind, payload) = match (form.get("payload"), form.get("command")) {
        (Some(payload), _) => (
            "interactive",
            serde_json::from_str::<serde_json::Value>(payload)
                .map_err(|_| bad_request("payload is not JSON"))?,
        ),
        (None, Some(_)) => ("slash_commands", json!(form)),
        (None, None) => return Err(bad_request("neither an interaction nor a command")),
    };
    let classified = slack::events::classify(kind, &payload)
        .ok_or_else(|| bad_request("the request names no team"))?;
    // Interactions carry no id of their own: the trigger id is unique per interaction.
    let delivery_id = payload["trigger_id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body)));
    let (stored, organization) = store_slack(
        &state,
        classified,
        delivery_id,
        payload.to_string(),
        started,
    )
    .await?;
    if kind == "slash_commands"
        && let Some(organization) = organization
    {
        return Ok(Json(
            shared.slash_command_response(&organization, &payload).await,
        ));
    }
    Ok(stored_json(&stored))
}
