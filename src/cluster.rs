//! Cluster mode: several nodes on one PostgreSQL, each integration's actor run by the
//! one node that holds its lease (see [`crate::store::cluster`] for the lease table).
//!
//! - [`ClusterConfig`]: `[cluster]`; present with a PostgreSQL store, cluster mode is
//!   on. Without it a node runs every integration, as it always did.
//! - [`Cluster`]: this node's view, shared by the tree, the integration actors, the
//!   vault's credential writes and the HTTP layer: which leases it holds and at which
//!   epoch (the fence of every write that matters), and how to wake an integration
//!   whose actor runs on another node.
//! - [`LeaseKeeper`]: the actor that heartbeats, renews, claims up to a fair share,
//!   hands back what is over it, starts and stops integration actors accordingly, and
//!   listens for the other nodes' `NOTIFY`s. Stopped gracefully, it stops its
//!   integration actors and hands their leases back at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use switchboard_actors::{HealthReport, Status};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::problem::Problem;
use crate::store::cluster::{self as leases, Fence, LEASES_CHANNEL};
use crate::store::{Store, integrations};
use crate::tree::ActorTree;

/// The channel a node `NOTIFY`s with the integrations it stored events for, so that
/// their owners process them at once.
pub const EVENTS_CHANNEL: &str = "switchboard_events";
/// The channel that carries an admin's request to the node that runs the integration
/// (`restart <integration id>`).
pub const CONTROL_CHANNEL: &str = "switchboard_control";
/// What [`CONTROL_CHANNEL`] carries when tenant routes changed: every node reloads.
pub const ROUTES_CHANGED: &str = "routes";
/// The keeper's name in the tree.
pub const KEEPER: &str = "cluster";
/// Leases a node may hold over its fair share before it hands some back (so that a
/// node one over does not shed and claim back and forth).
const LEEWAY: i64 = 1;

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's name among the others: the host name, the process id and a random
    /// suffix unless set.
    pub node_id: Option<String>,
    /// How long a lease (and a node's heartbeat) lasts without renewal: how long a
    /// node that died keeps its integrations from the others.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How often leases are renewed; a third of `lease_ttl` unless set.
    #[serde(default, with = "humantime_serde")]
    pub renew_every: Option<Duration>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: None,
            lease_ttl: Duration::from_secs(15),
            renew_every: None,
        }
    }
}

impl ClusterConfig {
    pub fn renew_every(&self) -> Duration {
        self.renew_every.unwrap_or(self.lease_ttl / 3)
    }

    /// Its problems, given the store's URL.
    pub fn problems(&self, database_url: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        if !database_url.starts_with("postgres") {
            problems.push(Problem::new(
                "cluster",
                "cluster mode needs a PostgreSQL store (database.url = \"postgres://...\"): \
                 the nodes coordinate through it, and a SQLite file belongs to one node",
            ));
        }
        if self.lease_ttl < Duration::from_secs(1) {
            problems.push(Problem::new("cluster.lease_ttl", "must be at least 1s"));
        }
        let renew = self.renew_every();
        if renew.is_zero() || renew >= self.lease_ttl {
            problems.push(Problem::new(
                "cluster.renew_every",
                format!(
                    "must be longer than zero and shorter than lease_ttl ({:?})",
                    self.lease_ttl
                ),
            ));
        }
        if let Some(id) = &self.node_id
            && (id.trim().is_empty() || id.len() > 200)
        {
            problems.push(Problem::new(
                "cluster.node_id",
                "must be 1 to 200 characters",
            ));
        }
        problems
    }

    /// The node id: the configured one, or host-pid-random.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .or_else(|_| std::fs::read_to_string("/etc/hostname"))
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "node".into());
            format!(
                "{host}-{}-{:04x}",
                std::process::id(),
                rand::random::<u16>()
            )
        })
    }
}

/// This node's place in the cluster.
pub struct Cluster {
    pub node_id: String,
    pub lease_ttl: Duration,
    pub renew_every: Duration,
    store: Store,
    /// The leases held: integration → (connector, epoch).
    held: Mutex<BTreeMap<String, (String, i64)>>,
    /// Integrations to wake on whichever node owns them, batched into one `NOTIFY`.
    wake: mpsc::UnboundedSender<String>,
    wake_queue: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    /// Writes refused because the lease had moved on.
    pub fenced_writes: AtomicU64,
    /// Leases lost to another node (expired under this one).
    pub leases_lost: AtomicU64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    pub fn new(config: &ClusterConfig, store: Store) -> Self {
        let (wake, queue) = mpsc::unbounded_channel();
        Self {
            node_id: config.node_id(),
            lease_ttl: config.lease_ttl,
            renew_every: config.renew_every(),
            store,
            held: Mutex::default(),
            wake,
            wake_queue: Mutex::new(Some(queue)),
            fenced_writes: AtomicU64::new(0),
            leases_lost: AtomicU64::new(0),
        }
    }

