//! The `inbox` actor: group commit for the durable inbox.
//!
//! Ingress hands it an event and answers the provider only once it replied, which is
//! once the event is durable. Events go through the [`Intake`], a queue shared by
//! ingress and the actor, rather than one actor message each: the first event queued
//! after the actor last looked sends it a `Queued`, and it takes every event queued
//! meanwhile. Events that arrive while the store is busy wait there; the next flush
//! writes all of them in one transaction (up to `max_batch`), so that the write rate
//! grows with concurrency instead of being capped by one commit per event. One batch
//! is written at a time (two transactions on two connections could commit out of
//! order), and its events are acknowledged once it is durable: on PostgreSQL that is
//! when it commits; on SQLite the next batch is already being committed while the
//! last one's WAL is synced.
//!
//! It is also the one writer of processing results on the hot path: integration actors
//! hand it the ids of the events they processed ([`record_done`]) and the next flush
//! marks them `done` in the same transaction as the new events. One writer means one
//! commit for both, and on SQLite no connection ever waits in the busy handler (which
//! sleeps a millisecond or more) for another one's write lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use switchboard_actors::{HealthReport, Registry, Status};
use tokio::sync::oneshot;
use tracing::warn;

use super::Consumers;
use super::metrics::PipelineMetrics;
use crate::integration::{self, IntegrationMsg};
use crate::lock;
use crate::store::events::{self, NewEvent, Stored};
use crate::store::monitor::{STORE, StoreMonitorMsg};
use crate::store::{Store, StoreError};

pub const INBOX: &str = "inbox";

/// Answers one event handed to the inbox: stored (or a duplicate), or why not.
type StoreReply = oneshot::Sender<Result<Stored, String>>;

/// Where ingress queues events for the inbox. It outlives the inbox actor: a restarted
/// inbox takes what its predecessor had not looked at yet, so a restart refuses no
/// event that arrives meanwhile.
pub struct Intake {
    queue: Mutex<IntakeQueue>,
    registry: Registry,
}

#[derive(Default)]
struct IntakeQueue {
    events: Vec<(NewEvent, StoreReply)>,
    /// A `Queued` is on its way to the inbox, which has not taken the queue since.
    announced: bool,
}

impl Intake {
    /// An intake whose inbox is found in `registry`.
    pub fn new(registry: Registry) -> Self {
        Self {
            queue: Mutex::default(),
            registry,
        }
    }

    fn push(&self, event: NewEvent, reply: StoreReply) {
        let announce = {
            let mut queue = lock(&self.queue);
            queue.events.push((event, reply));
            !std::mem::replace(&mut queue.announced, true)
        };
        if announce && let Some(inbox) = self.registry.lookup::<InboxMsg>(INBOX) {
            // When no inbox runs (it is restarting) or it stops before reading this, its
            // successor takes the queue as it starts.
            let _ = inbox.send_message(InboxMsg::Queued);
        }
    }

    /// Everything queued, in arrival order; the next event queued announces itself.
    fn take(&self) -> Vec<(NewEvent, StoreReply)> {
        let mut queue = lock(&self.queue);
        queue.announced = false;
        std::mem::take(&mut queue.events)
    }

    fn len(&self) -> usize {
        lock(&self.queue).events.len()
    }
}

#[derive(Clone)]
pub struct InboxArgs {
    pub store: Store,
    /// Where ingress queues the events to store.
    pub intake: Arc<Intake>,
    pub max_batch: usize,
    /// How long the first event of a batch waits for company before the write.
    pub batch_delay: Duration,
    /// Where the integration actors to wake are found.
    pub registry: Registry,
    pub metrics: Arc<PipelineMetrics>,
    /// Whether an event has anything to process it (or is stored `done` at once).
    pub consumers: Arc<Consumers>,
    /// Whether the store monitor holds the store ready: a batch that says otherwise
    /// nudges it, so that readiness follows the store at once.
    pub store_ready: tokio::sync::watch::Receiver<bool>,
    /// Cluster mode: an event whose integration runs on another node wakes it there.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

pub enum InboxMsg {
    /// Events wait in the intake.
    Queued,
    /// These events were processed: mark them `done` (answered once committed).
    Done(Vec<String>, DoneReply),
    Flush,
    /// Bury events routed to an integration revoked meanwhile (see [`SWEEP_EVERY`]).
    Sweep,
    Observe(RpcReplyPort<HealthReport>),
}

/// How often the inbox looks for pending events of revoked integrations: an event
/// that raced a revocation waits at most this long before it is `dead`.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

switchboard_actors::observable!(InboxMsg::Observe);

pub struct InboxActor;

/// Answers a [`InboxMsg::Done`] once its events are recorded.
type DoneReply = RpcReplyPort<Result<(), String>>;

pub struct InboxState {
    args: InboxArgs,
    pending: Vec<(NewEvent, StoreReply)>,
    done: Vec<(Vec<String>, DoneReply)>,
    flush_queued: bool,
    counts: Arc<Counts>,
}

impl InboxState {
    /// Writes the batch now if it is `full`, or else makes sure a flush is coming.
    async fn flush_soon(
        &mut self,
        myself: &ActorRef<InboxMsg>,
        full: bool,
    ) -> Result<(), ActorProcessingErr> {
        if full {
            Box::pin(self.flush()).await;
            self.flush_rest(myself)?;
        } else if !self.flush_queued {
            // Every request queued meanwhile joins this batch.
            self.flush_queued = true;
            if self.args.batch_delay.is_zero() {
                myself.send_message(InboxMsg::Flush)?;
            } else {
                myself.send_after(self.args.batch_delay, || InboxMsg::Flush);
            }
        }
        Ok(())
    }

