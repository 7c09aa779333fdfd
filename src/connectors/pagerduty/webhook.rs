//! PagerDuty's v3 webhooks, at `/webhooks/pagerduty/{integration_id}`.
//!
//! Each delivery is signed in `X-PagerDuty-Signature`: one `v1=<hex>` HMAC-SHA256 of
//! the raw body per active secret of the subscription, several while PagerDuty
//! rotates it. A delivery is taken when any of them matches the secret switchboard
//! kept when it created the subscription. A missing or malformed header is a 400 and
//! a wrong signature a 403 (PagerDuty does not retry a 4xx); nothing is stored.
//! `X-Webhook-Id` is the same on every redelivery: the de-duplication id.

use std::sync::Arc;

use axum::http::StatusCode;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::Shared;
use super::events::{Head, PING};
use crate::connectors::ingress::{
    self, Account, Endpoint, IncomingEvent, Ingress, IngressError, Received, SecretCache,
    WebhookRequest,
};
use crate::secret::Secret;
use crate::store::events::DeliveryScope;

pub const ENDPOINT: Endpoint = Endpoint::new("/webhooks/pagerduty/{integration_id}");
pub const SIGNATURE_HEADER: &str = "X-PagerDuty-Signature";
pub const WEBHOOK_ID_HEADER: &str = "X-Webhook-Id";
/// The credential type of the subscription's signing secret.
pub const WEBHOOK_SECRET: &str = "webhook_secret";

pub fn webhook_url(public_url: &str, integration_id: &str) -> String {
    format!(
        "{}/webhooks/pagerduty/{integration_id}",
        public_url.trim_end_matches('/')
    )
}

/// The `v1=` signatures of a header: their bytes, or why the header is malformed.
pub fn signatures(header: &str) -> Result<Vec<Vec<u8>>, String> {
    let found: Vec<Vec<u8>> = header
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .filter_map(|entry| entry.strip_prefix("v1="))
        .map(|hex_value| {
            hex::decode(hex_value).map_err(|_| "a v1 signature is not hex".to_string())
        })
        .collect::<Result<_, _>>()?;
    if found.is_empty() {
        return Err(format!("{SIGNATURE_HEADER} holds no v1=<hex> signature"));
    }
    Ok(found)
}

/// Whether any of `signatures` is the body's HMAC-SHA256 under `secret` (each
/// compared in constant time).
pub fn signed_by(secret: &Secret, body: &[u8], signatures: &[Vec<u8>]) -> bool {
    signatures.iter().any(|signature| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(body);
        mac.verify_slice(signature).is_ok()
    })
}

/// The header PagerDuty would send for `body` signed with each of `secrets`.
pub fn sign(secrets: &[&str], body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                .expect("HMAC takes keys of any length");
            mac.update(body);
            format!("v1={}", hex::encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub struct PagerDutyIngress {
    pub shared: Arc<Shared>,
    /// Signing secrets by integration.
    secrets: SecretCache,
}

impl PagerDutyIngress {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            secrets: SecretCache::new(WEBHOOK_SECRET),
        }
    }
}

#[async_trait::async_trait]
impl Ingress for PagerDutyIngress {
    fn endpoints(&self) -> Vec<Endpoint> {
        vec![ENDPOINT]
    }

    async fn receive(&self, request: WebhookRequest<'_>) -> Result<Received, IngressError> {
        let integration = request
            .integration
            .ok_or_else(|| IngressError::not_found("no such webhook"))?;
        let header = request.header(SIGNATURE_HEADER).ok_or_else(|| {
            IngressError::bad_request(format!("missing the {SIGNATURE_HEADER} header"))
        })?;
        let presented = signatures(header).map_err(IngressError::bad_request)?;
        let body = request.body;
        self.secrets
            .check(self.shared.context.get(), integration, |secret| {
                if signed_by(secret, body, &presented) {
                    Ok(())
                } else {
                    Err(())
                }
            })
            .await?
            .map_err(|()| {
                IngressError::new(
                    StatusCode::FORBIDDEN,
                    "invalid_signature",
                    "no v1 signature matches this subscription's secret",
                )
            })?;
        let event = Head::parse(body).map_err(IngressError::bad_request)?;
        if event.event_type == PING {
            return Ok(Received::Answer(json!({"ok": true})));
        }
        let delivery_id = ingress::delivery_id(
            &format!("the {WEBHOOK_ID_HEADER} header"),
            request.header(WEBHOOK_ID_HEADER),
        )?;
        Ok(Received::Events {
            account: Account::Named,
            events: vec![IncomingEvent {
                delivery_id,
                // The webhook id is PagerDuty's, unique within the subscription.
                scope: DeliveryScope::Integration,
                event_type: event.event_type.to_string(),
                occurred_at: event.occurred_at(),
                payload: ingress::utf8_payload(body)?,
            }],
            reply: None,
        })
    }

    fn forget(&self, integration_id: &str) {
        self.secrets.forget(integration_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_v1_signature_under_the_secret_is_taken() {
        let body = br#"{"event":{}}"#;
        let secret = Secret::new("s3cret");
        let header = sign(&["old-secret", "s3cret"], body);
        assert!(signed_by(&secret, body, &signatures(&header).unwrap()));
        assert!(!signed_by(
            &secret,
            b"tampered",
            &signatures(&header).unwrap()
        ));
        let wrong = sign(&["other"], body);
        assert!(!signed_by(&secret, body, &signatures(&wrong).unwrap()));
        assert!(signatures("v1=zz").is_err());
        assert!(signatures("v0=abcd").is_err());
        assert!(signatures("").is_err());
    }
}