    /// The fence of a write for `integration_id`: this node and the lease's epoch, if
    /// this node holds it.
    pub fn fence(&self, integration_id: &str) -> Option<i64> {
        crate::lock(&self.held)
            .get(integration_id)
            .map(|(_, epoch)| *epoch)
    }

    /// The store-level fence for `epoch`.
    pub fn fence_of(&self, epoch: i64) -> Fence<'_> {
        Fence {
            node_id: &self.node_id,
            epoch,
        }
    }

    /// The integrations of `connector` whose leases this node holds.
    pub fn held_for(&self, connector: &str) -> Vec<String> {
        crate::lock(&self.held)
            .iter()
            .filter(|(_, (of, _))| of == connector)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn held(&self) -> usize {
        crate::lock(&self.held).len()
    }

    /// A write was refused: its lease moved on.
    pub fn fenced(&self, integration_id: &str) {
        self.fenced_writes.fetch_add(1, Ordering::Relaxed);
        warn!(integration_id, node_id = %self.node_id, "write refused: this node's lease on the integration moved on");
    }

    /// Asks the owner of `integration_id` (another node) to process its events.
    pub fn wake_elsewhere(&self, integration_id: &str) {
        let _ = self.wake.send(integration_id.to_string());
    }
}

pub enum KeeperMsg {
    /// Heartbeat, renew, rebalance; then the next one in `renew_every`.
    Tick,
    /// Another node handed leases back or the integrations changed: a round now,
    /// outside the schedule.
    Nudge,
    Observe(RpcReplyPort<HealthReport>),
}

switchboard_actors::observable!(KeeperMsg::Observe);

#[derive(Clone)]
pub struct KeeperArgs {
    pub cluster: Arc<Cluster>,
    /// The tree whose connector supervisors run the integration actors (set once the
    /// tree is built).
    pub tree: Arc<OnceLock<Weak<ActorTree>>>,
    pub store_ready: watch::Receiver<bool>,
    pub version: &'static str,
}

pub struct LeaseKeeper;

pub struct KeeperState {
    args: KeeperArgs,
    last_error: Option<String>,
    listener: Option<tokio::task::JoinHandle<()>>,
    notifier: Option<tokio::task::JoinHandle<()>>,
}

impl KeeperState {
    fn tree(&self) -> Option<Arc<ActorTree>> {
        self.args.tree.get().and_then(Weak::upgrade)
    }

    /// One round: heartbeat, renew (stopping what was lost), then take or hand back
    /// leases towards the fair share, and wake every local actor (the sweep behind
    /// the `NOTIFY`s).
    async fn tick(&mut self) -> Result<(), String> {
        let cluster = Arc::clone(&self.args.cluster);
        let store = &cluster.store;
        let node = cluster.node_id.as_str();
        let ttl = cluster.lease_ttl;
        let failed = |e: crate::store::StoreError| e.to_string();
        leases::heartbeat(store, node, self.args.version, ttl)
            .await
            .map_err(failed)?;
        let live = leases::sync_leases(store).await.map_err(failed)?;
        let renewed = leases::renew(store, node, ttl).await.map_err(failed)?;
        let still: HashMap<&str, i64> = renewed
            .iter()
            .map(|l| (l.integration_id.as_str(), l.epoch))
            .collect();
        let lost: Vec<(String, String)> = crate::lock(&cluster.held)
            .iter()
            .filter(|(id, (_, epoch))| still.get(id.as_str()) != Some(epoch))
            .map(|(id, (connector, _))| (id.clone(), connector.clone()))
            .collect();
        // Held in the store but not known here: this node id's previous process
        // (restarted before its leases expired), or a claim whose start failed. They
        // are handed back and claimed again, under a new epoch.
        let unknown: Vec<String> = {
            let held = crate::lock(&cluster.held);
            renewed
                .iter()
                .filter(|l| !held.contains_key(&l.integration_id))
                .map(|l| l.integration_id.clone())
                .collect()
        };
        if !unknown.is_empty() {
            leases::release(store, node, &unknown)
                .await
                .map_err(failed)?;
        }
        let tree = self.tree();
        for (id, connector) in &lost {
            crate::lock(&cluster.held).remove(id);
            cluster.leases_lost.fetch_add(1, Ordering::Relaxed);
            warn!(integration_id = %id, node_id = node, "lease lost: the integration's actor stops here");
            if let Some(tree) = &tree {
                let _ = tree.remove_integration_here(connector, id).await;
            }
        }
        let nodes = leases::live_nodes(store).await.map_err(failed)?.len() as i64;
        let share = leases::fair_share(live, nodes.max(1), 0);
        let held = cluster.held() as i64;
        if held > share + LEEWAY {
            self.hand_back(usize::try_from(held - share).unwrap_or(0))
                .await?;
        } else if held < share {
            self.take(share - held).await?;
        }
        if let Some(tree) = &tree {
            let ids: Vec<String> = crate::lock(&cluster.held).keys().cloned().collect();
            for id in ids {
                tree.wake_here(&id);
            }
        }
        Ok(())
    }

