//! Connectors: how switchboard talks to one provider (Slack, GitHub, PagerDuty,
//! Datadog, AWS, GCP, generic webhooks).
//!
//! A provider implements [`Connector`]: start an authorization, complete it into
//! credentials, validate, refresh and revoke them, and handle the provider's events.
//! Each provider lives in a folder of its own and is built from its
//! `[connectors.<name>]` section ("the config is the factory"). A configured provider
//! this build does not implement is accepted and validated, and the daemon says
//! plainly that it is not available instead of pretending to connect.

mod config;
mod gate;
pub mod github;
pub mod slack;
pub mod webhook;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use serde::Serialize;

use crate::pipeline::Envelope;
use crate::secret::Secret;
use switchboard_actors::Quota;

pub use config::{
    AwsConfig, ConnectorsConfig, DatadogConfig, GcpConfig, GithubConfig, PagerdutyConfig,
    SlackConfig, WebhookConfig,
};
pub use gate::{GateError, ProviderGate};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectorKind {
    Slack,
    Github,
    Pagerduty,
    Datadog,
    Aws,
    Gcp,
    Webhook,
}

impl ConnectorKind {
    pub const ALL: [ConnectorKind; 7] = [
        ConnectorKind::Slack,
        ConnectorKind::Github,
        ConnectorKind::Pagerduty,
        ConnectorKind::Datadog,
        ConnectorKind::Aws,
        ConnectorKind::Gcp,
        ConnectorKind::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorKind::Slack => "slack",
            ConnectorKind::Github => "github",
            ConnectorKind::Pagerduty => "pagerduty",
            ConnectorKind::Datadog => "datadog",
            ConnectorKind::Aws => "aws",
            ConnectorKind::Gcp => "gcp",
            ConnectorKind::Webhook => "webhook",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// Why this build cannot connect to the provider, if it cannot.
    pub fn unavailable_reason(self) -> Option<&'static str> {
        match self {
            ConnectorKind::Webhook | ConnectorKind::Github | ConnectorKind::Slack => None,
            // Each provider's implementation lands with its own issue.
            _ => Some(
                "this provider is not implemented in this build: its events and integrations are not handled",
            ),
        }
    }
}

impl fmt::Display for ConnectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The supervisor name of a connector in the actor tree.
pub fn actor_name(connector: &str) -> String {
    format!("connector:{connector}")
}

/// How a tenant is sent to authorize.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuthorizationStart {
    /// Redirect the user to the provider's consent page.
    Oauth2 { url: String },
    /// Send the user to install an app (GitHub App installation).
    Installation { url: String },
    /// Ask the tenant for these credential fields and post them to the callback.
    ApiKey { fields: Vec<String> },
}

/// What a connector is told when a tenant starts authorizing.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    pub organization_id: String,
    pub user_id: Option<String>,
    /// The single-use state to carry through the provider's redirect.
    pub state: String,
    /// Where the provider should send the browser back.
    pub redirect_url: String,
}

/// What comes back from the provider (or the tenant) to complete an authorization.
#[derive(Debug, Clone, Default)]
pub struct CallbackRequest {
    pub organization_id: String,
    /// The pending integration being completed.
    pub integration_id: String,
    /// Where this daemon's API is reached from outside (`integrations.public_url`).
    pub public_url: String,
    pub code: Option<Secret>,
    pub installation_id: Option<String>,
    /// Credentials entered by the tenant (the api_key flow).
    pub credentials: BTreeMap<String, Secret>,
    pub redirect_url: String,
}

/// One credential in plaintext, on its way to or from the vault.
#[derive(Debug, Clone)]
pub struct CredentialValue {
    pub credential_type: String,
    pub secret: Secret,
    pub expires_at: Option<NaiveDateTime>,
}

/// A completed authorization.
#[derive(Debug, Clone)]
pub struct Authorized {
    /// The provider's account: Slack team, GitHub installation, ...
    pub external_id: Option<String>,
    pub metadata: serde_json::Value,
    pub credentials: Vec<CredentialValue>,
    /// Shown to the tenant once, in the callback's answer, and never stored in the
    /// clear (a generated webhook signing secret, for one).
    pub reveal: Option<serde_json::Value>,
}

/// An integration's credentials, decrypted for one call and dropped (zeroized) after.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub organization_id: String,
    pub integration_id: String,
    pub external_id: Option<String>,
    pub metadata: serde_json::Value,
    pub values: Vec<CredentialValue>,
}

impl Credentials {
    pub fn get(&self, credential_type: &str) -> Option<&Secret> {
        self.values
            .iter()
            .find(|v| v.credential_type == credential_type)
            .map(|v| &v.secret)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// The tenant's input is wrong (a bad code, a missing field): not the provider's fault.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The provider rejected the credentials (revoked, expired, wrong).
    #[error("credentials rejected: {0}")]
    Unauthorized(String),
    /// The provider asked us to slow down.
    #[error("rate limited by the provider, retry after {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// The provider failed or could not be reached.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    #[error("not supported by this connector")]
    NotSupported,
    /// The integration's own quota for the provider is spent: the request was not
    /// made. The event waits (no attempt is counted) and is handled again after this.
    #[error("the provider quota is spent until {retry_after:?} from now")]
    QuotaSpent { retry_after: Duration },
}

impl ConnectorError {
    /// Whether the failure says something about the provider's health (counts for
    /// the circuit breaker); a bad input or rejected credentials do not.
    pub fn is_provider_failure(&self) -> bool {
        matches!(
            self,
            ConnectorError::Unavailable(_) | ConnectorError::RateLimited { .. }
        )
    }
}

/// One integration as the bot reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationLine {
    pub connector: String,
    pub status: String,
    /// The provider account (team, installation), if known.
    pub account: Option<String>,
    /// The integration actor's status in the tree, if it runs.
    pub health: Option<String>,
}