    /// Events left over by a flush (beyond its `max_batch`) have waited a batch
    /// already: the next flush comes at once.
    fn flush_rest(&mut self, myself: &ActorRef<InboxMsg>) -> Result<(), ActorProcessingErr> {
        if !self.pending.is_empty() && !self.flush_queued {
            self.flush_queued = true;
            myself.send_message(InboxMsg::Flush)?;
        }
        Ok(())
    }

    async fn flush(&mut self) {
        self.flush_queued = false;
        if self.pending.is_empty() && self.done.is_empty() {
            return;
        }
        // At most `max_batch` events; the rest wait for the next flush, which the
        // handler asks for once this one is over.
        let later = self
            .pending
            .split_off(self.pending.len().min(self.args.max_batch.max(1)));
        let pending = std::mem::replace(&mut self.pending, later);
        let (batch, replies): (Vec<NewEvent>, Vec<_>) = pending.into_iter().unzip();
        // Each event's integration, to wake it; `None` for an event nothing processes
        // (stored done) and for one nobody owns (ingress buries it).
        let consumers = &self.args.consumers;
        let settled: Vec<bool> = batch.iter().map(|e| !consumers.wanted(e)).collect();
        let owners: Vec<Option<String>> = batch
            .iter()
            .zip(&settled)
            .map(|(e, settled)| e.integration_id.clone().filter(|_| !settled))
            .collect();
        let (done, done_replies): (Vec<Vec<String>>, Vec<_>) =
            std::mem::take(&mut self.done).into_iter().unzip();
        let done: Vec<String> = done.into_iter().flatten().collect();
        let committed = Committed {
            replies,
            owners,
            settled: settled.clone(),
            done_replies,
            registry: self.args.registry.clone(),
            metrics: Arc::clone(&self.args.metrics),
            counts: Arc::clone(&self.counts),
            store_ready: self.args.store_ready.clone(),
            cluster: self.args.cluster.clone(),
        };
        // Acknowledged once durable; the next batch may go as soon as the store is ready.
        events::write_batch(&self.args.store, batch, &settled, done, move |written| {
            committed.acknowledge(written)
        })
        .await;
    }
}

/// What the health report shows, kept by whichever thread acknowledges a batch.
#[derive(Default)]
struct Counts {
    batches: AtomicU64,
    stored: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A batch handed to the store, acknowledged once it is durable.
struct Committed {
    replies: Vec<StoreReply>,
    owners: Vec<Option<String>>,
    settled: Vec<bool>,
    done_replies: Vec<DoneReply>,
    registry: Registry,
    metrics: Arc<PipelineMetrics>,
    counts: Arc<Counts>,
    store_ready: tokio::sync::watch::Receiver<bool>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Committed {
    /// Tells the store monitor when this batch's outcome contradicts its view.
    fn nudge_monitor(&self, written: bool) {
        if *self.store_ready.borrow() != written
            && let Some(monitor) = self.registry.lookup::<StoreMonitorMsg>(STORE)
        {
            let _ = monitor.send_message(StoreMonitorMsg::Nudge);
        }
    }

    /// Answers every request of the batch and wakes the integrations that have new
    /// events; an `Err` acknowledges nothing.
    fn acknowledge(self, written: Result<Vec<Stored>, StoreError>) {
        self.nudge_monitor(written.is_ok());
        let stored = match written {
            Ok(stored) => stored,
            Err(error) => {
                let error = error.to_string();
                warn!(error = %error, events = self.replies.len(), "inbox write failed: nothing acknowledged");
                *lock(&self.counts.last_error) = Some(error.clone());
                for reply in self.replies {
                    let _ = reply.send(Err(error.clone()));
                }
                for reply in self.done_replies {
                    let _ = reply.send(Err(error.clone()));
                }
                return;
            }
        };
        self.counts.batches.fetch_add(1, Ordering::Relaxed);
        *lock(&self.counts.last_error) = None;
        for reply in self.done_replies {
            let _ = reply.send(Ok(()));
        }
        let mut woken = std::collections::HashSet::new();
        let outcomes = stored
            .into_iter()
            .zip(self.replies)
            .zip(self.owners)
            .zip(self.settled);
        for (((result, reply), owner), settled) in outcomes {
            if result.duplicate {
                self.metrics.duplicates.inc();
            } else {
                self.counts.stored.fetch_add(1, Ordering::Relaxed);
                self.metrics.received.inc();
                if settled {
                    self.metrics.processed.inc();
                }
                if let Some(owner) = owner
                    && woken.insert(owner.clone())
                {
                    match self
                        .registry
                        .lookup::<IntegrationMsg>(&integration::actor_name(&owner))
                    {
                        Some(actor) => {
                            let _ = actor.send_message(IntegrationMsg::ProcessEvents);
                        }
                        // Its actor runs on another node (or none yet).
                        None => {
                            if let Some(cluster) = &self.cluster {
                                cluster.wake_elsewhere(&owner);
                            }
                        }
                    }
                }
            }
            let _ = reply.send(Ok(result));
        }
    }
}

impl Actor for InboxActor {
    type Msg = InboxMsg;
    type State = InboxState;
    type Arguments = InboxArgs;

