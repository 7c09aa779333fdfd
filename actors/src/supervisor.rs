//! A supervisor actor with OTP semantics, on ractor's links.
//!
//! ractor tells a parent when a linked child starts, stops or fails, and nothing more;
//! this module adds what Erlang/OTP supervisors do with that:
//! - strategies ([`Strategy`]): restart the failed child, all children, or the failed
//!   child and those started after it;
//! - restart types ([`Restart`]): permanent, transient, temporary;
//! - restart intensity ([`Intensity`]): one restart too many within the window and the
//!   supervisor stops its children and fails upward, naming the child;
//! - a delay before each restart, exponential backoff with full jitter ([`Backoff`]);
//! - ordered start, reverse-ordered stop with a shutdown timeout per child;
//! - dynamic children, explicit restarts (counted apart from failures), and a health
//!   snapshot that never waits on a child.
//!
//! A child's failure is a panic or an `Err` in any of its handlers, a kill, or an error
//! in its startup (which ractor reports to the spawner, not as a supervision event).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, Message, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::health::{HealthReport, ObserveHealth, ReportCache, Status, Timestamp};
use crate::registry::Registry;
use crate::restart::{Backoff, Intensity, Restart, RestartWindow, Strategy};

/// Starts one child, linked to the supervisor in the context.
pub type StartFn =
    Arc<dyn Fn(StartContext) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync>;
/// Asks a running child for its own report; `None` when it did not answer in time.
pub type ProbeFn = Arc<
    dyn Fn(ActorCell, Duration, ObserveOptions) -> BoxFuture<'static, Option<HealthReport>>
        + Send
        + Sync,
>;

/// How much of a large tree an observation lists. A supervisor with tens of thousands
/// of children is listed a page at a time; every node keeps the total in
/// `details.children`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObserveOptions {
    /// Levels of children to list below the observed node (`None`: all).
    pub depth: Option<u32>,
    /// Children listed per node (`None`: all).
    pub limit: Option<usize>,
    /// Children skipped per node before listing.
    pub offset: usize,
    /// List only children in this status (as their supervisor knows it).
    pub status: Option<Status>,
}

impl ObserveOptions {
    /// The options one level down, or `None` when children are not to be listed.
    fn below(&self) -> Option<ObserveOptions> {
        match self.depth {
            Some(0) => None,
            depth => Some(ObserveOptions {
                depth: depth.map(|d| d - 1),
                ..self.clone()
            }),
        }
    }
}
/// Adds what only the owner of a supervisor knows to its report (availability, shared
/// resources such as a provider-wide breaker).
pub type Reporter = Arc<dyn Fn(&mut HealthReport) + Send + Sync>;
/// Produces children when a supervisor starts (and restarts), e.g. from a database.
pub type ChildLoader =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Vec<ChildSpec>, ActorProcessingErr>> + Send + Sync>;

/// What a [`StartFn`] gets: the name to register the actor under and its supervisor.
pub struct StartContext {
    pub name: Option<String>,
    pub supervisor: ActorCell,
}

