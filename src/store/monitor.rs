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
    /// Someone's store operation says the store changed state (it answered while
    /// marked down, or failed while marked up): check now, so that readiness follows
    /// at once instead of at the next scheduled check (up to `backoff_cap` away).
    Nudge,
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
            StoreMonitorMsg::Nudge => {
                // The scheduled checks go on as they are: this one schedules nothing.
                let _ = state.check().await;
            }
            StoreMonitorMsg::Check => {
                let delay = state.check().await;
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

impl StoreMonitorState {
    /// Migrates (the first time) or pings the store, publishes whether it is ready,
    /// and says when to check next.
    async fn check(&mut self) -> Duration {
        let outcome = if self.migrated {
            self.args.store.ping().await
        } else {
            self.args.store.migrate().await.map(|applied| {
                info!(
                    applied,
                    backend = self.args.store.backend().as_str(),
                    "store migrated"
                );
                self.migrated = true;
            })
        };
        let delay = match outcome {
            Ok(()) => {
                if !self.reachable && self.failures > 0 {
                    info!("store reachable again");
                }
                self.reachable = true;
                self.failures = 0;
                self.last_error = None;
                self.args.interval
            }
            Err(error) => {
                let explained = explain(&error, &self.args.store);
                // Said once, clearly; the retries that follow fail the same way.
                if self.last_error.as_deref() != Some(explained.as_str()) {
                    warn!(error = %explained, "the store is not usable; retrying with backoff until it is");
                } else {
                    tracing::debug!(error = %explained, attempt = self.failures + 1, "store check failed again");
                }
                self.reachable = false;
                self.last_error = Some(explained);
                let delay = self.args.backoff.delay(self.failures);
                self.failures = self.failures.saturating_add(1);
                delay
            }
        };
        self.args
            .ready
            .send_replace(self.migrated && self.reachable);
        delay
    }
}

/// The store's error, with what to do about the usual ones.
fn explain(error: &super::StoreError, store: &Store) -> String {
    let text = error.to_string();
    if let Store::Postgres { url, .. } = store
        && text.contains("does not exist")
        && text.contains("database")
    {
        // postgres://user@host:port/name?options: name the database and how to create it.
        let url = url.expose();
        let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let name = path.split(['?', '#']).next().unwrap_or_default();
        let host = authority.rsplit('@').next().unwrap_or(authority);
        let (host, port) = host.split_once(':').unwrap_or((host, "5432"));
        let user = authority
            .split_once('@')
            .map(|(user, _)| user.split(':').next().unwrap_or(user))
            .filter(|user| !user.is_empty())
            .map(|user| format!(" -U {user}"))
            .unwrap_or_default();
        return format!(
            "the PostgreSQL database '{name}' does not exist: create it with `createdb -h {host} -p {port}{user} {name}`"
        );
    }
    text
}
