//! The admin endpoint: liveness and readiness, the actor health tree, restarts of one
//! connector or integration, and Prometheus metrics.
//!
//! `/healthz` and `/readyz` are open (probes carry no secrets); everything else asks
//! for `Authorization: Bearer <admin.token>` when a token is configured.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use switchboard_actors::{HealthReport, Status};

use super::{ApiError, metrics};
use crate::secret::Secret;
use crate::tree::{ActorTree, TreeError};

pub struct AdminState {
    pub tree: Arc<ActorTree>,
    pub token: Option<Secret>,
}

pub fn router(state: Arc<AdminState>) -> Router {
    let protected = Router::new()
        .route("/admin/actors", get(actors))
        .route("/admin/connectors/{name}", get(connector))
        .route("/admin/connectors/{name}/restart", post(restart_connector))
        .route(
            "/admin/integrations/{id}/restart",
            post(restart_integration),
        )
        .route("/metrics", get(prometheus))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(protected)
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
    let tree = state.tree.health().await;
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
        .filter(|(_, node)| {
            matches!(
                node.status,
                Status::Failed | Status::Backoff | Status::Restarting
            )
        })
        .map(|(_, node)| node.name.as_str())
        .collect();
    let check = |ok: bool, detail: String| if ok { json!("ok") } else { json!(detail) };
    let ready = root_ok && unsettled.is_empty();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "actor_tree": check(root_ok, "root supervisor is not answering".to_string()),
            "supervisors": check(unsettled.is_empty(), format!("not running: {}", unsettled.join(", "))),
        }
    });
    (ready, body)
}

async fn actors(State(state): State<Arc<AdminState>>) -> Json<HealthReport> {
    Json(state.tree.health().await)
}

async fn connector(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Json<HealthReport>, ApiError> {
    connector_node(&state, &name).await.map(Json)
}

async fn connector_node(state: &AdminState, name: &str) -> Result<HealthReport, ApiError> {
    let tree = state.tree.health().await;
    tree.find(&[&format!("connector:{name}")])
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no connector named '{name}' is configured")))
}

async fn restart_connector(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Json<HealthReport>, ApiError> {
    state
        .tree
        .restart_connector(&name)
        .await
        .map_err(tree_error)?;
    connector_node(&state, &name).await.map(Json)
}

async fn restart_integration(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<HealthReport>, ApiError> {
    state
        .tree
        .restart_integration(&id)
        .await
        .map_err(tree_error)?;
    let tree = state.tree.health().await;
    tree.find_named(&format!("integration:{id}"))
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no integration '{id}' is running")))
}

async fn prometheus(State(state): State<Arc<AdminState>>) -> Response {
    let text = metrics::render(&state.tree.health().await);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn tree_error(error: TreeError) -> ApiError {
    match error {
        TreeError::UnknownConnector(_) | TreeError::UnknownIntegration(_) => {
            ApiError::not_found(error.to_string())
        }
        TreeError::Start(_) | TreeError::Unavailable => ApiError::unavailable(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(connector_status: Status) -> HealthReport {
        let mut root = HealthReport::new("root", "supervisor", Status::Running);
        root.children.push(HealthReport::new(
            "connector:github",
            "connector",
            connector_status,
        ));
        root
    }

    #[test]
    fn ready_when_every_supervisor_runs() {
        let (ready, body) = readiness(&tree(Status::Running), true);
        assert!(ready);
        assert_eq!(body["checks"]["supervisors"], "ok");
    }

    #[test]
    fn a_connector_in_backoff_or_failed_is_not_ready() {
        for status in [Status::Backoff, Status::Failed, Status::Restarting] {
            let (ready, body) = readiness(&tree(status), true);
            assert!(!ready);
            assert_eq!(
                body["checks"]["supervisors"],
                "not running: connector:github"
            );
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