/// How to start, restart, stop and observe one child.
#[derive(Clone)]
pub struct ChildSpec {
    id: String,
    kind: String,
    restart: Restart,
    shutdown: Duration,
    start: StartFn,
    probe: Option<ProbeFn>,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// A child started by `start`, which must link the actor to `StartContext::supervisor`.
    pub fn new<F, Fut>(id: impl Into<String>, kind: impl Into<String>, start: F) -> Self
    where
        F: Fn(StartContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
    {
        Self {
            id: id.into(),
            kind: kind.into(),
            restart: Restart::Permanent,
            shutdown: Duration::from_secs(5),
            start: Arc::new(move |ctx| start(ctx).boxed()),
            probe: None,
        }
    }

    /// A child that is an actor of type `A`, built afresh by `factory` on every (re)start.
    pub fn actor<A, F>(id: impl Into<String>, kind: impl Into<String>, factory: F) -> Self
    where
        A: Actor,
        F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    {
        Self::new(id, kind, move |ctx: StartContext| {
            let (actor, args) = factory();
            async move {
                let (actor_ref, _) = A::spawn_linked(ctx.name, actor, args, ctx.supervisor).await?;
                Ok(actor_ref.get_cell())
            }
        })
    }

    /// A child that is itself a supervisor; its children appear under it in health reports.
    pub fn supervisor(spec: SupervisorSpec) -> Self {
        let (id, kind) = (spec.name.clone(), spec.kind.clone());
        let mut child = Self::new(id, kind, move |ctx: StartContext| {
            let spec = spec.clone();
            async move {
                let (actor_ref, _) =
                    Supervisor::spawn_linked(ctx.name, Supervisor, spec, ctx.supervisor).await?;
                Ok(actor_ref.get_cell())
            }
        });
        child.probe = Some(Arc::new(|cell, timeout, options| {
            observe_tree_with(ActorRef::<SupervisorMsg>::from(cell), timeout, options).boxed()
        }));
        child
    }

    /// Asks the child for its own report with [`ObserveHealth`], which its message type `M`
    /// must accept.
    pub fn observed_with<M: Message + From<ObserveHealth>>(mut self) -> Self {
        self.probe = Some(Arc::new(|cell, timeout, _options| {
            let actor = ActorRef::<M>::from(cell);
            async move {
                match actor
                    .call(|reply| M::from(ObserveHealth(reply)), Some(timeout))
                    .await
                {
                    Ok(ractor::rpc::CallResult::Success(report)) => Some(report),
                    _ => None,
                }
            }
            .boxed()
        }));
        self
    }

    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// How long a graceful stop may take before the child is killed.
    pub fn shutdown(mut self, shutdown: Duration) -> Self {
        self.shutdown = shutdown;
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Everything a supervisor needs to start; kept so that it can be restarted as it was.
#[derive(Clone)]
pub struct SupervisorSpec {
    pub name: String,
    pub kind: String,
    pub strategy: Strategy,
    pub intensity: Intensity,
    pub backoff: Backoff,
    /// Children started in this order, before any the loader gives.
    pub children: Vec<ChildSpec>,
    /// Runs in the background after every start (a slow or failing source, such as a
    /// database, never blocks or fails the supervisor); retried with backoff until it
    /// succeeds. The supervisor reports `starting` until its children are loaded.
    pub loader: Option<ChildLoader>,
    pub reporter: Option<Reporter>,
    /// Where children are named; unnamed when `None`.
    pub registry: Option<Registry>,
}

impl SupervisorSpec {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: "supervisor".to_string(),
            strategy: Strategy::default(),
            intensity: Intensity::default(),
            backoff: Backoff::default(),
            children: Vec::new(),
            loader: None,
            reporter: None,
            registry: None,
        }
    }

    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }

    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    pub fn intensity(mut self, max_restarts: u32, window: Duration) -> Self {
        self.intensity = Intensity {
            max_restarts,
            window,
        };
        self
    }

    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }

    pub fn loader<F, Fut>(mut self, loader: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<ChildSpec>, ActorProcessingErr>> + Send + 'static,
    {
        self.loader = Some(Arc::new(move || loader().boxed()));
        self
    }

    pub fn reporter(
        mut self,
        reporter: impl Fn(&mut HealthReport) + Send + Sync + 'static,
    ) -> Self {
        self.reporter = Some(Arc::new(reporter));
        self
    }

    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("no child named '{0}'")]
    UnknownChild(String),
    #[error("a child named '{0}' already exists")]
    DuplicateChild(String),
    #[error("supervisor is not running")]
    Unavailable,
    #[error("loading children failed: {0}")]
    LoadFailed(String),
    #[error(
        "supervisor '{supervisor}' gave up: more than {max_restarts} restarts within {window:?}, \
         the last for child '{child}' ({reason})"
    )]
    IntensityExceeded {
        supervisor: String,
        child: String,
        max_restarts: u32,
        window: Duration,
        reason: String,
    },
}

/// A child's state as the health tree shows it, with the parts an observer needs to ask it.
pub struct ChildView {
    pub report: HealthReport,
    pub cell: Option<ActorCell>,
    probe: Option<ProbeFn>,
    cache: ReportCache,
}

pub struct SupervisorSnapshot {
    pub report: HealthReport,
    pub children: Vec<ChildView>,
}

