//! The Datadog connector: an organization's API and application keys on its site,
//! a webhook switchboard installs in the tenant's Datadog org for monitor alerts, the
//! event stream polled for tenants who will not add that webhook to their monitors,
//! and the `datadog.event` route action that posts events back.
//!
//! - `api.rs`: the REST client (keys, error bodies, rate limits per integration).
//! - `events.rs`: the stored payload's shape, typed; the transition mapping.
//! - `webhook.rs`: the ingress (the secret header).
//! - `poll.rs`: reading `GET /api/v2/events` page by page.
//! - `action.rs`: `datadog.event`.

mod action;
pub mod api;
pub mod config;
pub mod events;
mod poll;
pub mod webhook;

use std::sync::{Arc, OnceLock};

use base64::Engine;
use rand::RngCore;
use reqwest::Method;
use serde_json::{Value, json};

use super::ingress::Ingress;
use super::{
    AuthorizationStart, AuthorizeRequest, Authorized, CallbackRequest, Connector, ConnectorContext,
    ConnectorError, CredentialValue, Credentials, Polled, Provider,
};
use crate::pipeline::Envelope;
use crate::pipeline::actions::ActionKind;
use crate::secret::Secret;
use crate::store::integrations::Integration;
use api::{DatadogApi, DatadogError, Keys, Wait};
use config::{DatadogConfig, site_names};
use events::DatadogEvent;
use webhook::{DatadogIngress, SECRET_HEADER, WEBHOOK_SECRET, webhook_url};

pub const NAME: &str = "datadog";
pub const API_KEY: &str = "api_key";
pub const APPLICATION_KEY: &str = "application_key";
/// What a tenant posts to the callback: the keys, and optionally the site, whether
/// to poll the event stream (`"true"`), and whether to install the webhook
/// (`"false"` to configure it in Datadog by hand).
const FIELDS: [&str; 5] = [API_KEY, APPLICATION_KEY, "site", "poll", "webhook"];
const WEBHOOKS_PATH: &str = "/api/v1/integration/webhooks/configuration/webhooks";

pub const PROVIDER: Provider = Provider {
    name: NAME,
    build: |section| {
        Ok(Arc::new(DatadogConnector::new(
            DatadogConfig::from_section(section)?,
        )))
    },
};

/// What the connector, its ingress and its action share.
pub struct Shared {
    pub config: DatadogConfig,
    pub api: DatadogApi,
    /// `(site, API base)`, in discovery order.
    sites: Vec<(String, String)>,
    pub context: OnceLock<ConnectorContext>,
}

impl Shared {
    /// The API base of `site`.
    fn base(&self, site: &str) -> Result<&str, ConnectorError> {
        self.sites
            .iter()
            .find(|(known, _)| known == site)
            .map(|(_, base)| base.as_str())
            .ok_or_else(|| {
                ConnectorError::Invalid(format!(
                    "unknown Datadog site '{site}' (known: {})",
                    site_names()
                ))
            })
    }

    /// An integration's site and keys, from its credentials.
    fn integration<'a>(
        &'a self,
        credentials: &'a Credentials,
    ) -> Result<(&'a str, Keys<'a>), ConnectorError> {
        let site = credentials.metadata["site"]
            .as_str()
            .ok_or_else(|| ConnectorError::Invalid("the integration has no site".into()))?;
        let api_key = credentials
            .get(API_KEY)
            .ok_or_else(|| ConnectorError::Unauthorized("no API key stored".into()))?;
        Ok((
            self.base(site)?,
            Keys {
                owner: &credentials.integration_id,
                api_key,
                application_key: credentials.get(APPLICATION_KEY),
            },
        ))
    }

    /// Checks the keys on one site: both with `validate_keys`, or the API key alone
    /// with `/api/v1/validate` when the first is unavailable there.
    async fn check_keys(&self, base: &str, keys: &Keys<'_>) -> Result<KeysChecked, ConnectorError> {
        match self
            .api
            .call(
                base,
                keys,
                Method::GET,
                "/api/v2/validate_keys",
                None,
                Wait::No,
            )
            .await
        {
            Ok(_) => return Ok(KeysChecked::Both),
            Err(error @ (DatadogError::Refused { .. } | DatadogError::RateLimited(_))) => {
                return Err(error.into());
            }
            Err(_) => {}
        }
        let api_only = Keys {
            owner: keys.owner,
            api_key: keys.api_key,
            application_key: None,
        };
        let answer = self
            .api
            .call(
                base,
                &api_only,
                Method::GET,
                "/api/v1/validate",
                None,
                Wait::No,
            )
            .await?;
        if answer["valid"] == true {
            Ok(KeysChecked::ApiKeyOnly)
        } else {
            Err(ConnectorError::Unauthorized(format!(
                "Datadog says the API key is not valid: {answer}"
            )))
        }
    }

    /// The first site that accepts the keys, trying each in turn.
    async fn discover_site(
        &self,
        keys: &Keys<'_>,
    ) -> Result<(String, KeysChecked), ConnectorError> {
        let mut refused = Vec::new();
        let mut failed = Vec::new();
        for (site, base) in &self.sites {
            match self.check_keys(base, keys).await {
                Ok(checked) => return Ok((site.clone(), checked)),
                Err(ConnectorError::Unauthorized(reason)) => {
                    refused.push(format!("{site}: {reason}"))
                }
                Err(error) => failed.push(format!("{site}: {error}")),
            }
        }
        if failed.is_empty() {
            Err(ConnectorError::Unauthorized(format!(
                "no Datadog site accepts these keys ({})",
                refused.join("; ")
            )))
        } else {
            Err(ConnectorError::Unavailable(format!(
                "no Datadog site accepted these keys, and some could not be asked: {}",
                failed.join("; ")
            )))
        }
    }
}