    /// Claims up to `count` leases and starts their integrations' actors.
    async fn take(&mut self, count: i64) -> Result<(), String> {
        let Some(tree) = self.tree() else {
            return Ok(());
        };
        let cluster = Arc::clone(&self.args.cluster);
        let claimed = leases::claim(&cluster.store, &cluster.node_id, cluster.lease_ttl, count)
            .await
            .map_err(|e| e.to_string())?;
        for lease in claimed {
            let found = integrations::find_live(&cluster.store, &lease.integration_id).await;
            let Ok(Some(integration)) = found else {
                // Revoked meanwhile (its row goes at the next sync), or unreadable
                // now: not held without an actor.
                let _ = leases::release(&cluster.store, &cluster.node_id, &[lease.integration_id])
                    .await;
                continue;
            };
            let expires_at = integrations::credentials_expiry(&cluster.store, &integration.id)
                .await
                .unwrap_or(None);
            crate::lock(&cluster.held).insert(
                integration.id.clone(),
                (integration.connector_type.clone(), lease.epoch),
            );
            let id = integration.id.clone();
            if let Err(error) = tree.add_integration_here(integration, expires_at).await {
                warn!(integration_id = %id, error = %error, "claimed integration not started: handed back");
                crate::lock(&cluster.held).remove(&id);
                let _ = leases::release(&cluster.store, &cluster.node_id, &[id]).await;
            }
        }
        Ok(())
    }

    /// Stops `count` integration actors and hands their leases back (a node joined).
    async fn hand_back(&mut self, count: usize) -> Result<(), String> {
        let cluster = Arc::clone(&self.args.cluster);
        let chosen: Vec<(String, String)> = crate::lock(&cluster.held)
            .iter()
            .rev()
            .take(count)
            .map(|(id, (connector, _))| (id.clone(), connector.clone()))
            .collect();
        self.stop_and_release(&chosen).await
    }