pub enum SupervisorMsg {
    AddChild(ChildSpec, RpcReplyPort<Result<(), SupervisorError>>),
    RemoveChild(String, RpcReplyPort<Result<(), SupervisorError>>),
    RestartChild(String, RpcReplyPort<Result<(), SupervisorError>>),
    RestartAll(RpcReplyPort<Result<(), SupervisorError>>),
    /// The running actor of a child, if it is running.
    LookupChild(String, RpcReplyPort<Option<ActorCell>>),
    /// The supervisor's report and the children the options select.
    Snapshot(ObserveOptions, RpcReplyPort<SupervisorSnapshot>),
    /// The backoff delay is over: start these children (in this order) if each is still
    /// at the epoch it had when the restart was scheduled.
    StartAfterBackoff(Vec<(String, u64)>),
    /// The loader's children, to add and start in order.
    ChildrenLoaded(Vec<ChildSpec>),
}

pub struct Supervisor;

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    status: Status,
    restarts: u32,
    manual_restarts: u32,
    last_error: Option<String>,
    last_failure: Option<(String, SystemTime)>,
    last_restart_at: Option<SystemTime>,
    /// This child's recent restarts: the `n` of its backoff.
    recent: RestartWindow,
    /// Bumped on every start, stop and scheduled restart, so that a stale scheduled
    /// restart (the child was removed or restarted meanwhile) does nothing.
    epoch: u64,
    cache: ReportCache,
}

impl Child {
    fn new(spec: ChildSpec) -> Self {
        Self {
            spec,
            cell: None,
            status: Status::Starting,
            restarts: 0,
            manual_restarts: 0,
            last_error: None,
            last_failure: None,
            last_restart_at: None,
            recent: RestartWindow::default(),
            epoch: 0,
            cache: ReportCache::default(),
        }
    }

    fn report(&self) -> HealthReport {
        let mut report = HealthReport::new(&self.spec.id, &self.spec.kind, self.status);
        report.restarts = self.restarts;
        report.manual_restarts = self.manual_restarts;
        report.last_error = self.last_error.clone();
        report.last_failure =
            self.last_failure
                .as_ref()
                .map(|(reason, at)| crate::health::Failure {
                    reason: reason.clone(),
                    at: Timestamp(*at),
                });
        report.last_restart_at = self.last_restart_at.map(Timestamp);
        report.actor_id = self.cell.as_ref().map(|cell| cell.get_id().to_string());
        report
    }
}

pub struct SupervisorState {
    spec: SupervisorSpec,
    /// Start order: sequence number to child id.
    order: BTreeMap<u64, String>,
    children: HashMap<String, (u64, Child)>,
    /// Running actors to the child they are; a stopped-on-purpose actor is removed first,
    /// so its exit event is recognised as stale and ignored.
    by_actor: HashMap<ActorId, String>,
    next_seq: u64,
    /// Failure restarts of all children, for the intensity check.
    restarts: RestartWindow,
    /// The background loader, while it runs.
    loader: Option<JoinHandle<()>>,
}

enum Exit {
    Normal,
    Abnormal(String),
}

impl SupervisorState {
    fn new(spec: SupervisorSpec) -> Self {
        Self {
            spec,
            order: BTreeMap::new(),
            children: HashMap::new(),
            by_actor: HashMap::new(),
            next_seq: 0,
            restarts: RestartWindow::default(),
            loader: None,
        }
    }

    fn stop_loader(&mut self) {
        if let Some(loader) = self.loader.take() {
            loader.abort();
        }
    }

    fn insert(&mut self, spec: ChildSpec) -> Result<(), SupervisorError> {
        if self.children.contains_key(&spec.id) {
            return Err(SupervisorError::DuplicateChild(spec.id));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, spec.id.clone());
        self.children
            .insert(spec.id.clone(), (seq, Child::new(spec)));
        Ok(())
    }

    fn forget(&mut self, id: &str) {
        if let Some((seq, child)) = self.children.remove(id) {
            self.order.remove(&seq);
            if let Some(cell) = child.cell {
                self.by_actor.remove(&cell.get_id());
            }
        }
    }

