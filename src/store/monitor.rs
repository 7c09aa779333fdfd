//! The `store` actor: applies migrations at start and keeps checking the store.
//!
//! A store that cannot be reached is retried with backoff, never crashed on: the
//! daemon stays up, /readyz says why it is not ready, and everything recovers by
//! itself when the store returns. Whoever needs migrations applied (the vault) waits
//! on the `ready` signal this actor publishes.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use switchboard_actors::{Backoff, HealthReport, Status};
use tokio::sync::watch;
use tracing::{info, warn};

use super::Store;

pub const STORE: &str = "store";

#[derive(Clone)]
pub struct StoreMonitorArgs {
    pub store: Store,
    /// `true` once migrations are applied and the store answers; shared across restarts.
    pub ready: Arc<watch::Sender<bool>>,
    pub backoff: Backoff,
    /// How often a healthy store is checked.
    pub interval: Duration,
}

pub enum StoreMonitorMsg {
    Check,
    Observe(RpcReplyPort<HealthReport>),
}

switchboard_actors::observable!(StoreMonitorMsg::Observe);

pub struct StoreMonitor;

pub struct StoreMonitorState {
    args: StoreMonitorArgs,
    migrated: bool,
    reachable: bool,
    failures: u32,
    last_error: Option<String>,
}

impl Actor for StoreMonitor {
    type Msg = StoreMonitorMsg;
    type State = StoreMonitorState;
    type Arguments = StoreMonitorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<StoreMonitorMsg>,
        args: StoreMonitorArgs,
    ) -> Result<StoreMonitorState, ActorProcessingErr> {
        myself.send_message(StoreMonitorMsg::Check)?;
        Ok(StoreMonitorState {
            args,
            migrated: false,
            reachable: false,
            failures: 0,
            last_error: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<StoreMonitorMsg>,
        message: StoreMonitorMsg,
        state: &mut StoreMonitorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            StoreMonitorMsg::Check => {
                let outcome = if state.migrated {
                    state.args.store.ping().await
                } else {
                    state.args.store.migrate().await.map(|applied| {
                        info!(
                            applied,
                            backend = state.args.store.backend().as_str(),
                            "store migrated"
                        );
                        state.migrated = true;
                    })
                };
                let delay = match outcome {
                    Ok(()) => {
                        if !state.reachable && state.failures > 0 {
                            info!("store reachable again");
                        }
                        state.reachable = true;
                        state.failures = 0;
                        state.last_error = None;
                        state.args.interval
                    }
                    Err(error) => {
                        warn!(error = %error, attempt = state.failures + 1, "store check failed, retrying");
                        state.reachable = false;
                        state.last_error = Some(error.to_string());
                        let delay = state.args.backoff.delay(state.failures);
                        state.failures = state.failures.saturating_add(1);
                        delay
                    }
                };
                state
                    .args
                    .ready
                    .send_replace(state.migrated && state.reachable);
                myself.send_after(delay, || StoreMonitorMsg::Check);
            }
            StoreMonitorMsg::Observe(reply) => {
                let status = if state.migrated && state.reachable {
                    Status::Running
                } else if state.failures == 0 {
                    Status::Starting
                } else {
                    Status::Backoff
                };
                let mut report = HealthReport::new(STORE, "store", status)
                    .with_detail("backend", state.args.store.backend().as_str())
                    .with_detail("migrated", state.migrated)
                    .with_detail("reachable", state.reachable)
                    .with_detail("failed_checks", state.failures);
                report.last_error = state.last_error.clone();
                let _ = reply.send(report);
            }
        }
        Ok(())
    }
}
