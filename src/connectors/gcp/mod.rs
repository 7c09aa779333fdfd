//! The GCP connector: a tenant's service-account key, access tokens minted from it
//! and kept fresh, validation with a real call, and Pub/Sub push deliveries (Cloud
//! Monitoring incidents among them) verified by their OIDC tokens.
//!
//! - `key.rs`: the key's checks and the JWT-bearer assertion it signs.
//! - `api.rs`: the token endpoint, token info, Cloud Resource Manager.
//! - `push.rs`: the push ingress and Google's signing keys.
//! - `events.rs`: deliveries decoded, incidents typed.

pub mod api;
pub mod config;
pub mod events;
pub mod key;
pub mod push;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::ingress::Ingress;
use super::{
    AuthorizationStart, AuthorizeRequest, Authorized, CallbackRequest, Connector, ConnectorError,
    CredentialValue, Credentials, Provider,
};
use crate::pipeline::Envelope;
use crate::secret::Secret;
use api::{AccessToken, GoogleApi, Permission};
use config::GcpConfig;
use key::ServiceAccountKey;
use push::{PushIngress, push_url};

pub const NAME: &str = "gcp";
/// The credential type of the whole key JSON.
pub const SERVICE_ACCOUNT_KEY: &str = "service_account_key";
/// The credential type of the current access token (it expires).
pub const ACCESS_TOKEN: &str = "access_token";
const FIELDS: [&str; 3] = [SERVICE_ACCOUNT_KEY, "push_service_account", "audience"];
/// A stored token this close to its expiry is not used for validation.
const NEARLY_EXPIRED: Duration = Duration::from_secs(60);

pub const PROVIDER: Provider = Provider {
    name: NAME,
    build: |section| {
        Ok(Arc::new(GcpConnector::new(GcpConfig::from_section(
            section,
        )?)))
    },
};

/// What the connector and its ingress share.
pub struct Shared {
    pub config: GcpConfig,
    pub api: GoogleApi,
}

pub struct GcpConnector {
    shared: Arc<Shared>,
    ingress: Arc<PushIngress>,
}

impl GcpConnector {
    pub fn new(config: GcpConfig) -> Self {
        let shared = Arc::new(Shared {
            api: GoogleApi::new(config.request_timeout),
            config,
        });
        Self {
            ingress: Arc::new(PushIngress::new(Arc::clone(&shared))),
            shared,
        }
    }

    /// Reads a key and checks that it exchanges where this daemon exchanges.
    fn key(&self, json: &Secret) -> Result<ServiceAccountKey, ConnectorError> {
        let key = ServiceAccountKey::parse(json)?;
        if key.token_uri.trim_end_matches('/') != self.shared.config.token_url.trim_end_matches('/')
        {
            return Err(ConnectorError::Invalid(format!(
                "credentials.service_account_key.token_uri is not {}: switchboard sends assertions only there",
                self.shared.config.token_url
            )));
        }
        Ok(key)
    }

    /// A new access token for the key.
    async fn mint(&self, key: &ServiceAccountKey) -> Result<AccessToken, ConnectorError> {
        let config = &self.shared.config;
        let assertion = key.assertion(&config.scopes, &config.token_url)?;
        self.shared
            .api
            .exchange(&config.token_url, &assertion)
            .await
    }

    fn stored_key(&self, credentials: &Credentials) -> Result<ServiceAccountKey, ConnectorError> {
        let json = credentials.get(SERVICE_ACCOUNT_KEY).ok_or_else(|| {
            ConnectorError::Unauthorized("no service-account key is stored".into())
        })?;
        self.key(json)
    }
}

fn token_value(token: AccessToken) -> CredentialValue {
    let lifetime = chrono::Duration::from_std(token.expires_in).unwrap_or_default();
    CredentialValue {
        credential_type: ACCESS_TOKEN.into(),
        secret: token.token,
        expires_at: Some(crate::store::now() + lifetime),
    }
}

#[async_trait::async_trait]
impl Connector for GcpConnector {
    fn name(&self) -> &str {
        NAME
    }

    fn ingress(&self) -> Option<Arc<dyn Ingress>> {
        Some(Arc::clone(&self.ingress) as Arc<dyn Ingress>)
    }

