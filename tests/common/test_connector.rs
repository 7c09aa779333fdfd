//! A connector written for the tests: an OAuth2 provider that lives in memory and does
//! what the test tells it (fail refreshes, panic in validation, ...).

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use switchboard::connectors::{
    AuthorizationStart, AuthorizeRequest, Authorized, CallbackRequest, Connector, ConnectorError,
    CredentialValue, Credentials, EventEffect, ProviderGate,
};
use switchboard::pipeline::Envelope;
use switchboard::secret::Secret;
use switchboard_actors::Quota;

pub const GOOD_CODE: &str = "code-from-the-provider";

#[derive(Default)]
pub struct TestConnector {
    /// How long issued access tokens live.
    pub token_lifetime: Mutex<Option<Duration>>,
    pub fail_refresh: AtomicBool,
    /// The next validation is answered with a rate limit asking to wait this long.
    pub rate_limit_next_validation: Mutex<Option<Duration>>,
    /// Organizations whose validation panics.
    pub panic_for: Mutex<HashSet<String>>,
    pub refreshes: AtomicU32,
    pub validations: AtomicU32,
    pub revocations: AtomicU32,
    /// The provider's per-tenant quota; with one, the connector handles events: an
    /// `api.*` event makes one request to the provider, any other makes none.
    pub quota: Option<Quota>,
    /// Requests made by the event handler.
    pub api_requests: AtomicU32,
    issued: AtomicU32,
}

impl TestConnector {
    pub fn with_token_lifetime(lifetime: Duration) -> Self {
        let connector = Self::default();
        *connector.token_lifetime.lock().unwrap() = Some(lifetime);
        connector
    }

    /// A connector whose provider allows `quota` requests per tenant, and that handles
    /// events (see [`TestConnector::quota`]).
    pub fn with_quota(quota: Quota) -> Self {
        Self {
            quota: Some(quota),
            ..Self::default()
        }
    }

    fn access_token(&self) -> CredentialValue {
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let expires_at = self.token_lifetime.lock().unwrap().map(|lifetime| {
            switchboard::store::now() + chrono::Duration::from_std(lifetime).unwrap()
        });
        CredentialValue {
            credential_type: "access_token".into(),
            secret: Secret::new(format!("acme-access-{n}")),
            expires_at,
        }
    }
}

#[async_trait::async_trait]
impl Connector for TestConnector {
    fn name(&self) -> &str {
        "acme"
    }

    async fn authorize(
        &self,
        request: &AuthorizeRequest,
    ) -> Result<AuthorizationStart, ConnectorError> {
        Ok(AuthorizationStart::Oauth2 {
            url: format!(
                "https://acme.example/oauth/authorize?client_id=test&state={}&redirect_uri={}",
                request.state, request.redirect_url
            ),
        })
    }

    async fn complete(&self, request: &CallbackRequest) -> Result<Authorized, ConnectorError> {
        match request.code.as_ref().map(|c| c.expose().as_str()) {
            Some(GOOD_CODE) => Ok(Authorized {
                external_id: Some(format!("acme-account-{}", &request.organization_id[..8])),
                metadata: serde_json::json!({"plan": "pro"}),
                reveal: None,
                credentials: vec![
                    self.access_token(),
                    CredentialValue {
                        credential_type: "refresh_token".into(),
                        secret: Secret::new("acme-refresh-secret"),
                        expires_at: None,
                    },
                ],
            }),
            _ => Err(ConnectorError::Invalid(
                "the authorization code is invalid".into(),
            )),
        }
    }

    async fn validate(&self, credentials: &Credentials) -> Result<(), ConnectorError> {
        self.validations.fetch_add(1, Ordering::SeqCst);
        if let Some(retry_after) = self.rate_limit_next_validation.lock().unwrap().take() {
            return Err(ConnectorError::RateLimited { retry_after });
        }
        if self
            .panic_for
            .lock()
            .unwrap()
            .contains(&credentials.organization_id)
        {
            panic!(
                "acme validation panicked for {}",
                credentials.organization_id
            );
        }
        match credentials.get("access_token") {
            Some(token) if token.expose().starts_with("acme-access-") => Ok(()),
            _ => Err(ConnectorError::Unauthorized("no access token".into())),
        }
    }

    async fn refresh(
        &self,
        credentials: &Credentials,
    ) -> Result<Vec<CredentialValue>, ConnectorError> {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        if self.fail_refresh.load(Ordering::SeqCst) {
            return Err(ConnectorError::Unavailable(
                "acme token endpoint answered 503".into(),
            ));
        }
        let refresh = credentials
            .get("refresh_token")
            .ok_or_else(|| ConnectorError::Unauthorized("no refresh token".into()))?;
        Ok(vec![
            self.access_token(),
            CredentialValue {
                credential_type: "refresh_token".into(),
                secret: refresh.clone(),
                expires_at: None,
            },
        ])
    }

    async fn revoke(&self, _credentials: &Credentials) -> Result<(), ConnectorError> {
        self.revocations.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn tenant_quota(&self) -> Option<Quota> {
        self.quota
    }

    fn handles(&self, _event_type: &str) -> bool {
        self.quota.is_some()
    }

    async fn handle_event(
        &self,
        _credentials: &Credentials,
        event: &Envelope,
        provider: &ProviderGate,
    ) -> Result<EventEffect, ConnectorError> {
        if event.event_type.starts_with("api.") {
            provider
                .call(async {
                    self.api_requests.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .await?;
        }
        Ok(EventEffect::None)
    }
}
