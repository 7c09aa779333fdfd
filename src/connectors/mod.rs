//! Connectors: how switchboard talks to one provider (Slack, GitHub, PagerDuty,
//! Datadog, AWS, GCP, generic webhooks).
//!
//! A provider implements [`Connector`]: start an authorization, complete it into
//! credentials, validate, refresh and revoke them, and handle the provider's events.
//! A provider is one folder: it owns everything about its provider and hands the
//! daemon capabilities: its webhook [`ingress`], actors of its own, polling, named
//! route actions. The shared layers (`http/`, `pipeline/`, `tree.rs`, `daemon.rs`)
//! never name a provider. Each is built from its `[connectors.<name>]` section ("the
//! config is the factory") and registered in [`PROVIDERS`].

pub mod aws;
pub mod datadog;
mod gate;
pub mod gcp;
pub mod github;
pub mod http;
pub mod ingress;
pub mod pagerduty;
pub mod section;
pub mod slack;
pub mod webhook;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use serde::Serialize;

use crate::pipeline::Envelope;
use crate::pipeline::actions::{ActionKind, Describe, Subject};
use crate::problem::Problem;
use crate::secret::Secret;
use switchboard_actors::Quota;

pub use gate::{GateError, ProviderGate};
use ingress::Ingress;
use section::{CommonSettings, Section};

/// A connector built from its section, or every problem with the section (each keyed
/// `connectors.<name>.<key>`).
pub type Built = Result<Arc<dyn Connector>, Vec<Problem>>;

/// How a provider is registered: its name and how it is built from its section.
pub struct Provider {
    pub name: &'static str,
    pub build: fn(&Section) -> Built,
}

/// Every provider this build implements. Adding one is a folder and a line here.
pub const PROVIDERS: &[Provider] = &[
    aws::PROVIDER,
    datadog::PROVIDER,
    gcp::PROVIDER,
    github::PROVIDER,
    pagerduty::PROVIDER,
    slack::PROVIDER,
    webhook::PROVIDER,
];

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
    ApiKey {
        fields: Vec<String>,
        /// What the tenant needs before posting them (an endpoint to point a
        /// subscription at, an external id to trust), shown with the fields.
        #[serde(skip_serializing_if = "Option::is_none")]
        instructions: Option<serde_json::Value>,
    },
}

impl AuthorizationStart {
    /// The api_key flow, asking for these credential fields.
    pub fn api_key(fields: &[&str]) -> Self {
        AuthorizationStart::ApiKey {
            fields: fields.iter().map(ToString::to_string).collect(),
            instructions: None,
        }
    }
}

/// What a connector is told when a tenant starts authorizing.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    pub organization_id: String,
    /// The pending integration this authorization completes.
    pub integration_id: String,
    /// Where this daemon's API is reached from outside (`integrations.public_url`).
    pub public_url: String,
    pub user_id: Option<String>,
    /// Which of the connector's ways to connect the tenant chose (`oauth2`,
    /// `api_key`), for a connector that offers several; `None` takes its default.
    pub flow: Option<String>,
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

impl CallbackRequest {
    /// The credential fields the tenant posted, refusing one the `provider` does not
    /// take (the error names those it does).
    pub fn fields_among(
        &self,
        known: &[&str],
        provider: &str,
    ) -> Result<&BTreeMap<String, Secret>, ConnectorError> {
        match self
            .credentials
            .keys()
            .find(|k| !known.contains(&k.as_str()))
        {
            Some(unknown) => Err(ConnectorError::Invalid(format!(
                "credentials.{unknown} is not a {provider} field (it takes: {})",
                known.join(", ")
            ))),
            None => Ok(&self.credentials),
        }
    }
}

/// A yes/no field of a callback (`"true"` or `"false"`), `default` when absent.
pub fn flag_field(
    fields: &BTreeMap<String, Secret>,
    name: &str,
    default: bool,
) -> Result<bool, ConnectorError> {
    match fields
        .get(name)
        .map(|v| v.expose().trim().to_ascii_lowercase())
    {
        None => Ok(default),
        Some(v) if v == "true" => Ok(true),
        Some(v) if v == "false" => Ok(false),
        Some(_) => Err(ConnectorError::Invalid(format!(
            "credentials.{name} must be \"true\" or \"false\""
        ))),
    }
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
    /// Runs an operation (a chat button's click) on the connector it names.
    async fn operate(&self, operation: &Operation) -> Result<Operated, ConnectorError>;
}

/// A person acting on a subject from a chat message (see
/// [`crate::pipeline::actions::Control`]): always within one organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub organization_id: String,
    /// `<connector>.<verb>`.
    pub name: String,
    pub target: String,
    /// Who clicked, as the chat knows them.
    pub by: Person,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Person {
    /// Their email, when the chat connector could read it.
    pub email: Option<String>,
    /// How they are shown (a display name, a chat user id).
    pub name: String,
}

