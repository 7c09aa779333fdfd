//! The admin endpoint: liveness and readiness, the actor health tree, restarts of one
//! connector or integration, and Prometheus metrics.
//!
//! `/healthz` and `/readyz` are open (probes carry no secrets); everything else asks
//! for `Authorization: Bearer <admin.token>` when a token is configured.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use switchboard_actors::{HealthReport, ObserveOptions, Status};

use super::{ApiError, metrics};
use crate::secret::Secret;
use crate::store::{events, integrations, vault_keys};
use crate::tree::{ActorTree, TreeError};
use crate::vault::VaultError;
use crate::vault::rotation::{self, RotationReport};

pub struct AdminState {
    pub tree: Arc<ActorTree>,
    pub token: Option<Secret>,
    pub rotation: RotationState,
    pub rotation_batch: usize,
}

/// The data-key rotation started from the admin endpoint, if any.
#[derive(Default)]
pub struct RotationState {
    current: tokio::sync::Mutex<Option<RotationRun>>,
}

struct RotationRun {
    new_key_id: String,
    started_at: switchboard_actors::Timestamp,
    /// `None` while running.
    outcome: Option<Result<RotationReport, String>>,
}

pub fn router(state: Arc<AdminState>) -> Router {
    let protected = Router::new()
        .route("/admin/actors", get(actors))
        .route("/admin/cluster", get(cluster))
        .route("/admin/connectors/{name}", get(connector))
        .route("/admin/connectors/{name}/restart", post(restart_connector))
        .route("/admin/integrations", get(search_integrations))
        .route(
            "/admin/integrations/{id}/restart",
            post(restart_integration),
        )
        .route(
            "/admin/integrations/{id}/validate",
            post(validate_integration),
        )
        .route("/admin/events", get(list_events))
        .route("/admin/events/{id}", get(get_event))
        .route("/admin/events/{id}/replay", post(replay_event))
        .route("/admin/vault", get(vault_status))
        .route("/admin/vault/rotate", post(rotate_vault))
        .route("/metrics", get(prometheus))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(protected)
        .merge(super::ui::router())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .with_state(state)
}

async fn require_token(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if !presented.is_some_and(|candidate| token.matches(candidate)) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

/// Ready when the root supervisor answers and no supervisor is failing or restarting.
async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    // The root's children (store, vault, connectors) say all readiness needs; their
    // own children (tens of thousands of integrations) are not asked.
    let tree = state.tree.health_with(services_only()).await;
    let (ready, body) = readiness(&tree, state.tree.is_running());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Whether the daemon is ready, and a body naming each check.
fn readiness(tree: &HealthReport, root_running: bool) -> (bool, serde_json::Value) {
    let root_ok = root_running && !tree.stale;
    let unsettled: Vec<&str> = tree
        .walk()
        .into_iter()
        .filter(|(_, node)| matches!(node.kind.as_str(), "supervisor" | "connector"))
        // A connector still loading its integrations is `starting`, a busy one stale:
        // neither is ready yet.
        .filter(|(_, node)| {
            node.stale
                || matches!(
                    node.status,
                    Status::Failed | Status::Backoff | Status::Restarting | Status::Starting
                )
        })
        .map(|(_, node)| node.name.as_str())
        .collect();
    let check = |ok: bool, detail: String| if ok { json!("ok") } else { json!(detail) };
    // The store and the vault must be up: the node's own status says so, its error why.
    let service = |name: &str| match tree.find(&[name]) {
        Some(node) if node.status == Status::Running && !node.stale => (true, json!("ok")),
        Some(node) => (
            false,
            json!(format!(
                "{}: {}",
                node.status,
                node.last_error.as_deref().unwrap_or("not answering")
            )),
        ),
        None => (false, json!("not running")),
    };
    let (store_ok, store) = service("store");
    let (vault_ok, vault) = service("vault");
    let (inbox_ok, inbox) = service("inbox");
    let ready = root_ok && unsettled.is_empty() && store_ok && vault_ok && inbox_ok;
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "actor_tree": check(root_ok, "root supervisor is not answering".to_string()),
            "supervisors": check(unsettled.is_empty(), format!("not running: {}", unsettled.join(", "))),
            "store": store,
            "vault": vault,
            "inbox": inbox,
        }
    });
    (ready, body)
}