    fn child_mut(&mut self, id: &str) -> Option<&mut Child> {
        self.children.get_mut(id).map(|(_, child)| child)
    }

    /// Children ids in start order, optionally only from `id` on.
    fn ids_from(&self, from: Option<&str>) -> Vec<String> {
        let start = from
            .and_then(|id| self.children.get(id))
            .map_or(0, |(seq, _)| *seq);
        self.order
            .range(start..)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Spawns `id`; on failure, returns the error text (the caller applies the policy).
    async fn start_child(&mut self, myself: &ActorCell, id: &str) -> Result<(), String> {
        let name = self.spec.registry.as_ref().map(|r| r.qualify(id));
        let Some(child) = self.child_mut(id) else {
            return Ok(());
        };
        child.epoch += 1;
        let started = (child.spec.start)(StartContext {
            name,
            supervisor: myself.clone(),
        })
        .await;
        match started {
            Ok(cell) => {
                child.status = Status::Running;
                // Running again: what stopped it is history (`last_failure`), not now.
                child.last_error = None;
                self.by_actor.insert(cell.get_id(), id.to_string());
                if let Some(child) = self.child_mut(id) {
                    child.cell = Some(cell);
                }
                Ok(())
            }
            Err(error) => Err(spawn_error_text(&error)),
        }
    }

    /// Stops `id` gracefully within its shutdown timeout, killing it past that.
    async fn stop_child(&mut self, id: &str, reason: &str) {
        let Some(child) = self.child_mut(id) else {
            return;
        };
        child.epoch += 1;
        child.status = Status::Stopped;
        let shutdown = child.spec.shutdown;
        let Some(cell) = child.cell.take() else {
            return;
        };
        self.by_actor.remove(&cell.get_id());
        if cell
            .stop_and_wait(Some(reason.to_string()), Some(shutdown))
            .await
            .is_err()
            && cell.get_status() != ractor::ActorStatus::Stopped
        {
            warn!(supervisor = %self.spec.name, child = %id, ?shutdown, "child did not stop in time, killing it");
            let _ = cell.kill_and_wait(Some(shutdown)).await;
        }
    }

    /// Stops every child, last started first.
    async fn stop_all(&mut self, reason: &str) {
        for id in self.ids_from(None).into_iter().rev() {
            self.stop_child(&id, reason).await;
        }
    }

    fn snapshot(&self, options: &ObserveOptions) -> SupervisorSnapshot {
        let status = if self.loader.is_some() {
            Status::Starting
        } else {
            Status::Running
        };
        let mut report = HealthReport::new(&self.spec.name, &self.spec.kind, status)
            .with_detail("strategy", self.spec.strategy)
            .with_detail("children", self.children.len());
        report.details.insert(
            "max_restarts".into(),
            self.spec.intensity.max_restarts.into(),
        );
        if let Some(reporter) = &self.spec.reporter {
            reporter(&mut report);
        }
        let listed = options.depth != Some(0);
        let children: Vec<ChildView> = self
            .order
            .values()
            .filter(|_| listed)
            .filter_map(|id| self.children.get(id))
            .filter(|(_, child)| options.status.is_none_or(|status| child.status == status))
            .skip(options.offset)
            .take(options.limit.unwrap_or(usize::MAX))
            .map(|(_, child)| ChildView {
                report: child.report(),
                cell: child.cell.clone(),
                probe: child.probe_if_running(),
                cache: child.cache.clone(),
            })
            .collect();
        let mut by_status = std::collections::BTreeMap::<&str, usize>::new();
        for (_, child) in self.children.values() {
            *by_status.entry(child.status.as_str()).or_default() += 1;
        }
        report.details.insert(
            "children_by_status".into(),
            serde_json::to_value(by_status).unwrap_or_default(),
        );
        if listed && children.len() < self.children.len() {
            report
                .details
                .insert("children_listed".into(), children.len().into());
        }
        SupervisorSnapshot { report, children }
    }
}

impl Child {
    fn probe_if_running(&self) -> Option<ProbeFn> {
        self.cell.as_ref().and(self.spec.probe.clone())
    }
}

fn spawn_error_text(error: &SpawnErr) -> String {
    match error {
        SpawnErr::StartupFailed(inner) => format!("startup failed: {inner}"),
        other => other.to_string(),
    }
}

impl Supervisor {
    /// Starts a child that failed or is new, applying the policy if it fails to start.
    async fn start_or_handle(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        id: &str,
    ) -> Result<bool, ActorProcessingErr> {
        match state.start_child(&myself.get_cell(), id).await {
            Ok(()) => Ok(true),
            Err(reason) => {
                warn!(supervisor = %state.spec.name, child = %id, error = %reason, "child failed to start");
                self.handle_exit(myself, state, id.to_string(), Exit::Abnormal(reason))
                    .await?;
                Ok(false)
            }
        }
    }

