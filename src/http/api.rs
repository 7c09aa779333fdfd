//! The tenant API on `server.listen`: authorize, callback, list, revoke, status, and
//! the browser's OAuth callback.
//!
//! Every `/integrations/*` call carries `Authorization: Bearer <organization API
//! token>`; the organization always comes from the token, never from the body, and
//! another organization's resources are 404 like missing ones.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::warn;

use super::{ApiError, oauth_pages};
use crate::connectors::{AuthorizationStart, AuthorizeRequest, CallbackRequest, ConnectorError};
use crate::integration::{self, CredentialStore, VaultCredentials};
use crate::secret::Secret;
use crate::store::integrations::{self, Integration};
use crate::store::oauth_states::{self, StateError};
use crate::store::{Store, StoreError, audit, events, tokens};
use crate::tree::ActorTree;

pub struct ApiState {
    pub tree: Arc<ActorTree>,
    /// Webhook ingress, mounted beside the tenant API.
    pub ingress: Arc<super::ingress::Ingress>,
    pub max_body_bytes: usize,
    pub store: Store,
    /// Where providers send browsers back: `<public_url>/oauth/<connector>/callback`.
    pub public_url: String,
    pub state_ttl: Duration,
}

/// The organization the request's token belongs to.
#[derive(Clone)]
pub(super) struct Organization(pub(super) String);

pub fn router(state: Arc<ApiState>) -> Router {
    let mut tenant = Router::new();
    for (path, route) in [
        ("/integrations/authorize", post(authorize)),
        ("/integrations/callback", post(callback)),
        ("/integrations/list", post(list)),
        ("/integrations/revoke", post(revoke)),
        ("/integrations/status", post(status)),
        ("/routes/create", post(super::routes_api::create)),
        ("/routes/list", post(super::routes_api::list)),
        ("/routes/delete", post(super::routes_api::delete)),
        ("/routes/test", post(super::routes_api::test)),
    ] {
        // Paths accept an optional trailing slash.
        tenant = tenant
            .route(path, route.clone())
            .route(&format!("{path}/"), route);
    }
    let tenant = tenant.route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let ingress = state.ingress.router(None, state.max_body_bytes);
    Router::new()
        .merge(tenant)
        .route("/oauth/{connector}/callback", get(browser_callback))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .with_state(state)
        .merge(ingress)
}

async fn authenticate(
    State(state): State<Arc<ApiState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_string);
    let Some(token) = token else {
        return ApiError::unauthorized().into_response();
    };
    match tokens::authenticate(&state.store, &token).await {
        Ok(Some(organization)) => {
            request.extensions_mut().insert(Organization(organization));
            next.run(request).await
        }
        Ok(None) => ApiError::unauthorized().into_response(),
        Err(error) => store_error(error).into_response(),
    }
}

/// JSON bodies whose errors answer in the API's error format. A body without a
/// `Content-Type` is read as JSON (as `curl -d` sends it); another declared type is a
/// 415.
pub(super) struct ApiJson<T>(pub(super) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or_default().to_string());
        let json_like = |t: &str| {
            let essence = t.split(';').next().unwrap_or_default().trim();
            essence.eq_ignore_ascii_case("application/json")
                || essence.to_ascii_lowercase().ends_with("+json")
        };
        if let Some(declared) = declared.as_deref().filter(|t| !json_like(t)) {
            // `curl -d` declares a form unless told otherwise: say how.
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "the body must be JSON, not {declared}: send Content-Type: application/json, or none"
                ),
            ));
        }
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|error| ApiError::new(error.status(), "invalid_request", error.body_text()))?;
        match serde_json::from_slice::<T>(&body) {
            Ok(value) => Ok(ApiJson(value)),
            Err(error) if error.is_data() => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                error.to_string(),
            )),
            Err(error) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("the body is not valid JSON: {error}"),
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizeBody {
    connector_type: String,
    user_id: Option<String>,
    /// Which way to connect, for a connector that offers several.
    flow: Option<String>,
}