/// `?depth=N&limit=N&offset=N&status=S`: how much of the tree to list. Every node
/// lists at most `limit` children (default 1000; `details.children` keeps the total).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TreeQuery {
    depth: Option<u32>,
    limit: Option<usize>,
    offset: Option<usize>,
    status: Option<String>,
}

const DEFAULT_LIMIT: usize = 1000;

impl TreeQuery {
    fn options(self) -> Result<ObserveOptions, ApiError> {
        let status = match self.status.as_deref() {
            None => None,
            Some(name) => Some(
                Status::ALL
                    .into_iter()
                    .find(|s| s.as_str() == name)
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "invalid_query",
                            format!(
                                "unknown status '{name}': use one of {}",
                                Status::ALL.map(|s| s.as_str()).join(", ")
                            ),
                        )
                    })?,
            ),
        };
        Ok(ObserveOptions {
            depth: self.depth,
            limit: Some(self.limit.unwrap_or(DEFAULT_LIMIT)),
            offset: self.offset.unwrap_or(0),
            status,
        })
    }
}

fn tree_query(query: Result<Query<TreeQuery>, QueryRejection>) -> Result<ObserveOptions, ApiError> {
    let Query(query) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    query.options()
}

async fn actors(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<TreeQuery>, QueryRejection>,
) -> Result<Json<HealthReport>, ApiError> {
    Ok(Json(state.tree.health_with(tree_query(query)?).await))
}

async fn connector(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    query: Result<Query<TreeQuery>, QueryRejection>,
) -> Result<Json<HealthReport>, ApiError> {
    let options = tree_query(query)?;
    connector_node(&state, &name, options).await.map(Json)
}

async fn connector_node(
    state: &AdminState,
    name: &str,
    options: ObserveOptions,
) -> Result<HealthReport, ApiError> {
    state
        .tree
        .connector_health(name, options)
        .await
        .ok_or_else(|| ApiError::not_found(format!("no connector named '{name}' is configured")))
}

