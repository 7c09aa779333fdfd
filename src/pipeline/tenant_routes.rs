//! Tenant routes, between the store and the running [`Routes`]: created, listed and
//! deleted through the tenant API, kept in the store with their secret settings sealed
//! by the vault, and loaded into the running routes at once.
//!
//! Every change reloads the tenant routes from the store, one reload at a time, so
//! the running set always follows the store's latest state; a route already running
//! keeps its prepared action and its breaker. A periodic reload picks up routes
//! created elsewhere (another node on the same database).

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::actions::{ActionKinds, Settings};
use super::routes::{self, RouteSpec, Routes};
use crate::problem::Problem;
use crate::secret::Secret;
use crate::store::routes::{self as stored, StoredRoute};
use crate::store::{Store, new_id, now};
use crate::vault::{Binding, Sealed, Vault};

use crate::store::routes::SEALED_SETTINGS;

pub struct TenantRoutes {
    store: Store,
    vault: Vault,
    kinds: ActionKinds,
    routes: Arc<Routes>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    announce: std::sync::atomic::AtomicBool,
}

/// What a tenant asks for.
pub struct NewRoute {
    pub organization_id: String,
    pub connector: String,
    pub event_type: String,
    pub action: String,
    pub settings: Settings,
}

/// Why a route was not created.
#[derive(Debug)]
pub enum RouteError {
    /// The action or its settings are wrong: each problem names the setting.
    Invalid(Vec<Problem>),
    /// The store or the vault could not take it.
    Unavailable(String),
}

/// Why a stored route could not be prepared.
enum SpecError {
    /// Not yet: the vault is loading or the store is away.
    Transient(String),
    /// Not as it is stored (its settings, its secret).
    Unusable(String),
}

/// A created route and the settings generated for it (shown once).
pub struct Created {
    pub route: StoredRoute,
    pub generated: serde_json::Map<String, Value>,
}

