//! Tenant routes through the tenant API: `POST /routes/create`, `/routes/list`,
//! `/routes/delete` and `/routes/test`, scoped by the bearer token's organization like
//! the rest (another organization's route is a 404). Routes are stored and take effect
//! at once; a secret setting the tenant leaves out (`http.forward`'s `secret`) is
//! generated and shown once, in the creation's answer, and never again.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use super::api::{ApiJson, ApiState, Organization, record, store_error, unknown_connector};
use crate::pipeline::Envelope;
use crate::pipeline::actions::Settings;
use crate::pipeline::tenant_routes::{NewRoute, RouteError};
use crate::store::routes::{self as stored, StoredRoute};
use crate::store::{StoreError, new_ordered_id, now};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    connector: String,
    /// A glob over event types; everything when left out.
    #[serde(default)]
    event_type: Option<String>,
    action: String,
    #[serde(default)]
    settings: Settings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteBody {
    route_id: String,
}

fn route_json(route: &StoredRoute) -> Value {
    json!({
        "id": route.id,
        "organization_id": route.organization_id,
        "connector": route.connector,
        "event_type": route.event_type,
        "action": route.action,
        // Secret settings are never shown back: only that they are set.
        "settings": serde_json::from_str::<Value>(&route.settings).unwrap_or(Value::Null),
        "has_secret_settings": route.secrets.is_some(),
        "created_at": route.created_at.and_utc().to_rfc3339(),
    })
}

pub(super) async fn create(
    State(state): State<Arc<ApiState>>,
    Extension(Organization(org)): Extension<Organization>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    if state.tree.connector(&body.connector).is_none() {
        return Err(unknown_connector(&body.connector));
    }
    let event_type = body.event_type.unwrap_or_else(|| "*".to_string());
    if event_type.is_empty() {
        return Err(invalid("event_type: must not be empty"));
    }
    let created = state
        .tree
        .tenant_routes()
        .create(NewRoute {
            organization_id: org.clone(),
            connector: body.connector,
            event_type,
            action: body.action,
            settings: body.settings,
        })
        .await
        .map_err(|error| match error {
            RouteError::Invalid(problems) => invalid(
                &problems
                    .iter()
                    .map(|p| match p.key.as_str() {
                        "action" => p.to_string(),
                        _ => format!("settings.{p}"),
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            RouteError::Unavailable(error) => {
                tracing::warn!(error = %error, "route not created");
                ApiError::unavailable("the route could not be stored, try again")
            }
        })?;
    let route = &created.route;
    record(
        &state.store,
        &org,
        "route.create",
        None,
        json!({"route_id": route.id, "connector_type": route.connector, "action": route.action}),
    )
    .await;
    let mut answer = json!({"route": route_json(route)});
    if !created.generated.is_empty() {
        // Shown this once: only its ciphertext is kept.
        answer["generated"] = Value::Object(created.generated);
    }
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

pub(super) async fn list(
    State(state): State<Arc<ApiState>>,
    Extension(Organization(org)): Extension<Organization>,
) -> Result<Json<Value>, ApiError> {
    let routes = stored::list(&state.store, &org)
        .await
        .map_err(store_error)?;
    Ok(Json(
        json!({"routes": routes.iter().map(route_json).collect::<Vec<_>>()}),
    ))
}

pub(super) async fn delete(
    State(state): State<Arc<ApiState>>,
    Extension(Organization(org)): Extension<Organization>,
    ApiJson(body): ApiJson<RouteBody>,
) -> Result<Json<Value>, ApiError> {
    state
        .tree
        .tenant_routes()
        .delete(&org, &body.route_id)
        .await
        .map_err(|error| match error {
            StoreError::NotFound => ApiError::not_found("no such route"),
            other => store_error(other),
        })?;
    record(
        &state.store,
        &org,
        "route.delete",
        None,
        json!({"route_id": body.route_id}),
    )
    .await;
    Ok(Json(json!({"deleted": body.route_id})))
}

/// Sends one synthetic event through the route and says how it went.
pub(super) async fn test(
    State(state): State<Arc<ApiState>>,
    Extension(Organization(org)): Extension<Organization>,
    ApiJson(body): ApiJson<RouteBody>,
) -> Result<Json<Value>, ApiError> {
    let route = stored::list(&state.store, &org)
        .await
        .map_err(store_error)?
        .into_iter()
        .find(|r| r.id == body.route_id)
        .ok_or_else(|| ApiError::not_found("no such route"))?;
    let envelope = synthetic_event(&route);
    let outcome = state
        .tree
        .tenant_routes()
        .routes()
        .run_one(&org, &route.id, &envelope)
        .await
        .ok_or_else(|| {
            ApiError::unavailable("the route is stored but not running yet, try again")
        })?;
    let mut answer = json!({"route_id": route.id, "event": envelope, "ok": outcome.is_ok()});
    if let Err(error) = outcome {
        answer["error"] = error.into();
    }
    Ok(Json(answer))
}

/// An event the route takes: its connector, an event type its glob matches, and a
/// payload that says what it is.
fn synthetic_event(route: &StoredRoute) -> Envelope {
    let event_type = route.event_type.replace('*', "test").replace('?', "x");
    let id = new_ordered_id();
    Envelope {
        delivery_id: format!("route-test-{id}"),
        id,
        organization_id: Some(route.organization_id.clone()),
        integration_id: None,
        connector: route.connector.clone(),
        event_type,
        occurred_at: None,
        received_at: now().and_utc().to_rfc3339(),
        payload: json!({
            "switchboard_route_test": true,
            "message": "a synthetic event sent by POST /routes/test",
        }),
    }
}

fn invalid(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_route", message)
}
