//! The generic signed-webhook connector: any system can feed switchboard.
//!
//! A tenant authorizes it through the api_key flow (no fields to fill in) and gets
//! back, once, its URL (`POST /webhooks/generic/<integration id>`) and a generated
//! signing secret (kept encrypted by the vault). Requests are verified the Standard
//! Webhooks way (see [`crate::pipeline::standard_webhooks`]); `webhook-id` is the
//! de-duplication id, and the payload's `type` (when it has one) the event type.

use std::time::Duration;

use serde_json::json;

use super::{
    AuthorizationStart, AuthorizeRequest, Authorized, CallbackRequest, Connector, ConnectorError,
    CredentialValue, Credentials, WebhookConfig,
};
use crate::pipeline::standard_webhooks;

pub const NAME: &str = "webhook";
/// The credential type of the signing secret.
pub const SIGNING_SECRET: &str = "signing_secret";

pub struct WebhookConnector {
    pub timestamp_tolerance: Duration,
}

impl WebhookConnector {
    pub fn build(config: &WebhookConfig) -> Self {
        Self {
            timestamp_tolerance: config.timestamp_tolerance,
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
impl Connector for WebhookConnector {
    fn name(&self) -> &str {
        NAME
    }

    async fn authorize(
        &self,
        _request: &AuthorizeRequest,
    ) -> Result<AuthorizationStart, ConnectorError> {
        // Nothing to ask: the callback generates the secret.
        Ok(AuthorizationStart::ApiKey { fields: Vec::new() })
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
