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
    ChildSpec, HealthReport, Intensity, ObserveOptions, Registry, Strategy, SupervisorError,
    SupervisorMsg, SupervisorRef, SupervisorSpec,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::cluster::{Cluster, KEEPER, KeeperArgs, KeeperMsg, LeaseKeeper};
use crate::config::Config;
use crate::connectors::{self, Connector, ConnectorSet};
use crate::integration::{
    self, IntegrationArgs, IntegrationMsg, IntegrationServices, VaultCredentials,
};
use crate::pipeline::inbox::{INBOX, InboxActor, InboxArgs, InboxMsg, Intake};
use crate::pipeline::metrics::PipelineMetrics;
use crate::pipeline::routes::{self, HttpForward, RouteSpec, Routes};
use crate::pipeline::tenant_routes::TenantRoutes;
use crate::pipeline::{Consumers, Pipeline};
use crate::store::Store;
use crate::store::events;
use crate::store::integrations::{self as integration_rows, Integration};
use crate::store::monitor::{STORE, StoreMonitor, StoreMonitorArgs, StoreMonitorMsg};
use crate::vault::{CredentialVault, MasterKey, VAULT, Vault, VaultArgs, VaultMsg};

/// How long a route action may take (an `http.forward` request).
const ROUTE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the actors are built from, besides the configuration.
pub struct Services {
    pub store: Store,
    pub master_key: Arc<MasterKey>,
    pub previous_master_keys: Arc<Vec<MasterKey>>,
    pub connectors: ConnectorSet,
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
    /// Every configured or provided connector, available or not, by name.
    connectors: Vec<String>,
    /// The running connectors' shared services, by name.
    services: std::collections::BTreeMap<String, Arc<IntegrationServices>>,
    observe_timeout: Duration,
    store: Store,
    metrics: Arc<PipelineMetrics>,
    intake: Arc<Intake>,
    /// What connectors were handed to reach the daemon; points here once attached.
    daemon_services: Arc<TreeServices>,
    /// Whether the store monitor holds the store ready (migrated and answering).
    store_ready: watch::Receiver<bool>,
    /// Tenant routes: created through the API, stored, and running.
    tenant_routes: Arc<TenantRoutes>,
    /// Cluster mode: this node's leases (`None`: it runs every integration).
    cluster: Option<Arc<Cluster>>,
    /// Where the lease keeper finds this tree once it is shared.
    keeper_tree: Arc<std::sync::OnceLock<std::sync::Weak<ActorTree>>>,
}

/// The daemon as connectors see it (a chat bot's `status` and `restart`). It holds
/// the tree weakly: connectors live inside the tree.
#[derive(Default)]
pub struct TreeServices {
    tree: std::sync::OnceLock<std::sync::Weak<ActorTree>>,
}

impl TreeServices {
    fn tree(&self) -> Result<Arc<ActorTree>, String> {
        self.tree
            .get()
            .and_then(std::sync::Weak::upgrade)
            .ok_or_else(|| "the daemon is not running".to_string())
    }
}

/// How long a restart asked for by a connector waits, so that the event that asked
/// is recorded as handled before its own connector goes down.
const REQUESTED_RESTART_DELAY: Duration = Duration::from_secs(2);

#[async_trait::async_trait]
impl connectors::DaemonServices for TreeServices {
    async fn integrations(
        &self,
        organization_id: &str,
    ) -> Result<Vec<connectors::IntegrationLine>, String> {
        let tree = self.tree()?;
        let found = integration_rows::list(&tree.store, organization_id, None)
            .await
            .map_err(|e| e.to_string())?;
        let mut lines = Vec::new();
        for integration in found
            .into_iter()
            .filter(|i| i.status != integration_rows::STATUS_REVOKED)
        {
            let health = tree
                .integration_health(&integration.connector_type, &integration.id)
                .await
                .map(|report| report.status.to_string());
            lines.push(connectors::IntegrationLine {
                connector: integration.connector_type,
                status: integration.status,
                account: integration.external_id,
                health,
            });
        }
        Ok(lines)
    }

