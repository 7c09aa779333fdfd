//! The shared webhook ingress: one path for every connector's webhooks.
//!
//! A connector declares its endpoints and, for each request, verifies the raw bytes
//! and says whose events they are (see [`crate::connectors::ingress`]). Everything
//! else happens here, the same way for every provider:
//! - bodies over `pipeline.max_body_bytes` get 413; a URL naming an unknown
//!   integration gets 404 before its body is read (see [`Ingress::precheck`]);
//! - the integration is resolved from a cache, whether the URL or the body names it
//!   (invalidated when an authorization completes or an integration is revoked);
//! - nothing is acknowledged before it is stored; a store that cannot take the event
//!   answers 503 so that the sender retries; a redelivery is acknowledged and not
//!   stored again;
//! - an event no integration owns is stored `dead` with the reason, in the same write;
//! - requests are counted by connector and outcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawPathParams};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use tracing::{error, warn};

use super::ApiError;
use super::limits::Precheck;
use crate::connectors::ConnectorSet;
use crate::connectors::ingress::{
    self as contract, Account, Endpoint, IngressError, Received, WebhookRequest,
};
use crate::lock;
use crate::pipeline::inbox;
use crate::pipeline::metrics::{WebhookCounters, WebhookOutcome};
use crate::store::events::{NewEvent, Stored};
use crate::store::integrations::{self, Integration};
use crate::store::{Store, StoreError};
use crate::tree::ActorTree;

/// How long a resolved integration (or the lack of one) is trusted without asking
/// the store again. Authorizations and revocations made here invalidate at once; this
/// bounds how long a change made by another node takes to be seen.
const RESOLVED_FOR: Duration = Duration::from_secs(5);
/// Most entries each cache keeps; past it, it starts over.
const CACHE_LIMIT: usize = 100_000;
/// How long storing an event may take before the sender is told to retry.
const STORE_WITHIN: Duration = Duration::from_secs(10);

/// One connector's endpoint, as the router serves it.
struct Served {
    connector: String,
    endpoint: Endpoint,
    ingress: Arc<dyn contract::Ingress>,
    counters: WebhookCounters,
}

pub struct Ingress {
    tree: Arc<ActorTree>,
    store: Store,
    served: Vec<Arc<Served>>,
    resolved: Resolved,
}

type Resolution = Option<Arc<Integration>>;

/// Resolved integrations, by id and by provider account.
#[derive(Default)]
struct Resolved {
    by_id: Mutex<HashMap<String, Entry>>,
    by_account: Mutex<HashMap<(String, String), Entry>>,
}

/// A resolution, when it was made, and the count of integration changes then (see
/// [`integrations::changes`]): any activation, status change or revocation in this
/// process since makes it stale at once.
struct Entry {
    found: Resolution,
    at: Instant,
    changes: u64,
}

fn cached<K, Q>(cache: &Mutex<HashMap<K, Entry>>, key: &Q) -> Option<Resolution>
where
    K: std::hash::Hash + Eq + std::borrow::Borrow<Q>,
    Q: std::hash::Hash + Eq + ?Sized,
{
    let changes = integrations::changes();
    lock(cache)
        .get(key)
        .filter(|entry| entry.changes == changes && entry.at.elapsed() < RESOLVED_FOR)
        .map(|entry| entry.found.clone())
}

/// Keeps a resolution made when the count of changes was `changes`.
fn remember<K: std::hash::Hash + Eq>(
    cache: &Mutex<HashMap<K, Entry>>,
    key: K,
    found: &Resolution,
    changes: u64,
) {
    let mut cache = lock(cache);
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    let entry = Entry {
        found: found.clone(),
        at: Instant::now(),
        changes,
    };
    cache.insert(key, entry);
}

/// Whether an integration takes events: not revoked, and not still waiting for its
/// authorization to complete.
fn receives(integration: &Integration) -> bool {
    integration.status != integrations::STATUS_PENDING
        && integration.status != integrations::STATUS_REVOKED
}

