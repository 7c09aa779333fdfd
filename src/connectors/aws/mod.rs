//! The AWS connector: a tenant's account connected through a cross-account role
//! (assumed with an external id switchboard generates, again before each session
//! expires) or an access key, and its CloudWatch alarms' changes of state, polled
//! from the alarm history per region and pushed through SNS.
//!
//! - `sigv4.rs`: signing, with the `aws-sigv4` crate.
//! - `api.rs`: the STS and CloudWatch Query APIs (XML answers and errors, throttling).
//! - `alarms.rs`: an alarm's change of state, the event both intakes make.
//! - `poll.rs`: reading `DescribeAlarmHistory` page by page, region by region.
//! - `sns.rs`: the ingress for SNS HTTPS deliveries (signatures, topics,
//!   subscription confirmations).

pub mod alarms;
pub mod api;
pub mod config;
mod poll;
pub mod sigv4;
pub mod sns;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};

use super::ingress::Ingress;
use super::{
    AuthorizationStart, AuthorizeRequest, Authorized, CallbackRequest, Connector, ConnectorContext,
    ConnectorError, CredentialValue, Credentials, Polled, Provider,
};
use crate::pipeline::Envelope;
use crate::pipeline::actions::Subject;
use crate::secret::Secret;
use crate::store::integrations::Integration;
use alarms::{AlarmStateChange, EVENT_PREFIX};
use api::{AwsApi, AwsError, RoleRequest, Service, Session};
use config::{AwsConfig, is_region};
use sigv4::AwsKeys;
use sns::{SnsIngress, endpoint_url};

pub const NAME: &str = "aws";
pub const ACCESS_KEY_ID: &str = "access_key_id";
pub const SECRET_ACCESS_KEY: &str = "secret_access_key";
pub const SESSION_TOKEN: &str = "session_token";
const ROLE_ARN: &str = "role_arn";
/// What both flows take beside their keys: the regions whose alarms are polled, the
/// SNS topics whose messages are accepted, and whether to poll at all.
const COMMON_FIELDS: [&str; 3] = ["regions", "topics", "poll"];
const FIELDS: [&str; 7] = [
    ROLE_ARN,
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    SESSION_TOKEN,
    "regions",
    "topics",
    "poll",
];
const FLOWS: [&str; 2] = ["role", "access_key"];
/// What a role needs to allow for switchboard to read alarms.
const PERMISSIONS: [&str; 2] = [
    "cloudwatch:DescribeAlarmHistory",
    "cloudwatch:DescribeAlarms",
];

pub const PROVIDER: Provider = Provider {
    name: NAME,
    build: |section| {
        let config = AwsConfig::from_section(section)?;
        let http =
            super::http::client_trusting(config.request_timeout, config.ca_certificates.as_deref())
                .map_err(|message| {
                    vec![crate::problem::Problem::new(
                        section.key("ca_certificates"),
                        message,
                    )]
                })?;
        Ok(Arc::new(AwsConnector::new(config, http)))
    },
};

/// What the connector and its ingress share.
pub struct Shared {
    pub config: AwsConfig,
    pub api: AwsApi,
    pub context: OnceLock<ConnectorContext>,
    /// Sessions assumed again after AWS said the stored one expired, by integration:
    /// used until the integration's own refresh stores a newer one.
    sessions: Mutex<HashMap<String, Session>>,
}