async fn restart_connector(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Json<HealthReport>, ApiError> {
    state
        .tree
        .restart_connector(&name, "admin API")
        .await
        .map_err(tree_error)?;
    let summary = ObserveOptions {
        depth: Some(0),
        ..ObserveOptions::default()
    };
    // The connector as it is once restarted (its integrations start behind it; poll
    // `GET /admin/connectors/{name}` for them).
    let mut node = connector_node(&state, &name, summary.clone()).await?;
    for _ in 0..RESTART_SETTLE_POLLS {
        if settled(node.status) {
            break;
        }
        tokio::time::sleep(RESTART_SETTLE_POLL).await;
        node = connector_node(&state, &name, summary.clone()).await?;
    }
    Ok(Json(node))
}

/// How long a restart's answer waits for the restarted actor to settle.
const RESTART_SETTLE_POLLS: u32 = 50;
const RESTART_SETTLE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether a restarted actor is done restarting (running, or given up).
fn settled(status: Status) -> bool {
    matches!(status, Status::Running | Status::Failed | Status::Stopped)
}

async fn restart_integration(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match state.tree.restart_integration(&id, "admin API").await {
        Ok(()) => {}
        // Cluster mode: it runs on another node, which is told to restart it.
        Err(TreeError::UnknownIntegration(_)) if state.tree.cluster().is_some() => {
            let owner = state.tree.carry_restart(&id).await.map_err(tree_error)?;
            return Ok((
                StatusCode::ACCEPTED,
                Json(serde_json::json!({"integration_id": id, "carried_to": owner})),
            )
                .into_response());
        }
        Err(error) => return Err(tree_error(error)),
    }
    let mut node = None;
    for _ in 0..RESTART_SETTLE_POLLS {
        node = state.tree.integration_node(&id).await;
        if node.as_ref().is_some_and(|n| settled(n.status)) {
            break;
        }
        tokio::time::sleep(RESTART_SETTLE_POLL).await;
    }
    node.map(|node| Json(node).into_response())
        .ok_or_else(|| ApiError::not_found(format!("no integration '{id}' is running")))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterQuery {
    integration_id: Option<String>,
}

/// The live nodes (heartbeat age, leases held, version) and, for `?integration_id=`,
/// which node owns it. Any node answers; `node_id` says which.
async fn cluster(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<ClusterQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use std::sync::atomic::Ordering;
    let Query(query) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let Some(cluster) = state.tree.cluster() else {
        return Ok(Json(serde_json::json!({
            "mode": "single",
            "message": "cluster mode is off: this node runs every integration",
        })));
    };
    let store = state.tree.store();
    let unavailable = |e: crate::store::StoreError| ApiError::unavailable(e.to_string());
    let nodes: Vec<serde_json::Value> = crate::store::cluster::live_nodes(store)
        .await
        .map_err(unavailable)?
        .into_iter()
        .map(|node| {
            serde_json::json!({
                "node_id": node.node_id,
                "version": node.version,
                "started_at": node.started_at.and_utc().to_rfc3339(),
                "heartbeat_age_seconds": node.heartbeat_age,
                "leases": node.leases,
            })
        })
        .collect();
    let mut answer = serde_json::json!({
        "mode": "cluster",
        "node_id": cluster.node_id,
        "lease_ttl_seconds": cluster.lease_ttl.as_secs_f64(),
        "nodes": nodes,
        "leases_held": cluster.held(),
        "leases_lost": cluster.leases_lost.load(Ordering::Relaxed),
        "fenced_writes": cluster.fenced_writes.load(Ordering::Relaxed),
    });
    if let Some(id) = query.integration_id {
        let owner = crate::store::cluster::owner(store, &id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ApiError::not_found(format!("no live integration '{id}'")))?;
        answer["owner"] = serde_json::json!({
            "integration_id": id,
            "node_id": owner.node_id,
            "epoch": owner.epoch,
            "held": owner.held,
            "expires_at": owner.expires_at.and_utc().to_rfc3339(),
        });
    }
    Ok(Json(answer))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    /// Part of an integration's id, its organization's id or name, or its provider
    /// account.
    search: String,
    connector: Option<String>,
    limit: Option<i64>,
}

/// Integrations found by what an operator knows of them, each with its actor's
/// report (`null` when it is not running): the admin page's search.
async fn search_integrations(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| invalid_query(e.body_text()))?;
    let text = query.search.trim();
    if text.is_empty() {
        return Err(invalid_query(
            "search: give part of an id, an organization or an account",
        ));
    }
    let found = integrations::search(
        state.tree.store(),
        text,
        query.connector.as_deref(),
        query.limit.unwrap_or(50).clamp(1, 200),
    )
    .await
    .map_err(store_unavailable)?;
    let mut listed = Vec::with_capacity(found.len());
    for integration in found {
        let actor = state.tree.integration_node(&integration.id).await;
        listed.push(json!({
            "integration": {
                "id": integration.id,
                "organization_id": integration.organization_id,
                "connector_type": integration.connector_type,
                "status": integration.status,
                "external_id": integration.external_id,
                "metadata": serde_json::from_str::<serde_json::Value>(&integration.metadata)
                    .unwrap_or_default(),
            },
            "actor": actor,
        }));
    }
    Ok(Json(json!({"integrations": listed})))
}

/// Validates one integration's credentials with its provider now.
async fn validate_integration(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match state.tree.validate_integration(&id).await {
        Some(Ok(())) => Ok(Json(json!({"integration_id": id, "valid": true}))),
        Some(Err(reason)) => Ok(Json(
            json!({"integration_id": id, "valid": false, "reason": reason}),
        )),
        None => Err(ApiError::not_found(format!(
            "no integration '{id}' is running"
        ))),
    }
}

async fn prometheus(State(state): State<Arc<AdminState>>) -> Response {
    // Per-integration series would be tens of thousands: connectors report counts
    // by status instead (see metrics::render).
    let text = metrics::render(
        &state.tree.health_with(services_only()).await,
        Some(state.tree.pipeline_metrics()),
        state.tree.cluster().map(AsRef::as_ref),
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    status: Option<String>,
    connector: Option<String>,
    integration_id: Option<String>,
    event_type: Option<String>,
    /// RFC 3339: received at or after.
    since: Option<String>,
    /// RFC 3339: received before.
    until: Option<String>,
    /// A page of older events than this event id (the `next` of a page).
    before: Option<String>,
    /// A page of newer events than this event id (the `prev` of a page).
    after: Option<String>,
    limit: Option<i64>,
}

fn rfc3339(at: chrono::NaiveDateTime) -> String {
    at.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// An event as an operator reads it: times in RFC 3339 (UTC, `Z`), the payload as
/// JSON when it is JSON and as the text it is otherwise.
fn event_json(event: &events::Event) -> serde_json::Value {
    let (payload, format) = match serde_json::from_str::<serde_json::Value>(&event.payload) {
        Ok(parsed) => (parsed, "json"),
        Err(_) => (json!(event.payload), "text"),
    };
    json!({
        "id": event.id,
        "organization_id": event.organization_id,
        "integration_id": event.integration_id,
        "connector_type": event.connector_type,
        "event_type": event.event_type,
        "delivery_id": event.delivery_id,
        "status": event.status,
        "attempts": event.attempts,
        "last_error": event.last_error,
        "next_attempt_at": event.next_attempt_at.map(rfc3339),
        "received_at": rfc3339(event.received_at),
        "occurred_at": event.occurred_at.map(rfc3339),
        "processed_at": event.processed_at.map(rfc3339),
        "payload": payload,
        "payload_format": format,
    })
}

fn invalid_query(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
}

fn parse_time(name: &str, value: Option<&str>) -> Result<Option<chrono::NaiveDateTime>, ApiError> {
    value
        .map(|text| {
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|t| t.naive_utc())
                .map_err(|e| invalid_query(format!("{name}: not an RFC 3339 time ({e})")))
        })
        .transpose()
}

/// Events, newest first, a page at a time: filtered by status (`pending`, `done`,
/// `dead`), connector, integration, event type and time received. The answer's `next`
/// (older) and `prev` (newer) are the query strings of the neighbouring pages.
async fn list_events(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| invalid_query(e.body_text()))?;
    if let Some(status) = query.status.as_deref()
        && ![events::PENDING, events::DONE, events::DEAD].contains(&status)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!(
                "unknown status '{status}': use one of {}, {}, {}",
                events::PENDING,
                events::DONE,
                events::DEAD
            ),
        ));
    }
    if query.before.is_some() && query.after.is_some() {
        return Err(invalid_query("give before or after, not both"));
    }
    let store = state.tree.store();
    if let Some(id) = query.integration_id.as_deref()
        && !integrations::exists(store, id)
            .await
            .map_err(store_unavailable)?
    {
        return Err(ApiError::not_found(format!("no integration '{id}'")));
    }
    let filter = events::EventFilter {
        status: query.status.as_deref(),
        connector_type: query.connector.as_deref(),
        integration_id: query.integration_id.as_deref(),
        event_type: query.event_type.as_deref(),
        since: parse_time("since", query.since.as_deref())?,
        until: parse_time("until", query.until.as_deref())?,
        before: query.before.as_deref(),
        after: query.after.as_deref(),
        limit: query.limit.unwrap_or(100).clamp(1, 10_000),
    };
    let found = events::page(store, &filter)
        .await
        .map_err(store_unavailable)?;
    // The neighbouring pages keep every filter and move the cursor.
    let cursor = |key: &str, id: &str| {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("status", &query.status),
            ("connector", &query.connector),
            ("integration_id", &query.integration_id),
            ("event_type", &query.event_type),
            ("since", &query.since),
            ("until", &query.until),
        ] {
            if let Some(value) = value {
                pairs.append_pair(name, value);
            }
        }
        pairs.append_pair("limit", &filter.limit.to_string());
        pairs.append_pair(key, id);
        pairs.finish()
    };
    let full = found.len() as i64 == filter.limit;
    let next = found
        .last()
        .filter(|_| full || query.after.is_some())
        .map(|e| cursor("before", &e.id));
    let prev = found
        .first()
        .filter(|_| query.before.is_some() || (query.after.is_some() && full))
        .map(|e| cursor("after", &e.id));
    Ok(Json(json!({
        "events": found.iter().map(event_json).collect::<Vec<_>>(),
        "next": next,
        "prev": prev,
    })))
}