    async fn restart_connector(&self, name: &str, by: &str) -> Result<(), String> {
        let tree = self.tree()?;
        if !tree.connectors.iter().any(|c| c == name) {
            return Err(format!("no connector named '{name}'"));
        }
        let (name, by) = (name.to_string(), by.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(REQUESTED_RESTART_DELAY).await;
            if let Err(error) = tree.restart_connector(&name, &by).await {
                warn!(connector = %name, error = %error, "requested restart failed");
            }
        });
        Ok(())
    }

    async fn operate(
        &self,
        operation: &connectors::Operation,
    ) -> Result<connectors::Operated, connectors::ConnectorError> {
        let tree = self
            .tree()
            .map_err(connectors::ConnectorError::Unavailable)?;
        let connector = operation
            .name
            .split_once('.')
            .and_then(|(connector, _)| tree.services.get(connector))
            .ok_or_else(|| {
                connectors::ConnectorError::Invalid(format!(
                    "no running connector offers '{}'",
                    operation.name
                ))
            })?;
        connector.connector.operate(operation).await
    }
}

impl ActorTree {
    /// Lets connectors reach the daemon (call once the tree is shared).
    pub fn attach(self: &Arc<Self>) {
        let _ = self.daemon_services.tree.set(Arc::downgrade(self));
        let _ = self.keeper_tree.set(Arc::downgrade(self));
    }