    /// Applies the restart policy to a child that exited (or failed to start).
    async fn handle_exit(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        id: String,
        exit: Exit,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        let window = state.spec.intensity.window;
        let Some(child) = state.child_mut(&id) else {
            return Ok(());
        };
        if let Some(cell) = child.cell.take() {
            state.by_actor.remove(&cell.get_id());
        }
        let Some(child) = state.child_mut(&id) else {
            return Ok(());
        };
        let abnormal = matches!(exit, Exit::Abnormal(_));
        if let Exit::Abnormal(reason) = &exit {
            child.last_error = Some(reason.clone());
            child.last_failure = Some((reason.clone(), SystemTime::now()));
        }
        if !child.spec.restart.restarts_after(abnormal) {
            child.status = if abnormal {
                Status::Failed
            } else {
                Status::Stopped
            };
            let temporary = child.spec.restart == Restart::Temporary;
            info!(supervisor = %state.spec.name, child = %id, abnormal, "child exited and is not restarted");
            if temporary {
                state.forget(&id);
            }
            return Ok(());
        }

        let restarts_in_window = state.restarts.record(now, window);
        if restarts_in_window > state.spec.intensity.max_restarts {
            let reason = match exit {
                Exit::Abnormal(reason) => reason,
                Exit::Normal => "exited".to_string(),
            };
            if let Some(child) = state.child_mut(&id) {
                child.status = Status::Failed;
            }
            let error = SupervisorError::IntensityExceeded {
                supervisor: state.spec.name.clone(),
                child: id,
                max_restarts: state.spec.intensity.max_restarts,
                window,
                reason,
            };
            warn!(error = %error, "restart intensity exceeded, escalating");
            state.stop_loader();
            state.stop_all("supervisor escalating").await;
            return Err(Box::new(error));
        }

        // Which children go down and come back with this one.
        let group = match state.spec.strategy {
            Strategy::OneForOne => vec![id.clone()],
            Strategy::OneForAll => state.ids_from(None),
            Strategy::RestForOne => state.ids_from(Some(&id)),
        };
        for other in group.iter().rev().filter(|other| **other != id) {
            state.stop_child(other, "sibling restarting").await;
        }
        let mut scheduled = Vec::with_capacity(group.len());
        for member in group {
            let Some(child) = state.child_mut(&member) else {
                continue;
            };
            // OTP: a temporary child is never restarted, not even for a sibling.
            if child.spec.restart == Restart::Temporary {
                state.forget(&member);
                continue;
            }
            child.status = Status::Backoff;
            child.epoch += 1;
            scheduled.push((member, child.epoch));
        }

        let Some(child) = state.child_mut(&id) else {
            return Ok(());
        };
        let attempt = child.recent.record(now, window).saturating_sub(1);
        let delay = state.spec.backoff.delay(attempt);
        info!(supervisor = %state.spec.name, child = %id, abnormal, ?delay, group = scheduled.len(), "restarting after backoff");
        if delay.is_zero() {
            myself.send_message(SupervisorMsg::StartAfterBackoff(scheduled))?;
        } else {
            myself.send_after(delay, move || SupervisorMsg::StartAfterBackoff(scheduled));
        }
        Ok(())
    }

