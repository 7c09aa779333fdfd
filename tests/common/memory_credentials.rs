//! Credentials kept in memory, for integration actors started without a store.

use std::sync::Mutex;

use switchboard::connectors::{CredentialValue, Credentials};
use switchboard::integration::CredentialStore;
use switchboard::store::integrations::Integration;

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