/// One event with its attempts, last error and payload.
async fn get_event(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    events::get(state.tree.store(), &id)
        .await
        .map_err(store_unavailable)?
        .map(|event| Json(event_json(&event)))
        .ok_or_else(|| ApiError::not_found(format!("no event '{id}'")))
}

/// Puts an event back to pending; its integration processes it again, in order.
async fn replay_event(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let event = events::replay(state.tree.store(), &id)
        .await
        .map_err(|error| match error {
            crate::store::StoreError::NotFound => ApiError::not_found(format!("no event '{id}'")),
            other => store_unavailable(other),
        })?;
    if let Some(integration_id) = &event.integration_id {
        state.tree.wake_integration(integration_id);
    }
    Ok(Json(json!({"event": event_json(&event)})))
}

/// Key ids, which one is active, how many credentials each protects, and the rotation.
async fn vault_status(State(state): State<Arc<AdminState>>) -> Result<Response, ApiError> {
    let status = state.tree.vault().status().await.map_err(vault_error)?;
    let store = state.tree.store();
    let rows = vault_keys::list(store).await.map_err(store_unavailable)?;
    let counts = integrations::count_by_key(store)
        .await
        .map_err(store_unavailable)?;
    let route_counts = crate::store::routes::count_by_key(store)
        .await
        .map_err(store_unavailable)?;
    let keys: Vec<_> = rows
        .iter()
        .map(|row| {
            let credentials = counts
                .iter()
                .find(|(id, _)| *id == row.id)
                .map_or(0, |(_, n)| *n);
            json!({
                "id": row.id,
                "active": row.active,
                "created_at": row.created_at.and_utc().to_rfc3339(),
                "wrapped_by": row.master_fingerprint,
                "credentials": credentials,
                "route_settings": route_counts
                    .iter()
                    .find(|(id, _)| *id == row.id)
                    .map_or(0, |(_, n)| *n),
            })
        })
        .collect();
    let rotation = state.rotation.current.lock().await.as_ref().map(|run| {
        json!({
            "new_key_id": run.new_key_id,
            "started_at": run.started_at,
            "state": match &run.outcome {
                None => "running",
                Some(Ok(_)) => "done",
                Some(Err(_)) => "failed",
            },
            "report": run.outcome.as_ref().and_then(|o| o.as_ref().ok()),
            "error": run.outcome.as_ref().and_then(|o| o.as_ref().err()),
        })
    });
    Ok(Json(json!({
        "state": status.state,
        "master_key": status.master_key,
        "active_key": status.active_key,
        "keys": keys,
        "rotation": rotation,
    }))
    .into_response())
}

