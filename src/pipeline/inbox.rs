//! The `inbox` actor: group commit for the durable inbox.
//!
//! Ingress asks it to store an event and answers the provider only once it replied.
//! Requests that arrive while a transaction is being written queue in the mailbox; the
//! next flush writes all of them in one transaction (up to `max_batch`), so that the
//! write rate grows with concurrency instead of being capped by one commit per event.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use switchboard_actors::{HealthReport, Registry, Status};
use tracing::warn;

use super::metrics::PipelineMetrics;
use crate::integration::{self, IntegrationMsg};
use crate::store::Store;
use crate::store::events::{self, NewEvent, Stored};

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
}

pub enum InboxMsg {
    Store(NewEvent, RpcReplyPort<Result<Stored, String>>),
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

pub struct InboxState {
    args: InboxArgs,
    pending: Vec<(NewEvent, RpcReplyPort<Result<Stored, String>>)>,
    flush_queued: bool,
    batches: u64,
    stored: u64,
    last_error: Option<String>,
}

impl InboxState {
    async fn flush(&mut self) {
        self.flush_queued = false;
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let (batch, replies): (Vec<NewEvent>, Vec<_>) = pending.into_iter().unzip();
        let owners: Vec<Option<String>> = batch.iter().map(|e| e.integration_id.clone()).collect();
        match events::insert_batch(&self.args.store, batch).await {
            Ok(stored) => {
                self.batches += 1;
                self.last_error = None;
                let mut woken = std::collections::HashSet::new();
                for ((result, reply), owner) in stored.into_iter().zip(replies).zip(owners) {
                    if result.duplicate {
                        self.args.metrics.duplicates.inc();
                    } else {
                        self.stored += 1;
                        self.args.metrics.received.inc();
                        if let Some(owner) = owner
                            && woken.insert(owner.clone())
                            && let Some(actor) = self
                                .args
                                .registry
                                .lookup::<IntegrationMsg>(&integration::actor_name(&owner))
                        {
                            let _ = actor.send_message(IntegrationMsg::ProcessEvents);
                        }
                    }
                    let _ = reply.send(Ok(result));
                }
            }
            Err(error) => {
                warn!(error = %error, events = replies.len(), "inbox write failed: nothing acknowledged");
                self.last_error = Some(error.to_string());
                for reply in replies {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
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
            flush_queued: false,
            batches: 0,
            stored: 0,
            last_error: None,
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
                if state.pending.len() >= state.args.max_batch {
                    Box::pin(state.flush()).await;
                } else if !state.flush_queued {
                    // Every request queued meanwhile joins this batch.
                    state.flush_queued = true;
                    if state.args.batch_delay.is_zero() {
                        myself.send_message(InboxMsg::Flush)?;
                    } else {
                        myself.send_after(state.args.batch_delay, || InboxMsg::Flush);
                    }
                }
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
                let mut report = HealthReport::new(INBOX, "inbox", Status::Running)
                    .with_detail("batches", state.batches)
                    .with_detail("stored", state.stored)
                    .with_detail("waiting", state.pending.len());
                report.last_error = state.last_error.clone();
                let _ = reply.send(report);
            }
        }
        Ok(())
    }
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
    match actor
        .call(|reply| InboxMsg::Store(event, reply), Some(timeout))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(result)) => result,
        Ok(ractor::rpc::CallResult::Timeout) => Err("the inbox did not answer in time".to_string()),
        _ => Err("the inbox is restarting".to_string()),
    }
}