    async fn start_after_backoff(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        group: Vec<(String, u64)>,
    ) -> Result<(), ActorProcessingErr> {
        for (id, epoch) in group {
            let Some(child) = state.child_mut(&id) else {
                continue;
            };
            if child.epoch != epoch || child.status != Status::Backoff {
                continue;
            }
            child.status = Status::Restarting;
            if !self.start_or_handle(myself, state, &id).await? {
                // The policy has rescheduled this child and, per the strategy, the rest.
                break;
            }
            if let Some(child) = state.child_mut(&id) {
                child.restarts += 1;
                child.last_restart_at = Some(SystemTime::now());
            }
        }
        Ok(())
    }

    async fn restart_explicitly(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        ids: Vec<String>,
    ) -> Result<(), ActorProcessingErr> {
        for id in ids.iter().rev() {
            state.stop_child(id, "restart requested").await;
        }
        for id in &ids {
            if let Some(child) = state.child_mut(id) {
                child.status = Status::Restarting;
                child.manual_restarts += 1;
                child.last_restart_at = Some(SystemTime::now());
            }
            info!(supervisor = %state.spec.name, child = %id, "explicit restart");
            self.start_or_handle(myself, state, id).await?;
        }
        Ok(())
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorSpec;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        mut spec: SupervisorSpec,
    ) -> Result<Self::State, ActorProcessingErr> {
        // The parent keeps its own copy of the spec for restarts; this one needs no list.
        let children = std::mem::take(&mut spec.children);
        let loader = spec.loader.clone();
        let backoff = spec.backoff;
        let mut state = SupervisorState::new(spec);
        for child in children {
            state.insert(child)?;
        }
        for id in state.ids_from(None) {
            self.start_or_handle(&myself, &mut state, &id).await?;
        }
        if let Some(loader) = loader {
            let supervisor = myself.clone();
            let name = state.spec.name.clone();
            state.loader = Some(tokio::spawn(async move {
                let mut attempt = 0;
                loop {
                    match loader().await {
                        Ok(children) => {
                            let _ =
                                supervisor.send_message(SupervisorMsg::ChildrenLoaded(children));
                            return;
                        }
                        Err(error) => {
                            let delay = backoff.delay(attempt);
                            warn!(supervisor = %name, error = %error, ?delay, "loading children failed, retrying");
                            attempt += 1;
                            tokio::time::sleep(delay).await;
                        }
                    }
                }
            }));
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.stop_loader();
        state.stop_all("supervisor stopping").await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::AddChild(spec, reply) => {
                let id = spec.id.clone();
                match state.insert(spec) {
                    Ok(()) => {
                        let _ = reply.send(Ok(()));
                        self.start_or_handle(&myself, state, &id).await?;
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            SupervisorMsg::RemoveChild(id, reply) => {
                if state.children.contains_key(&id) {
                    state.stop_child(&id, "removed").await;
                    state.forget(&id);
                    let _ = reply.send(Ok(()));
                } else {
                    let _ = reply.send(Err(SupervisorError::UnknownChild(id)));
                }
            }
            SupervisorMsg::RestartChild(id, reply) => {
                if state.children.contains_key(&id) {
                    self.restart_explicitly(&myself, state, vec![id]).await?;
                    let _ = reply.send(Ok(()));
                } else {
                    let _ = reply.send(Err(SupervisorError::UnknownChild(id)));
                }
            }
            SupervisorMsg::RestartAll(reply) => {
                let ids = state.ids_from(None);
                self.restart_explicitly(&myself, state, ids).await?;
                let _ = reply.send(Ok(()));
            }
            SupervisorMsg::LookupChild(id, reply) => {
                let cell = state.children.get(&id).and_then(|(_, c)| c.cell.clone());
                let _ = reply.send(cell);
            }
            SupervisorMsg::Snapshot(options, reply) => {
                let _ = reply.send(state.snapshot(&options));
            }
            SupervisorMsg::StartAfterBackoff(group) => {
                self.start_after_backoff(&myself, state, group).await?;
            }
            SupervisorMsg::ChildrenLoaded(children) => {
                state.loader = None;
                let mut ids = Vec::with_capacity(children.len());
                for child in children {
                    let id = child.id.clone();
                    match state.insert(child) {
                        Ok(()) => ids.push(id),
                        // Added meanwhile (e.g. a new integration authorized during the load).
                        Err(error) => {
                            info!(supervisor = %state.spec.name, error = %error, "loaded child skipped")
                        }
                    }
                }
                info!(supervisor = %state.spec.name, children = ids.len(), "children loaded");
                for id in ids {
                    self.start_or_handle(&myself, state, &id).await?;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (actor, exit) = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                // A kill (or a cancelled task) is abnormal; a stop, with or without a reason, is not.
                let exit = match reason.as_deref() {
                    Some(reason @ ("killed" | "actor_task_cancelled")) => {
                        Exit::Abnormal(reason.to_string())
                    }
                    _ => Exit::Normal,
                };
                (cell.get_id(), exit)
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                (cell.get_id(), Exit::Abnormal(error.to_string()))
            }
            _ => return Ok(()),
        };
        // Unknown actors are children stopped on purpose (or replaced) whose exit arrives late.
        let Some(id) = state.by_actor.remove(&actor) else {
            return Ok(());
        };
        self.handle_exit(&myself, state, id, exit).await
    }
}

/// Observes a supervisor and, concurrently, each of its children; children that do not
/// answer within `timeout` are shown by their last report, marked stale.
pub fn observe_tree(
    actor: ActorRef<SupervisorMsg>,
    timeout: Duration,
) -> BoxFuture<'static, Option<HealthReport>> {
    observe_tree_with(actor, timeout, ObserveOptions::default())
}

/// As [`observe_tree`], listing only what `options` select.
pub fn observe_tree_with(
    actor: ActorRef<SupervisorMsg>,
    timeout: Duration,
    options: ObserveOptions,
) -> BoxFuture<'static, Option<HealthReport>> {
    async move {
        let snapshot = match actor
            .call(
                |reply| SupervisorMsg::Snapshot(options.clone(), reply),
                Some(timeout),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(snapshot)) => snapshot,
            _ => return None,
        };
        let mut report = snapshot.report;
        // A supervisor's own report names its actor as its parent's view of it does.
        report
            .actor_id
            .get_or_insert_with(|| actor.get_id().to_string());
        let below = options.below().unwrap_or(ObserveOptions {
            depth: Some(0),
            ..options
        });
        report.children = futures::stream::iter(snapshot.children)
            .map(|view| observe_child(view, timeout, below.clone()))
            .buffered(256)
            .collect()
            .await;
        Some(report)
    }
    .boxed()
}

async fn observe_child(
    view: ChildView,
    timeout: Duration,
    options: ObserveOptions,
) -> HealthReport {
    let ChildView {
        report,
        cell,
        probe,
        cache,
    } = view;
    let (Some(cell), Some(probe)) = (cell, probe) else {
        return report;
    };
    match probe(cell, timeout, options).await {
        Some(own) => {
            cache.store(&own);
            report.merged_with(own)
        }
        None => match cache.stale() {
            Some(last) => report.merged_with(last),
            None => HealthReport {
                stale: true,
                ..report
            },
        },
    }
}

/// A running supervisor: the handle the rest of the program holds.
#[derive(Clone)]
pub struct SupervisorRef {
    actor: ActorRef<SupervisorMsg>,
    name: String,
    cache: ReportCache,
}

impl std::fmt::Debug for SupervisorRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorRef")
            .field("name", &self.name)
            .field("actor", &self.actor.get_id())
            .finish()
    }
}