    /// The key's fields, and where to point a Pub/Sub push subscription: the push
    /// endpoint and audience are known before the key is posted.
    async fn authorize(
        &self,
        request: &AuthorizeRequest,
    ) -> Result<AuthorizationStart, ConnectorError> {
        let url = push_url(&request.public_url, &request.integration_id);
        Ok(AuthorizationStart::ApiKey {
            fields: FIELDS.iter().map(ToString::to_string).collect(),
            instructions: Some(json!({
                "push_endpoint": url,
                "audience": url,
                "push_authentication": "create the push subscription with authentication on, \
                    as the service account you post as push_service_account",
            })),
        })
    }

    /// Checks the key, mints its first access token (which proves Google accepts
    /// it), and keeps both; the push settings go in the metadata.
    async fn complete(&self, request: &CallbackRequest) -> Result<Authorized, ConnectorError> {
        let fields = request.fields_among(&FIELDS, "GCP")?;
        let json = fields.get(SERVICE_ACCOUNT_KEY).ok_or_else(|| {
            ConnectorError::Invalid(format!(
                "credentials.{SERVICE_ACCOUNT_KEY} is required: the key file's JSON"
            ))
        })?;
        let key = self.key(json)?;
        let token = self.mint(&key).await?;
        let text = |name: &str| {
            fields
                .get(name)
                .map(|v| v.expose().trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let url = push_url(&request.public_url, &request.integration_id);
        let push = match text("push_service_account") {
            Some(service_account) => json!({
                "service_account": service_account,
                "audience": text("audience").unwrap_or_else(|| url.clone()),
            }),
            None => serde_json::Value::Null,
        };
        Ok(Authorized {
            external_id: Some(key.client_email.clone()),
            metadata: json!({
                "project_id": key.project_id,
                "client_email": key.client_email,
                "scopes": self.shared.config.scopes,
                "url": url,
                "push": push,
            }),
            reveal: Some(json!({"push_endpoint": url, "audience": push["audience"]})),
            credentials: vec![
                CredentialValue {
                    credential_type: SERVICE_ACCOUNT_KEY.into(),
                    secret: json.clone(),
                    expires_at: None,
                },
                token_value(token),
            ],
        })
    }

    /// Token info (valid, the scopes asked for, the service account's) and
    /// `projects.get` on the key's project. A missing permission fails validation
    /// with the permission named; the credentials themselves stay good.
    async fn validate(&self, credentials: &Credentials) -> Result<(), ConnectorError> {
        let key = self.stored_key(credentials)?;
        let fresh = credentials.values.iter().find(|v| {
            v.credential_type == ACCESS_TOKEN
                && v.expires_at.is_some_and(|at| {
                    at - chrono::Duration::from_std(NEARLY_EXPIRED).unwrap_or_default()
                        > crate::store::now()
                })
        });
        let token = match fresh {
            Some(value) => value.secret.clone(),
            // Expired or about to: validation does not wait for the refresh.
            None => self.mint(&key).await?.token,
        };
        let config = &self.shared.config;
        let info = self
            .shared
            .api
            .token_info(&config.tokeninfo_url, &token)
            .await?;
        if !info.email.is_empty() && info.email != key.client_email {
            return Err(ConnectorError::Unauthorized(format!(
                "the access token belongs to {}, not {}",
                info.email, key.client_email
            )));
        }
        let granted: Vec<&str> = info.scope.split_whitespace().collect();
        if let Some(missing) = config
            .scopes
            .iter()
            .find(|s| !granted.contains(&s.as_str()))
        {
            return Err(ConnectorError::Unauthorized(format!(
                "the access token lacks the scope {missing}"
            )));
        }
        match self
            .shared
            .api
            .get_project(&config.resource_manager_url, &token, &key.project_id)
            .await?
        {
            Permission::Granted => Ok(()),
            Permission::Denied(message) => Err(ConnectorError::Invalid(format!(
                "{} lacks the permission resourcemanager.projects.get on project {} ({message})",
                key.client_email, key.project_id
            ))),
        }
    }

    /// A new access token, signed anew with the stored key; the key is kept as it is.
    async fn refresh(
        &self,
        credentials: &Credentials,
    ) -> Result<Vec<CredentialValue>, ConnectorError> {
        let key = self.stored_key(credentials)?;
        let token = self.mint(&key).await?;
        let json = credentials
            .get(SERVICE_ACCOUNT_KEY)
            .cloned()
            .ok_or_else(|| ConnectorError::Unauthorized("no service-account key".into()))?;
        Ok(vec![
            CredentialValue {
                credential_type: SERVICE_ACCOUNT_KEY.into(),
                secret: json,
                expires_at: None,
            },
            token_value(token),
        ])
    }

    fn describe(&self, event: &Envelope) -> Option<String> {
        events::describe(&event.payload)
    }
}