async fn authorize(
    State(state): State<Arc<ApiState>>,
    Extension(Organization(org)): Extension<Organization>,
    ApiJson(body): ApiJson<AuthorizeBody>,
) -> Result<Response, ApiError> {
    let connector = state
        .tree
        .connector(&body.connector_type)
        .cloned()
        .ok_or_else(|| unknown_connector(&body.connector_type))?;
    let pending = integrations::create_pending(
        &state.store,
        &org,
        &body.connector_type,
        body.user_id.as_deref(),
    )
    .await
    .map_err(store_error)?;
    let (oauth_state, expires_at) = oauth_states::create(
        &state.store,
        &org,
        &body.connector_type,
        body.user_id.as_deref(),
        state.state_ttl,
    )
    .await
    .map_err(store_error)?;
    let start = connector
        .authorize(&AuthorizeRequest {
            organization_id: org.clone(),
            integration_id: pending.id.clone(),
            public_url: state.public_url.trim_end_matches('/').to_string(),
            user_id: body.user_id.clone(),
            flow: body.flow.clone(),
            state: oauth_state.expose().clone(),
            redirect_url: redirect_url(&state.public_url, &body.connector_type),
        })
        .await
        .map_err(connector_error)?;
    let (kind, url, fields, instructions) = match &start {
        AuthorizationStart::Oauth2 { url } => ("oauth2", Some(url.clone()), None, None),
        AuthorizationStart::Installation { url } => ("installation", Some(url.clone()), None, None),
        AuthorizationStart::ApiKey {
            fields,
            instructions,
        } => ("api_key", None, Some(fields.clone()), instructions.clone()),
    };
    record(
        &state.store,
        &org,
        "integration.authorize",
        Some(&pending.id),
        json!({"connector_type": body.connector_type, "type": kind}),
    )
    .await;
    let mut answer = json!({
        "type": kind,
        "state": oauth_state.expose(),
        "expires_at": expires_at.and_utc().to_rfc3339(),
        "integration_id": pending.id,
    });
    if let Some(url) = url {
        answer["url"] = url.into();
    }
    if let Some(fields) = fields {
        answer["fields"] = fields.into();
    }
    if let Some(instructions) = instructions {
        answer["instructions"] = instructions;
    }
    Ok(Json(answer).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbackBody {
    connector_type: String,
    state: String,
    code: Option<String>,
    installation_id: Option<String>,
    credentials: Option<BTreeMap<String, String>>,
}

async fn callback(
    State(state): State<Arc<ApiState>>,
    Extension(Organization(org)): Extension<Organization>,
    ApiJson(body): ApiJson<CallbackBody>,
) -> Result<Response, ApiError> {
    state
        .tree
        .connector(&body.connector_type)
        .ok_or_else(|| unknown_connector(&body.connector_type))?;
    oauth_states::consume(&state.store, &body.state, Some(&org), &body.connector_type)
        .await
        .map_err(state_error)?;
    let (integration, reveal) = complete(
        &state,
        &org,
        &body.connector_type,
        CallbackRequest {
            organization_id: org.clone(),
            integration_id: String::new(),
            public_url: String::new(),
            code: body.code.map(Secret::new),
            installation_id: body.installation_id,
            credentials: body
                .credentials
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, Secret::new(v)))
                .collect(),
            redirect_url: redirect_url(&state.public_url, &body.connector_type),
        },
    )
    .await?;
    let mut answer = json!({"integration": integration_json(&integration)});
    if let Some(reveal) = reveal {
        // Shown this once (a generated signing secret): it is stored encrypted only.
        answer["reveal"] = reveal;
    }
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// Completes the organization's pending authorization: credentials from the provider,
/// encrypted, stored with the now active integration, and its actor started.
async fn complete(
    state: &ApiState,
    org: &str,
    connector_type: &str,
    mut request: CallbackRequest,
) -> Result<(Integration, Option<Value>), ApiError> {
    let connector = state
        .tree
        .connector(connector_type)
        .cloned()
        .ok_or_else(|| unknown_connector(connector_type))?;
    let pending = integrations::pending_for(&state.store, org, connector_type)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "no_pending_authorization",
                "this authorization was replaced or revoked: start again",
            )
        })?;
    request.integration_id = pending.id.clone();
    request.public_url = state.public_url.trim_end_matches('/').to_string();
    let authorized = connector
        .complete(&request)
        .await
        .map_err(connector_error)?;
    let expires_at = authorized
        .credentials
        .iter()
        .filter_map(|c| c.expires_at)
        .min();
    let sealed = integration::seal(
        &state.tree.vault(),
        org,
        &pending.id,
        authorized.credentials,
    )
    .await
    .map_err(ApiError::unavailable)?;
    let active = integrations::activate(
        &state.store,
        org,
        &pending.id,
        authorized.external_id,
        &authorized.metadata,
        sealed,
    )
    .await
    .map_err(|error| match error {
        StoreError::NotFound => ApiError::new(
            StatusCode::CONFLICT,
            "no_pending_authorization",
            "this authorization was replaced or revoked meanwhile: start again",
        ),
        // The provider account is bound to a live integration already.
        StoreError::Conflict(message) => {
            ApiError::new(StatusCode::CONFLICT, "account_already_connected", message)
        }
        // Another activation of the same account committed first.
        StoreError::Duplicate { .. } => ApiError::new(
            StatusCode::CONFLICT,
            "account_already_connected",
            "this account is already connected",
        ),
        other => store_error(other),
    })?;
    state.ingress.bound(&active);
    if let Err(error) = state.tree.add_integration(active.clone(), expires_at).await {
        // Stored and active: the connector's next start (or restart) runs its actor.
        warn!(integration_id = %active.id, error = %error, "integration stored but its actor did not start");
    }
    record(
        &state.store,
        org,
        "integration.callback",
        Some(&active.id),
        json!({"connector_type": connector_type, "external_id": active.external_id}),
    )
    .await;
    Ok((active, authorized.reveal))
}