/// Starts a rotation: a new active data key now, re-encryption in the background.
async fn rotate_vault(State(state): State<Arc<AdminState>>) -> Result<Response, ApiError> {
    let mut current = state.rotation.current.lock().await;
    if current.as_ref().is_some_and(|run| run.outcome.is_none()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "rotation_running",
            "a rotation is already running",
        ));
    }
    let vault = state.tree.vault();
    let new_key_id = vault.add_data_key().await.map_err(vault_error)?;
    *current = Some(RotationRun {
        new_key_id: new_key_id.clone(),
        started_at: switchboard_actors::Timestamp::now(),
        outcome: None,
    });
    drop(current);
    let task_state = Arc::clone(&state);
    tracing::info!(new_key_id = %new_key_id, by = "admin API", "key rotation started");
    tokio::spawn(async move {
        let store = task_state.tree.store().clone();
        let outcome = rotation::reencrypt(&store, &vault, task_state.rotation_batch, None)
            .await
            .map_err(|e| e.to_string());
        match &outcome {
            Ok(report) => tracing::info!(
                reencrypted = report.reencrypted,
                failed = report.failed,
                took = ?report.took,
                "key rotation finished"
            ),
            Err(error) => {
                tracing::warn!(error = %error, "rotation failed; credentials stay readable and the next start resumes it")
            }
        }
        if let Some(run) = task_state.rotation.current.lock().await.as_mut() {
            run.outcome = Some(outcome);
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"new_key_id": new_key_id, "state": "running"})),
    )
        .into_response())
}

