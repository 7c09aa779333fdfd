//! GitHub App webhooks: `X-Hub-Signature-256` over the raw body with the app's
//! webhook secret, `X-GitHub-Delivery` as the de-duplication id (chosen by GitHub for
//! all its tenants), and `installation.id` naming whose events they are. `ping` is
//! answered and not stored.

use axum::body::Bytes;

use super::{events, signature};
use crate::connectors::ingress::{
    self, Account, Endpoint, IncomingEvent, Ingress, IngressError, Received, WebhookRequest,
};
use crate::secret::Secret;
use crate::store::events::DeliveryScope;

pub const ENDPOINT: Endpoint = Endpoint::new("/webhooks/github");

pub struct GithubIngress {
    pub webhook_secret: Secret,
}

/// Only the installation id is read from the body here (the rest is skipped, not
/// built into a JSON tree): this runs for every webhook.
#[derive(serde::Deserialize)]
struct Routing {
    #[serde(default)]
    installation: Option<InstallationRef>,
    #[serde(default)]
    action: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct InstallationRef {
    #[serde(default)]
    id: Option<serde_json::Value>,
}

fn routing(body: &Bytes) -> Result<Routing, IngressError> {
    serde_json::from_slice(body).map_err(|_| IngressError::bad_request("the body is not JSON"))
}

#[async_trait::async_trait]
impl Ingress for GithubIngress {
    fn endpoints(&self) -> Vec<Endpoint> {
        vec![ENDPOINT]
    }

    async fn receive(&self, request: WebhookRequest<'_>) -> Result<Received, IngressError> {
        signature::verify(
            &self.webhook_secret,
            request.header(signature::SIGNATURE_256),
            request.header(signature::SIGNATURE_SHA1),
            request.body,
        )
        .map_err(IngressError::invalid_signature)?;
        let name = request
            .header("x-github-event")
            .ok_or_else(|| IngressError::bad_request("missing X-GitHub-Event"))?;
        if name == "ping" {
            // GitHub's check that the hook works: nothing to store.
            return Ok(Received::Answer(serde_json::json!({"ok": true})));
        }
        let delivery_id =
            ingress::delivery_id("X-GitHub-Delivery", request.header("x-github-delivery"))?;
        let payload = ingress::utf8_payload(request.body)?;
        let routing = routing(request.body)?;
        let installation = routing
            .installation
            .and_then(|i| i.id)
            .and_then(|id| id.as_u64());
        let account = match installation {
            Some(id) => Account::External {
                unbound_reason: format!("no integration is bound to GitHub App installation {id}"),
                id: id.to_string(),
            },
            None => Account::Unknown("the event names no GitHub App installation".to_string()),
        };
        Ok(Received::Events {
            account,
            events: vec![IncomingEvent {
                delivery_id,
                scope: DeliveryScope::Provider,
                event_type: events::event_type_of(
                    name,
                    routing.action.as_ref().and_then(|a| a.as_str()),
                ),
                occurred_at: None,
                payload,
            }],
            reply: None,
        })
    }
}