    pub async fn start(config: &Config, services: Services) -> Result<Self, TreeError> {
        let registry = Registry::unique();
        let supervision = &config.supervision;
        let intensity = Intensity {
            max_restarts: supervision.max_restarts,
            window: supervision.window,
        };
        let mut root = SupervisorSpec::new("root")
            .strategy(Strategy::OneForOne)
            .intensity(intensity.max_restarts, intensity.window)
            .backoff(supervision.backoff())
            .registry(registry.clone());

        let intake = Arc::new(Intake::new(registry.clone()));
        let (ready_sender, store_ready) = watch::channel(false);
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
        let vault_args = VaultArgs {
            store: services.store.clone(),
            master: services.master_key,
            previous: services.previous_master_keys,
            store_ready: store_ready.clone(),
            backoff: supervision.backoff(),
            resume_rotation: true,
            rotation_batch: config.vault.rotation_batch as usize,
            // Several nodes: a data key rotated on one is followed by every other
            // before its next encryption, not up to a second later.
            active_key_check: if config.cluster.is_some() {
                Duration::ZERO
            } else {
                crate::vault::ACTIVE_KEY_CHECK
            },
        };
        root = root.child(
            ChildSpec::actor(VAULT, "vault", move || {
                (CredentialVault, vault_args.clone())
            })
            .observed_with::<VaultMsg>()
            .shutdown(supervision.shutdown_timeout),
        );

        let cluster = config
            .cluster
            .as_ref()
            .filter(|_| services.store.backend() == crate::store::Backend::Postgres)
            .map(|settings| Arc::new(Cluster::new(settings, services.store.clone())));
        if let Some(cluster) = &cluster {
            info!(node_id = %cluster.node_id, lease_ttl = ?cluster.lease_ttl, "cluster mode: integrations run where their lease is held");
        }
        let metrics = Arc::new(PipelineMetrics::default());
        let action_kinds = services
            .connectors
            .action_kinds(Arc::new(HttpForward::new(ROUTE_TIMEOUT)));
        let mut operator_routes = Vec::new();
        let mut problems = Vec::new();
        for (index, route) in config.routes.iter().enumerate() {
            match routes::prepare(&action_kinds, &route.action, &route.action_settings()) {
                Ok(action) => operator_routes.push(RouteSpec {
                    id: None,
                    organization_id: route.organization_id.clone(),
                    connector: route.connector.clone(),
                    event_type: route.event_type.clone(),
                    action,
                }),
                Err(found) => problems.extend(
                    found
                        .into_iter()
                        .map(|p| format!("routes[{index}].{}: {}", p.key, p.message)),
                ),
            }
        }
        if !problems.is_empty() {
            return Err(TreeError::Start(problems.join("; ")));
        }
        let routes = Arc::new(Routes::new(
            operator_routes,
            &config.circuit_breaker,
            Arc::new(services.connectors.clone()),
        ));
        let inbox = InboxArgs {
            store: services.store.clone(),
            intake: Arc::clone(&intake),
            max_batch: config.pipeline.max_batch,
            batch_delay: config.pipeline.batch_delay,
            registry: registry.clone(),
            metrics: Arc::clone(&metrics),
            consumers: Arc::new(Consumers {
                handlers: Arc::new(services.connectors.clone()),
                routes: Arc::clone(&routes),
            }),
            store_ready: store_ready.clone(),
            cluster: cluster.clone(),
        };
        root = root.child(
            ChildSpec::actor(INBOX, "inbox", move || (InboxActor, inbox.clone()))
                .observed_with::<InboxMsg>()
                .shutdown(supervision.shutdown_timeout),
        );
        let pipeline = Arc::new(Pipeline {
            store: services.store.clone(),
            intake: Arc::clone(&intake),
            registry: registry.clone(),
            routes,
            retry: switchboard_actors::Backoff::new(
                config.pipeline.retry_base,
                config.pipeline.retry_cap,
            ),
            max_attempts: config.pipeline.max_attempts,
            metrics: Arc::clone(&metrics),
        });

        let vault = Vault::in_registry(registry.clone());
        let daemon_services = Arc::new(TreeServices::default());
        let credentials = Arc::new(VaultCredentials {
            store: services.store.clone(),
            vault: vault.clone(),
            cluster: cluster.clone(),
        });
        let context = connectors::ConnectorContext {
            store: services.store.clone(),
            credentials: Arc::clone(&credentials) as Arc<dyn integration::CredentialStore>,
            intake: Arc::clone(&intake),
            daemon: Arc::clone(&daemon_services) as Arc<dyn connectors::DaemonServices>,
        };
        let mut names = Vec::new();
        let mut running = std::collections::BTreeMap::new();
        for connector in services.connectors.iter() {
            connector.attach(&context);
            let shared = Arc::new(IntegrationServices {
                connector: Arc::clone(connector),
                credentials: Arc::clone(&credentials) as _,
                breaker: config.circuit_breaker.clone(),
                refresh_margin: config.integrations.refresh_margin,
                refresh_attempts: config.integrations.refresh_attempts,
                backoff: supervision.backoff(),
                validation_spread: config.integrations.validation_spread,
                pipeline: Some(Arc::clone(&pipeline)),
                poll_interval: services
                    .connectors
                    .settings(connector.name())
                    .poll_interval
                    .unwrap_or(connectors::DEFAULT_POLL_INTERVAL),
                cluster: cluster.clone(),
            });
            let mut spec = connector_supervisor(
                connector.as_ref(),
                &shared,
                &services.store,
                store_ready.clone(),
            );
            // The connector's own actors (a socket client) start first.
            for child in connector.actors(&context) {
                spec = spec.child(child);
            }
            let spec = spec
                .strategy(supervision.strategy)
                .intensity(intensity.max_restarts, intensity.window)
                .backoff(supervision.backoff())
                .registry(registry.clone());
            root = root.child(ChildSpec::supervisor(spec).shutdown(supervision.shutdown_timeout));
            names.push(connector.name().to_string());
            running.insert(connector.name().to_string(), shared);
        }

        // Last, so that it stops first: its integration actors stop and their leases
        // are handed back while the rest of the tree still runs.
        let keeper_tree = Arc::new(std::sync::OnceLock::new());
        if let Some(cluster) = &cluster {
            let args = KeeperArgs {
                cluster: Arc::clone(cluster),
                tree: Arc::clone(&keeper_tree),
                store_ready: store_ready.clone(),
                version: env!("CARGO_PKG_VERSION"),
            };
            root = root.child(
                ChildSpec::actor(KEEPER, "cluster", move || (LeaseKeeper, args.clone()))
                    .observed_with::<KeeperMsg>()
                    .shutdown(supervision.shutdown_timeout),
            );
        }

        let tenant_routes = Arc::new(TenantRoutes::new(
            services.store.clone(),
            Vault::in_registry(registry.clone()),
            action_kinds,
            Arc::clone(&pipeline.routes),
        ));
        if cluster.is_some() {
            tenant_routes.announce_changes();
        }
        load_tenant_routes(&tenant_routes, store_ready.clone(), supervision.backoff());

        let (root, handle) = SupervisorRef::spawn(root)
            .await
            .map_err(|e| TreeError::Start(e.to_string()))?;
        info!(connectors = names.len(), "actor tree started");
        Ok(Self {
            root,
            root_task: tokio::sync::Mutex::new(Some(handle)),
            registry,
            connectors: names,
            services: running,
            observe_timeout: supervision.observe_timeout,
            store: services.store,
            metrics,
            intake,
            daemon_services,
            store_ready,
            tenant_routes,
            cluster,
            keeper_tree,
        })
    }