/// Asks the supervisor of `child` (a running child actor) to remove it for good: a
/// dynamic child whose work is over (a revoked integration) leaves the tree without
/// being restarted. Returns at once; the supervisor stops the child after its
/// current message.
pub fn leave_supervisor(child: &ActorCell, child_id: &str) -> bool {
    let Some(supervisor) = child.try_get_supervisor() else {
        return false;
    };
    let (reply, _ignored) = ractor::concurrency::oneshot();
    ActorRef::<SupervisorMsg>::from(supervisor)
        .send_message(SupervisorMsg::RemoveChild(
            child_id.to_string(),
            reply.into(),
        ))
        .is_ok()
}

impl SupervisorRef {
    /// Starts a supervisor with no parent (the root of a tree).
    pub async fn spawn(spec: SupervisorSpec) -> Result<(Self, JoinHandle<()>), SpawnErr> {
        let name = spec.name.clone();
        let registered = spec.registry.as_ref().map(|r| r.qualify(&spec.name));
        let (actor, handle) = Supervisor::spawn(registered, Supervisor, spec).await?;
        Ok((Self::from_actor(actor, name), handle))
    }

    /// A handle on a supervisor found elsewhere (e.g. in a [`Registry`]).
    pub fn from_actor(actor: ActorRef<SupervisorMsg>, name: impl Into<String>) -> Self {
        Self {
            actor,
            name: name.into(),
            cache: ReportCache::default(),
        }
    }

