//! Starting the daemon (actor tree, then listeners) and stopping it gracefully
//! (listeners stop accepting and drain, then actors stop in reverse order).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::connectors::{ConnectorSet, slack};
use crate::http::limits::{self, RequestLimits};
use crate::http::server::{self, ConnectionLimits};
use crate::http::{admin, api, webhooks};
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
}

/// A running daemon.
pub struct Daemon {
    pub api_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// GitHub's own webhook listener (`connectors.github.webhook_listen`), if any.
    pub github_webhook_addr: Option<SocketAddr>,
    tree: Arc<ActorTree>,
    shutdown: Shutdown,
    /// The two HTTP servers; each ends once `shutdown` fires and its requests drain.
    servers: Vec<JoinHandle<()>>,
    shutdown_timeout: Duration,
}

impl Daemon {
    /// Builds the actor tree and binds both listeners; serving stops when `shutdown` fires.
    pub async fn start(config: &Config, shutdown: Shutdown) -> Result<Daemon, DaemonError> {
        Self::start_with(config, ConnectorSet::from_config(config), shutdown).await
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
        let github_listen = config
            .connectors
            .github
            .as_ref()
            .and_then(|g| g.webhook_listen);
        let listeners = async {
            let admin = bind("admin", config.admin.listen).await?;
            let api = bind("api", config.server.listen).await?;
            let github = match github_listen {
                Some(addr) => Some(bind("github webhooks", addr).await?),
                None => None,
            };
            Ok::<_, DaemonError>((admin, api, github))
        };
        let (admin_listener, api_listener, github_listener) = match listeners.await {
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
        let ingress = Arc::new(webhooks::IngressState::new(
            Arc::clone(&tree),
            tree.store().clone(),
            config
                .connectors
                .webhook
                .as_ref()
                .map_or(Duration::from_secs(300), |w| w.timestamp_tolerance),
            config
                .connectors
                .github
                .as_ref()
                .and_then(|g| g.webhook_secret.clone()),
            tree.connector(slack::NAME)
                .and_then(crate::connectors::downcast::<slack::SlackConnector>)
                .map(|slack| Arc::clone(slack.shared())),
        ));
        let requests = Arc::new(
            RequestLimits::new(
                config.pipeline.max_body_bytes,
                config.server.body_timeout,
                config.server.max_header_bytes,
                config.server.body_budget_bytes,
                config.server.body_budget_wait,
            )
            .with_precheck(webhooks::precheck(Arc::clone(&ingress))),
        );
        let connections = ConnectionLimits::from_config(&config.server);
        let serve = |what: &'static str, listener: TcpListener, router: axum::Router| {
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
            serve("admin", admin_listener, admin_router),
            serve(
                "api",
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
        let mut github_webhook_addr = None;
        if let Some(listener) = github_listener {
            let addr = local_addr(&listener, github_listen.unwrap_or(config.server.listen));
            github_webhook_addr = Some(addr);
            info!(addr = %addr, "GitHub webhook listener");
            let router = webhooks::github_router(ingress, config.pipeline.max_body_bytes);
            servers.push(serve("github webhooks", listener, router));
        }
        Ok(Daemon {
            api_addr,
            admin_addr,
            github_webhook_addr,
            tree,
            shutdown,
            servers,
            shutdown_timeout: config.server.shutdown_timeout,
        })
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