/// What a provider puts in the query of the redirect. Providers add parameters of
/// their own (`scope`, `hmac`, ...): unknown ones are ignored, and a repeated one
/// counts once (the first).
#[derive(Default)]
struct BrowserCallback {
    state: Option<String>,
    code: Option<String>,
    installation_id: Option<String>,
    setup_action: Option<String>,
    /// OAuth's error answer (RFC 6749 4.1.2.1): `access_denied` when the user refused.
    error: Option<String>,
    error_description: Option<String>,
}

impl BrowserCallback {
    fn parse(query: Option<&str>) -> Self {
        let mut parsed = Self::default();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let slot = match key.as_ref() {
                "state" => &mut parsed.state,
                "code" => &mut parsed.code,
                "installation_id" => &mut parsed.installation_id,
                "setup_action" => &mut parsed.setup_action,
                "error" => &mut parsed.error,
                "error_description" => &mut parsed.error_description,
                _ => continue,
            };
            slot.get_or_insert_with(|| value.into_owned());
        }
        parsed
    }
}

/// Where the provider sends the browser back. The state names the organization.
async fn browser_callback(
    State(state): State<Arc<ApiState>>,
    Path(connector_type): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let query = BrowserCallback::parse(raw.as_deref());
    if state.tree.connector(&connector_type).is_none() {
        return oauth_pages::failure(StatusCode::NOT_FOUND, "This connector is not available.");
    }
    if let Some(error) = &query.error {
        return provider_refused(&state, &connector_type, &query, error).await;
    }
    let Some(oauth_state) = query.state else {
        if query.setup_action.as_deref() == Some("update") {
            // A tenant changed an installation from the provider's settings: nothing is
            // bound here; the installation's own events bring the change.
            return oauth_pages::updated(&connector_type);
        }
        return oauth_pages::failure(
            StatusCode::BAD_REQUEST,
            "The authorization state is missing.",
        );
    };
    let consumed =
        match oauth_states::consume(&state.store, &oauth_state, None, &connector_type).await {
            Ok(consumed) => consumed,
            Err(error) => {
                let response = state_error(error);
                return oauth_pages::failure(response.status(), response.message());
            }
        };
    let request = CallbackRequest {
        organization_id: consumed.organization_id.clone(),
        integration_id: String::new(),
        public_url: String::new(),
        code: query.code.map(Secret::new),
        installation_id: query.installation_id,
        credentials: BTreeMap::new(),
        redirect_url: redirect_url(&state.public_url, &connector_type),
    };
    match complete(&state, &consumed.organization_id, &connector_type, request).await {
        Ok((integration, _)) => {
            oauth_pages::success(&connector_type, integration.external_id.as_deref())
        }
        Err(error) => oauth_pages::failure(error.status(), error.message()),
    }
}

