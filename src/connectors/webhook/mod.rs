//! The generic signed-webhook connector: any system can feed switchboard.
//!
//! A tenant authorizes it through the api_key flow (no fields to fill in) and gets
//! back, once, its URL (`POST /webhooks/generic/<integration id>`) and a generated
//! signing secret (kept encrypted by the vault). Requests are verified the Standard
//! Webhooks way (see [`crate::pipeline::standard_webhooks`]); `webhook-id` is the
//! de-duplication id, and the payload's `type` (when it has one) the event type.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::ingress::{
    self, Account, Endpoint, IncomingEvent, Ingress, IngressError, Received, SecretCache,
    WebhookRequest,
};
use super::section::Section;
use super::{
    AuthorizationStart, AuthorizeRequest, Authorized, CallbackRequest, Connector, ConnectorContext,
    ConnectorError, CredentialValue, Credentials, Provider,
};
use crate::pipeline::standard_webhooks;
use crate::problem::Problem;
use crate::secret::Secret;
use crate::store::events::DeliveryScope;

pub const NAME: &str = "webhook";
/// The credential type of the signing secret.
pub const SIGNING_SECRET: &str = "signing_secret";
const ENDPOINT: Endpoint = Endpoint::new("/webhooks/generic/{integration_id}");

pub const PROVIDER: Provider = Provider {
    name: NAME,
    build: |section| {
        Ok(Arc::new(WebhookConnector::build(
            &WebhookConfig::from_section(section)?,
        )))
    },
};

/// `[connectors.webhook]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// How old a signed webhook's timestamp may be (Standard Webhooks: 5 minutes).
    #[serde(with = "humantime_serde", default = "five_minutes")]
    pub timestamp_tolerance: Duration,
}

fn five_minutes() -> Duration {
    Duration::from_secs(300)
}

impl WebhookConfig {
    pub fn from_section(section: &Section) -> Result<Self, Vec<Problem>> {
        let config: Self = section.parse()?;
        let mut problems = Vec::new();
        super::section::require_positive(
            &mut problems,
            section.key("timestamp_tolerance"),
            config.timestamp_tolerance,
        );
        super::section::checked(config, problems)
    }
}

pub struct WebhookConnector {
    ingress: Arc<WebhookIngress>,
}

/// Verifies generic webhooks with each integration's own signing secret.
struct WebhookIngress {
    timestamp_tolerance: Duration,
    /// Signing secrets by integration.
    secrets: SecretCache,
    context: OnceLock<ConnectorContext>,
}

impl WebhookConnector {
    pub fn build(config: &WebhookConfig) -> Self {
        Self {
            ingress: Arc::new(WebhookIngress {
                timestamp_tolerance: config.timestamp_tolerance,
                secrets: SecretCache::new(SIGNING_SECRET),
                context: OnceLock::new(),
            }),
        }
    }

    /// The event type of a payload: its `type` field, or `webhook`. Only that field is
    /// read (the rest is skipped, not built into a JSON tree): this runs per webhook.
    pub fn event_type(payload: &[u8]) -> String {
        #[derive(serde::Deserialize)]
        struct Typed<'a> {
            #[serde(rename = "type", borrow, default)]
            kind: Option<std::borrow::Cow<'a, str>>,
        }
        serde_json::from_slice::<Typed<'_>>(payload)
            .ok()
            .and_then(|typed| typed.kind)
            .filter(|t| !t.is_empty() && t.len() <= 200)
            .map_or_else(|| "webhook".to_string(), std::borrow::Cow::into_owned)
    }
}

pub fn webhook_url(public_url: &str, integration_id: &str) -> String {
    format!(
        "{}/webhooks/generic/{integration_id}",
        public_url.trim_end_matches('/')
    )
}

#[async_trait::async_trait]
impl Ingress for WebhookIngress {
    fn endpoints(&self) -> Vec<Endpoint> {
        vec![ENDPOINT]
    }

    async fn receive(&self, request: WebhookRequest<'_>) -> Result<Received, IngressError> {
        let integration = request
            .integration
            .ok_or_else(|| IngressError::not_found("no such webhook"))?;
        let verify = |secret: &Secret| {
            standard_webhooks::verify(
                secret,
                request.header(standard_webhooks::ID),
                request.header(standard_webhooks::TIMESTAMP),
                request.header(standard_webhooks::SIGNATURE),
                request.body,
                self.timestamp_tolerance,
                standard_webhooks::unix_now(),
            )
        };
        let timestamp = self
            .secrets
            .check(self.context.get(), integration, verify)
            .await?
            .map_err(IngressError::invalid_signature)?;
        let event = IncomingEvent {
            delivery_id: ingress::delivery_id(
                standard_webhooks::ID,
                request.header(standard_webhooks::ID),
            )?,
            // The sender chose this id: unique within this integration alone.
            scope: DeliveryScope::Integration,
            event_type: WebhookConnector::event_type(request.body),
            occurred_at: chrono::DateTime::from_timestamp(timestamp, 0).map(|t| t.naive_utc()),
            payload: ingress::utf8_payload(request.body)?,
        };
        Ok(Received::Events {
            account: Account::Named,
            events: vec![event],
            reply: None,
        })
    }

    fn forget(&self, integration_id: &str) {
        self.secrets.forget(integration_id);
    }
}

#[async_trait::async_trait]
impl Connector for WebhookConnector {
    fn name(&self) -> &str {
        NAME
    }

    fn attach(&self, context: &ConnectorContext) {
        let _ = self.ingress.context.set(context.clone());
    }

    fn ingress(&self) -> Option<Arc<dyn Ingress>> {
        Some(Arc::clone(&self.ingress) as Arc<dyn Ingress>)
    }

    async fn authorize(
        &self,
        _request: &AuthorizeRequest,
    ) -> Result<AuthorizationStart, ConnectorError> {
        // Nothing to ask: the callback generates the secret.
        Ok(AuthorizationStart::api_key(&[]))
    }

    async fn complete(&self, request: &CallbackRequest) -> Result<Authorized, ConnectorError> {
        let secret = standard_webhooks::generate_secret();
        let url = webhook_url(&request.public_url, &request.integration_id);
        Ok(Authorized {
            external_id: None,
            metadata: json!({"url": url}),
            reveal: Some(json!({"url": url, "signing_secret": secret.expose()})),
            credentials: vec![CredentialValue {
                credential_type: SIGNING_SECRET.to_string(),
                secret,
                expires_at: None,
            }],
        })
    }

    async fn validate(&self, credentials: &Credentials) -> Result<(), ConnectorError> {
        match credentials.get(SIGNING_SECRET) {
            Some(_) => Ok(()),
            None => Err(ConnectorError::Unauthorized(
                "no signing secret".to_string(),
            )),
        }
    }
}