/// Which keys a validation could check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeysChecked {
    Both,
    /// `validate_keys` was unavailable: only the API key was checked.
    ApiKeyOnly,
}

impl KeysChecked {
    fn as_str(self) -> &'static str {
        match self {
            KeysChecked::Both => "api_and_application",
            KeysChecked::ApiKeyOnly => "api_only",
        }
    }
}

pub struct DatadogConnector {
    shared: Arc<Shared>,
    ingress: Arc<DatadogIngress>,
}

impl DatadogConnector {
    pub fn new(config: DatadogConfig) -> Self {
        let shared = Arc::new(Shared {
            api: DatadogApi::new(config.request_timeout),
            sites: config.site_bases(),
            config,
            context: OnceLock::new(),
        });
        Self {
            ingress: Arc::new(DatadogIngress::new(Arc::clone(&shared))),
            shared,
        }
    }
}

/// The Datadog webhook's name for an integration: what a monitor's message mentions
/// as `@webhook-<name>`.
pub fn webhook_name(integration_id: &str) -> String {
    format!("switchboard-{integration_id}")
}

fn generate_webhook_secret() -> Secret {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[async_trait::async_trait]
impl Connector for DatadogConnector {
    fn name(&self) -> &str {
        NAME
    }

    fn attach(&self, context: &ConnectorContext) {
        let _ = self.shared.context.set(context.clone());
    }

    fn ingress(&self) -> Option<Arc<dyn Ingress>> {
        Some(Arc::clone(&self.ingress) as Arc<dyn Ingress>)
    }

    fn actions(&self) -> Vec<Arc<dyn ActionKind>> {
        vec![Arc::new(action::DatadogEventAction {
            shared: Arc::clone(&self.shared),
        })]
    }

    async fn authorize(
        &self,
        _request: &AuthorizeRequest,
    ) -> Result<AuthorizationStart, ConnectorError> {
        Ok(AuthorizationStart::api_key(&FIELDS))
    }

    async fn complete(&self, request: &CallbackRequest) -> Result<Authorized, ConnectorError> {
        let fields = request.fields_among(&FIELDS, "Datadog")?;
        let required = |name: &str| {
            fields
                .get(name)
                .filter(|v| !v.expose().trim().is_empty())
                .ok_or_else(|| ConnectorError::Invalid(format!("credentials.{name} is required")))
        };
        let (api_key, application_key) = (required(API_KEY)?, required(APPLICATION_KEY)?);
        let poll = super::flag_field(fields, "poll", false)?;
        let install_webhook = super::flag_field(fields, "webhook", true)?;
        let keys = Keys {
            owner: &request.integration_id,
            api_key,
            application_key: Some(application_key),
        };
        let (site, checked) = match fields.get("site").map(|s| s.expose().trim().to_string()) {
            Some(site) if !site.is_empty() => {
                let base = self.shared.base(&site)?;
                (site.clone(), self.shared.check_keys(base, &keys).await?)
            }
            _ => self.shared.discover_site(&keys).await?,
        };
        let secret = generate_webhook_secret();
        let url = webhook_url(&request.public_url, &request.integration_id);
        let name = webhook_name(&request.integration_id);
        let handle = format!("@webhook-{name}");
        let (webhook, reveal) = if install_webhook {
            let body = json!({
                "name": name,
                "url": url,
                "payload": events::payload_template(),
                "custom_headers": json!({SECRET_HEADER: secret.expose()}).to_string(),
                "encode_as": "json",
            });
            self.shared
                .api
                .call(
                    self.shared.base(&site)?,
                    &keys,
                    Method::POST,
                    WEBHOOKS_PATH,
                    Some(&body),
                    Wait::No,
                )
                .await
                .map_err(|error| match error {
                    DatadogError::Refused { status, message } => {
                        ConnectorError::Unauthorized(format!(
                            "Datadog refused to create the webhook ({status}): {message}; the \
                             application key needs the integrations_manage permission, or \
                             connect with \"webhook\": \"false\" and add it by hand"
                        ))
                    }
                    other => other.into(),
                })?;
            (
                json!({"name": name, "handle": handle}),
                json!({
                    "site": site,
                    "webhook_handle": handle,
                    "how_to": format!("mention {handle} in a monitor's message to send its alerts here"),
                }),
            )
        } else {
            // The tenant adds the webhook by hand: everything it needs, once.
            (
                Value::Null,
                json!({
                    "site": site,
                    "url": url,
                    "payload": events::payload_template(),
                    "custom_headers": {SECRET_HEADER: secret.expose()},
                }),
            )
        };
        Ok(Authorized {
            external_id: None,
            metadata: json!({
                "site": site,
                "url": url,
                "poll": poll,
                "keys_checked": checked.as_str(),
                "webhook": webhook,
            }),
            reveal: Some(reveal),
            credentials: vec![
                CredentialValue {
                    credential_type: API_KEY.into(),
                    secret: api_key.clone(),
                    expires_at: None,
                },
                CredentialValue {
                    credential_type: APPLICATION_KEY.into(),
                    secret: application_key.clone(),
                    expires_at: None,
                },
                CredentialValue {
                    credential_type: WEBHOOK_SECRET.into(),
                    secret,
                    expires_at: None,
                },
            ],
        })
    }

    /// The keys, then the webhook switchboard installed: a tenant who deleted it in
    /// Datadog gets no more alerts, and the integration's health says so (its keys
    /// are still good, so it is not put in `error`).
    async fn validate(&self, credentials: &Credentials) -> Result<(), ConnectorError> {
        let (base, keys) = self.shared.integration(credentials)?;
        self.shared.check_keys(base, &keys).await?;
        let Some(name) = credentials.metadata["webhook"]["name"].as_str() else {
            return Ok(());
        };
        let path = format!("{WEBHOOKS_PATH}/{}", super::http::path_segment(name));
        match self
            .shared
            .api
            .call(base, &keys, Method::GET, &path, None, Wait::No)
            .await
        {
            Ok(_) => Ok(()),
            Err(DatadogError::NotFound(_)) => Err(ConnectorError::Invalid(format!(
                "the webhook {name} is gone from the Datadog org: monitors that mention \
                 @webhook-{name} notify nobody; connect again to install it"
            ))),
            Err(DatadogError::Refused { status, message }) => Err(ConnectorError::Invalid(
                format!("the webhook {name} could not be checked ({status}): {message}"),
            )),
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes the webhook switchboard installed (one already gone is fine).
    async fn revoke(&self, credentials: &Credentials) -> Result<(), ConnectorError> {
        let Some(name) = credentials.metadata["webhook"]["name"].as_str() else {
            return Err(ConnectorError::NotSupported);
        };
        let (base, keys) = self.shared.integration(credentials)?;
        let path = format!("{WEBHOOKS_PATH}/{}", super::http::path_segment(name));
        match self
            .shared
            .api
            .call(
                base,
                &keys,
                Method::DELETE,
                &path,
                None,
                // The tenant's revoke request is waiting: a rate limit is reported
                // (in `at_provider`), not slept through.
                Wait::No,
            )
            .await
        {
            Ok(_) | Err(DatadogError::NotFound(_)) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    fn describe(&self, event: &Envelope) -> Option<String> {
        Some(DatadogEvent::from_value(&event.payload).ok()?.describe())
    }

    fn subject(&self, event: &Envelope) -> Option<crate::pipeline::actions::Subject> {
        DatadogEvent::from_value(&event.payload).ok()?.subject()
    }

    fn polls(&self, integration: &Integration) -> bool {
        serde_json::from_str::<Value>(&integration.metadata)
            .is_ok_and(|metadata| metadata["poll"] == true)
    }

    async fn poll(
        &self,
        credentials: &Credentials,
        cursor: Option<&str>,
    ) -> Result<Polled, ConnectorError> {
        poll::page(&self.shared, credentials, cursor).await
    }
}