/// The provider sent the browser back with an error (the user denied access): the
/// page says so, and the pending integration the state names is closed as refused
/// (revoked, with the provider's words in its metadata) instead of left pending.
async fn provider_refused(
    state: &ApiState,
    connector_type: &str,
    query: &BrowserCallback,
    error: &str,
) -> Response {
    let described = match &query.error_description {
        Some(description) => format!("The provider reported: {description} ({error})."),
        None => format!("The provider reported: {error}."),
    };
    let page = oauth_pages::failure(StatusCode::BAD_REQUEST, &described);
    let Some(oauth_state) = &query.state else {
        return page;
    };
    // A state that is unknown, used or foreign closes nothing.
    let Ok(consumed) = oauth_states::consume(&state.store, oauth_state, None, connector_type).await
    else {
        return page;
    };
    let org = &consumed.organization_id;
    let refused = async {
        let Some(pending) = integrations::pending_for(&state.store, org, connector_type).await?
        else {
            return Ok::<_, StoreError>(());
        };
        let reason = json!({"error": error, "error_description": query.error_description});
        integrations::set_metadata(&state.store, org, &pending.id, &json!({"refused": reason}))
            .await?;
        integrations::revoke(&state.store, org, &pending.id).await?;
        audit::record(
            &state.store,
            Some(org),
            "provider",
            "integration.refused",
            Some(&pending.id),
            reason,
        )
        .await?;
        tracing::info!(integration_id = %pending.id, connector = connector_type, error, "authorization refused at the provider");
        Ok(())
    };
    if let Err(error) = refused.await {
        warn!(error = %error, "the refused authorization was not recorded");
    }
    page
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListBody {
    connector_type: Option<String>,
}

async fn list(
    State(state): State<Arc<ApiState>>,
    Extension(Organization(org)): Extension<Organization>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    // The body is optional here: no body lists everything.
    let body: ListBody = if body.iter().all(u8::is_ascii_whitespace) {
        ListBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                e.to_string(),
            )
        })?
    };
    let found = integrations::list(&state.store, &org, body.connector_type.as_deref())
        .await
        .map_err(store_error)?;
    Ok(Json(
        json!({"integrations": found.iter().map(integration_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IntegrationBody {
    integration_id: String,
}

async fn revoke(
    State(state): State<Arc<ApiState>>,
    Extension(Organization(org)): Extension<Organization>,
    ApiJson(body): ApiJson<IntegrationBody>,
) -> Result<Json<Value>, ApiError> {
    let found = integrations::get(&state.store, &org, &body.integration_id)
        .await
        .map_err(store_error)?
        .filter(|i| i.status != integrations::STATUS_REVOKED)
        .ok_or_else(|| ApiError::not_found("no such integration"))?;

    // At the provider first, where it can; a failure there does not keep the tenant's
    // revocation from taking effect here.
    let at_provider = match (
        state.tree.connector(&found.connector_type),
        found.status.as_str(),
    ) {
        (Some(connector), status) if status != integrations::STATUS_PENDING => {
            // Read only: no write here needs this node's lease.
            let credentials = VaultCredentials {
                store: state.store.clone(),
                vault: state.tree.vault(),
                cluster: None,
            };
            match credentials.load(&found).await {
                Ok(loaded) => match connector.revoke(&loaded).await {
                    Ok(()) => "revoked".to_string(),
                    Err(ConnectorError::NotSupported) => "not_supported".to_string(),
                    Err(error) => format!("failed: {error}"),
                },
                Err(error) => format!("failed: {error}"),
            }
        }
        _ => "not_needed".to_string(),
    };
    let revoked = integrations::revoke(&state.store, &org, &found.id)
        .await
        .map_err(|error| match error {
            StoreError::NotFound => ApiError::not_found("no such integration"),
            other => store_error(other),
        })?;
    state.ingress.forget(&found.id);
    // Its events that were still waiting can no longer be handled: dead, not dropped.
    if let Err(error) =
        events::bury_pending(&state.store, &found.id, "the integration was revoked").await
    {
        warn!(integration_id = %found.id, error = %error, "pending events of a revoked integration not marked dead");
    }
    if let Err(error) = state
        .tree
        .remove_integration(&found.connector_type, &found.id)
        .await
    {
        warn!(integration_id = %found.id, error = %error, "revoked integration's actor not removed");
    }
    record(
        &state.store,
        &org,
        "integration.revoke",
        Some(&found.id),
        json!({"connector_type": found.connector_type, "at_provider": at_provider}),
    )
    .await;
    Ok(Json(
        json!({"integration": integration_json(&revoked), "at_provider": at_provider}),
    ))
}

async fn status(
    State(state): State<Arc<ApiState>>,
    Extension(Organization(org)): Extension<Organization>,
    ApiJson(body): ApiJson<IntegrationBody>,
) -> Result<Json<Value>, ApiError> {
    let found = integrations::get(&state.store, &org, &body.integration_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("no such integration"))?;
    let health = state
        .tree
        .integration_health(&found.connector_type, &found.id)
        .await;
    Ok(Json(
        json!({"integration": integration_json(&found), "health": health}),
    ))
}

pub fn integration_json(integration: &Integration) -> Value {
    let time = |t: chrono::NaiveDateTime| t.and_utc().to_rfc3339();
    json!({
        "id": integration.id,
        "organization_id": integration.organization_id,
        "connector_type": integration.connector_type,
        "status": integration.status,
        "external_id": integration.external_id,
        "metadata": serde_json::from_str::<Value>(&integration.metadata).unwrap_or(Value::Null),
        "created_at": time(integration.created_at),
        "updated_at": time(integration.updated_at),
        "last_used_at": integration.last_used_at.map(time),
    })
}

fn redirect_url(public_url: &str, connector: &str) -> String {
    format!(
        "{}/oauth/{connector}/callback",
        public_url.trim_end_matches('/')
    )
}

pub(super) async fn record(
    store: &Store,
    org: &str,
    action: &str,
    integration_id: Option<&str>,
    details: Value,
) {
    // One line per lifecycle change, for the operator following the log.
    let said = match action {
        "integration.authorize" => "integration authorization started",
        "integration.callback" => "integration activated",
        "integration.revoke" => "integration revoked",
        "route.create" => "route created",
        "route.delete" => "route deleted",
        other => other,
    };
    tracing::info!(organization_id = org, integration_id, connector = %details["connector_type"].as_str().unwrap_or_default(), "{said}");
    if let Err(error) = audit::record(
        store,
        Some(org),
        &format!("org:{org}"),
        action,
        integration_id,
        details,
    )
    .await
    {
        warn!(action, error = %error, "audit entry not written");
    }
}

pub(super) fn unknown_connector(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "no connector '{name}' is available: the daemon runs a connector when its \
         [connectors.{name}] section is in its configuration"
    ))
}

pub(super) fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
        StoreError::Duplicate { constraint } => {
            warn!(constraint = %constraint, "a unique constraint refused a row");
            ApiError::new(StatusCode::CONFLICT, "conflict", "it exists already")
        }
        StoreError::NotFound => ApiError::not_found("not found"),
        other => {
            warn!(error = %other, "store error");
            ApiError::unavailable("the store is unavailable, try again")
        }
    }
}

fn state_error(error: StateError) -> ApiError {
    let (code, message) = match error {
        StateError::Unknown => ("invalid_state", "unknown authorization state"),
        StateError::Replayed => ("state_used", "this authorization state was already used"),
        StateError::Expired => (
            "state_expired",
            "this authorization state expired: start again",
        ),
        StateError::Foreign => (
            "state_mismatch",
            "this authorization state belongs to another organization or connector",
        ),
        StateError::Store(error) => return store_error(error),
    };
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn connector_error(error: ConnectorError) -> ApiError {
    match error {
        ConnectorError::Invalid(message) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_authorization",
            message,
        ),
        ConnectorError::Unauthorized(message) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "provider_refused",
            message,
        ),
        ConnectorError::RateLimited { retry_after }
        | ConnectorError::QuotaSpent { retry_after } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "the provider asks to retry after {}s",
                retry_after.as_secs()
            ),
        ),
        ConnectorError::Unavailable(message) => {
            warn!(error = %message, "provider unavailable");
            ApiError::unavailable("the provider is unavailable, try again")
        }
        ConnectorError::NotSupported => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_supported",
            "this connector does not support that",
        ),
    }
}