/// How an operation ended, when the provider was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operated {
    /// Done; what was done, in words.
    Done(String),
    /// Not done, for a reason the person should see (the incident is already
    /// resolved); nothing to retry.
    Declined(String),
}

/// What a connector's own actors need from the daemon, handed over once as the tree
/// is built.
#[derive(Clone)]
pub struct ConnectorContext {
    pub store: crate::store::Store,
    /// An integration's credentials, through the vault.
    pub credentials: Arc<dyn crate::integration::CredentialStore>,
    /// Where received events are handed to the inbox.
    pub intake: Arc<crate::pipeline::inbox::Intake>,
    pub daemon: Arc<dyn DaemonServices>,
}

/// A provider. Implementations hold their configuration and HTTP client; the
/// integration actors call them with one tenant's credentials at a time.
#[async_trait::async_trait]
pub trait Connector: Send + Sync + 'static {
    /// Called once as the actor tree is built: the connector keeps what it needs of
    /// the daemon (its store, the vault, the bot's view of the daemon).
    fn attach(&self, _context: &ConnectorContext) {}

    /// Actors of its own, supervised beside its integrations (Slack's Socket Mode
    /// client); called once as the tree is built, after [`Connector::attach`].
    fn actors(&self, _context: &ConnectorContext) -> Vec<switchboard_actors::ChildSpec> {
        Vec::new()
    }

    /// The webhook endpoints it serves, if any (see [`ingress`]).
    fn ingress(&self) -> Option<Arc<dyn Ingress>> {
        None
    }

    /// The route actions it offers (`slack.post`, ...).
    fn actions(&self) -> Vec<Arc<dyn ActionKind>> {
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

    /// Whether [`Connector::handle_event`] does anything with events of this type:
    /// those it does not handle go to the routes without a handler call (and without
    /// decrypting credentials), and are stored `done` at once when no route takes them.
    fn handles(&self, _event_type: &str) -> bool {
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

    /// What the event is about, when it is a step in the life of an alert or an
    /// incident (see [`Subject`]).
    fn subject(&self, _event: &Envelope) -> Option<Subject> {
        None
    }

    /// Runs one of the operations its [`Subject`]s' controls offer (the verb of
    /// `<connector>.<verb>`), for the operation's organization only.
    async fn operate(&self, _operation: &Operation) -> Result<Operated, ConnectorError> {
        Err(ConnectorError::NotSupported)
    }

    /// Whether this integration's events are polled (a third intake beside webhooks and
    /// sockets): its actor then calls [`Connector::poll`] every `poll_interval` (from
    /// the connector's section, else [`DEFAULT_POLL_INTERVAL`]), with jitter.
    fn polls(&self, _integration: &crate::store::integrations::Integration) -> bool {
        false
    }

    /// One page of the integration's feed after `cursor` (`None`: from where the
    /// provider starts a new reader). The actor runs it under the integration's rate
    /// limit and breaker, stores the events (de-duplicated by their ids) and saves the
    /// page's cursor only once they are durable: a crash at any point polls the same
    /// page again, and its duplicates are dropped.
    async fn poll(
        &self,
        _credentials: &Credentials,
        _cursor: Option<&str>,
    ) -> Result<Polled, ConnectorError> {
        Err(ConnectorError::NotSupported)
    }
}

/// How often an integration polls when its connector's section does not say.
pub const DEFAULT_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// One page of a polled feed.
#[derive(Debug, Clone, Default)]
pub struct Polled {
    pub events: Vec<ingress::IncomingEvent>,
    /// Where the next poll starts; `None` keeps the current cursor.
    pub cursor: Option<String>,
    /// More pages are ready now: the next poll comes at once.
    pub more: bool,
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

/// The connectors this daemon runs, by name, with the settings every connector may
/// have.
#[derive(Clone, Default)]
pub struct ConnectorSet {
    connectors: BTreeMap<String, Arc<dyn Connector>>,
    settings: BTreeMap<String, CommonSettings>,
}

impl fmt::Debug for ConnectorSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.connectors.keys()).finish()
    }
}

impl ConnectorSet {
    /// The connectors the `[connectors.<name>]` sections configure, or every problem
    /// with them (an unknown name, a missing or bad setting).
    pub fn from_sections(sections: &BTreeMap<String, toml::Table>) -> Result<Self, Vec<Problem>> {
        // Connectors build their HTTP clients here.
        crate::install_crypto_provider();
        let mut set = Self::default();
        let mut problems = Vec::new();
        for (name, table) in sections {
            let section = match Section::new(name, table) {
                Ok(section) => section,
                Err(found) => {
                    problems.extend(found);
                    continue;
                }
            };
            if let Some(provider) = PROVIDERS.iter().find(|p| p.name == name) {
                match (provider.build)(&section) {
                    Ok(connector) => set = set.with_settings(connector, section.common),
                    Err(found) => problems.extend(found),
                }
            } else {
                let known: Vec<&str> = PROVIDERS.iter().map(|p| p.name).collect();
                problems.push(Problem::new(
                    format!("connectors.{name}"),
                    format!("unknown connector (known: {})", known.join(", ")),
                ));
            }
        }
        if problems.is_empty() {
            Ok(set)
        } else {
            Err(problems)
        }
    }