    async fn stop_and_release(&mut self, chosen: &[(String, String)]) -> Result<(), String> {
        let cluster = Arc::clone(&self.args.cluster);
        if let Some(tree) = self.tree() {
            for (id, connector) in chosen {
                let _ = tree.remove_integration_here(connector, id).await;
            }
        }
        let ids: Vec<String> = chosen.iter().map(|(id, _)| id.clone()).collect();
        for id in &ids {
            crate::lock(&cluster.held).remove(id);
        }
        if !ids.is_empty() {
            info!(node_id = %cluster.node_id, leases = ids.len(), "leases handed back");
            leases::release(&cluster.store, &cluster.node_id, &ids)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

impl Actor for LeaseKeeper {
    type Msg = KeeperMsg;
    type State = KeeperState;
    type Arguments = KeeperArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<KeeperMsg>,
        args: KeeperArgs,
    ) -> Result<KeeperState, ActorProcessingErr> {
        let listener = tokio::spawn(listen(
            args.cluster.store.clone(),
            myself.clone(),
            Arc::clone(&args.tree),
        ));
        let queue = crate::lock(&args.cluster.wake_queue).take();
        let notifier =
            queue.map(|queue| tokio::spawn(notify_owners(args.cluster.store.clone(), queue)));
        let mut ready = args.store_ready.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            if ready.wait_for(|ready| *ready).await.is_ok() {
                let _ = me.send_message(KeeperMsg::Tick);
            }
        });
        Ok(KeeperState {
            args,
            last_error: None,
            listener: Some(listener),
            notifier,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<KeeperMsg>,
        message: KeeperMsg,
        state: &mut KeeperState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            KeeperMsg::Tick | KeeperMsg::Nudge => {
                match state.tick().await {
                    Ok(()) => state.last_error = None,
                    Err(error) => {
                        if state.last_error.as_deref() != Some(error.as_str()) {
                            warn!(error = %error, "cluster round failed: retrying at the next renewal");
                        }
                        state.last_error = Some(error);
                    }
                }
                if matches!(message, KeeperMsg::Tick) {
                    myself.send_after(state.args.cluster.renew_every, || KeeperMsg::Tick);
                }
            }
            KeeperMsg::Observe(reply) => {
                let cluster = &state.args.cluster;
                let status = if state.last_error.is_some() {
                    Status::Backoff
                } else {
                    Status::Running
                };
                let mut report = HealthReport::new(KEEPER, "cluster", status)
                    .with_detail("node_id", cluster.node_id.clone())
                    .with_detail("leases", cluster.held())
                    .with_detail("leases_lost", cluster.leases_lost.load(Ordering::Relaxed))
                    .with_detail(
                        "fenced_writes",
                        cluster.fenced_writes.load(Ordering::Relaxed),
                    );
                report.last_error = state.last_error.clone();
                let _ = reply.send(report);
            }
        }
        Ok(())
    }

    /// A graceful stop: this node's integration actors stop, then their leases are
    /// handed back and the others told, so they take over at once.
    async fn post_stop(
        &self,
        _myself: ActorRef<KeeperMsg>,
        state: &mut KeeperState,
    ) -> Result<(), ActorProcessingErr> {
        for task in [state.listener.take(), state.notifier.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        let cluster = Arc::clone(&state.args.cluster);
        let chosen: Vec<(String, String)> = crate::lock(&cluster.held)
            .iter()
            .map(|(id, (connector, _))| (id.clone(), connector.clone()))
            .collect();
        if let Some(tree) = state.tree() {
            for (id, connector) in &chosen {
                let _ = tree.remove_integration_here(connector, id).await;
            }
        }
        crate::lock(&cluster.held).clear();
        match leases::leave(&cluster.store, &cluster.node_id).await {
            Ok(released) => info!(node_id = %cluster.node_id, released, "left the cluster"),
            Err(error) => {
                warn!(node_id = %cluster.node_id, error = %error, "could not hand leases back: they expire instead")
            }
        }
        Ok(())
    }
}

/// Listens for the other nodes: leases handed back (claim now) and events stored for
/// integrations whose actors run here (process now). Reconnects after a failure.
async fn listen(store: Store, keeper: ActorRef<KeeperMsg>, tree: Arc<OnceLock<Weak<ActorTree>>>) {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let Store::Postgres { url, .. } = &store else {
        return;
    };
    let mut failures = 0u32;
    loop {
        let connected = async {
            let mut conn = AsyncPgConnection::establish(url.expose())
                .await
                .map_err(|e| e.to_string())?;
            conn.batch_execute(&format!(
                "LISTEN {LEASES_CHANNEL}; LISTEN {EVENTS_CHANNEL}; LISTEN {CONTROL_CHANNEL}"
            ))
            .await
            .map_err(|e| e.to_string())?;
            Ok::<_, String>(conn)
        }
        .await;
        let mut conn = match connected {
            Ok(conn) => conn,
            Err(error) => {
                failures += 1;
                if failures == 1 {
                    warn!(error = %error, "cluster notifications unavailable: retrying");
                }
                tokio::time::sleep(Duration::from_millis(500 * u64::from(failures.min(10)))).await;
                continue;
            }
        };
        failures = 0;
        let notifications = conn.notifications_stream();
        let mut notifications = std::pin::pin!(notifications);
        while let Some(Ok(notification)) = notifications.next().await {
            if notification.channel == LEASES_CHANNEL {
                let _ = keeper.send_message(KeeperMsg::Nudge);
            } else if notification.channel == CONTROL_CHANNEL
                && notification.payload == ROUTES_CHANGED
            {
                if let Some(tree) = tree.get().and_then(Weak::upgrade)
                    && let Err(error) = tree.tenant_routes().reload().await
                {
                    warn!(error = %error, "tenant routes not reloaded: the periodic reload will");
                }
            } else if notification.channel == CONTROL_CHANNEL {
                if let (Some(id), Some(tree)) = (
                    notification.payload.strip_prefix("restart "),
                    tree.get().and_then(Weak::upgrade),
                ) {
                    // Only the node that runs it finds it.
                    let _ = tree
                        .restart_integration(id, "admin API, on another node")
                        .await;
                }
            } else if let Some(tree) = tree.get().and_then(Weak::upgrade) {
                for id in notification.payload.split(',') {
                    tree.wake_here(id);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends the integrations to wake on other nodes, gathered for up to 10 ms, as one
/// `NOTIFY` (a payload stays under PostgreSQL's 8,000 bytes).
async fn notify_owners(store: Store, mut queue: mpsc::UnboundedReceiver<String>) {
    while let Some(first) = queue.recv().await {
        let mut ids: HashSet<String> = HashSet::from([first]);
        let gathered = tokio::time::sleep(Duration::from_millis(10));
        tokio::pin!(gathered);
        loop {
            tokio::select! {
                () = &mut gathered => break,
                next = queue.recv() => match next {
                    Some(id) => { ids.insert(id); }
                    None => break,
                },
            }
        }
        let ids: Vec<String> = ids.into_iter().collect();
        for chunk in ids.chunks(150) {
            if let Err(error) =
                leases::notify_channel(&store, EVENTS_CHANNEL, &chunk.join(",")).await
            {
                // The owner's sweep processes them at its next renewal.
                tracing::debug!(error = %error, "event notification not sent");
            }
        }
    }
}
