//! The GitHub connector: a GitHub App, installed by tenants.
//!
//! - Authorization is an App installation: the tenant is sent to
//!   `{web}/apps/{slug}/installations/new?state=..`, GitHub sends the browser back to
//!   the setup URL with an `installation_id`, and the installation is confirmed with
//!   GitHub under the app JWT before it is bound to the state's organization: an
//!   installation id is never taken on the caller's word.
//! - Credentials are installation access tokens (1 hour), minted with the app JWT and
//!   refreshed by the integration actor before they expire.
//! - Webhooks are app-wide, signed with the app's webhook secret
//!   ([`signature`]), and reach the integration bound to `installation.id`.

pub mod api;
pub mod app_jwt;
pub mod config;
pub mod events;
pub mod signature;
pub mod webhook;

use std::num::NonZeroU32;

use chrono::NaiveDateTime;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use tracing::warn;

use self::api::{GithubApi, Principal};
use self::app_jwt::AppJwt;
pub use self::config::GithubConfig;
use self::events::GithubEvent;
use super::ingress::Ingress;
use super::{
    AuthorizationStart, AuthorizeRequest, Authorized, CallbackRequest, Connector, ConnectorError,
    CredentialValue, Credentials, EventEffect, Provider, ProviderGate,
};
use crate::pipeline::Envelope;
use crate::secret::Secret;
use crate::store::integrations::{STATUS_ACTIVE, STATUS_SUSPENDED};
use switchboard_actors::Quota;

pub const NAME: &str = "github";
/// The credential type of an installation access token.
pub const INSTALLATION_TOKEN: &str = "installation_token";
/// GitHub's REST limit for an installation: 5,000 requests an hour.
const HOURLY_REQUESTS: u32 = 5_000;

pub const PROVIDER: Provider = Provider {
    name: NAME,
    build: |section| {
        let config = GithubConfig::from_section(section)?;
        GithubConnector::build(&config)
            .map(|connector| std::sync::Arc::new(connector) as _)
            .map_err(|error| {
                vec![crate::problem::Problem::new(
                    section.key("private_key"),
                    error,
                )]
            })
    },
};

pub struct GithubConnector {
    ingress: std::sync::Arc<webhook::GithubIngress>,
    app_slug: String,
    web_base_url: String,
    /// The App's OAuth client (id, secret), to confirm who installed it.
    oauth_client: Option<(String, Secret)>,
    unverified_installations: bool,
    jwt: AppJwt,
    api: GithubApi,
}

/// An installation as `GET /user/installations` lists it.
#[derive(Deserialize)]
struct UserInstallation {
    id: u64,
}

#[derive(Deserialize)]
struct AccessToken {
    token: String,
    expires_at: String,
}

impl GithubConnector {
    pub fn build(config: &GithubConfig) -> Result<Self, String> {
        let key = config
            .private_key
            .as_ref()
            .ok_or("connectors.github.private_key is required")?;
        let webhook_secret = config
            .webhook_secret
            .clone()
            .ok_or("connectors.github.webhook_secret is required")?;
        Ok(Self {
            ingress: std::sync::Arc::new(webhook::GithubIngress { webhook_secret }),
            app_slug: config.app_slug.clone(),
            web_base_url: config.web_base_url.trim_end_matches('/').to_string(),
            oauth_client: config.client_id.clone().zip(config.client_secret.clone()),
            unverified_installations: config.unverified_installations,
            jwt: AppJwt::new(&config.app_id, key)?,
            api: GithubApi::new(&config.api_base_url, config.request_timeout),
        })
    }

    /// A call as the app itself. A refused JWT is minted once more and the call
    /// repeated, in case GitHub's clock and ours disagree about the old one.
    async fn as_app<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<T, ConnectorError> {
        let url = self.api.url(path);
        let mut retried = false;
        loop {
            let token = self.jwt.token().map_err(ConnectorError::Unavailable)?;
            match self
                .api
                .call(&Principal::App, &token, method.clone(), &url, None)
                .await
            {
                Err(api::CallError::BadCredentials(_)) if !retried => {
                    retried = true;
                    self.jwt.forget();
                }
                other => return other.map_err(ConnectorError::from),
            }
        }
    }

    /// The installation as GitHub knows it (only this app's installations exist here).
    async fn installation(&self, id: &str) -> Result<events::Installation, ConnectorError> {
        self.as_app(Method::GET, &format!("/app/installations/{id}"))
            .await
            .map_err(|error| match error {
                ConnectorError::Invalid(_) => ConnectorError::Unauthorized(format!(
                    "GitHub App installation {id} does not exist (or not for this app)"
                )),
                other => other,
            })
    }