impl TenantRoutes {
    pub fn new(store: Store, vault: Vault, kinds: ActionKinds, routes: Arc<Routes>) -> Self {
        Self {
            store,
            vault,
            kinds,
            routes,
            reloading: tokio::sync::Mutex::new(()),
            announce: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Cluster mode: a change made here is announced, so that every node reloads.
    pub fn announce_changes(&self) {
        self.announce
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Tells the other nodes the routes changed (cluster mode only): they reload now
    /// instead of at their next periodic reload.
    async fn announce(&self) {
        if self.announce.load(std::sync::atomic::Ordering::Relaxed)
            && let Err(error) = crate::store::cluster::notify_channel(
                &self.store,
                crate::cluster::CONTROL_CHANNEL,
                crate::cluster::ROUTES_CHANGED,
            )
            .await
        {
            tracing::warn!(error = %error, "route change not announced: other nodes reload it within 30 s");
        }
    }

    pub fn routes(&self) -> &Arc<Routes> {
        &self.routes
    }

    /// Checks, stores and runs a new route.
    pub async fn create(&self, new: NewRoute) -> Result<Created, RouteError> {
        let kind = self
            .kinds
            .find(&new.action)
            .map_err(|problem| RouteError::Invalid(vec![problem]))?;
        let mut settings = new.settings;
        let generated_names = kind.complete(&mut settings);
        kind.prepare(&settings).map_err(RouteError::Invalid)?;
        let mut secrets = serde_json::Map::new();
        for name in kind.secret_settings() {
            if let Some(value) = settings.remove(*name) {
                secrets.insert((*name).to_string(), value);
            }
        }
        let generated: serde_json::Map<String, Value> = generated_names
            .iter()
            .filter_map(|name| Some((name.to_string(), secrets.get(*name)?.clone())))
            .collect();
        let id = new_id();
        let sealed = if secrets.is_empty() {
            None
        } else {
            let plaintext = Secret::wrap(Value::Object(secrets).to_string().into_bytes());
            let binding = Binding::new(&new.organization_id, &id, SEALED_SETTINGS);
            Some(
                self.vault
                    .encrypt(binding, plaintext)
                    .await
                    .map_err(|e| RouteError::Unavailable(e.to_string()))?,
            )
        };
        let route = StoredRoute {
            id,
            organization_id: new.organization_id,
            connector: new.connector,
            event_type: new.event_type,
            action: new.action,
            settings: Value::Object(settings).to_string(),
            encryption_key_id: sealed.as_ref().map(|s| s.key_id.clone()),
            secrets: sealed.map(|s| s.ciphertext),
            created_at: now(),
        };
        stored::create(&self.store, &route)
            .await
            .map_err(|e| RouteError::Unavailable(e.to_string()))?;
        self.reload().await.map_err(RouteError::Unavailable)?;
        self.announce().await;
        Ok(Created { route, generated })
    }

    /// Deletes one of an organization's routes and stops running it.
    pub async fn delete(
        &self,
        organization_id: &str,
        id: &str,
    ) -> Result<(), crate::store::StoreError> {
        stored::delete(&self.store, organization_id, id).await?;
        if let Err(error) = self.reload().await {
            tracing::warn!(route_id = id, error = %error, "route deleted; the running routes follow at the next reload");
        }
        self.announce().await;
        Ok(())
    }

    /// Makes the running tenant routes those of the store: new ones are prepared,
    /// running ones kept as they are, deleted ones dropped.
    pub async fn reload(&self) -> Result<(), String> {
        let _one_at_a_time = self.reloading.lock().await;
        let rows = stored::all(&self.store).await.map_err(|e| e.to_string())?;
        let running = self.routes.tenant_route_ids();
        let mut keep = HashSet::new();
        let mut added = Vec::new();
        for row in rows {
            if running.contains(&row.id) {
                keep.insert(row.id);
                continue;
            }
            match self.spec(&row).await {
                Ok(spec) => added.push(spec),
                // The vault is still loading its keys (a daemon just started): the
                // whole load is tried again soon, and events wait for it meanwhile.
                Err(SpecError::Transient(error)) => {
                    return Err(format!("route {} waits for the vault: {error}", row.id));
                }
                // A route whose secret cannot be read is tried at the next reload.
                Err(SpecError::Unusable(error)) => {
                    tracing::warn!(route_id = %row.id, error = %error, "tenant route not loaded");
                }
            }
        }
        self.routes.set_tenant_routes(&keep, added);
        Ok(())
    }

    /// A stored route, prepared to run.
    async fn spec(&self, row: &StoredRoute) -> Result<RouteSpec, SpecError> {
        let unusable = SpecError::Unusable;
        let mut settings: Settings = serde_json::from_str(&row.settings)
            .map_err(|e| unusable(format!("unreadable settings: {e}")))?;
        if let (Some(ciphertext), Some(key_id)) = (&row.secrets, &row.encryption_key_id) {
            let binding = Binding::new(&row.organization_id, &row.id, SEALED_SETTINGS);
            let sealed = Sealed {
                key_id: key_id.clone(),
                ciphertext: ciphertext.clone(),
            };
            let plaintext = self.vault.decrypt(binding, sealed).await.map_err(|e| {
                if e.is_transient() {
                    SpecError::Transient(e.to_string())
                } else {
                    unusable(e.to_string())
                }
            })?;
            let secrets: Settings = serde_json::from_slice(plaintext.expose())
                .map_err(|e| unusable(format!("unreadable secret settings: {e}")))?;
            settings.extend(secrets);
        }
        let action = routes::prepare(&self.kinds, &row.action, &settings).map_err(|problems| {
            unusable(
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        Ok(RouteSpec {
            id: Some(row.id.clone()),
            organization_id: row.organization_id.clone(),
            connector: row.connector.clone(),
            event_type: row.event_type.clone(),
            action,
        })
    }
}
