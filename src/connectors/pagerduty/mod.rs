//! The PagerDuty connector: an account connected with a REST API key or through
//! PagerDuty's classic user OAuth (tokens refreshed before they expire), a v3 webhook
//! subscription switchboard creates for the integration, route actions that trigger,
//! acknowledge, resolve and annotate incidents, and the operations behind the
//! Acknowledge and Resolve buttons chat messages about incidents carry.
//!
//! - `api.rs`: the REST, Events API v2 and token clients (auth, errors, rate limits).
//! - `events.rs`: the webhook events, typed; the line and subject of an incident.
//! - `webhook.rs`: the ingress (`X-PagerDuty-Signature`).
//! - `actions.rs`: the route actions and the incident writes they share with
//!   [`Connector::operate`].

mod actions;
pub mod api;
pub mod config;
pub mod events;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

use super::ingress::Ingress;
use super::{
    AuthorizationStart, AuthorizeRequest, Authorized, CallbackRequest, Connector, ConnectorContext,
    ConnectorError, CredentialValue, Credentials, Operated, Operation, Provider,
};
use crate::pipeline::Envelope;
use crate::pipeline::actions::{ActionKind, Subject};
use crate::secret::Secret;
use api::{Auth, Caller, PagerDutyApi, PagerDutyError, Wait};
use config::{PagerDutyConfig, REGIONS, region_names};
use events::WebhookEvent;
use webhook::{PagerDutyIngress, WEBHOOK_SECRET, webhook_url};

pub const NAME: &str = "pagerduty";
pub const API_KEY: &str = "api_key";
pub const ACCESS_TOKEN: &str = "access_token";
pub const REFRESH_TOKEN: &str = "refresh_token";
/// What a tenant may post to the callback: the API key (the api_key flow), the
/// region, the `From` email for incident writes, which service or team the webhook
/// subscription covers (the whole account by default), and whether to create it.
const FIELDS: [&str; 6] = [
    API_KEY,
    "region",
    "from",
    "service_id",
    "team_id",
    "webhook",
];
const FLOWS: [&str; 2] = ["oauth2", "api_key"];

pub const PROVIDER: Provider = Provider {
    name: NAME,
    build: |section| {
        Ok(Arc::new(PagerDutyConnector::new(
            PagerDutyConfig::from_section(section)?,
        )))
    },
};

/// What the connector, its ingress and its actions share.
pub struct Shared {
    pub config: PagerDutyConfig,
    pub api: PagerDutyApi,
    pub context: OnceLock<ConnectorContext>,
}

/// An integration, as its requests need it: the region's REST base and its caller.
struct Account<'a> {
    base: String,
    caller: Caller<'a>,
}

impl Shared {
    fn api_base(&self, region: &str) -> Result<String, ConnectorError> {
        self.config.api_base(region).ok_or_else(|| {
            ConnectorError::Invalid(format!(
                "unknown PagerDuty region '{region}' (known: {})",
                region_names()
            ))
        })
    }