/// What a connector may ask of the daemon it runs in (the Slack bot's commands).
#[async_trait::async_trait]
pub trait DaemonServices: Send + Sync + 'static {
    /// An organization's integrations, with their actors' health.
    async fn integrations(&self, organization_id: &str) -> Result<Vec<IntegrationLine>, String>;
    /// Restarts a connector; `by` says who asked, for the log.
    async fn restart_connector(&self, name: &str, by: &str) -> Result<(), String>;
}

/// What a connector's own actors need from the daemon, handed over once as the tree
/// is built.
#[derive(Clone)]
pub struct ConnectorContext {
    pub store: crate::store::Store,
    /// Where received events are handed to the inbox.
    pub intake: Arc<crate::pipeline::inbox::Intake>,
    pub daemon: Arc<dyn DaemonServices>,
}

/// A provider. Implementations hold their configuration and HTTP client; the
/// integration actors call them with one tenant's credentials at a time.
#[async_trait::async_trait]
pub trait Connector: std::any::Any + Send + Sync + 'static {
    /// Called once as the actor tree is built: the connector keeps what it needs of
    /// the daemon and returns actors of its own, supervised beside its integrations
    /// (Slack's Socket Mode client).
    fn actors(&self, _context: &ConnectorContext) -> Vec<switchboard_actors::ChildSpec> {
        Vec::new()
    }

    /// The connector's name: `slack`, `github`, ... (the `connector_type` of its integrations).
    fn name(&self) -> &str;

    /// The provider's per-tenant rate limit, if it has one.
    fn tenant_quota(&self) -> Option<Quota> {
        None
    }

    async fn authorize(
        &self,
        request: &AuthorizeRequest,
    ) -> Result<AuthorizationStart, ConnectorError>;

    async fn complete(&self, request: &CallbackRequest) -> Result<Authorized, ConnectorError>;

    /// Checks the credentials against the provider.
    async fn validate(&self, credentials: &Credentials) -> Result<(), ConnectorError>;

    /// New credentials for expiring ones; `NotSupported` when they never expire.
    async fn refresh(
        &self,
        _credentials: &Credentials,
    ) -> Result<Vec<CredentialValue>, ConnectorError> {
        Err(ConnectorError::NotSupported)
    }

    /// Revokes the credentials at the provider; `NotSupported` when it cannot.
    async fn revoke(&self, _credentials: &Credentials) -> Result<(), ConnectorError> {
        Err(ConnectorError::NotSupported)
    }

    /// Whether [`Connector::handle_event`] does anything: when it does not, events go
    /// to the routes without a handler call (and without decrypting credentials).
    fn handles_events(&self) -> bool {
        false
    }

    /// Handles one of the integration's events (already durable), before the routes
    /// see it, with the integration's credentials. Every request it makes to the
    /// provider goes through `provider` (the integration's breaker and rate limit);
    /// handling that makes none costs no quota. An `Err` fails this attempt; the
    /// event is retried. What it asks of the integration (revoke it, update its
    /// metadata) comes back as an [`EventEffect`] that the integration actor applies.
    async fn handle_event(
        &self,
        _integration: &Credentials,
        _event: &Envelope,
        _provider: &ProviderGate,
    ) -> Result<EventEffect, ConnectorError> {
        Ok(EventEffect::None)
    }

    /// A short readable line for an event (for chat messages), if the connector knows one.
    fn describe(&self, _event: &Envelope) -> Option<String> {
        None
    }
}

/// What handling an event changes about its integration, applied by its actor.
#[derive(Debug, Clone, PartialEq)]
pub enum EventEffect {
    None,
    /// The provider says the account is gone (uninstalled, tokens revoked): the
    /// integration is revoked and its actor removed.
    Revoked {
        reason: String,
    },
    /// A new status that is not a revocation (`suspended`, back to `active`).
    Status(&'static str),
    /// Replace the integration's metadata (repositories added, permissions changed).
    Metadata(serde_json::Value),
}

/// The concrete connector behind a trait object (the Slack connector, which ingress
/// and routes need as itself).
pub fn downcast<T: Connector>(connector: &Arc<dyn Connector>) -> Option<Arc<T>> {
    (Arc::clone(connector) as Arc<dyn std::any::Any + Send + Sync>)
        .downcast::<T>()
        .ok()
}

/// The connectors this daemon runs, by name.
#[derive(Clone, Default)]
pub struct ConnectorSet {
    connectors: BTreeMap<String, Arc<dyn Connector>>,
}

impl fmt::Debug for ConnectorSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.connectors.keys()).finish()
    }
}

impl ConnectorSet {
    /// The connectors built from the configuration's sections (those this build implements).
    pub fn from_config(full: &crate::config::Config) -> Self {
        let config = &full.connectors;
        let mut set = Self::default();
        if let Some(slack) = &config.slack {
            set = set.with(Arc::new(slack::SlackConnector::build(slack, &full.bot)));
        }
        if let Some(webhook) = &config.webhook {
            set = set.with(Arc::new(webhook::WebhookConnector::build(webhook)));
        }
        // Configuration validation has already checked what `build` needs.
        if let Some(github) = &config.github {
            match github::GithubConnector::build(github) {
                Ok(connector) => set = set.with(Arc::new(connector)),
                Err(error) => tracing::error!(error = %error, "the GitHub connector cannot start"),
            }
        }
        set
    }

    pub fn with(mut self, connector: Arc<dyn Connector>) -> Self {
        self.connectors
            .insert(connector.name().to_string(), connector);
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Connector>> {
        self.connectors.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Connector>> {
        self.connectors.values()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.connectors.keys().map(String::as_str)
    }
}
