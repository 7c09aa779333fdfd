//! Starting the daemon (actor tree, then listeners) and stopping it gracefully
//! (listeners stop accepting and drain, then actors stop in reverse order).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use std::collections::BTreeMap;

use crate::config::Config;
use crate::connectors::ConnectorSet;
use crate::http::limits::{self, RequestLimits};
use crate::http::server::{self, ConnectionLimits};
use crate::http::{admin, api, ingress};
use crate::problem::Problem;
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError};
use crate::tree::{ActorTree, Services, TreeError};
use crate::vault::{self, VaultError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the root supervisor stopped unexpectedly: restart intensity exhausted")]
    RootStopped,
    #[error("the configuration has {} problem(s): {}", .0.len(), .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Config(Vec<Problem>),
}

/// A running daemon.
pub struct Daemon {
    pub api_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Connectors' own webhook listeners (`connectors.<name>.webhook_listen`), by name.
    pub webhook_addrs: BTreeMap<String, SocketAddr>,
    tree: Arc<ActorTree>,
    shutdown: Shutdown,
    /// The two HTTP servers; each ends once `shutdown` fires and its requests drain.
    servers: Vec<JoinHandle<()>>,
    shutdown_timeout: Duration,
}

impl Daemon {
    /// Builds the actor tree and binds both listeners; serving stops when `shutdown` fires.
    pub async fn start(config: &Config, shutdown: Shutdown) -> Result<Daemon, DaemonError> {
        let connectors =
            ConnectorSet::from_sections(&config.connectors).map_err(DaemonError::Config)?;
        Self::start_with(config, connectors, shutdown).await
    }