    /// The integration's REST base and credentials, making requests as `from` (or the
    /// integration's own `from`).
    fn account<'a>(
        &self,
        credentials: &'a Credentials,
        from: Option<&'a str>,
    ) -> Result<Account<'a>, ConnectorError> {
        let region = credentials.metadata["region"].as_str().unwrap_or("us");
        let auth = match (credentials.get(ACCESS_TOKEN), credentials.get(API_KEY)) {
            (Some(token), _) => Auth::Bearer(token),
            (None, Some(key)) => Auth::Token(key),
            (None, None) => {
                return Err(ConnectorError::Unauthorized(
                    "no PagerDuty key or token stored".into(),
                ));
            }
        };
        Ok(Account {
            base: self.api_base(region)?,
            caller: Caller {
                owner: &credentials.integration_id,
                auth,
                from: from.or_else(|| credentials.metadata["from"].as_str()),
            },
        })
    }

    async fn rest(
        &self,
        account: &Account<'_>,
        method: Method,
        path: &str,
        body: Option<&Value>,
        wait: Wait,
    ) -> Result<Value, PagerDutyError> {
        self.api
            .rest(&account.base, &account.caller, method, path, body, wait)
            .await
    }

    /// Creates the integration's webhook subscription: its id, and the signing
    /// secret PagerDuty gives in this answer only.
    async fn subscribe(
        &self,
        account: &Account<'_>,
        url: &str,
        filter: Value,
    ) -> Result<(String, Secret), ConnectorError> {
        let body = json!({"webhook_subscription": {
            "type": "webhook_subscription",
            "delivery_method": {"type": "http_delivery_method", "url": url},
            "description": "switchboard",
            "events": self.config.webhook_events,
            "filter": filter,
        }});
        let answer = self
            .rest(
                account,
                Method::POST,
                "/webhook_subscriptions",
                Some(&body),
                Wait::No,
            )
            .await
            .map_err(|error| match error {
                PagerDutyError::Forbidden(message) => ConnectorError::Unauthorized(format!(
                    "PagerDuty refused to create the webhook subscription: {message}; the key \
                     needs write access, or connect with \"webhook\": \"false\""
                )),
                other => other.into(),
            })?;
        let subscription = &answer["webhook_subscription"];
        let id = subscription["id"].as_str();
        let secret = subscription["delivery_method"]["secret"].as_str();
        match (id, secret) {
            (Some(id), Some(secret)) => Ok((id.to_string(), Secret::new(secret))),
            _ => Err(ConnectorError::Unavailable(
                "PagerDuty created the subscription without an id or a secret".into(),
            )),
        }
    }

    /// The organization's active PagerDuty integration (`preferred` when given),
    /// with its credentials.
    async fn integration_of(
        &self,
        organization_id: &str,
        preferred: Option<&str>,
    ) -> Result<Credentials, ConnectorError> {
        use crate::store::integrations::{self, STATUS_ACTIVE};
        let context = self
            .context
            .get()
            .ok_or_else(|| ConnectorError::Unavailable("PagerDuty is starting".into()))?;
        let integration = integrations::list(&context.store, organization_id, Some(NAME))
            .await
            .map_err(|e| ConnectorError::Unavailable(e.to_string()))?
            .into_iter()
            .filter(|i| i.status == STATUS_ACTIVE)
            .find(|i| preferred.is_none_or(|id| id == i.id))
            .ok_or_else(|| {
                ConnectorError::Invalid(
                    "the organization has no active PagerDuty integration".into(),
                )
            })?;
        context
            .credentials
            .load(&integration)
            .await
            .map_err(ConnectorError::Unavailable)
    }
}

pub struct PagerDutyConnector {
    shared: Arc<Shared>,
    ingress: Arc<PagerDutyIngress>,
}

impl PagerDutyConnector {
    pub fn new(config: PagerDutyConfig) -> Self {
        let shared = Arc::new(Shared {
            api: PagerDutyApi::new(config.request_timeout, config.requests_per_minute),
            config,
            context: OnceLock::new(),
        });
        Self {
            ingress: Arc::new(PagerDutyIngress::new(Arc::clone(&shared))),
            shared,
        }
    }