impl Shared {
    fn sts(&self) -> Service<'_> {
        Service {
            url: &self.config.sts_url,
            region: &self.config.sts_region,
            name: "sts",
        }
    }

    fn own_keys(&self) -> Result<(&str, AwsKeys), ConnectorError> {
        let (principal, id, secret) = self.config.own_principal().ok_or_else(|| {
            ConnectorError::Invalid(
                "connectors.aws has no principal_arn, access_key_id and secret_access_key: \
                 connect with an access key"
                    .into(),
            )
        })?;
        Ok((
            principal,
            AwsKeys {
                access_key_id: id.to_string(),
                secret_access_key: secret.clone(),
                session_token: None,
            },
        ))
    }

    /// Assumes a tenant's role for `owner` (the integration).
    async fn assume(
        &self,
        owner: &str,
        role_arn: &str,
        external_id: &str,
    ) -> Result<Session, AwsError> {
        let (_, keys) = self
            .own_keys()
            .map_err(|e| AwsError::Unavailable(e.to_string()))?;
        let session_name = session_name(owner);
        self.api
            .assume_role(
                owner,
                self.sts(),
                &keys,
                &RoleRequest {
                    role_arn,
                    session_name: &session_name,
                    external_id,
                    duration: self.config.session_duration,
                },
            )
            .await
    }

    /// The keys an integration's requests are signed with: a session assumed since the
    /// stored one, or the stored ones.
    fn keys_of(&self, credentials: &Credentials) -> Result<AwsKeys, ConnectorError> {
        let stored_expiry = credentials
            .values
            .iter()
            .find(|v| v.credential_type == ACCESS_KEY_ID)
            .and_then(|v| v.expires_at);
        if let Some(session) = crate::lock(&self.sessions).get(&credentials.integration_id)
            && stored_expiry.is_none_or(|stored| session.expires_at > stored)
        {
            return Ok(session.keys.clone());
        }
        stored_keys(credentials)
    }

    /// Runs `request` with the integration's keys. When AWS says a role's session
    /// expired, the role is assumed again and the request made once more.
    async fn call<T, F, R>(&self, credentials: &Credentials, request: F) -> Result<T, AwsError>
    where
        F: Fn(AwsKeys) -> R,
        R: Future<Output = Result<T, AwsError>>,
    {
        let keys = self.keys_of(credentials).map_err(|e| AwsError::Denied {
            code: "NoCredentials".into(),
            message: e.to_string(),
        })?;
        match request(keys).await {
            Err(AwsError::ExpiredToken(_)) if role_of(credentials).is_some() => {
                let (role_arn, external_id) = role_of(credentials).unwrap_or_default();
                let session = self
                    .assume(&credentials.integration_id, role_arn, external_id)
                    .await?;
                tracing::info!(integration_id = %credentials.integration_id, "AWS session expired early: role assumed again");
                let keys = session.keys.clone();
                crate::lock(&self.sessions).insert(credentials.integration_id.clone(), session);
                request(keys).await
            }
            outcome => outcome,
        }
    }
}

/// `RoleSessionName`: it shows in the tenant's CloudTrail as who acted.
fn session_name(integration_id: &str) -> String {
    let name: String = format!("switchboard-{integration_id}")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(*c))
        .take(64)
        .collect();
    name
}

fn stored_keys(credentials: &Credentials) -> Result<AwsKeys, ConnectorError> {
    match (
        credentials.get(ACCESS_KEY_ID),
        credentials.get(SECRET_ACCESS_KEY),
    ) {
        (Some(id), Some(secret)) => Ok(AwsKeys {
            access_key_id: id.expose().clone(),
            secret_access_key: secret.clone(),
            session_token: credentials.get(SESSION_TOKEN).cloned(),
        }),
        _ => Err(ConnectorError::Unauthorized(
            "no AWS access key stored".into(),
        )),
    }
}

/// A role integration's role ARN and external id.
fn role_of(credentials: &Credentials) -> Option<(&str, &str)> {
    Some((
        credentials.metadata[ROLE_ARN].as_str()?,
        credentials.metadata["external_id"].as_str()?,
    ))
}

/// The account a role ARN belongs to: `arn:<partition>:iam::<account>:role/<name>`.
fn role_account(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", _, "iam", "", account, resource]
            if account.len() == 12
                && account.chars().all(|c| c.is_ascii_digit())
                && resource.starts_with("role/") =>
        {
            Some(account)
        }
        _ => None,
    }
}

/// A trimmed, non-empty callback field.
fn field(fields: &BTreeMap<String, Secret>, name: &str) -> Option<String> {
    fields
        .get(name)
        .map(|v| v.expose().trim().to_string())
        .filter(|v| !v.is_empty())
}