    async fn mint_token(&self, id: &str) -> Result<CredentialValue, ConnectorError> {
        let minted: AccessToken = self
            .as_app(
                Method::POST,
                &format!("/app/installations/{id}/access_tokens"),
            )
            .await?;
        let expires_at = chrono::DateTime::parse_from_rfc3339(&minted.expires_at)
            .map(|t| t.naive_utc())
            .map_err(|e| ConnectorError::Unavailable(format!("token expiry unreadable: {e}")))?;
        Ok(token_value(Secret::new(minted.token), expires_at))
    }

    /// Confirms that the person who completed the installation can access it: the
    /// `code` GitHub sent to the setup URL is exchanged for their user token (used
    /// for this one check, then dropped), and `GET /user/installations` must list
    /// the installation. Without a code the installation is refused, unless the
    /// operator chose `unverified_installations`.
    async fn confirm_installer(
        &self,
        code: Option<&Secret>,
        id: &str,
    ) -> Result<(), ConnectorError> {
        let Some(code) = code else {
            if self.unverified_installations {
                warn!(
                    installation_id = id,
                    "installation bound without confirming who installed it (unverified_installations)"
                );
                return Ok(());
            }
            return Err(ConnectorError::Invalid(
                "GitHub sent no code to confirm who installed the app: turn on \"Request user \
                 authorization (OAuth) during installation\" in the GitHub App's settings"
                    .into(),
            ));
        };
        let (client_id, client_secret) = self.oauth_client.as_ref().ok_or_else(|| {
            ConnectorError::Invalid(
                "connectors.github.client_id and client_secret are not set: the code GitHub \
                 sent cannot be checked"
                    .into(),
            )
        })?;
        let user_token = self
            .api
            .exchange_code(
                &format!("{}/login/oauth/access_token", self.web_base_url),
                client_id,
                client_secret,
                code,
            )
            .await?;
        let installations: Vec<UserInstallation> = self
            .api
            .list(
                &Principal::User,
                &user_token,
                "/user/installations",
                Some("installations"),
            )
            .await
            .map_err(ConnectorError::from)?;
        if installations.iter().any(|i| i.id.to_string() == id) {
            Ok(())
        } else {
            Err(ConnectorError::Invalid(format!(
                "the GitHub user who completed the installation cannot access installation {id}"
            )))
        }
    }

    /// Every repository the installation can reach, by full name.
    async fn repositories(&self, id: &str, token: &Secret) -> Result<Vec<String>, ConnectorError> {
        let repositories: Vec<events::Repository> = self
            .api
            .list(
                &Principal::Installation(id.to_string()),
                token,
                "/installation/repositories",
                Some("repositories"),
            )
            .await
            .map_err(ConnectorError::from)?;
        Ok(repositories.into_iter().map(|r| r.full_name).collect())
    }
}

fn token_value(secret: Secret, expires_at: NaiveDateTime) -> CredentialValue {
    CredentialValue {
        credential_type: INSTALLATION_TOKEN.to_string(),
        secret,
        expires_at: Some(expires_at),
    }
}

fn installation_id(credentials: &Credentials) -> Result<&str, ConnectorError> {
    credentials
        .external_id
        .as_deref()
        .ok_or_else(|| ConnectorError::Invalid("the integration has no installation id".into()))
}

/// The metadata kept for an installation.
fn metadata(installation: &events::Installation, repositories: Vec<String>) -> serde_json::Value {
    let account = installation.account.as_ref();
    json!({
        "account": account.map(|a| a.login.clone()),
        "account_id": account.map(|a| a.id),
        "account_type": account.map(|a| a.kind.clone()),
        "repository_selection": installation.repository_selection,
        "permissions": installation.permissions,
        "repositories": repositories,
    })
}

