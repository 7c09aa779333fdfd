//! Pub/Sub push deliveries at `/webhooks/gcp/{integration_id}`, verified by the OIDC
//! token Pub/Sub puts in `Authorization: Bearer`: RS256 against Google's keys (fetched,
//! cached, fetched again for an unknown `kid` at most once per
//! `jwks_refetch_interval`), `iss` Google's, `aud` the integration's audience (its
//! push URL unless the tenant named another), `email` the push service account the
//! tenant named with `email_verified`, not expired. Anything else stores nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::time::Instant;
use tracing::{info, warn};

use super::Shared;
use super::events::PushedMessage;
use crate::connectors::ingress::{
    self, Account, Endpoint, IncomingEvent, Ingress, IngressError, Received, WebhookRequest,
};
use crate::lock;
use crate::store::events::DeliveryScope;

pub const ENDPOINT: Endpoint = Endpoint::new("/webhooks/gcp/{integration_id}");

pub fn push_url(public_url: &str, integration_id: &str) -> String {
    format!(
        "{}/webhooks/gcp/{integration_id}",
        public_url.trim_end_matches('/')
    )
}

/// Google's signing keys, as last fetched.
#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
}

pub struct PushIngress {
    shared: Arc<Shared>,
    keys: Mutex<Keys>,
    /// One fetch at a time; the others wait for its keys.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    email: String,
    #[serde(default)]
    email_verified: EmailVerified,
}

/// Google sends `email_verified` as a boolean (and, in older tokens, as a string).
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum EmailVerified {
    Flag(bool),
    Text(String),
    #[default]
    Missing,
}

impl EmailVerified {
    fn verified(&self) -> bool {
        match self {
            EmailVerified::Flag(flag) => *flag,
            EmailVerified::Text(text) => text == "true",
            EmailVerified::Missing => false,
        }
    }
}

fn refused(message: impl ToString) -> IngressError {
    IngressError::invalid_signature(message)
}

impl PushIngress {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            keys: Mutex::default(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, kid: &str) -> Option<DecodingKey> {
        lock(&self.keys).by_kid.get(kid).cloned()
    }

    /// The key named `kid`: cached, or fetched when it is not and the last fetch is
    /// old enough.
    async fn key(&self, kid: &str) -> Result<DecodingKey, IngressError> {
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let _one_fetch = self.fetching.lock().await;
        // Fetched by another request meanwhile?
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let interval = self.shared.config.jwks_refetch_interval;
        let recent = lock(&self.keys)
            .fetched_at
            .is_some_and(|at| at.elapsed() < interval);
        if recent {
            // No keys at all: the last fetch failed, and Pub/Sub will retry.
            if lock(&self.keys).by_kid.is_empty() {
                return Err(IngressError::unavailable(
                    "Google's signing keys could not be fetched, retry",
                ));
            }
            return Err(refused(format!(
                "the token is signed with a key Google does not list ({kid})"
            )));
        }
        lock(&self.keys).fetched_at = Some(Instant::now());
        let set: JwkSet = self
            .shared
            .api
            .http()
            .get(&self.shared.config.jwks_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| {
                warn!(error = %e, "Google's signing keys unavailable");
                IngressError::unavailable("Google's signing keys are unavailable, retry")
            })?
            .json()
            .await
            .map_err(|e| {
                warn!(error = %e, "Google's signing keys unreadable");
                IngressError::unavailable("Google's signing keys are unreadable, retry")
            })?;
        let by_kid: HashMap<String, DecodingKey> = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                DecodingKey::from_jwk(jwk).ok().map(|key| (kid, key))
            })
            .collect();
        info!(keys = by_kid.len(), "Google's signing keys fetched");
        let key = by_kid.get(kid).cloned();
        lock(&self.keys).by_kid = by_kid;
        key.ok_or_else(|| {
            refused(format!(
                "the token is signed with a key Google does not list ({kid})"
            ))
        })
    }
}

#[async_trait::async_trait]
impl Ingress for PushIngress {
    fn endpoints(&self) -> Vec<Endpoint> {
        vec![ENDPOINT]
    }

    async fn receive(&self, request: WebhookRequest<'_>) -> Result<Received, IngressError> {
        let integration = request
            .integration
            .ok_or_else(|| IngressError::not_found("no such push endpoint"))?;
        let metadata: serde_json::Value =
            serde_json::from_str(&integration.metadata).unwrap_or_default();
        let push = &metadata["push"];
        let Some(service_account) = push["service_account"].as_str() else {
            return Err(IngressError::new(
                axum::http::StatusCode::FORBIDDEN,
                "push_not_configured",
                "this integration takes no push deliveries: name push_service_account when connecting",
            ));
        };
        let audience = push["audience"]
            .as_str()
            .ok_or_else(|| IngressError::unavailable("the integration has no audience"))?;
        let token = request
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| refused("missing the Authorization: Bearer token Pub/Sub signs"))?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| refused(format!("not a JWT: {e}")))?;
        if header.alg != Algorithm::RS256 {
            return Err(refused("the token is not signed with RS256"));
        }
        let kid = header
            .kid
            .ok_or_else(|| refused("the token names no signing key"))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&self.shared.config.oidc_issuers);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| refused(format!("the push token is not valid: {e}")))?
            .claims;
        if claims.email != service_account {
            return Err(refused(format!(
                "the push token is for another service account ({}), not the one named for this integration",
                claims.email
            )));
        }
        if !claims.email_verified.verified() {
            return Err(refused("the push token's email is not verified"));
        }
        let pushed = PushedMessage::parse(request.body).map_err(IngressError::bad_request)?;
        Ok(Received::Events {
            account: Account::Named,
            events: vec![IncomingEvent {
                delivery_id: ingress::delivery_id("message.messageId", Some(&pushed.message_id))?,
                // Pub/Sub's message ids are unique within a topic: the tenant's.
                scope: DeliveryScope::Integration,
                event_type: pushed.event_type,
                occurred_at: pushed.occurred_at,
                payload: pushed.payload.to_string(),
            }],
            reply: None,
        })
    }
}