/// A comma- or space-separated list field.
fn list_field(fields: &BTreeMap<String, Secret>, name: &str) -> Vec<String> {
    field(fields, name)
        .unwrap_or_default()
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The session's values, expiring with it.
fn session_values(session: &Session) -> Vec<CredentialValue> {
    let expires_at = Some(session.expires_at);
    let keys = &session.keys;
    let mut values = vec![
        CredentialValue {
            credential_type: ACCESS_KEY_ID.into(),
            secret: Secret::new(keys.access_key_id.clone()),
            expires_at,
        },
        CredentialValue {
            credential_type: SECRET_ACCESS_KEY.into(),
            secret: keys.secret_access_key.clone(),
            expires_at,
        },
    ];
    if let Some(token) = &keys.session_token {
        values.push(CredentialValue {
            credential_type: SESSION_TOKEN.into(),
            secret: token.clone(),
            expires_at,
        });
    }
    values
}

/// What the tenant chose beside the keys.
struct Watch {
    regions: Vec<String>,
    topics: Vec<String>,
    poll: bool,
}

impl Watch {
    fn from_fields(
        fields: &BTreeMap<String, Secret>,
        config: &AwsConfig,
    ) -> Result<Self, ConnectorError> {
        let mut regions = list_field(fields, "regions");
        if regions.is_empty() {
            regions.clone_from(&config.default_regions);
        }
        if let Some(bad) = regions.iter().find(|r| !is_region(r)) {
            return Err(ConnectorError::Invalid(format!(
                "credentials.regions: '{bad}' is not an AWS region name (us-east-1, eu-west-1, ...)"
            )));
        }
        let topics = list_field(fields, "topics");
        if let Some(bad) = topics
            .iter()
            .find(|t| !t.starts_with("arn:aws") || !t.contains(":sns:"))
        {
            return Err(ConnectorError::Invalid(format!(
                "credentials.topics: '{bad}' is not an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>)"
            )));
        }
        Ok(Self {
            regions,
            topics,
            poll: super::flag_field(fields, "poll", true)?,
        })
    }
}

pub struct AwsConnector {
    shared: Arc<Shared>,
    ingress: Arc<SnsIngress>,
}

impl AwsConnector {
    pub fn new(config: AwsConfig, http: reqwest::Client) -> Self {
        let shared = Arc::new(Shared {
            api: AwsApi::new(http),
            config,
            context: OnceLock::new(),
            sessions: Mutex::default(),
        });
        Self {
            ingress: Arc::new(SnsIngress::new(Arc::clone(&shared))),
            shared,
        }
    }

    /// The role flow: the role assumed with this integration's external id, and the
    /// session confirmed to be the role's account.
    async fn complete_role(
        &self,
        request: &CallbackRequest,
        role_arn: &str,
    ) -> Result<(Value, Vec<CredentialValue>, String), ConnectorError> {
        let account = role_account(role_arn).ok_or_else(|| {
            ConnectorError::Invalid(format!(
                "credentials.role_arn '{role_arn}' is not a role ARN (arn:aws:iam::<account>:role/<name>)"
            ))
        })?;
        let external_id = external_id(&request.integration_id);
        let session = self
            .shared
            .assume(&request.integration_id, role_arn, &external_id)
            .await
            .map_err(|error| match error {
                AwsError::Denied { code, message } => ConnectorError::Unauthorized(format!(
                    "AWS refused to assume the role ({code}: {message}); check that its trust \
                     policy names switchboard's principal and the external id {external_id}"
                )),
                other => other.into(),
            })?;
        let identity = self
            .shared
            .api
            .caller_identity(&request.integration_id, self.shared.sts(), &session.keys)
            .await?;
        if identity.account != account {
            return Err(ConnectorError::Unauthorized(format!(
                "the assumed session belongs to account {}, not the role's account {account}",
                identity.account
            )));
        }
        let metadata = json!({
            "flow": "role",
            ROLE_ARN: role_arn,
            "external_id": external_id,
            "account": identity.account,
            "arn": identity.arn,
        });
        Ok((metadata, session_values(&session), identity.account))
    }

    /// The access_key flow: the key checked with `GetCallerIdentity`.
    async fn complete_access_key(
        &self,
        request: &CallbackRequest,
        fields: &BTreeMap<String, Secret>,
    ) -> Result<(Value, Vec<CredentialValue>, String), ConnectorError> {
        let (Some(id), Some(secret)) = (
            field(fields, ACCESS_KEY_ID),
            fields
                .get(SECRET_ACCESS_KEY)
                .filter(|s| !s.expose().trim().is_empty()),
        ) else {
            return Err(ConnectorError::Invalid(
                "credentials.access_key_id and credentials.secret_access_key are required".into(),
            ));
        };
        let keys = AwsKeys {
            access_key_id: id,
            secret_access_key: secret.clone(),
            session_token: fields.get(SESSION_TOKEN).cloned(),
        };
        let identity = self
            .shared
            .api
            .caller_identity(&request.integration_id, self.shared.sts(), &keys)
            .await?;
        let mut values = vec![
            CredentialValue {
                credential_type: ACCESS_KEY_ID.into(),
                secret: Secret::new(keys.access_key_id.clone()),
                expires_at: None,
            },
            CredentialValue {
                credential_type: SECRET_ACCESS_KEY.into(),
                secret: keys.secret_access_key.clone(),
                expires_at: None,
            },
        ];
        if let Some(token) = keys.session_token {
            values.push(CredentialValue {
                credential_type: SESSION_TOKEN.into(),
                secret: token,
                expires_at: None,
            });
        }
        let metadata = json!({
            "flow": "access_key",
            "account": identity.account,
            "arn": identity.arn,
        });
        Ok((metadata, values, identity.account))
    }
}

/// The external id a role integration's trust policy must require: the integration's
/// own id. switchboard chooses it and a tenant cannot, which is what defeats the
/// confused deputy (another tenant naming this tenant's role gets its own id
/// checked); AWS does not need it secret.
fn external_id(integration_id: &str) -> String {
    integration_id.to_string()
}

fn permissions_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": PERMISSIONS, "Resource": "*"}],
    })
}

