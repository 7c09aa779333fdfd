//! SNS HTTPS deliveries at `/webhooks/aws/{integration_id}`: CloudWatch alarms pushed
//! for tenants who want them at once.
//!
//! Every message is verified before anything else: its `SigningCertURL` must be https
//! on an SNS host (`sns_hosts`) and end in `.pem`; the certificate is fetched once per
//! URL and kept; the signature is RSA PKCS#1 v1.5 over the message's fixed-order
//! string, with SHA-1 (`SignatureVersion` 1) or SHA-256 (2). Then only topics the
//! integration allows are taken: a subscription to an allowed topic is confirmed by
//! fetching its `SubscribeURL` (itself on an SNS host); one to any other topic is not
//! confirmed, and is kept `dead` with the reason for the operator to see.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{AlgorithmIdentifier, CertificateDer, InvalidSignature, alg_id};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Shared;
use super::alarms::AlarmStateChange;
use crate::connectors::ingress::{
    self, Account, Endpoint, IncomingEvent, Ingress, IngressError, Received, WebhookRequest,
};
use crate::store::events::DeliveryScope;
use crate::store::integrations::Integration;

pub const ENDPOINT: Endpoint = Endpoint::new("/webhooks/aws/{integration_id}");
pub const MESSAGE_TYPE_HEADER: &str = "x-amz-sns-message-type";
pub const MESSAGE_ID_HEADER: &str = "x-amz-sns-message-id";
/// Event type of a notification that is not a CloudWatch alarm.
pub const NOTIFICATION: &str = "sns.notification";
/// Certificates kept at most (SNS signs with a handful; more means someone is probing).
const MAX_CERTIFICATES: usize = 64;

pub fn endpoint_url(public_url: &str, integration_id: &str) -> String {
    format!(
        "{}/webhooks/aws/{integration_id}",
        public_url.trim_end_matches('/')
    )
}

/// An SNS message, as delivered over HTTPS.
#[derive(Debug, Clone, Deserialize)]
pub struct SnsMessage {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "MessageId")]
    pub message_id: String,
    #[serde(rename = "TopicArn")]
    pub topic_arn: String,
    #[serde(rename = "Subject")]
    pub subject: Option<String>,
    #[serde(rename = "Message")]
    pub message: Option<String>,
    #[serde(rename = "Timestamp")]
    pub timestamp: String,
    #[serde(rename = "SignatureVersion")]
    pub signature_version: String,
    #[serde(rename = "Signature")]
    pub signature: String,
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
    #[serde(rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    #[serde(rename = "Token")]
    pub token: Option<String>,
}

impl SnsMessage {
    /// What SNS signs: `Key\nValue\n` for each key present, in this fixed order.
    pub fn string_to_sign(&self) -> String {
        let fields = [
            ("Message", self.message.as_deref()),
            ("MessageId", Some(self.message_id.as_str())),
            ("Subject", self.subject.as_deref()),
            ("SubscribeURL", self.subscribe_url.as_deref()),
            ("Timestamp", Some(self.timestamp.as_str())),
            ("Token", self.token.as_deref()),
            ("TopicArn", Some(self.topic_arn.as_str())),
            ("Type", Some(self.kind.as_str())),
        ];
        fields
            .iter()
            .filter_map(|(key, value)| value.map(|value| format!("{key}\n{value}\n")))
            .collect()
    }
}

/// RSA PKCS#1 v1.5 with one digest, for webpki to check against a certificate's key.
#[derive(Debug)]
struct RsaPkcs1 {
    algorithm: &'static dyn ring::signature::VerificationAlgorithm,
    id: AlgorithmIdentifier,
}

impl rustls_pki_types::SignatureVerificationAlgorithm for RsaPkcs1 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        ring::signature::UnparsedPublicKey::new(self.algorithm, public_key)
            .verify(message, signature)
            .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::RSA_ENCRYPTION
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        self.id
    }
}

/// SignatureVersion 1: SHA-1, which SNS still uses by default.
static RSA_PKCS1_SHA1: RsaPkcs1 = RsaPkcs1 {
    algorithm: &ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
    // sha1WithRSAEncryption (1.2.840.113549.1.1.5), NULL parameters.
    id: AlgorithmIdentifier::from_slice(&[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05, 0x05, 0x00,
    ]),
};