impl Ingress {
    pub fn new(tree: Arc<ActorTree>, connectors: &ConnectorSet) -> Self {
        let mut served: Vec<Arc<Served>> = Vec::new();
        for connector in connectors.iter() {
            let Some(ingress) = connector.ingress() else {
                continue;
            };
            for endpoint in ingress.endpoints() {
                if let Some(other) = served.iter().find(|s| s.endpoint.path == endpoint.path) {
                    error!(path = endpoint.path, connector = connector.name(), taken_by = %other.connector, "webhook path served twice: ignored");
                    continue;
                }
                served.push(Arc::new(Served {
                    connector: connector.name().to_string(),
                    endpoint,
                    ingress: Arc::clone(&ingress),
                    counters: tree.pipeline_metrics().webhook_counters(connector.name()),
                }));
            }
        }
        Self {
            store: tree.store().clone(),
            tree,
            served,
            resolved: Resolved::default(),
        }
    }

    /// The router for every connector's endpoints (`only` = `None`), or for one
    /// connector's own listener.
    pub fn router(self: &Arc<Self>, only: Option<&str>, max_body_bytes: usize) -> Router {
        let mut router = Router::new();
        for served in &self.served {
            if only.is_some_and(|name| name != served.connector) {
                continue;
            }
            let (ingress, served) = (Arc::clone(self), Arc::clone(served));
            let path = served.endpoint.path;
            router = router.route(
                path,
                post(
                    move |params: RawPathParams,
                          headers: HeaderMap,
                          body: Result<Bytes, BytesRejection>| async move {
                        ingress.receive(&served, params, headers, body).await
                    },
                ),
            );
        }
        router.layer(DefaultBodyLimit::max(max_body_bytes))
    }

    /// Refuses a webhook for an integration the URL names but that does not exist
    /// before its body is read (see [`super::limits`]): a 404 costs no buffering.
    pub fn precheck(self: &Arc<Self>) -> Precheck {
        let ingress = Arc::clone(self);
        Arc::new(move |method, path| {
            let named = (*method == axum::http::Method::POST)
                .then(|| ingress.named_integration(path))
                .flatten();
            let ingress = Arc::clone(&ingress);
            Box::pin(async move {
                let (connector, id) = named?;
                match ingress.by_id(&connector, &id).await {
                    Ok(Some(_)) => None,
                    Ok(None) => Some(ApiError::not_found("no such webhook").into_response()),
                    Err(_) => Some(store_unavailable().into_response()),
                }
            })
        })
    }

    /// The connector and integration id a path names, for endpoints that name one.
    fn named_integration(&self, path: &str) -> Option<(String, String)> {
        self.served.iter().find_map(|served| {
            let id = path.strip_prefix(served.endpoint.integration_prefix()?)?;
            (!id.is_empty() && !id.contains('/'))
                .then(|| (served.connector.clone(), id.to_string()))
        })
    }

    /// Forgets what was known of an integration (it was revoked).
    pub fn forget(&self, integration_id: &str) {
        lock(&self.resolved.by_id).remove(integration_id);
        lock(&self.resolved.by_account).retain(|_, entry| {
            entry
                .found
                .as_ref()
                .is_none_or(|integration| integration.id != integration_id)
        });
        for served in &self.served {
            served.ingress.forget(integration_id);
        }
    }

    /// An authorization completed: an account that was bound to nobody may be now.
    pub fn bound(&self, integration: &Integration) {
        lock(&self.resolved.by_id).remove(&integration.id);
        if let Some(account) = &integration.external_id {
            lock(&self.resolved.by_account)
                .remove(&(integration.connector_type.clone(), account.clone()));
        }
    }

    async fn by_id(&self, connector: &str, id: &str) -> Result<Resolution, StoreError> {
        if let Some(found) = cached(&self.resolved.by_id, id) {
            return Ok(found.filter(|i| i.connector_type == connector));
        }
        // Read before the lookup: a change during it leaves the entry stale, not wrong.
        let changes = integrations::changes();
        let found = integrations::find_live(&self.store, id)
            .await?
            .filter(receives)
            .map(Arc::new);
        remember(&self.resolved.by_id, id.to_string(), &found, changes);
        Ok(found.filter(|i| i.connector_type == connector))
    }

    async fn by_account(&self, connector: &str, account: &str) -> Result<Resolution, StoreError> {
        let key = (connector.to_string(), account.to_string());
        if let Some(found) = cached(&self.resolved.by_account, &key) {
            return Ok(found);
        }
        let changes = integrations::changes();
        let found = integrations::find_by_account(&self.store, connector, account)
            .await?
            .filter(receives)
            .map(Arc::new);
        remember(&self.resolved.by_account, key, &found, changes);
        Ok(found)
    }