#[async_trait::async_trait]
impl Connector for AwsConnector {
    fn name(&self) -> &str {
        NAME
    }

    fn attach(&self, context: &ConnectorContext) {
        let _ = self.shared.context.set(context.clone());
    }

    fn ingress(&self) -> Option<Arc<dyn Ingress>> {
        Some(Arc::clone(&self.ingress) as Arc<dyn Ingress>)
    }

    async fn authorize(
        &self,
        request: &AuthorizeRequest,
    ) -> Result<AuthorizationStart, ConnectorError> {
        let flow = match request.flow.as_deref() {
            Some(flow) if FLOWS.contains(&flow) => flow,
            Some(other) => {
                return Err(ConnectorError::Invalid(format!(
                    "AWS has no flow '{other}' (it offers: {})",
                    FLOWS.join(", ")
                )));
            }
            None if self.shared.config.own_principal().is_some() => "role",
            None => "access_key",
        };
        let sns_endpoint = endpoint_url(&request.public_url, &request.integration_id);
        let (fields, instructions) = if flow == "role" {
            let (principal, _) = self.shared.own_keys()?;
            let external_id = external_id(&request.integration_id);
            let trust_policy = json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": {"AWS": principal},
                    "Action": "sts:AssumeRole",
                    "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
                }],
            });
            let mut fields = vec![ROLE_ARN];
            fields.extend(COMMON_FIELDS);
            (
                fields,
                json!({
                    "flow": "role",
                    "principal": principal,
                    "external_id": external_id,
                    "trust_policy": trust_policy,
                    "permissions_policy": permissions_policy(),
                    "sns_endpoint": sns_endpoint,
                }),
            )
        } else {
            let mut fields = vec![ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN];
            fields.extend(COMMON_FIELDS);
            (
                fields,
                json!({
                    "flow": "access_key",
                    "permissions_policy": permissions_policy(),
                    "sns_endpoint": sns_endpoint,
                }),
            )
        };
        Ok(AuthorizationStart::ApiKey {
            fields: fields.iter().map(ToString::to_string).collect(),
            instructions: Some(instructions),
        })
    }

    async fn complete(&self, request: &CallbackRequest) -> Result<Authorized, ConnectorError> {
        let fields = request.fields_among(&FIELDS, "AWS")?;
        let watch = Watch::from_fields(fields, &self.shared.config)?;
        let (mut metadata, credentials, account) =
            match (field(fields, ROLE_ARN), field(fields, ACCESS_KEY_ID)) {
                (Some(_), Some(_)) => {
                    return Err(ConnectorError::Invalid(
                        "credentials.role_arn and credentials.access_key_id exclude each other: \
                         connect with a role or with an access key"
                            .into(),
                    ));
                }
                (Some(role_arn), None) => self.complete_role(request, &role_arn).await?,
                (None, _) => self.complete_access_key(request, fields).await?,
            };
        metadata["regions"] = json!(watch.regions);
        metadata["topics"] = json!(watch.topics);
        metadata["poll"] = json!(watch.poll);
        metadata["sns_endpoint"] =
            json!(endpoint_url(&request.public_url, &request.integration_id));
        Ok(Authorized {
            external_id: Some(account),
            metadata,
            credentials,
            reveal: None,
        })
    }

    /// `GetCallerIdentity` with the integration's keys (a role's session assumed
    /// again if AWS says it expired), and still the account it was connected to.
    async fn validate(&self, credentials: &Credentials) -> Result<(), ConnectorError> {
        let identity = self
            .shared
            .call(credentials, |keys| async move {
                self.shared
                    .api
                    .caller_identity(&credentials.integration_id, self.shared.sts(), &keys)
                    .await
            })
            .await?;
        match credentials.metadata["account"].as_str() {
            Some(account) if account != identity.account => {
                Err(ConnectorError::Unauthorized(format!(
                    "the credentials now belong to account {}, not {account}",
                    identity.account
                )))
            }
            _ => Ok(()),
        }
    }

    /// A role's session: the role assumed again. A role the tenant deleted, or whose
    /// trust no longer names switchboard with this external id, is `Unauthorized`
    /// with AWS's code and message.
    async fn refresh(
        &self,
        credentials: &Credentials,
    ) -> Result<Vec<CredentialValue>, ConnectorError> {
        let (role_arn, external_id) = role_of(credentials).ok_or(ConnectorError::NotSupported)?;
        let session = self
            .shared
            .assume(&credentials.integration_id, role_arn, external_id)
            .await?;
        crate::lock(&self.shared.sessions).remove(&credentials.integration_id);
        Ok(session_values(&session))
    }

    /// Nothing to revoke at AWS: the tenant deletes the role or the key. The session
    /// kept here is dropped.
    async fn revoke(&self, credentials: &Credentials) -> Result<(), ConnectorError> {
        crate::lock(&self.shared.sessions).remove(&credentials.integration_id);
        Err(ConnectorError::NotSupported)
    }

    fn polls(&self, integration: &Integration) -> bool {
        serde_json::from_str::<Value>(&integration.metadata)
            .is_ok_and(|metadata| metadata["poll"] == true && !poll::regions(&metadata).is_empty())
    }

    async fn poll(
        &self,
        credentials: &Credentials,
        cursor: Option<&str>,
    ) -> Result<Polled, ConnectorError> {
        poll::page(&self.shared, credentials, cursor).await
    }

    fn describe(&self, event: &Envelope) -> Option<String> {
        Some(alarm(event)?.describe())
    }

    fn subject(&self, event: &Envelope) -> Option<Subject> {
        Some(alarm(event)?.subject())
    }
}

fn alarm(event: &Envelope) -> Option<AlarmStateChange> {
    if !event.event_type.starts_with(EVENT_PREFIX) {
        return None;
    }
    serde_json::from_value(event.payload.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_name_their_account_and_session_names_stay_in_bounds() {
        assert_eq!(
            role_account("arn:aws:iam::111122223333:role/switchboard-read"),
            Some("111122223333")
        );
        assert_eq!(
            role_account("arn:aws-cn:iam::111122223333:role/path/x"),
            Some("111122223333")
        );
        assert_eq!(role_account("arn:aws:iam::111122223333:user/x"), None);
        assert_eq!(role_account("arn:aws:iam::1111:role/x"), None);
        assert_eq!(role_account("not an arn"), None);
        let name = session_name(&"0".repeat(80));
        assert_eq!(name.len(), 64);
        assert!(name.starts_with("switchboard-"));
    }
}