    async fn pre_start(
        &self,
        _: ActorRef<InboxMsg>,
        args: InboxArgs,
    ) -> Result<InboxState, ActorProcessingErr> {
        Ok(InboxState {
            args,
            pending: Vec::new(),
            done: Vec::new(),
            flush_queued: false,
            counts: Arc::default(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<InboxMsg>,
        _: &mut InboxState,
    ) -> Result<(), ActorProcessingErr> {
        myself.send_interval(SWEEP_EVERY, || InboxMsg::Sweep);
        // What was queued while no inbox ran, or announced to a predecessor that
        // stopped before taking it.
        myself.send_message(InboxMsg::Queued)?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<InboxMsg>,
        message: InboxMsg,
        state: &mut InboxState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            InboxMsg::Queued => {
                let queued = state.args.intake.take();
                if !queued.is_empty() {
                    state.pending.extend(queued);
                    let full = state.pending.len() >= state.args.max_batch;
                    state.flush_soon(&myself, full).await?;
                }
            }
            InboxMsg::Done(ids, reply) => {
                state.done.push((ids, reply));
                // Processed ids are bounded like the events, by `max_batch`.
                let ids: usize = state.done.iter().map(|(ids, _)| ids.len()).sum();
                let full = ids >= state.args.max_batch;
                state.flush_soon(&myself, full).await?;
            }
            InboxMsg::Flush => {
                Box::pin(state.flush()).await;
                state.flush_rest(&myself)?;
            }
            InboxMsg::Sweep => {
                // Off the actor: batches keep flowing while it runs.
                let store = state.args.store.clone();
                tokio::spawn(async move {
                    match events::bury_revoked(&store).await {
                        Ok(0) => {}
                        Ok(buried) => {
                            warn!(
                                events = buried,
                                "events of revoked integrations are now dead"
                            )
                        }
                        Err(error) => {
                            warn!(error = %error, "revoked integrations' events not swept")
                        }
                    }
                });
            }
            InboxMsg::Observe(reply) => {
                let counts = &state.counts;
                let mut report = HealthReport::new(INBOX, "inbox", Status::Running)
                    .with_detail("batches", counts.batches.load(Ordering::Relaxed))
                    .with_detail("stored", counts.stored.load(Ordering::Relaxed))
                    .with_detail("waiting", state.pending.len() + state.args.intake.len());
                report.last_error = lock(&counts.last_error).clone();
                let _ = reply.send(report);
            }
        }
        Ok(())
    }
}

/// Records processed events as `done` through the inbox actor's next group commit;
/// writes them directly when the inbox is not running. `Err`: not recorded (they stay
/// pending and are processed again: at least once).
pub async fn record_done(
    registry: &Registry,
    store: &Store,
    ids: Vec<String>,
    timeout: Duration,
) -> Result<(), String> {
    if ids.is_empty() {
        return Ok(());
    }
    let Some(actor) = registry.lookup::<InboxMsg>(INBOX) else {
        return events::mark_done_all(store, &ids)
            .await
            .map_err(|e| e.to_string());
    };
    ask(&actor, |reply| InboxMsg::Done(ids, reply), timeout).await
}

/// Stores one event durably through the inbox; `Err` means it is not known to be
/// stored, and the caller must not acknowledge it. An event whose answer did not come
/// within `timeout` may still be stored later: a redelivery is then a duplicate.
pub async fn store(intake: &Intake, event: NewEvent, timeout: Duration) -> Result<Stored, String> {
    let (reply, answer) = oneshot::channel();
    intake.push(event, reply);
    match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err("the inbox stopped before storing the event".to_string()),
        Err(_) => Err("the inbox did not answer in time".to_string()),
    }
}

/// One request to the inbox and its answer; a timeout or a restarting inbox is an `Err`.
async fn ask<T: Send + 'static>(
    actor: &ActorRef<InboxMsg>,
    message: impl FnOnce(RpcReplyPort<Result<T, String>>) -> InboxMsg,
    timeout: Duration,
) -> Result<T, String> {
    match actor.call(message, Some(timeout)).await {
        Ok(ractor::rpc::CallResult::Success(result)) => result,
        Ok(ractor::rpc::CallResult::Timeout) => Err("the inbox did not answer in time".to_string()),
        _ => Err("the inbox is restarting".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use switchboard_actors::{BreakerConfig, Registry};

    use super::*;
    use crate::config::DatabaseConfig;
    use crate::pipeline::routes::Routes;
    use crate::secret::Secret;

    fn event(delivery: &str) -> NewEvent {
        NewEvent {
            organization_id: None,
            integration_id: None,
            connector_type: "webhook".into(),
            event_type: "order.created".into(),
            delivery_id: delivery.into(),
            delivery_scope: events::DeliveryScope::Provider,
            payload: "{}".into(),
            occurred_at: None,
            dead_reason: None,
        }
    }

    async fn start_inbox(args: &InboxArgs, registry: &Registry) -> ActorRef<InboxMsg> {
        let (inbox, _) = Actor::spawn(Some(registry.qualify(INBOX)), InboxActor, args.clone())
            .await
            .expect("inbox starts");
        inbox
    }

    /// Ingress queues events whether or not an inbox runs: one that starts (a restart)
    /// stores what waited, in arrival order, and answers every sender.
    #[tokio::test(flavor = "multi_thread")]
    async fn events_queued_while_no_inbox_runs_are_stored_by_the_next_one() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let db = Store::connect(&DatabaseConfig {
            url: Secret::new(format!("sqlite://{}/inbox.db", dir.path().display())),
            ..DatabaseConfig::default()
        })
        .unwrap();
        db.migrate().await.unwrap();
        let registry = Registry::unique();
        let intake = Arc::new(Intake::new(registry.clone()));
        let args = InboxArgs {
            store: db.clone(),
            intake: Arc::clone(&intake),
            max_batch: 4,
            batch_delay: Duration::ZERO,
            registry: registry.clone(),
            metrics: Arc::default(),
            consumers: Arc::new(Consumers {
                handlers: Arc::new(crate::connectors::ConnectorSet::default()),
                routes: Arc::new(Routes::operator_only(
                    Vec::new(),
                    &BreakerConfig::default(),
                    Arc::new(crate::connectors::ConnectorSet::default()),
                )),
            }),
            store_ready: tokio::sync::watch::channel(true).1,
            cluster: None,
        };

        let first = start_inbox(&args, &registry).await;
        let stored = store(&intake, event("before"), Duration::from_secs(5)).await;
        assert!(stored.is_ok_and(|s| !s.duplicate));

        // The inbox is gone (it crashed, say): senders wait instead of being refused.
        first.kill_and_wait(None).await.unwrap();
        let senders: Vec<_> = (0..10)
            .map(|n| {
                let intake = Arc::clone(&intake);
                tokio::spawn(async move {
                    store(
                        &intake,
                        event(&format!("during_{n}")),
                        Duration::from_secs(5),
                    )
                    .await
                })
            })
            .collect();
        for _ in 0..200 {
            if intake.len() == 10 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(intake.len(), 10, "queued, not refused");

        let second = start_inbox(&args, &registry).await;
        for sender in senders {
            let stored = sender.await.unwrap();
            assert!(stored.is_ok_and(|s| !s.duplicate));
        }
        let all = events::list(&db, None, None, 100).await.unwrap();
        let mut deliveries: Vec<&str> = all.iter().map(|e| e.delivery_id.as_str()).collect();
        assert_eq!(deliveries.remove(0), "before");
        deliveries.sort_unstable();
        let mut expected: Vec<String> = (0..10).map(|n| format!("during_{n}")).collect();
        expected.sort_unstable();
        assert_eq!(deliveries, expected);
        second.stop(None);
    }
}