    async fn receive(
        &self,
        served: &Served,
        params: RawPathParams,
        headers: HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Response {
        let started = Instant::now();
        match self.verify_and_store(served, params, headers, body).await {
            Ok((response, outcome)) => {
                served.counters.count(outcome);
                if outcome != WebhookOutcome::Answered {
                    self.tree
                        .pipeline_metrics()
                        .ingest_seconds
                        .observe(started.elapsed().as_secs_f64());
                }
                response
            }
            Err(error) => {
                served
                    .counters
                    .count(if error.status() == StatusCode::SERVICE_UNAVAILABLE {
                        WebhookOutcome::Unavailable
                    } else {
                        WebhookOutcome::Refused
                    });
                error.into_response()
            }
        }
    }

    /// The answer and the outcome it is counted as.
    async fn verify_and_store(
        &self,
        served: &Served,
        params: RawPathParams,
        headers: HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<(Response, WebhookOutcome), ApiError> {
        let connector = served.connector.as_str();
        let body = body_or_error(body)?;
        let named = match params.iter().find(|(name, _)| *name == "integration_id") {
            Some((_, id)) => Some(
                self.by_id(connector, id)
                    .await
                    .map_err(|_| store_unavailable())?
                    .ok_or_else(|| ApiError::not_found("no such webhook"))?,
            ),
            None => None,
        };
        let request = WebhookRequest {
            endpoint: served.endpoint,
            headers: &headers,
            body: &body,
            integration: named.as_deref(),
        };
        let (account, events, reply) = match served.ingress.receive(request).await {
            Err(refused) => return Err(refused_error(refused)),
            Ok(Received::Answer(answer)) => {
                return Ok((Json(answer).into_response(), WebhookOutcome::Answered));
            }
            Ok(Received::Events {
                account,
                events,
                reply,
            }) => (account, events, reply),
        };
        let (owner, dead_reason) = match account {
            Account::Named => (named, None),
            Account::External { id, unbound_reason } => {
                let owner = self
                    .by_account(connector, &id)
                    .await
                    .map_err(|_| store_unavailable())?;
                let reason = owner.is_none().then_some(unbound_reason);
                (owner, reason)
            }
            Account::Unknown(reason) => (None, Some(reason)),
        };
        let mut stored = Vec::with_capacity(events.len());
        for event in events {
            let new = NewEvent {
                organization_id: owner.as_ref().map(|i| i.organization_id.clone()),
                integration_id: owner.as_ref().map(|i| i.id.clone()),
                connector_type: connector.to_string(),
                event_type: event.event_type,
                delivery_id: event.delivery_id,
                delivery_scope: event.scope,
                payload: event.payload,
                occurred_at: event.occurred_at,
                dead_reason: dead_reason.clone(),
            };
            stored.push(self.store_event(new).await?);
        }
        let outcome = match (&dead_reason, stored.iter().all(|s| s.duplicate)) {
            (_, true) if !stored.is_empty() => WebhookOutcome::Duplicate,
            (Some(_), _) => WebhookOutcome::Unbound,
            _ => WebhookOutcome::Stored,
        };
        if let Some(reply) = reply
            && let Some(answer) = reply(owner.as_ref().map(|i| i.organization_id.clone())).await
        {
            return Ok((Json(answer).into_response(), outcome));
        }
        Ok((Json(stored_answer(&stored)).into_response(), outcome))
    }

    /// Stores a verified event through the inbox; a failure is a 503 so that the
    /// provider retries.
    async fn store_event(&self, event: NewEvent) -> Result<Stored, ApiError> {
        let connector = event.connector_type.clone();
        inbox::store(self.tree.intake(), event, STORE_WITHIN)
            .await
            .map_err(|error| {
                warn!(connector, error = %error, "webhook not stored: answered 503");
                ApiError::unavailable("the event could not be stored, retry")
            })
    }
}

/// `{"id", "duplicate"}` for one event; `{"events": [...]}` for several.
fn stored_answer(stored: &[Stored]) -> serde_json::Value {
    let one = |s: &Stored| json!({"id": s.id, "duplicate": s.duplicate});
    match stored {
        [single] => one(single),
        several => json!({"events": several.iter().map(one).collect::<Vec<_>>()}),
    }
}

fn store_unavailable() -> ApiError {
    ApiError::unavailable("the store is unavailable, retry")
}

fn refused_error(refused: IngressError) -> ApiError {
    ApiError::new(refused.status, refused.code, refused.message)
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