    /// The api_key flow: the key checked with `/abilities` (on the region given, or
    /// each in turn), and told apart as a user's or the account's by `/users/me`.
    async fn complete_api_key(
        &self,
        request: &CallbackRequest,
        fields: &BTreeMap<String, Secret>,
    ) -> Result<Connected, ConnectorError> {
        let key = fields
            .get(API_KEY)
            .filter(|v| !v.expose().trim().is_empty())
            .ok_or_else(|| ConnectorError::Invalid("credentials.api_key is required".into()))?;
        let regions: Vec<String> = match field(fields, "region") {
            Some(region) => {
                self.shared.api_base(&region)?;
                vec![region]
            }
            None => REGIONS.iter().map(|(r, ..)| (*r).to_string()).collect(),
        };
        let mut refused = Vec::new();
        for region in regions {
            let account = Account {
                base: self.shared.api_base(&region)?,
                caller: Caller {
                    owner: &request.integration_id,
                    auth: Auth::Token(key),
                    from: None,
                },
            };
            match self
                .shared
                .rest(&account, Method::GET, "/abilities", None, Wait::No)
                .await
            {
                Ok(_) => {}
                Err(PagerDutyError::Unauthorized(message)) => {
                    refused.push(format!("{region}: {message}"));
                    continue;
                }
                Err(error) => return Err(error.into()),
            }
            // Only user keys (and OAuth tokens) may read /users/me.
            let me = self
                .shared
                .rest(&account, Method::GET, "/users/me", None, Wait::No)
                .await;
            let (kind, user) = match me {
                Ok(answer) => ("user", Some(answer["user"].clone())),
                Err(PagerDutyError::Unavailable(message)) => {
                    return Err(ConnectorError::Unavailable(message));
                }
                Err(_) => ("account", None),
            };
            let from = field(fields, "from")
                .or_else(|| {
                    user.as_ref()
                        .and_then(|u| u["email"].as_str().map(str::to_string))
                })
                .ok_or_else(|| {
                    ConnectorError::Invalid(
                        "credentials.from is required with an account API key: PagerDuty \
                         changes incidents only on behalf of a user's email"
                            .into(),
                    )
                })?;
            return Ok(Connected {
                region,
                from,
                metadata: json!({"flow": "api_key", "key_kind": kind, "user": user_summary(user.as_ref())}),
                external_id: None,
                credentials: vec![CredentialValue {
                    credential_type: API_KEY.into(),
                    secret: key.clone(),
                    expires_at: None,
                }],
            });
        }
        Err(ConnectorError::Unauthorized(format!(
            "PagerDuty refused the API key ({})",
            refused.join("; ")
        )))
    }

    /// The oauth2 flow: the code exchanged at the identity service; the region and
    /// account read from the id_token; every scope asked for checked as granted.
    async fn complete_oauth(
        &self,
        request: &CallbackRequest,
        code: &Secret,
        fields: &BTreeMap<String, Secret>,
    ) -> Result<Connected, ConnectorError> {
        let config = &self.shared.config;
        let (client_id, client_secret) = oauth_client(config)?;
        let redirect = config
            .redirect_url
            .as_deref()
            .unwrap_or(&request.redirect_url);
        let answer = self
            .shared
            .api
            .token(
                &config.identity_base_url,
                &[
                    ("grant_type", "authorization_code"),
                    ("client_id", client_id),
                    ("client_secret", client_secret.expose()),
                    ("redirect_uri", redirect),
                    ("code", code.expose()),
                ],
            )
            .await
            .map_err(|error| match error {
                PagerDutyError::Unauthorized(message) => ConnectorError::Invalid(format!(
                    "PagerDuty refused the authorization: {message}"
                )),
                other => other.into(),
            })?;
        let granted: Vec<&str> = answer["scope"]
            .as_str()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let dropped: Vec<&str> = config
            .scopes
            .iter()
            .map(String::as_str)
            .filter(|scope| !granted.contains(scope))
            .collect();
        if !dropped.is_empty() {
            return Err(ConnectorError::Invalid(format!(
                "PagerDuty did not grant the scopes {} (granted: {})",
                dropped.join(", "),
                if granted.is_empty() {
                    "none".to_string()
                } else {
                    granted.join(" ")
                }
            )));
        }
        let claims = answer["id_token"]
            .as_str()
            .and_then(id_token_claims)
            .ok_or_else(|| {
                ConnectorError::Unavailable(
                    "PagerDuty's token answer has no readable id_token".into(),
                )
            })?;
        let audience = match &claims["aud"] {
            Value::Array(list) => list.first().and_then(Value::as_str).unwrap_or_default(),
            other => other.as_str().unwrap_or_default(),
        };
        let region = config.region_of_audience(audience).ok_or_else(|| {
            ConnectorError::Unavailable(format!(
                "the id_token's audience '{audience}' is no PagerDuty region this daemon knows ({})",
                region_names()
            ))
        })?;
        let values = token_values(&answer)?;
        let access = values[0].secret.clone();
        let account = Account {
            base: self.shared.api_base(region)?,
            caller: Caller {
                owner: &request.integration_id,
                auth: Auth::Bearer(&access),
                from: None,
            },
        };
        let me = self
            .shared
            .rest(&account, Method::GET, "/users/me", None, Wait::No)
            .await?;
        let from = field(fields, "from")
            .or_else(|| me["user"]["email"].as_str().map(str::to_string))
            .ok_or_else(|| {
                ConnectorError::Invalid(
                    "PagerDuty gave no email for the user; post credentials.from".into(),
                )
            })?;
        Ok(Connected {
            region: region.to_string(),
            from,
            metadata: json!({
                "flow": "oauth2",
                "scopes": granted,
                "subdomain": claims["subdomain"],
                "account_id": claims["account_id"],
                "user": user_summary(Some(&me["user"])),
            }),
            external_id: claims["account_id"].as_str().map(str::to_string),
            credentials: values,
        })
    }
}

