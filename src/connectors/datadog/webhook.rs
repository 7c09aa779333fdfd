//! Datadog's webhooks, at `/webhooks/datadog/{integration_id}`.
//!
//! Datadog does not sign webhooks. The webhook switchboard installs in the tenant's
//! Datadog org carries a secret generated for the integration in a custom header
//! ([`SECRET_HEADER`]); it is compared in constant time with the one in the vault,
//! and a request without it, or with another, stores nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::warn;

use super::Shared;
use super::events::DatadogEvent;
use crate::connectors::ingress::{
    self, Account, Endpoint, IncomingEvent, Ingress, IngressError, Received, WebhookRequest,
};
use crate::lock;
use crate::secret::Secret;
use crate::store::events::DeliveryScope;
use crate::store::integrations::Integration;

pub const ENDPOINT: Endpoint = Endpoint::new("/webhooks/datadog/{integration_id}");
/// The custom header the installed webhook sends the integration's secret in.
pub const SECRET_HEADER: &str = "X-Switchboard-Webhook-Secret";
/// The credential type of that secret.
pub const WEBHOOK_SECRET: &str = "webhook_secret";

pub fn webhook_url(public_url: &str, integration_id: &str) -> String {
    format!(
        "{}/webhooks/datadog/{integration_id}",
        public_url.trim_end_matches('/')
    )
}

pub struct DatadogIngress {
    pub shared: Arc<Shared>,
    /// Webhook secrets by integration, so that a webhook costs no vault round trip.
    /// A mismatch looks the secret up again before refusing.
    secrets: Mutex<HashMap<String, Secret>>,
}

impl DatadogIngress {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            secrets: Mutex::default(),
        }
    }

    async fn stored_secret(&self, integration: &Integration) -> Result<Secret, IngressError> {
        let context = self
            .shared
            .context
            .get()
            .ok_or_else(|| IngressError::unavailable("the connector is starting, retry"))?;
        let loaded = context
            .credentials
            .load(integration)
            .await
            .map_err(|error| {
                warn!(integration_id = %integration.id, error = %error, "Datadog webhook secret unavailable");
                IngressError::unavailable("the webhook secret is unavailable, retry")
            })?;
        loaded
            .get(WEBHOOK_SECRET)
            .cloned()
            .ok_or_else(|| IngressError::not_found("no such webhook"))
    }

    async fn check_secret(
        &self,
        integration: &Integration,
        presented: &str,
    ) -> Result<(), IngressError> {
        let cached = lock(&self.secrets).get(&integration.id).cloned();
        if cached.is_some_and(|secret| secret.matches(presented)) {
            return Ok(());
        }
        // Not cached yet, or the secret changed: ask the vault.
        let secret = self.stored_secret(integration).await?;
        let matches = secret.matches(presented);
        lock(&self.secrets).insert(integration.id.clone(), secret);
        if matches {
            Ok(())
        } else {
            Err(IngressError::invalid_signature(format!(
                "the {SECRET_HEADER} header does not match this webhook's secret"
            )))
        }
    }
}

#[async_trait::async_trait]
impl Ingress for DatadogIngress {
    fn endpoints(&self) -> Vec<Endpoint> {
        vec![ENDPOINT]
    }

    async fn receive(&self, request: WebhookRequest<'_>) -> Result<Received, IngressError> {
        let integration = request
            .integration
            .ok_or_else(|| IngressError::not_found("no such webhook"))?;
        let presented = request.header(SECRET_HEADER).ok_or_else(|| {
            IngressError::invalid_signature(format!("missing the {SECRET_HEADER} header"))
        })?;
        self.check_secret(integration, presented).await?;
        let event = DatadogEvent::parse(request.body).map_err(IngressError::bad_request)?;
        let delivery_id = ingress::delivery_id(
            "id ($ID, or $ALERT_CYCLE_KEY, $ALERT_TRANSITION and $LAST_UPDATED)",
            event.delivery_id().as_deref(),
        )?;
        Ok(Received::Events {
            account: Account::Named,
            events: vec![IncomingEvent {
                delivery_id,
                // Datadog's event ids are unique within the tenant's org.
                scope: DeliveryScope::Integration,
                event_type: event.switchboard_type(),
                occurred_at: event.occurred_at(),
                payload: ingress::utf8_payload(request.body)?,
            }],
            reply: None,
        })
    }

    fn forget(&self, integration_id: &str) {
        lock(&self.secrets).remove(integration_id);
    }
}
