//! The `inbox` actor: group commit for the durable inbox.
//!
//! Ingress asks it to store an event and answers the provider only once it replied,
//! which is once the event is durable. Requests that arrive while the store is busy
//! queue in the mailbox; the next flush writes all of them in one transaction (up to
//! `max_batch`), so that the write rate grows with concurrency instead of being capped
//! by one commit per event. One batch is written at a time (two transactions on two
//! connections could commit out of order), and its events are acknowledged once it is
//! durable: on PostgreSQL that is when it commits; on SQLite the next batch is already
//! being committed while the last one's WAL is synced.
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
use tracing::warn;

use super::Consumers;
use super::metrics::PipelineMetrics;
use crate::integration::{self, IntegrationMsg};
use crate::lock;
use crate::store::events::{self, NewEvent, Stored};
use crate::store::{Store, StoreError};

pub const INBOX: &str = "inbox";

#[derive(Clone)]
pub struct InboxArgs {
    pub store: Store,
    pub max_batch: usize,
    /// How long the first event of a batch waits for company before the write.
    pub batch_delay: Duration,
    /// Where the integration actors to wake are found.
    pub registry: Registry,
    pub metrics: Arc<PipelineMetrics>,
    /// Whether an event has anything to process it (or is stored `done` at once).
    pub consumers: Arc<Consumers>,
}

pub enum InboxMsg {
    Store(NewEvent, RpcReplyPort<Result<Stored, String>>),
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
    pending: Vec<(NewEvent, RpcReplyPort<Result<Stored, String>>)>,
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

    async fn flush(&mut self) {
        self.flush_queued = false;
        if self.pending.is_empty() && self.done.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
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
    replies: Vec<RpcReplyPort<Result<Stored, String>>>,
    owners: Vec<Option<String>>,
    settled: Vec<bool>,
    done_replies: Vec<DoneReply>,
    registry: Registry,
    metrics: Arc<PipelineMetrics>,
    counts: Arc<Counts>,
}

impl Committed {
    /// Answers every request of the batch and wakes the integrations that have new
    /// events; an `Err` acknowledges nothing.
    fn acknowledge(self, written: Result<Vec<Stored>, StoreError>) {
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
                    && let Some(actor) = self
                        .registry
                        .lookup::<IntegrationMsg>(&integration::actor_name(&owner))
                {
                    let _ = actor.send_message(IntegrationMsg::ProcessEvents);
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
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<InboxMsg>,
        message: InboxMsg,
        state: &mut InboxState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            InboxMsg::Store(event, reply) => {
                state.pending.push((event, reply));
                let full = state.pending.len() >= state.args.max_batch;
                state.flush_soon(&myself, full).await?;
            }
            InboxMsg::Done(ids, reply) => {
                state.done.push((ids, reply));
                // Processed ids are bounded like the events, by `max_batch`.
                let ids: usize = state.done.iter().map(|(ids, _)| ids.len()).sum();
                let full = ids >= state.args.max_batch;
                state.flush_soon(&myself, full).await?;
            }
            InboxMsg::Flush => Box::pin(state.flush()).await,
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
                    .with_detail("waiting", state.pending.len());
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

/// Stores one event durably through the inbox actor; `Err` means nothing was stored
/// (or it is unknown whether it was), and the caller must not acknowledge.
pub async fn store(
    registry: &Registry,
    event: NewEvent,
    timeout: Duration,
) -> Result<Stored, String> {
    let actor = registry
        .lookup::<InboxMsg>(INBOX)
        .ok_or_else(|| "the inbox is not running".to_string())?;
    ask(&actor, |reply| InboxMsg::Store(event, reply), timeout).await
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