static RSA_PKCS1_SHA256: RsaPkcs1 = RsaPkcs1 {
    algorithm: &ring::signature::RSA_PKCS1_2048_8192_SHA256,
    id: alg_id::RSA_PKCS1_SHA256,
};

/// Checks `message`'s signature with the certificate (DER) it names.
pub fn verify(message: &SnsMessage, certificate: &[u8]) -> Result<(), String> {
    let algorithm: &RsaPkcs1 = match message.signature_version.as_str() {
        "1" => &RSA_PKCS1_SHA1,
        "2" => &RSA_PKCS1_SHA256,
        other => return Err(format!("unknown SignatureVersion '{other}'")),
    };
    let signature = base64::engine::general_purpose::STANDARD
        .decode(message.signature.trim())
        .map_err(|_| "the Signature is not base64".to_string())?;
    let der = CertificateDer::from(certificate);
    let certificate = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| format!("the signing certificate is unreadable: {e}"))?;
    certificate
        .verify_signature(algorithm, message.string_to_sign().as_bytes(), &signature)
        .map_err(|_| "the signature does not match the message".to_string())
}

pub struct SnsIngress {
    shared: Arc<Shared>,
    /// Signing certificates (DER) by URL.
    certificates: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

impl SnsIngress {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            certificates: Mutex::default(),
        }
    }

    /// The certificate at `url`, fetched once; only from an SNS host.
    async fn certificate(&self, url: &str) -> Result<Arc<Vec<u8>>, IngressError> {
        let parsed = url::Url::parse(url).ok().filter(|parsed| {
            self.shared.config.is_sns_url(parsed) && parsed.path().ends_with(".pem")
        });
        if parsed.is_none() {
            return Err(forbidden(
                "invalid_signature",
                format!("SigningCertURL '{url}' is not an SNS certificate URL"),
            ));
        }
        if let Some(known) = crate::lock(&self.certificates).get(url) {
            return Ok(Arc::clone(known));
        }
        let answer = self.shared.api.get(url).await.map_err(|error| {
            tracing::warn!(url, error = %error, "SNS signing certificate unreachable");
            IngressError::unavailable("the SNS signing certificate is unreachable, retry")
        })?;
        if !answer.status.is_success() {
            return Err(IngressError::unavailable(format!(
                "the SNS signing certificate could not be fetched ({})",
                answer.status
            )));
        }
        let der = CertificateDer::from_pem_slice(answer.text.as_bytes()).map_err(|_| {
            forbidden(
                "invalid_signature",
                "SigningCertURL serves no PEM certificate",
            )
        })?;
        let der = Arc::new(der.as_ref().to_vec());
        let mut certificates = crate::lock(&self.certificates);
        if certificates.len() >= MAX_CERTIFICATES {
            certificates.clear();
        }
        certificates.insert(url.to_string(), Arc::clone(&der));
        Ok(der)
    }

    /// Confirms a subscription by fetching its `SubscribeURL`.
    async fn confirm(&self, message: &SnsMessage) -> Result<Received, IngressError> {
        let url = message.subscribe_url.as_deref().ok_or_else(|| {
            IngressError::bad_request("a SubscriptionConfirmation without SubscribeURL")
        })?;
        if !url::Url::parse(url).is_ok_and(|parsed| self.shared.config.is_sns_url(&parsed)) {
            return Err(forbidden(
                "invalid_request",
                "SubscribeURL is not on an SNS host",
            ));
        }
        let answer = self.shared.api.get(url).await.map_err(|error| {
            tracing::warn!(topic = %message.topic_arn, error = %error, "SNS subscription not confirmed");
            IngressError::unavailable("SNS could not be reached to confirm the subscription")
        })?;
        if !answer.status.is_success() {
            return Err(IngressError::unavailable(format!(
                "SNS refused to confirm the subscription ({})",
                answer.status
            )));
        }
        tracing::info!(topic = %message.topic_arn, "SNS subscription confirmed");
        Ok(Received::Answer(
            json!({"confirmed": true, "topic_arn": message.topic_arn}),
        ))
    }
}