    pub fn actor(&self) -> &ActorRef<SupervisorMsg> {
        &self.actor
    }

    pub async fn add_child(&self, child: ChildSpec) -> Result<(), SupervisorError> {
        self.ask(|reply| SupervisorMsg::AddChild(child, reply))
            .await?
    }

    /// Stops a child (gracefully, within its shutdown timeout) without restarting it.
    pub async fn remove_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_string();
        self.ask(|reply| SupervisorMsg::RemoveChild(id, reply))
            .await?
    }

    /// Stops and starts one child, touching no other; counted as a manual restart.
    pub async fn restart_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_string();
        self.ask(|reply| SupervisorMsg::RestartChild(id, reply))
            .await?
    }

    /// Stops every child (in reverse order) and starts them again (in order).
    pub async fn restart_all(&self) -> Result<(), SupervisorError> {
        self.ask(SupervisorMsg::RestartAll).await?
    }

    /// The running actor of child `id`, if it is running now.
    pub async fn child(&self, id: &str) -> Result<Option<ActorCell>, SupervisorError> {
        let id = id.to_string();
        self.ask(|reply| SupervisorMsg::LookupChild(id, reply))
            .await
    }

    /// The health tree below this supervisor; never waits longer than about `timeout`
    /// per level. A supervisor that does not answer is shown by its last report, stale.
    pub async fn observe(&self, timeout: Duration) -> HealthReport {
        if let Some(report) = observe_tree(self.actor.clone(), timeout).await {
            self.cache.store(&report);
            return report;
        }
        let status = match self.actor.get_status() {
            ractor::ActorStatus::Stopping | ractor::ActorStatus::Stopped => Status::Stopped,
            _ => Status::Running,
        };
        self.cache.stale().unwrap_or_else(|| {
            let mut report = HealthReport::new(&self.name, "supervisor", status);
            report.stale = true;
            report
        })
    }

    /// As [`SupervisorRef::observe`], listing only what `options` select.
    pub async fn observe_with(&self, timeout: Duration, options: ObserveOptions) -> HealthReport {
        match observe_tree_with(self.actor.clone(), timeout, options).await {
            Some(report) => report,
            None => self.observe(timeout).await,
        }
    }

    /// One child's subtree (its supervisor's view of it merged with its own report),
    /// without observing its siblings.
    pub async fn observe_child(
        &self,
        id: &str,
        timeout: Duration,
        options: ObserveOptions,
    ) -> Option<HealthReport> {
        let snapshot = match self
            .actor
            .call(
                |reply| SupervisorMsg::Snapshot(ObserveOptions::default(), reply),
                Some(timeout),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(snapshot)) => snapshot,
            _ => return None,
        };
        let view = snapshot
            .children
            .into_iter()
            .find(|v| v.report.name == id)?;
        Some(observe_child(view, timeout, options).await)
    }

    /// Stops the supervisor and, in reverse order, its children; waits at most `timeout`.
    pub async fn stop(&self, timeout: Duration) -> bool {
        self.actor
            .stop_and_wait(Some("shutdown".to_string()), Some(timeout))
            .await
            .is_ok()
    }

    async fn ask<T, F>(&self, message: F) -> Result<T, SupervisorError>
    where
        T: Send + 'static,
        F: FnOnce(RpcReplyPort<T>) -> SupervisorMsg,
    {
        match self.actor.call(message, None).await {
            Ok(ractor::rpc::CallResult::Success(value)) => Ok(value),
            _ => Err(SupervisorError::Unavailable),
        }
    }
}