    pub fn with(self, connector: Arc<dyn Connector>) -> Self {
        self.with_settings(connector, CommonSettings::default())
    }

    /// Adds a connector with its common settings (its own listener, its polling).
    pub fn with_settings(
        mut self,
        connector: Arc<dyn Connector>,
        settings: CommonSettings,
    ) -> Self {
        let name = connector.name().to_string();
        self.settings.insert(name.clone(), settings);
        self.connectors.insert(name, connector);
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Connector>> {
        self.connectors.get(name)
    }

    pub fn settings(&self, name: &str) -> CommonSettings {
        self.settings.get(name).cloned().unwrap_or_default()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Connector>> {
        self.connectors.values()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.connectors.keys().map(String::as_str)
    }

    /// Every route action: the pipeline's own and each connector's.
    pub fn action_kinds(
        &self,
        http_forward: Arc<dyn ActionKind>,
    ) -> crate::pipeline::actions::ActionKinds {
        self.iter().flat_map(|connector| connector.actions()).fold(
            crate::pipeline::actions::ActionKinds::default().with(http_forward),
            |kinds, kind| kinds.with(kind),
        )
    }
}

impl crate::pipeline::Handlers for ConnectorSet {
    fn handles(&self, connector: &str, event_type: &str) -> bool {
        self.get(connector)
            .is_some_and(|connector| connector.handles(event_type))
    }
}

impl Describe for ConnectorSet {
    fn describe(&self, envelope: &Envelope) -> Option<String> {
        self.get(&envelope.connector)?.describe(envelope)
    }

    fn subject(&self, envelope: &Envelope) -> Option<Subject> {
        self.get(&envelope.connector)?.subject(envelope)
    }
}

/// Checks what the configuration's shared layers cannot: each connector's section,
/// and each operator route's action and settings.
pub fn check(
    sections: &BTreeMap<String, toml::Table>,
    routes: &[crate::pipeline::routes::RouteConfig],
) -> Vec<Problem> {
    crate::install_crypto_provider();
    let connectors = match ConnectorSet::from_sections(sections) {
        Ok(connectors) => connectors,
        Err(problems) => return problems,
    };
    let kinds = connectors.action_kinds(Arc::new(crate::pipeline::routes::HttpForward::new(
        std::time::Duration::from_secs(10),
    )));
    routes
        .iter()
        .enumerate()
        .flat_map(|(index, route)| route.problems(index, &kinds))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let sections: BTreeMap<String, toml::Table> = toml::from_str(text).unwrap();
        match ConnectorSet::from_sections(&sections) {
            Ok(set) => panic!("expected problems, got {set:?}"),
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn each_section_is_read_by_its_connector_and_problems_name_the_key() {
        let found = problems("[slack]\nclient_id = \"a\"\nshoe_size = 3");
        assert!(
            found[0].starts_with("connectors.slack.shoe_size: unknown field"),
            "{found:?}"
        );
        let found = problems("[bogus]\n");
        assert!(
            found[0].starts_with("connectors.bogus: unknown connector"),
            "{found:?}"
        );
        let found = problems("[webhook]\nwebhook_listen = \"nowhere\"");
        assert!(
            found[0].starts_with("connectors.webhook.webhook_listen"),
            "{found:?}"
        );
        let found = problems("[webhook]\ntimestamp_tolerance = \"0s\"");
        assert_eq!(
            found,
            ["connectors.webhook.timestamp_tolerance: must be longer than zero"]
        );
    }

    #[test]
    fn operator_routes_are_checked_by_their_actions_owners() {
        let routes: Vec<crate::pipeline::routes::RouteConfig> = toml::from_str::<toml::Table>(
            "[[routes]]\norganization_id = \"o\"\nconnector = \"webhook\"\naction = \"slack.post\"\nchannel = \"C1\"\n\
             [[routes]]\norganization_id = \"o\"\nconnector = \"webhook\"\naction = \"http.forward\"\n\
             [routes.settings]\nsecret = \"whsec_c2VjcmV0\"\n",
        )
        .unwrap()["routes"]
            .clone()
            .try_into()
            .unwrap();
        let sections: BTreeMap<String, toml::Table> = toml::from_str("[webhook]").unwrap();
        let found: Vec<String> = check(&sections, &routes)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("routes[0].action: unknown action 'slack.post'"),
            "{found:?}"
        );
        assert_eq!(found[1], "routes[1].url: must be an http(s) URL");
        let with_slack: BTreeMap<String, toml::Table> = toml::from_str(
            "[webhook]\n[slack]\nclient_id = \"c\"\nclient_secret = \"s\"\nsigning_secret = \"g\"",
        )
        .unwrap();
        assert_eq!(check(&with_slack, &routes[..1]), Vec::new());
    }
}
