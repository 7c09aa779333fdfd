//! Credentials kept in memory, for integration actors started without a store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard::connectors::{Connector, CredentialValue, Credentials};
use switchboard::integration::{
    CredentialStore, IntegrationActor, IntegrationArgs, IntegrationMsg, IntegrationServices,
};
use switchboard::store::integrations::Integration;
use switchboard_actors::{Backoff, BreakerConfig};

/// What the actor saved last, and every status, metadata and audit it recorded.
#[derive(Default)]
pub struct MemoryCredentials {
    pub values: Mutex<Vec<CredentialValue>>,
    pub statuses: Mutex<Vec<String>>,
    pub metadata: Mutex<Option<serde_json::Value>>,
    pub revoked: Mutex<Option<String>>,
    pub audits: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl CredentialStore for MemoryCredentials {
    async fn load(&self, integration: &Integration) -> Result<Credentials, String> {
        Ok(Credentials {
            organization_id: integration.organization_id.clone(),
            integration_id: integration.id.clone(),
            external_id: integration.external_id.clone(),
            metadata: serde_json::from_str(&integration.metadata).unwrap_or_default(),
            values: self.values.lock().unwrap().clone(),
        })
    }
    async fn save(&self, _: &Integration, values: Vec<CredentialValue>) -> Result<(), String> {
        *self.values.lock().unwrap() = values;
        Ok(())
    }
    async fn set_status(&self, _: &Integration, status: &str) -> Result<(), String> {
        self.statuses.lock().unwrap().push(status.to_string());
        Ok(())
    }
    async fn set_metadata(
        &self,
        _: &Integration,
        metadata: &serde_json::Value,
    ) -> Result<(), String> {
        *self.metadata.lock().unwrap() = Some(metadata.clone());
        Ok(())
    }
    async fn revoke(&self, _: &Integration, reason: &str) -> Result<(), String> {
        self.values.lock().unwrap().clear();
        *self.revoked.lock().unwrap() = Some(reason.to_string());
        Ok(())
    }
    async fn audit(&self, _: &Integration, action: &str, details: serde_json::Value) {
        self.audits
            .lock()
            .unwrap()
            .push(format!("{action} {details}"));
    }
}

/// Spawns an IntegrationActor for `integration` on `connector`, its credentials kept
/// in `store` (expiring at the earliest `expires_at` of those there): no pipeline, no
/// validation spread, retries backing off from 1 s to 10 s. What the credential
/// lifecycle tests run, usually under paused time.
pub async fn spawn_actor(
    connector: Arc<dyn Connector>,
    store: Arc<MemoryCredentials>,
    integration: Integration,
    breaker: BreakerConfig,
    refresh_margin: Duration,
) -> ractor::ActorRef<IntegrationMsg> {
    let expires_at = store
        .values
        .lock()
        .unwrap()
        .iter()
        .filter_map(|v| v.expires_at)
        .min();
    let services = Arc::new(IntegrationServices {
        connector,
        credentials: store,
        breaker,
        refresh_margin,
        refresh_attempts: 3,
        backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(10)),
        validation_spread: Duration::ZERO,
        poll_interval: Duration::from_secs(60),
        cluster: None,
        pipeline: None,
    });
    let (actor, _) = ractor::Actor::spawn(
        None,
        IntegrationActor,
        IntegrationArgs {
            integration,
            expires_at,
            services,
        },
    )
    .await
    .expect("the integration actor spawns");
    actor
}
