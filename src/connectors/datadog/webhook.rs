//! Datadog's webhooks, at `/webhooks/datadog/{integration_id}`.
//!
//! Datadog does not sign webhooks. The webhook switchboard installs in the tenant's
//! Datadog org carries a secret generated for the integration in a custom header
//! ([`SECRET_HEADER`]); it is compared in constant time with the one in the vault,
//! and a request without it, or with another, stores nothing.

use std::sync::Arc;

use super::Shared;
use super::events::DatadogEvent;
use crate::connectors::ingress::{
    self, Account, Endpoint, IncomingEvent, Ingress, IngressError, Received, SecretCache,
    WebhookRequest,
};
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
    /// Webhook secrets by integration.
    secrets: SecretCache,
}

impl DatadogIngress {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            secrets: SecretCache::new(WEBHOOK_SECRET),
        }
    }

    async fn check_secret(
        &self,
        integration: &Integration,
        presented: &str,
    ) -> Result<(), IngressError> {
        let matches = |secret: &Secret| {
            if secret.matches(presented) {
                Ok(())
            } else {
                Err(())
            }
        };
        self.secrets
            .check(self.shared.context.get(), integration, matches)
            .await?
            .map_err(|()| {
                IngressError::invalid_signature(format!(
                    "the {SECRET_HEADER} header does not match this webhook's secret"
                ))
            })
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
        self.secrets.forget(integration_id);
    }
}
