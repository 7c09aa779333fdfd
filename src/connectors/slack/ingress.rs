//! Slack over HTTP: the Events API (`/webhooks/slack/events`) and interactivity and
//! slash commands (`/webhooks/slack/interactive`), both signed v0 with the app's
//! signing secret. Events are de-duplicated on `event_id` (chosen by Slack for all its
//! tenants), so `X-Slack-Retry-Num` retries count once, and go to the integration
//! bound to the payload's workspace (`team_id`).

use std::collections::HashMap;
use std::sync::Arc;

use futures::FutureExt;
use serde_json::{Value, json};

use super::{Shared, events, signature};
use crate::connectors::ingress::{
    self, Account, Endpoint, IncomingEvent, Ingress, IngressError, Received, WebhookRequest,
};
use crate::pipeline::standard_webhooks;
use crate::store::events::DeliveryScope;

pub const EVENTS: Endpoint = Endpoint::new("/webhooks/slack/events");
pub const INTERACTIVE: Endpoint = Endpoint::new("/webhooks/slack/interactive");

pub struct SlackIngress {
    pub shared: Arc<Shared>,
}

/// The account of a workspace, and why its events are dead while it is bound to none.
pub fn workspace(team_id: &str) -> Account {
    Account::External {
        id: team_id.to_string(),
        unbound_reason: format!("no integration is bound to Slack workspace {team_id}"),
    }
}

impl SlackIngress {
    /// Checks a request's v0 signature.
    fn verify(&self, request: &WebhookRequest<'_>) -> Result<(), IngressError> {
        let config = &self.shared.config;
        let secret = config
            .signing_secret
            .as_ref()
            .ok_or_else(|| IngressError::not_found("Slack's Events API is not configured"))?;
        signature::verify(
            secret,
            request.header(signature::SIGNATURE),
            request.header(signature::TIMESTAMP),
            request.body,
            config.timestamp_tolerance,
            standard_webhooks::unix_now(),
        )
        .map_err(IngressError::invalid_signature)
    }

    /// The Events API: `url_verification` answered with its challenge; event callbacks
    /// stored.
    fn event_callback(&self, request: &WebhookRequest<'_>) -> Result<Received, IngressError> {
        let payload: Value = serde_json::from_slice(request.body)
            .map_err(|_| IngressError::bad_request("the body is not JSON"))?;
        match payload["type"].as_str() {
            Some("url_verification") => {
                return Ok(Received::Answer(json!({"challenge": payload["challenge"]})));
            }
            Some("event_callback") => {}
            _ => return Err(IngressError::bad_request("not an event callback")),
        }
        let classified = events::classify("events_api", &payload)
            .ok_or_else(|| IngressError::bad_request("the event has no team_id or type"))?;
        let delivery_id = classified
            .delivery_id
            .as_deref()
            .ok_or_else(|| IngressError::bad_request("the event has no event_id"))?;
        Ok(Received::Events {
            account: workspace(&classified.team_id),
            events: vec![IncomingEvent {
                delivery_id: ingress::delivery_id("event_id", Some(delivery_id))?,
                scope: DeliveryScope::Provider,
                event_type: classified.event_type,
                occurred_at: None,
                payload: ingress::utf8_payload(request.body)?,
            }],
            reply: None,
        })
    }

    /// Interactivity and slash commands (form-encoded): stored, then answered. A slash
    /// command gets the bot's answer in the response.
    fn interaction(&self, request: &WebhookRequest<'_>) -> Result<Received, IngressError> {
        let form: HashMap<String, String> = url::form_urlencoded::parse(request.body)
            .into_owned()
            .collect();
        let (kind, payload) = match (form.get("payload"), form.get("command")) {
            (Some(payload), _) => (
                "interactive",
                serde_json::from_str::<Value>(payload)
                    .map_err(|_| IngressError::bad_request("payload is not JSON"))?,
            ),
            (None, Some(_)) => ("slash_commands", json!(form)),
            (None, None) => {
                return Err(IngressError::bad_request(
                    "neither an interaction nor a command",
                ));
            }
        };
        let classified = events::classify(kind, &payload)
            .ok_or_else(|| IngressError::bad_request("the request names no team"))?;
        // Interactions carry no id of their own: the trigger id is unique per interaction.
        let delivery_id = payload["trigger_id"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(request.body)));
        let reply = (kind == "slash_commands").then(|| {
            let (shared, payload) = (Arc::clone(&self.shared), payload.clone());
            Box::new(move |organization: Option<String>| {
                async move {
                    let organization = organization?;
                    Some(shared.slash_command_response(&organization, &payload).await)
                }
                .boxed()
            }) as ingress::AfterStore
        });
        Ok(Received::Events {
            account: workspace(&classified.team_id),
            events: vec![IncomingEvent {
                delivery_id,
                scope: DeliveryScope::Provider,
                event_type: classified.event_type,
                occurred_at: None,
                payload: payload.to_string(),
            }],
            reply,
        })
    }
}

#[async_trait::async_trait]
impl Ingress for SlackIngress {
    fn endpoints(&self) -> Vec<Endpoint> {
        vec![EVENTS, INTERACTIVE]
    }

    async fn receive(&self, request: WebhookRequest<'_>) -> Result<Received, IngressError> {
        self.verify(&request)?;
        if request.endpoint == EVENTS {
            self.event_callback(&request)
        } else {
            self.interaction(&request)
        }
    }
}