    /// Cluster mode's view of this node, if it is on.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Resolves once the store is migrated and the vault has its keys: the daemon is
    /// ready for its first request (for the one "ready" line of the log).
    pub async fn wait_ready(&self) {
        let mut store_ready = self.store_ready.clone();
        if store_ready.wait_for(|ready| *ready).await.is_err() {
            return;
        }
        let vault = self.vault();
        loop {
            match vault.ready(Duration::from_secs(60)).await {
                Ok(_) => return,
                // Sealed, it never will be: the vault said why in the log.
                Err(crate::vault::VaultError::Sealed(_)) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// The tenant routes, for the tenant API.
    pub fn tenant_routes(&self) -> &Arc<TenantRoutes> {
        &self.tenant_routes
    }

    pub fn pipeline_metrics(&self) -> &PipelineMetrics {
        &self.metrics
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Where ingress hands events to the inbox.
    pub fn intake(&self) -> &Intake {
        &self.intake
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The vault, found by name on every call (it survives the vault's restarts).
    pub fn vault(&self) -> Vault {
        Vault::in_registry(self.registry.clone())
    }

    /// The health tree, listing what `options` select (a page of a large connector).
    pub async fn health_with(&self, options: ObserveOptions) -> HealthReport {
        let mut report = self.root.observe_with(self.observe_timeout, options).await;
        if let Some(cluster) = &self.cluster {
            // Any node answers: say which one this tree is.
            report
                .details
                .insert("node_id".into(), cluster.node_id.clone().into());
        }
        report
    }

    /// One connector's subtree, without observing the other connectors.
    pub async fn connector_health(
        &self,
        name: &str,
        options: ObserveOptions,
    ) -> Option<HealthReport> {
        self.root
            .observe_child(&connectors::actor_name(name), self.observe_timeout, options)
            .await
    }

    pub fn connectors(&self) -> &[String] {
        &self.connectors
    }

    pub fn is_running(&self) -> bool {
        matches!(
            self.root.actor().get_status(),
            ractor::ActorStatus::Running | ractor::ActorStatus::Upgrading
        )
    }

    /// Restarts one connector (and everything under it), nothing else.
    /// Restarts one connector and its integrations; `by` says who asked (for the log).
    pub async fn restart_connector(&self, name: &str, by: &str) -> Result<(), TreeError> {
        if !self.connectors.iter().any(|c| c == name) {
            return Err(TreeError::UnknownConnector(name.to_string()));
        }
        match self.root.restart_child(&connectors::actor_name(name)).await {
            Ok(()) => {
                info!(connector = name, by, "connector restarted");
                Ok(())
            }
            Err(SupervisorError::UnknownChild(_)) => {
                Err(TreeError::UnknownConnector(name.to_string()))
            }
            Err(_) => Err(TreeError::Unavailable),
        }
    }

    fn connector_supervisor(&self, name: &str) -> Option<SupervisorRef> {
        let actor_name = connectors::actor_name(name);
        self.registry
            .lookup::<SupervisorMsg>(&actor_name)
            .map(|actor| SupervisorRef::from_actor(actor, actor_name))
    }

    /// Cluster mode: asks the node that runs `id` to restart it (told through the
    /// store): that node's id.
    pub async fn carry_restart(&self, id: &str) -> Result<String, TreeError> {
        let unknown = || TreeError::UnknownIntegration(id.to_string());
        if self.cluster.is_none() {
            return Err(unknown());
        }
        let owner = crate::store::cluster::owner(&self.store, id)
            .await
            .map_err(|_| TreeError::Unavailable)?
            .filter(|owner| owner.held)
            .and_then(|owner| owner.node_id)
            .ok_or_else(unknown)?;
        crate::store::cluster::notify_channel(
            &self.store,
            crate::cluster::CONTROL_CHANNEL,
            &format!("restart {id}"),
        )
        .await
        .map_err(|_| TreeError::Unavailable)?;
        Ok(owner)
    }

    /// Restarts one integration's actor on this node, under whichever connector
    /// supervises it.
    pub async fn restart_integration(&self, id: &str, by: &str) -> Result<(), TreeError> {
        let child = integration::actor_name(id);
        for name in self.services.keys() {
            let Some(supervisor) = self.connector_supervisor(name) else {
                continue;
            };
            match supervisor.restart_child(&child).await {
                Ok(()) => {
                    info!(integration_id = id, by, "integration actor restarted");
                    return Ok(());
                }
                Err(SupervisorError::UnknownChild(_) | SupervisorError::Unavailable) => continue,
                Err(_) => return Err(TreeError::Unavailable),
            }
        }
        Err(TreeError::UnknownIntegration(id.to_string()))
    }

    /// The connector named `name`, if this daemon runs it.
    pub fn connector(&self, name: &str) -> Option<&Arc<dyn Connector>> {
        self.services.get(name).map(|s| &s.connector)
    }

    /// Runs a newly authorized integration: here, or in cluster mode wherever its lease
    /// is claimed (every node is told at once).
    pub async fn add_integration(
        &self,
        integration: Integration,
        expires_at: Option<chrono::NaiveDateTime>,
    ) -> Result<(), TreeError> {
        if self.cluster.is_some() {
            return self.rebalance().await;
        }
        self.add_integration_here(integration, expires_at).await
    }

    /// Cluster mode: gives new integrations their lease rows and drops revoked ones',
    /// and asks every node to take or stop what is now theirs.
    async fn rebalance(&self) -> Result<(), TreeError> {
        let failed = |error: crate::store::StoreError| {
            warn!(error = %error, "cluster rebalance not announced: the nodes' next renewal does it");
            TreeError::Unavailable
        };
        crate::store::cluster::sync_leases(&self.store)
            .await
            .map_err(failed)?;
        crate::store::cluster::notify_channel(
            &self.store,
            crate::store::cluster::LEASES_CHANNEL,
            "rebalance",
        )
        .await
        .map_err(failed)
    }

    /// Starts an integration's actor on this node, touching nothing else.
    pub async fn add_integration_here(
        &self,
        integration: Integration,
        expires_at: Option<chrono::NaiveDateTime>,
    ) -> Result<(), TreeError> {
        let name = integration.connector_type.clone();
        let services = self
            .services
            .get(&name)
            .ok_or_else(|| TreeError::UnknownConnector(name.clone()))?;
        let supervisor = self
            .connector_supervisor(&name)
            .ok_or(TreeError::Unavailable)?;
        let child = integration::child_spec(IntegrationArgs {
            integration,
            expires_at,
            services: Arc::clone(services),
        });
        match supervisor.add_child(child).await {
            // Already running (loaded from the store meanwhile): nothing to do.
            Ok(()) | Err(SupervisorError::DuplicateChild(_)) => Ok(()),
            Err(_) => Err(TreeError::Unavailable),
        }
    }

    /// Stops an integration's actor after a revocation: here, and in cluster mode on
    /// whichever node runs it.
    pub async fn remove_integration(&self, connector: &str, id: &str) -> Result<(), TreeError> {
        self.remove_integration_here(connector, id).await?;
        if self.cluster.is_some() {
            self.rebalance().await?;
        }
        Ok(())
    }

    /// Stops and removes an integration's actor on this node.
    pub async fn remove_integration_here(
        &self,
        connector: &str,
        id: &str,
    ) -> Result<(), TreeError> {
        let supervisor = self
            .connector_supervisor(connector)
            .ok_or(TreeError::Unavailable)?;
        match supervisor.remove_child(&integration::actor_name(id)).await {
            Ok(()) | Err(SupervisorError::UnknownChild(_)) => Ok(()),
            Err(_) => Err(TreeError::Unavailable),
        }
    }

    /// One integration as the tree shows it (its supervisor's view merged with its own).
    pub async fn integration_node(&self, id: &str) -> Option<HealthReport> {
        let child = integration::actor_name(id);
        for name in self.services.keys() {
            let Some(supervisor) = self.connector_supervisor(name) else {
                continue;
            };
            if let Some(node) = supervisor
                .observe_child(&child, self.observe_timeout, ObserveOptions::default())
                .await
            {
                return Some(node);
            }
        }
        None
    }

    /// The live report of one integration's actor, as its connector's supervisor
    /// gives it (with its restarts and actor id: the same report as `/admin/actors`),
    /// without walking the whole tree.
    pub async fn integration_health(&self, connector: &str, id: &str) -> Option<HealthReport> {
        self.connector_supervisor(connector)?
            .observe_child(
                &integration::actor_name(id),
                self.observe_timeout,
                ObserveOptions::default(),
            )
            .await
    }

    /// Tells an integration's actor it has events to process: here, or in cluster
    /// mode on the node that runs it.
    pub fn wake_integration(&self, id: &str) {
        if !self.wake_here(id)
            && let Some(cluster) = &self.cluster
        {
            cluster.wake_elsewhere(id);
        }
    }

    /// Wakes an integration's actor if it runs on this node: whether it does.
    pub fn wake_here(&self, id: &str) -> bool {
        match self
            .registry
            .lookup::<IntegrationMsg>(&integration::actor_name(id))
        {
            Some(actor) => {
                let _ = actor.send_message(IntegrationMsg::ProcessEvents);
                true
            }
            None => false,
        }
    }

    /// Asks an integration's actor to validate its credentials now.
    pub async fn validate_integration(&self, id: &str) -> Option<Result<(), String>> {
        let actor = self
            .registry
            .lookup::<IntegrationMsg>(&integration::actor_name(id))?;
        match actor
            .call(
                |reply| IntegrationMsg::Validate(Some(reply)),
                Some(Duration::from_secs(30)),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(outcome)) => Some(outcome),
            _ => None,
        }
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

/// How often tenant routes are loaded again, for those created on another node.
const TENANT_ROUTES_EVERY: Duration = Duration::from_secs(30);

/// Loads the tenant routes once the store is ready (retrying with backoff until it
/// works: events wait for them), then again every [`TENANT_ROUTES_EVERY`] while the
/// tree lives.
fn load_tenant_routes(
    routes: &Arc<TenantRoutes>,
    mut store_ready: watch::Receiver<bool>,
    backoff: switchboard_actors::Backoff,
) {
    let routes = Arc::downgrade(routes);
    tokio::spawn(async move {
        if store_ready.wait_for(|ready| *ready).await.is_err() {
            return;
        }
        let mut failures = 0;
        loop {
            let Some(tenant_routes) = routes.upgrade() else {
                return;
            };
            let wait = match tenant_routes.reload().await {
                Ok(()) => {
                    failures = 0;
                    TENANT_ROUTES_EVERY
                }
                Err(error) => {
                    warn!(error = %error, "tenant routes not loaded: trying again");
                    failures += 1;
                    backoff.delay(failures)
                }
            };
            drop(tenant_routes);
            tokio::time::sleep(wait).await;
        }
    });
}

/// A connector's supervisor: it loads the connector's live integrations from the store
/// (once the store is ready, in the background) and runs one actor for each.
fn connector_supervisor(
    connector: &dyn Connector,
    services: &Arc<IntegrationServices>,
    store: &Store,
    store_ready: watch::Receiver<bool>,
) -> SupervisorSpec {
    let name = connector.name().to_string();
    let (services, store) = (Arc::clone(services), store.clone());
    SupervisorSpec::new(connectors::actor_name(&name))
        .kind("connector")
        .loader(move || {
            let (services, store, name, mut store_ready) = (
                Arc::clone(&services),
                store.clone(),
                name.clone(),
                store_ready.clone(),
            );
            async move {
                store_ready.wait_for(|ready| *ready).await?;
                let buried = events::bury_orphans(&store, &name).await?;
                if buried > 0 {
                    warn!(connector = %name, events = buried, "pending events of integrations that are gone are now dead");
                }
                let mut live = integration_rows::live_with_expiry(&store, &name).await?;
                if let Some(cluster) = &services.cluster {
                    // Cluster mode: only what this node holds a lease on (none at
                    // first: the lease keeper starts what it claims).
                    let held = cluster.held_for(&name);
                    live.retain(|(integration, _)| held.contains(&integration.id));
                }
                Ok(live
                    .into_iter()
                    .map(|(integration, expires_at)| {
                        integration::child_spec(IntegrationArgs {
                            integration,
                            expires_at,
                            services: Arc::clone(&services),
                        })
                    })
                    .collect())
            }
        })
}