    /// As [`Daemon::start`], with the given connectors (tests and embedders add their own).
    pub async fn start_with(
        config: &Config,
        connectors: ConnectorSet,
        shutdown: Shutdown,
    ) -> Result<Daemon, DaemonError> {
        crate::install_crypto_provider();
        raise_open_files_limit();
        let store = Store::connect(&config.database)?;
        let own_listeners: Vec<(String, SocketAddr)> = connectors
            .names()
            .filter_map(|name| Some((name.to_string(), connectors.settings(name).webhook_listen?)))
            .collect();
        let ingress_connectors = connectors.clone();
        let services = Services {
            connectors,
            master_key: Arc::new(vault::resolve_master_key(&config.vault, &store.data_dir())?),
            previous_master_keys: Arc::new(vault::previous_master_keys(&config.vault)?),
            store,
        };
        let tree = Arc::new(ActorTree::start(config, services).await?);
        tree.attach();
        let bind = |what: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Bind { what, addr, source })
        };
        let listeners = async {
            let admin = bind("admin", config.admin.listen).await?;
            let api = bind("api", config.server.listen).await?;
            let mut own = Vec::new();
            for (name, addr) in &own_listeners {
                own.push((name.clone(), bind("connector webhooks", *addr).await?));
            }
            Ok::<_, DaemonError>((admin, api, own))
        };
        let (admin_listener, api_listener, own_listeners) = match listeners.await {
            Ok(listeners) => listeners,
            Err(error) => {
                tree.stop(config.server.shutdown_timeout).await;
                return Err(error);
            }
        };
        let admin_addr = local_addr(&admin_listener, config.admin.listen);
        let api_addr = local_addr(&api_listener, config.server.listen);

        let admin_router = admin::router(Arc::new(admin::AdminState {
            tree: Arc::clone(&tree),
            token: config.admin.token.clone(),
            rotation: admin::RotationState::default(),
            rotation_batch: config.vault.rotation_batch as usize,
        }));
        let ingress = Arc::new(ingress::Ingress::new(
            Arc::clone(&tree),
            &ingress_connectors,
        ));
        let requests = Arc::new(
            RequestLimits::new(
                config.pipeline.max_body_bytes,
                config.server.body_timeout,
                config.server.max_header_bytes,
                config.server.body_budget_bytes,
                config.server.body_budget_wait,
            )
            .with_precheck(ingress.precheck()),
        );
        let connections = ConnectionLimits::from_config(&config.server);
        let serve = |what: String, listener: TcpListener, router: axum::Router| {
            let router = router
                .layer(axum::middleware::from_fn_with_state(
                    Arc::clone(&requests),
                    limits::guard,
                ))
                .layer(axum::middleware::from_fn(limits::json_errors));
            server::serve(
                what,
                listener,
                router,
                connections.clone(),
                shutdown.clone(),
            )
        };
        let mut servers = vec![
            serve("admin".into(), admin_listener, admin_router),
            serve(
                "api".into(),
                api_listener,
                api::router(Arc::new(api::ApiState {
                    ingress: Arc::clone(&ingress),
                    max_body_bytes: config.pipeline.max_body_bytes,
                    tree: Arc::clone(&tree),
                    store: tree.store().clone(),
                    public_url: config
                        .integrations
                        .public_url
                        .clone()
                        .unwrap_or_else(|| public_url_of(api_addr)),
                    state_ttl: config.integrations.state_ttl,
                })),
            ),
        ];
        info!(addr = %admin_addr, authenticated = config.admin.token.is_some(), "admin endpoint listening");
        info!(addr = %api_addr, "api listening");
        let ready_tree = Arc::clone(&tree);
        tokio::spawn(async move {
            ready_tree.wait_ready().await;
            info!(api = %api_addr, admin = %admin_addr, "ready");
        });
        let mut webhook_addrs = BTreeMap::new();
        for (name, listener) in own_listeners {
            let addr = local_addr(&listener, config.server.listen);
            info!(connector = %name, addr = %addr, "connector webhook listener");
            let router = ingress.router(Some(&name), config.pipeline.max_body_bytes);
            servers.push(serve(format!("{name} webhooks"), listener, router));
            webhook_addrs.insert(name, addr);
        }
        Ok(Daemon {
            api_addr,
            admin_addr,
            webhook_addrs,
            tree,
            shutdown,
            servers,
            shutdown_timeout: config.server.shutdown_timeout,
        })
    }

    /// The address of a connector's own webhook listener, if it has one.
    pub fn webhook_addr(&self, connector: &str) -> Option<SocketAddr> {
        self.webhook_addrs.get(connector).copied()
    }

    pub fn tree(&self) -> &ActorTree {
        &self.tree
    }

    /// Runs until shutdown is triggered (or the root supervisor gives up), then stops
    /// gracefully within the configured timeout.
    pub async fn run_until_shutdown(self) -> Result<(), DaemonError> {
        let root_gave_up = tokio::select! {
            _ = self.shutdown.wait() => false,
            _ = self.tree.stopped() => true,
        };
        if root_gave_up {
            error!("root supervisor stopped: shutting down");
            self.shutdown.trigger();
        }
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        for server in self.servers {
            if tokio::time::timeout_at(deadline, server).await.is_err() {
                warn!("http server did not drain in time");
            }
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !root_gave_up
            && !self
                .tree
                .stop(remaining.max(Duration::from_millis(100)))
                .await
        {
            warn!("actors did not all stop in time");
        }
        info!("stopped");
        if root_gave_up {
            Err(DaemonError::RootStopped)
        } else {
            Ok(())
        }
    }
}

/// The API's own address as a URL, when `integrations.public_url` is not set: an
/// address bound to every interface is reached on loopback from here.
fn public_url_of(mut addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}")
}

fn local_addr(listener: &TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}

/// Raises the soft limit of open files to the hard one, as Go's runtime does: every
/// connection is a file, and the common default of 1,024 would let a thousand idle
/// sockets starve the daemon (its store, its providers) of descriptors.
pub fn raise_open_files_limit() {
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let soft = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max.min(1 << 20);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            info!(
                from = soft,
                to = limit.rlim_cur,
                "raised the open files limit"
            );
        }
    }
}

/// Runs the daemon until `shutdown` fires.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), DaemonError> {
    Daemon::start(&config, shutdown)
        .await?
        .run_until_shutdown()
        .await
}