fn forbidden(code: &'static str, message: impl Into<String>) -> IngressError {
    IngressError::new(StatusCode::FORBIDDEN, code, message)
}

/// The SNS topics an integration takes messages from.
pub fn allowed_topics(integration: &Integration) -> Vec<String> {
    serde_json::from_str::<Value>(&integration.metadata)
        .ok()
        .and_then(|metadata| {
            metadata["topics"].as_array().map(|topics| {
                topics
                    .iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl Ingress for SnsIngress {
    fn endpoints(&self) -> Vec<Endpoint> {
        vec![ENDPOINT]
    }

    async fn receive(&self, request: WebhookRequest<'_>) -> Result<Received, IngressError> {
        let integration = request
            .integration
            .ok_or_else(|| IngressError::not_found("no such webhook"))?;
        let body = ingress::utf8_payload(request.body)?;
        let message: SnsMessage = serde_json::from_str(&body)
            .map_err(|e| IngressError::bad_request(format!("not an SNS message: {e}")))?;
        if let Some(kind) = request.header(MESSAGE_TYPE_HEADER)
            && kind != message.kind
        {
            return Err(IngressError::bad_request(format!(
                "{MESSAGE_TYPE_HEADER} says {kind}, the message says {}",
                message.kind
            )));
        }
        if let Some(id) = request.header(MESSAGE_ID_HEADER)
            && id != message.message_id
        {
            return Err(IngressError::bad_request(format!(
                "{MESSAGE_ID_HEADER} does not match the MessageId"
            )));
        }
        let certificate = self.certificate(&message.signing_cert_url).await?;
        verify(&message, &certificate).map_err(|reason| forbidden("invalid_signature", reason))?;
        let allowed = allowed_topics(integration).contains(&message.topic_arn);
        match message.kind.as_str() {
            "SubscriptionConfirmation" if allowed => self.confirm(&message).await,
            "SubscriptionConfirmation" => {
                let reason = format!(
                    "SNS asked integration {} to subscribe to topic {}, which it does not allow: \
                     not confirmed",
                    integration.id, message.topic_arn
                );
                tracing::warn!(integration_id = %integration.id, topic = %message.topic_arn, "SNS subscription to a topic not allowed: refused");
                Ok(Received::Events {
                    account: Account::Unknown(reason),
                    events: vec![IncomingEvent {
                        delivery_id: ingress::delivery_id("MessageId", Some(&message.message_id))?,
                        scope: DeliveryScope::Provider,
                        event_type: "sns.subscription_refused".into(),
                        occurred_at: None,
                        payload: body,
                    }],
                    reply: None,
                })
            }
            _ if !allowed => Err(forbidden(
                "topic_not_allowed",
                format!(
                    "topic {} is not among the integration's topics",
                    message.topic_arn
                ),
            )),
            "UnsubscribeConfirmation" => {
                tracing::info!(integration_id = %integration.id, topic = %message.topic_arn, "SNS subscription ended");
                Ok(Received::Answer(json!({"ok": true})))
            }
            "Notification" => {
                let alarm = message
                    .message
                    .as_deref()
                    .and_then(|text| serde_json::from_str::<Value>(text).ok())
                    .and_then(|value| AlarmStateChange::from_sns(&value));
                let event = match alarm {
                    Some(alarm) => alarm.into_incoming(),
                    None => IncomingEvent {
                        delivery_id: ingress::delivery_id("MessageId", Some(&message.message_id))?,
                        scope: DeliveryScope::Integration,
                        event_type: NOTIFICATION.into(),
                        occurred_at: super::alarms::normalized_time(&message.timestamp)
                            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                            .map(|t| t.naive_utc()),
                        payload: body,
                    },
                };
                Ok(Received::Events {
                    account: Account::Named,
                    events: vec![event],
                    reply: None,
                })
            }
            other => Err(IngressError::bad_request(format!(
                "unknown SNS message Type '{other}'"
            ))),
        }
    }
}