/// What a completed flow found, before the webhook subscription.
struct Connected {
    region: String,
    from: String,
    metadata: Value,
    external_id: Option<String>,
    credentials: Vec<CredentialValue>,
}

fn oauth_client(config: &PagerDutyConfig) -> Result<(&str, &Secret), ConnectorError> {
    match (&config.client_id, &config.client_secret) {
        (Some(id), Some(secret)) => Ok((id, secret)),
        _ => Err(ConnectorError::Invalid(
            "connectors.pagerduty has no client_id and client_secret: connect with an API key"
                .into(),
        )),
    }
}

/// A trimmed, non-empty callback field.
fn field(fields: &BTreeMap<String, Secret>, name: &str) -> Option<String> {
    fields
        .get(name)
        .map(|v| v.expose().trim().to_string())
        .filter(|v| !v.is_empty())
}

fn user_summary(user: Option<&Value>) -> Value {
    match user {
        Some(user) if user.is_object() => {
            json!({"id": user["id"], "name": user["name"], "email": user["email"]})
        }
        _ => Value::Null,
    }
}

/// An id_token's claims. It came straight from PagerDuty's token endpoint over TLS,
/// so its signature is not checked again (OpenID Connect Core 3.1.3.7 allows that
/// for the code flow); it is only read for the region and account.
fn id_token_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The access and refresh tokens of a token answer: one set, replaced together (each
/// refresh returns a new refresh token).
fn token_values(answer: &Value) -> Result<Vec<CredentialValue>, ConnectorError> {
    let (Some(access), Some(refresh)) = (
        answer["access_token"].as_str(),
        answer["refresh_token"].as_str(),
    ) else {
        return Err(ConnectorError::Unavailable(
            "PagerDuty's token answer lacks access_token or refresh_token".into(),
        ));
    };
    let expires_at = answer["expires_in"]
        .as_i64()
        .map(|seconds| crate::store::now() + chrono::Duration::seconds(seconds));
    Ok(vec![
        CredentialValue {
            credential_type: ACCESS_TOKEN.into(),
            secret: Secret::new(access),
            expires_at,
        },
        CredentialValue {
            credential_type: REFRESH_TOKEN.into(),
            secret: Secret::new(refresh),
            expires_at: None,
        },
    ])
}

/// The subscription's filter: a service, a team, or the whole account.
fn filter(fields: &BTreeMap<String, Secret>) -> Result<Value, ConnectorError> {
    match (field(fields, "service_id"), field(fields, "team_id")) {
        (Some(_), Some(_)) => Err(ConnectorError::Invalid(
            "credentials.service_id and credentials.team_id exclude each other: a subscription \
             covers one service, one team, or the whole account"
                .into(),
        )),
        (Some(id), None) => Ok(json!({"type": "service_reference", "id": id})),
        (None, Some(id)) => Ok(json!({"type": "team_reference", "id": id})),
        (None, None) => Ok(json!({"type": "account_reference"})),
    }
}

fn subscription_path(id: &str) -> String {
    format!("/webhook_subscriptions/{}", super::http::path_segment(id))
}

#[async_trait::async_trait]
impl Connector for PagerDutyConnector {
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
        actions::kinds(&self.shared)
    }

    async fn authorize(
        &self,
        request: &AuthorizeRequest,
    ) -> Result<AuthorizationStart, ConnectorError> {
        let config = &self.shared.config;
        let flow = match request.flow.as_deref() {
            Some(flow) if FLOWS.contains(&flow) => flow,
            Some(other) => {
                return Err(ConnectorError::Invalid(format!(
                    "PagerDuty has no flow '{other}' (it offers: {})",
                    FLOWS.join(", ")
                )));
            }
            None if config.oauth_enabled() => "oauth2",
            None => "api_key",
        };
        if flow == "api_key" {
            return Ok(AuthorizationStart::api_key(&FIELDS));
        }
        let (client_id, _) = oauth_client(config)?;
        let mut url = url::Url::parse(&format!(
            "{}/oauth/authorize",
            config.identity_base_url.trim_end_matches('/')
        ))
        .map_err(|e| ConnectorError::Invalid(format!("bad PagerDuty identity URL: {e}")))?;
        url.query_pairs_mut()
            .append_pair("client_id", client_id)
            .append_pair(
                "redirect_uri",
                config
                    .redirect_url
                    .as_deref()
                    .unwrap_or(&request.redirect_url),
            )
            .append_pair("response_type", "code")
            .append_pair("scope", &config.scopes.join(" "))
            .append_pair("state", &request.state);
        Ok(AuthorizationStart::Oauth2 {
            url: url.to_string(),
        })
    }

    async fn complete(&self, request: &CallbackRequest) -> Result<Authorized, ConnectorError> {
        let fields = request.fields_among(&FIELDS, "PagerDuty")?;
        let install_webhook = super::flag_field(fields, "webhook", true)?;
        let filter = filter(fields)?;
        let connected = match &request.code {
            Some(code) => self.complete_oauth(request, code, fields).await?,
            None => self.complete_api_key(request, fields).await?,
        };
        let Connected {
            region,
            from,
            mut metadata,
            external_id,
            mut credentials,
        } = connected;
        let url = webhook_url(&request.public_url, &request.integration_id);
        let interim = Credentials {
            organization_id: request.organization_id.clone(),
            integration_id: request.integration_id.clone(),
            external_id: external_id.clone(),
            metadata: json!({"region": region, "from": from}),
            values: credentials.clone(),
        };
        let webhook = if install_webhook {
            let account = self.shared.account(&interim, None)?;
            let (id, secret) = self
                .shared
                .subscribe(&account, &url, filter.clone())
                .await?;
            credentials.push(CredentialValue {
                credential_type: WEBHOOK_SECRET.into(),
                secret,
                expires_at: None,
            });
            json!({"id": id, "url": url, "events": self.shared.config.webhook_events, "filter": filter})
        } else {
            Value::Null
        };
        metadata["region"] = json!(region);
        metadata["from"] = json!(from);
        metadata["webhook"] = webhook;
        Ok(Authorized {
            external_id,
            reveal: None,
            metadata,
            credentials,
        })
    }

    /// The key or token, then the webhook subscription: one PagerDuty deleted, or
    /// has temporarily disabled after failed deliveries, shows in the health (the
    /// disabled one is enabled again here).
    async fn validate(&self, credentials: &Credentials) -> Result<(), ConnectorError> {
        let account = self.shared.account(credentials, None)?;
        let check = if credentials.get(ACCESS_TOKEN).is_some() {
            "/users/me"
        } else {
            "/abilities"
        };
        self.shared
            .rest(&account, Method::GET, check, None, Wait::No)
            .await?;
        let Some(id) = credentials.metadata["webhook"]["id"].as_str() else {
            return Ok(());
        };
        let path = subscription_path(id);
        let subscription = match self
            .shared
            .rest(&account, Method::GET, &path, None, Wait::No)
            .await
        {
            Ok(answer) => answer["webhook_subscription"].clone(),
            Err(PagerDutyError::NotFound(_)) => {
                return Err(ConnectorError::Invalid(format!(
                    "the webhook subscription {id} is gone from PagerDuty: no incident events arrive; connect again to create it"
                )));
            }
            Err(error) => return Err(error.into()),
        };
        if subscription["temporarily_disabled"] == true {
            self.shared
                .rest(
                    &account,
                    Method::POST,
                    &format!("{path}/enable"),
                    None,
                    Wait::No,
                )
                .await?;
            return Err(ConnectorError::Invalid(format!(
                "PagerDuty had temporarily disabled the webhook subscription {id} after failed \
                 deliveries; it is enabled again"
            )));
        }
        Ok(())
    }

    async fn refresh(
        &self,
        credentials: &Credentials,
    ) -> Result<Vec<CredentialValue>, ConnectorError> {
        let refresh = credentials
            .get(REFRESH_TOKEN)
            .ok_or(ConnectorError::NotSupported)?;
        let config = &self.shared.config;
        let (client_id, client_secret) = oauth_client(config)?;
        let answer = self
            .shared
            .api
            .token(
                &config.identity_base_url,
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id),
                    ("client_secret", client_secret.expose()),
                    ("refresh_token", refresh.expose()),
                ],
            )
            .await?;
        let mut values = token_values(&answer)?;
        // The subscription's secret stays as it is.
        values.extend(
            credentials
                .values
                .iter()
                .filter(|v| v.credential_type == WEBHOOK_SECRET)
                .cloned(),
        );
        Ok(values)
    }

    /// Deletes the webhook subscription (one already gone is fine).
    async fn revoke(&self, credentials: &Credentials) -> Result<(), ConnectorError> {
        let Some(id) = credentials.metadata["webhook"]["id"].as_str() else {
            return Err(ConnectorError::NotSupported);
        };
        let account = self.shared.account(credentials, None)?;
        match self
            .shared
            .rest(
                &account,
                Method::DELETE,
                &subscription_path(id),
                None,
                Wait::No,
            )
            .await
        {
            Ok(_) | Err(PagerDutyError::NotFound(_)) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    fn describe(&self, event: &Envelope) -> Option<String> {
        Some(WebhookEvent::from_value(&event.payload)?.describe())
    }

    fn subject(&self, event: &Envelope) -> Option<Subject> {
        WebhookEvent::from_value(&event.payload)?.subject()
    }

    async fn operate(&self, operation: &Operation) -> Result<Operated, ConnectorError> {
        actions::operate(&self.shared, operation).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_tokens_claims_are_read_and_filters_exclude_each_other() {
        let claims = json!({"aud": "https://api.eu.pagerduty.com", "subdomain": "acme", "account_id": "PACCT"});
        let token = format!(
            "e30.{}.sig",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        assert_eq!(id_token_claims(&token), Some(claims));
        assert_eq!(id_token_claims("not-a-jwt"), None);
        let mut fields = BTreeMap::new();
        assert_eq!(
            filter(&fields).unwrap(),
            json!({"type": "account_reference"})
        );
        fields.insert("service_id".to_string(), Secret::new("PSVC1"));
        assert_eq!(
            filter(&fields).unwrap(),
            json!({"type": "service_reference", "id": "PSVC1"})
        );
        fields.insert("team_id".to_string(), Secret::new("PTEAM"));
        assert!(filter(&fields).is_err());
    }
}