/// The metadata after repositories were added to or removed from the installation.
fn with_repositories(
    metadata: &serde_json::Value,
    event: &events::InstallationRepositoriesEvent,
) -> serde_json::Value {
    let mut metadata = metadata.clone();
    if !metadata.is_object() {
        metadata = json!({});
    }
    let mut repositories: Vec<String> = metadata["repositories"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    repositories.retain(|r| !event.repositories_removed.iter().any(|x| &x.full_name == r));
    for added in &event.repositories_added {
        if !repositories.contains(&added.full_name) {
            repositories.push(added.full_name.clone());
        }
    }
    repositories.sort();
    metadata["repositories"] = json!(repositories);
    if let Some(selection) = &event.repository_selection {
        metadata["repository_selection"] = json!(selection);
    }
    metadata
}

#[async_trait::async_trait]
impl Connector for GithubConnector {
    fn name(&self) -> &str {
        NAME
    }

    fn ingress(&self) -> Option<std::sync::Arc<dyn Ingress>> {
        Some(std::sync::Arc::clone(&self.ingress) as _)
    }

    fn tenant_quota(&self) -> Option<Quota> {
        NonZeroU32::new(HOURLY_REQUESTS).map(Quota::per_hour)
    }

    async fn authorize(
        &self,
        request: &AuthorizeRequest,
    ) -> Result<AuthorizationStart, ConnectorError> {
        let mut url = url::Url::parse(&format!(
            "{}/apps/{}/installations/new",
            self.web_base_url, self.app_slug
        ))
        .map_err(|e| ConnectorError::Invalid(format!("bad GitHub web URL: {e}")))?;
        url.query_pairs_mut().append_pair("state", &request.state);
        Ok(AuthorizationStart::Installation {
            url: url.to_string(),
        })
    }

    async fn complete(&self, request: &CallbackRequest) -> Result<Authorized, ConnectorError> {
        let id = request
            .installation_id
            .as_deref()
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ConnectorError::Invalid("installation_id is missing".into()))?;
        if !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConnectorError::Invalid(
                "installation_id is not a number".into(),
            ));
        }
        // Confirmed with GitHub, under the app's own JWT, before anything is bound...
        let installation = self.installation(id).await.map_err(|error| match error {
            ConnectorError::Unauthorized(message) => ConnectorError::Invalid(message),
            other => other,
        })?;
        // ...and the person who installed it can access it (not just anyone who holds
        // a state and knows an installation id).
        self.confirm_installer(request.code.as_ref(), id).await?;
        if installation.suspended_at.is_some() {
            return Err(ConnectorError::Invalid(format!(
                "GitHub App installation {id} is suspended"
            )));
        }
        let token = self.mint_token(id).await?;
        let repositories = self.repositories(id, &token.secret).await?;
        Ok(Authorized {
            external_id: Some(installation.id.to_string()),
            metadata: metadata(&installation, repositories),
            credentials: vec![token],
            reveal: None,
        })
    }

    async fn validate(&self, credentials: &Credentials) -> Result<(), ConnectorError> {
        self.installation(installation_id(credentials)?).await?;
        Ok(())
    }

    async fn refresh(
        &self,
        credentials: &Credentials,
    ) -> Result<Vec<CredentialValue>, ConnectorError> {
        Ok(vec![self.mint_token(installation_id(credentials)?).await?])
    }

    async fn revoke(&self, credentials: &Credentials) -> Result<(), ConnectorError> {
        let id = installation_id(credentials)?;
        match self
            .as_app::<()>(Method::DELETE, &format!("/app/installations/{id}"))
            .await
        {
            // Already uninstalled: what was asked is done.
            Ok(()) | Err(ConnectorError::Invalid(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Only the installation's own events change anything here; the rest (pushes,
    /// pull requests) go to the routes alone.
    fn handles(&self, event_type: &str) -> bool {
        matches!(
            events::event_name(event_type),
            "installation" | "installation_repositories"
        )
    }

    async fn handle_event(
        &self,
        integration: &Credentials,
        event: &Envelope,
        // GitHub's events carry all they say: handling them makes no request.
        _provider: &ProviderGate,
    ) -> Result<EventEffect, ConnectorError> {
        let name = events::event_name(&event.event_type);
        let parsed = match GithubEvent::parse(name, &event.payload) {
            Ok(parsed) => parsed,
            Err(error) => {
                // Retrying cannot fix GitHub's payload; the event is kept as it came
                // and routed, and the oddity is logged.
                warn!(event_id = %event.id, event = name, error = %error, "GitHub event not understood");
                return Ok(EventEffect::None);
            }
        };
        Ok(match parsed {
            GithubEvent::Installation(e) => match e.action.as_str() {
                "deleted" => EventEffect::Revoked {
                    reason: "the GitHub App was uninstalled".to_string(),
                },
                "suspend" => EventEffect::Status(STATUS_SUSPENDED),
                "unsuspend" => EventEffect::Status(STATUS_ACTIVE),
                "new_permissions_accepted" => {
                    let mut metadata = integration.metadata.clone();
                    if metadata.is_object() {
                        metadata["permissions"] = e.installation.permissions.clone();
                        EventEffect::Metadata(metadata)
                    } else {
                        EventEffect::None
                    }
                }
                _ => EventEffect::None,
            },
            GithubEvent::InstallationRepositories(e) => {
                EventEffect::Metadata(with_repositories(&integration.metadata, &e))
            }
            _ => EventEffect::None,
        })
    }

    fn describe(&self, event: &Envelope) -> Option<String> {
        GithubEvent::parse(events::event_name(&event.event_type), &event.payload)
            .ok()?
            .describe()
    }
}
