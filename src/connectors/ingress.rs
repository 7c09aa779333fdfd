//! What a connector tells the shared webhook ingress (`http/ingress.rs`).
//!
//! A connector declares the endpoints it serves. For each request the ingress hands
//! it the raw bytes (and the integration the URL names, if the endpoint names one);
//! the connector verifies them, says whose events they are, and gives the events. The
//! shared ingress does everything else the same way for every provider: body limits,
//! resolving a provider account to its integration (cached), the durable store before
//! the answer, 503 when the store cannot take it, duplicates acknowledged, events no
//! integration owns kept `dead` with the reason, metrics by connector.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use chrono::NaiveDateTime;
use futures::future::BoxFuture;

use crate::store::events::DeliveryScope;
use crate::store::integrations::Integration;

/// One webhook endpoint a connector serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The full path, under `/webhooks/`; a last segment `{integration_id}` means the
    /// URL names the integration (`/webhooks/generic/{integration_id}`).
    pub path: &'static str,
}

/// The path parameter that names an integration.
pub const INTEGRATION_PARAM: &str = "{integration_id}";

impl Endpoint {
    pub const fn new(path: &'static str) -> Self {
        Self { path }
    }

    /// What comes before the integration id, when the URL names one.
    pub fn integration_prefix(&self) -> Option<&'static str> {
        self.path.strip_suffix(INTEGRATION_PARAM)
    }
}

/// A request, as the connector sees it.
pub struct WebhookRequest<'a> {
    /// The endpoint it came to.
    pub endpoint: Endpoint,
    pub headers: &'a HeaderMap,
    /// The body, exactly as received.
    pub body: &'a Bytes,
    /// The live integration the URL names, for an endpoint that names one.
    pub integration: Option<&'a Integration>,
}

impl WebhookRequest<'_> {
    /// A header as text, if present and printable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Whose events a request holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    /// The integration the URL named.
    Named,
    /// A provider account named in the body (a GitHub installation, a Slack team):
    /// its events go to the integration bound to it, or are kept `dead` with
    /// `unbound_reason` when none is.
    External { id: String, unbound_reason: String },
    /// Nobody: the events are kept `dead` with this reason.
    Unknown(String),
}

/// One event a request holds.
#[derive(Debug, Clone)]
pub struct IncomingEvent {
    pub delivery_id: String,
    /// Who chose `delivery_id`, and so where it is unique.
    pub scope: DeliveryScope,
    pub event_type: String,
    pub occurred_at: Option<NaiveDateTime>,
    /// The payload exactly as signed (see [`utf8_payload`]).
    pub payload: String,
}

/// An answer computed once the events are stored, given the organization they went
/// to (a slash command's reply); `None` answers as if there were none.
pub type AfterStore =
    Box<dyn FnOnce(Option<String>) -> BoxFuture<'static, Option<serde_json::Value>> + Send>;

/// What a verified request amounts to.
pub enum Received {
    /// Answered at once and nothing stored (a URL verification, a ping).
    Answer(serde_json::Value),
    /// Events to store; answered `{"id", "duplicate"}` (one event) once durable, or by
    /// `reply`.
    Events {
        account: Account,
        events: Vec<IncomingEvent>,
        reply: Option<AfterStore>,
    },
}

/// A refused request: the status, a stable code and a message for the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl IngressError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// The signature (or shared secret) does not check out.
    pub fn invalid_signature(message: impl ToString) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            message.to_string(),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// Something needed to verify the request is out of reach: the sender retries.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

/// A connector's webhook ingress.
#[async_trait::async_trait]
pub trait Ingress: Send + Sync + 'static {
    fn endpoints(&self) -> Vec<Endpoint>;

    /// Verifies the request on its raw bytes and says what it holds. Nothing is
    /// stored when this fails.
    async fn receive(&self, request: WebhookRequest<'_>) -> Result<Received, IngressError>;

    /// Drops what the connector cached about an integration (it was revoked).
    fn forget(&self, _integration_id: &str) {}
}

/// The longest delivery id kept: providers' ids are GUIDs and short strings.
pub const MAX_DELIVERY_ID: usize = 200;

/// A delivery id as a sender gave it in `what`: present, not empty, not over-long.
pub fn delivery_id(what: &str, value: Option<&str>) -> Result<String, IngressError> {
    match value {
        None => Err(IngressError::bad_request(format!("missing {what}"))),
        Some("") => Err(IngressError::bad_request(format!("{what} is empty"))),
        Some(id) if id.len() > MAX_DELIVERY_ID => Err(IngressError::bad_request(format!(
            "{what} is longer than {MAX_DELIVERY_ID} bytes"
        ))),
        Some(id) => Ok(id.to_string()),
    }
}

/// The body as the text it is stored as, byte for byte: a body that is not UTF-8 is
/// refused rather than altered (the durable copy must be what the sender signed).
pub fn utf8_payload(body: &Bytes) -> Result<String, IngressError> {
    String::from_utf8(body.to_vec()).map_err(|_| {
        IngressError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            "the body is not UTF-8 text; switchboard stores payloads exactly as signed, as text",
        )
    })
}

/// The secrets an ingress checks each integration's requests against (a generic
/// webhook's signing secret, Datadog's header secret), read from the vault once and
/// kept, so that a webhook costs no vault round trip. A request the cached secret
/// refuses is checked again with the vault's (the secret may have changed) before it
/// is refused.
pub struct SecretCache {
    credential_type: &'static str,
    secrets: std::sync::Mutex<std::collections::HashMap<String, crate::secret::Secret>>,
}

impl SecretCache {
    pub fn new(credential_type: &'static str) -> Self {
        Self {
            credential_type,
            secrets: std::sync::Mutex::default(),
        }
    }

    /// Runs `check` with the integration's secret: the cached one, then, if that fails
    /// or none is cached, the vault's. The outcome is the last check's.
    pub async fn check<T, E>(
        &self,
        context: Option<&super::ConnectorContext>,
        integration: &Integration,
        check: impl Fn(&crate::secret::Secret) -> Result<T, E>,
    ) -> Result<Result<T, E>, IngressError> {
        let cached = crate::lock(&self.secrets).get(&integration.id).cloned();
        if let Some(Ok(passed)) = cached.as_ref().map(&check) {
            return Ok(Ok(passed));
        }
        let context =
            context.ok_or_else(|| IngressError::unavailable("the connector is starting, retry"))?;
        let loaded = context.credentials.load(integration).await.map_err(|error| {
            tracing::warn!(integration_id = %integration.id, credential = self.credential_type, error = %error, "webhook secret unavailable");
            IngressError::unavailable("the webhook's secret is unavailable, retry")
        })?;
        let secret = loaded
            .get(self.credential_type)
            .cloned()
            .ok_or_else(|| IngressError::not_found("no such webhook"))?;
        let outcome = check(&secret);
        crate::lock(&self.secrets).insert(integration.id.clone(), secret);
        Ok(outcome)
    }

    /// Drops an integration's secret (it was revoked).
    pub fn forget(&self, integration_id: &str) {
        crate::lock(&self.secrets).remove(integration_id);
    }
}
