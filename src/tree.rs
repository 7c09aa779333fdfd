//! The root supervisor and the actor tree it builds from the configuration.
//!
//! ```text
//! root (one_for_one)
//! ├── store              applies migrations, watches the store, retries with backoff
//! ├── vault              CredentialVault: the only place keys live
//! └── connector:<name>   one supervisor per [connectors.<name>] section; its children
//!                        are the provider's shared actors and one integration actor
//!                        per tenant integration (`integration:<id>`)
//! ```

use std::sync::Arc;
use std::time::Duration;

use switchboard_actors::{
    ChildSpec, HealthReport, Intensity, Registry, Status, Strategy, SupervisorError, SupervisorMsg,
    SupervisorRef, SupervisorSpec,
};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::Config;
use crate::connectors::ConnectorKind;
use crate::store::Store;
use crate::store::monitor::{STORE, StoreMonitor, StoreMonitorArgs, StoreMonitorMsg};
use crate::vault::{CredentialVault, MasterKey, VAULT, Vault, VaultArgs, VaultMsg};

/// What the actors are built from, besides the configuration.
pub struct Services {
    pub store: Store,
    pub master_key: Arc<MasterKey>,
    pub previous_master_keys: Arc<Vec<MasterKey>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("the actor tree failed to start: {0}")]
    Start(String),
    #[error("no connector named '{0}' is running")]
    UnknownConnector(String),
    #[error("no integration '{0}' is running")]
    UnknownIntegration(String),
    #[error("the actor tree is not running")]
    Unavailable,
}

pub struct ActorTree {
    /// The root supervisor; stopping it stops everything, children in reverse order.
    root: SupervisorRef,
    /// Ends when the root stops, on shutdown or after giving up.
    root_task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    registry: Registry,
    connectors: Vec<ConnectorKind>,
    observe_timeout: Duration,
    store: Store,
}

impl ActorTree {
    pub async fn start(config: &Config, services: Services) -> Result<Self, TreeError> {
        let registry = Registry::unique();
        let supervision = &config.supervision;
        let intensity = Intensity {
            max_restarts: supervision.max_restarts,
            window: supervision.window,
        };
        let connectors = config.connectors.enabled();
        let mut root = SupervisorSpec::new("root")
            .strategy(Strategy::OneForOne)
            .intensity(intensity.max_restarts, intensity.window)
            .backoff(supervision.backoff())
            .registry(registry.clone());

        let (ready_sender, store_ready) = tokio::sync::watch::channel(false);
        let monitor = StoreMonitorArgs {
            store: services.store.clone(),
            ready: Arc::new(ready_sender),
            backoff: supervision.backoff(),
            interval: Duration::from_secs(10),
        };
        root = root.child(
            ChildSpec::actor(STORE, "store", move || (StoreMonitor, monitor.clone()))
                .observed_with::<StoreMonitorMsg>()
                .shutdown(supervision.shutdown_timeout),
        );
        let vault = VaultArgs {
            store: services.store.clone(),
            master: services.master_key,
            previous: services.previous_master_keys,
            store_ready,
            backoff: supervision.backoff(),
            resume_rotation: true,
            rotation_batch: config.vault.rotation_batch as usize,
        };
        root = root.child(
            ChildSpec::actor(VAULT, "vault", move || (CredentialVault, vault.clone()))
                .observed_with::<VaultMsg>()
                .shutdown(supervision.shutdown_timeout),
        );

        for kind in &connectors {
            let mut spec = SupervisorSpec::new(kind.actor_name())
                .kind("connector")
                .strategy(supervision.strategy)
                .intensity(intensity.max_restarts, intensity.window)
                .backoff(supervision.backoff())
                .registry(registry.clone());
            if let Some(reason) = kind.unavailable_reason() {
                warn!(connector = %kind, reason, "connector configured but not available");
                spec = spec.reporter(move |report: &mut HealthReport| {
                    report.status = Status::Stopped;
                    report.last_error = Some(reason.to_string());
                    report.details.insert("available".into(), false.into());
                });
            }
            root = root.child(ChildSpec::supervisor(spec).shutdown(supervision.shutdown_timeout));
        }
        let (root, handle) = SupervisorRef::spawn(root)
            .await
            .map_err(|e| TreeError::Start(e.to_string()))?;
        info!(connectors = connectors.len(), "actor tree started");
        Ok(Self {
            root,
            root_task: tokio::sync::Mutex::new(Some(handle)),
            registry,
            connectors,
            observe_timeout: supervision.observe_timeout,
            store: services.store,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The vault, found by name on every call (it survives the vault's restarts).
    pub fn vault(&self) -> Vault {
        Vault::in_registry(self.registry.clone())
    }

    /// The whole health tree; never waits long on a busy actor.
    pub async fn health(&self) -> HealthReport {
        self.root.observe(self.observe_timeout).await
    }

    pub fn connectors(&self) -> &[ConnectorKind] {
        &self.connectors
    }

    pub fn is_running(&self) -> bool {
        matches!(
            self.root.actor().get_status(),
            ractor::ActorStatus::Running | ractor::ActorStatus::Upgrading
        )
    }

    /// Restarts one connector (and everything under it), nothing else.
    pub async fn restart_connector(&self, name: &str) -> Result<(), TreeError> {
        let kind = ConnectorKind::parse(name)
            .filter(|kind| self.connectors.contains(kind))
            .ok_or_else(|| TreeError::UnknownConnector(name.to_string()))?;
        match self.root.restart_child(&kind.actor_name()).await {
            Ok(()) => Ok(()),
            Err(SupervisorError::UnknownChild(_)) => {
                Err(TreeError::UnknownConnector(name.to_string()))
            }
            Err(_) => Err(TreeError::Unavailable),
        }
    }

    /// Restarts one integration's actor, under whichever connector supervises it.
    pub async fn restart_integration(&self, id: &str) -> Result<(), TreeError> {
        let child = format!("integration:{id}");
        for kind in &self.connectors {
            let Some(actor) = self.registry.lookup::<SupervisorMsg>(&kind.actor_name()) else {
                continue;
            };
            match SupervisorRef::from_actor(actor, kind.actor_name())
                .restart_child(&child)
                .await
            {
                Ok(()) => return Ok(()),
                Err(SupervisorError::UnknownChild(_) | SupervisorError::Unavailable) => continue,
                Err(_) => return Err(TreeError::Unavailable),
            }
        }
        Err(TreeError::UnknownIntegration(id.to_string()))
    }

    /// Resolves when the root supervisor has stopped, for whatever reason.
    pub async fn stopped(&self) {
        let handle = self.root_task.lock().await.take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }

    /// Stops every actor, children before parents and in reverse start order.
    pub async fn stop(&self, timeout: Duration) -> bool {
        self.root.stop(timeout).await
    }
}