fn vault_error(error: VaultError) -> ApiError {
    tracing::warn!(error = %error, "vault unavailable to the admin endpoint");
    ApiError::unavailable("the vault is unavailable (the daemon's log says why), retry")
}

/// The store's own error text is for the log, never the answer.
fn store_unavailable(error: crate::store::StoreError) -> ApiError {
    tracing::warn!(error = %error, "store unavailable to the admin endpoint");
    ApiError::unavailable("the store is unavailable (the daemon's log says why), retry")
}

/// The root and its direct children, without listing what is below them.
fn services_only() -> ObserveOptions {
    ObserveOptions {
        depth: Some(1),
        ..ObserveOptions::default()
    }
}

fn tree_error(error: TreeError) -> ApiError {
    match error {
        TreeError::UnknownConnector(_) | TreeError::UnknownIntegration(_) => {
            ApiError::not_found(error.to_string())
        }
        TreeError::Start(_) | TreeError::Unavailable => {
            tracing::warn!(error = %error, "actor tree unavailable to the admin endpoint");
            ApiError::unavailable(
                "the actor tree could not do that now (the daemon's log says why)",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(connector_status: Status) -> HealthReport {
        let mut root = HealthReport::new("root", "supervisor", Status::Running);
        root.children
            .push(HealthReport::new("store", "store", Status::Running));
        root.children
            .push(HealthReport::new("vault", "vault", Status::Running));
        root.children
            .push(HealthReport::new("inbox", "inbox", Status::Running));
        root.children.push(HealthReport::new(
            "connector:acme",
            "connector",
            connector_status,
        ));
        root
    }

    #[test]
    fn an_unreachable_store_or_a_sealed_vault_is_not_ready_and_says_why() {
        let mut down = tree(Status::Running);
        down.children[0].status = Status::Backoff;
        down.children[0].last_error = Some("the store is unreachable: connection refused".into());
        let (ready, body) = readiness(&down, true);
        assert!(!ready);
        assert_eq!(
            body["checks"]["store"],
            "backoff: the store is unreachable: connection refused"
        );
        assert_eq!(body["checks"]["vault"], "ok");

        let mut sealed = tree(Status::Running);
        sealed.children[1].status = Status::Failed;
        sealed.children[1].last_error =
            Some("data key 'dk_1' is wrapped by master key mk_a".into());
        let (ready, body) = readiness(&sealed, true);
        assert!(!ready);
        assert!(body["checks"]["vault"].as_str().unwrap().contains("dk_1"));
    }

    #[test]
    fn ready_when_every_supervisor_runs() {
        let (ready, body) = readiness(&tree(Status::Running), true);
        assert!(ready);
        assert_eq!(body["checks"]["supervisors"], "ok");
    }

    #[test]
    fn a_connector_in_backoff_failed_or_still_loading_is_not_ready() {
        for status in [
            Status::Backoff,
            Status::Failed,
            Status::Restarting,
            Status::Starting,
        ] {
            let (ready, body) = readiness(&tree(status), true);
            assert!(!ready);
            assert_eq!(body["checks"]["supervisors"], "not running: connector:acme");
        }
    }

    #[test]
    fn a_silent_or_stopped_root_is_not_ready() {
        let mut stale = tree(Status::Running);
        stale.stale = true;
        assert!(!readiness(&stale, true).0);
        let (ready, body) = readiness(&tree(Status::Running), false);
        assert!(!ready);
        assert_eq!(
            body["checks"]["actor_tree"],
            "root supervisor is not answering"
        );
    }
}
