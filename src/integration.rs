//! IntegrationActor: one per tenant integration, under its connector's supervisor.
//!
//! It owns what belongs to one tenant's account at a provider: a circuit breaker
//! around every call to the provider, a rate limiter with the provider's per-tenant
//! quota (honouring `Retry-After`), and the credential lifecycle: a timer refreshes the
//! credentials `refresh_margin` before they expire (one refresh at a time, since the
//! actor handles one message at a time), failures are retried with backoff and, after
//! `refresh_attempts` in a row, the integration's status becomes `error` with the
//! reason. Credentials are decrypted only for the call that needs them.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::Rng;
use switchboard_actors::{Backoff, BreakerConfig, ChildSpec, HealthReport, Status, Timestamp};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::connectors::{
    Connector, ConnectorError, CredentialValue, Credentials, EventEffect, GateError as CallError,
    ProviderGate,
};
use crate::pipeline::{Envelope, Pipeline, inbox};
use crate::secret::Secret;
use crate::store::events::{self, NewEvent};
use crate::store::integrations::{
    self, Integration, NewCredential, STATUS_ACTIVE, STATUS_ERROR, STATUS_SUSPENDED,
};
use crate::store::poll_cursors::{self, PollCursor};
use crate::store::{self, Store, audit};
use crate::vault::{Binding, Sealed, Vault};

/// The actor name of an integration in its connector's supervisor.
pub fn actor_name(integration_id: &str) -> String {
    format!("integration:{integration_id}")
}

/// Where an integration's credentials live; the daemon's is the vault and the store,
/// tests may keep them in memory.
#[async_trait::async_trait]
pub trait CredentialStore: Send + Sync + 'static {
    async fn load(&self, integration: &Integration) -> Result<Credentials, String>;
    async fn save(
        &self,
        integration: &Integration,
        values: Vec<CredentialValue>,
    ) -> Result<(), String>;
    async fn set_status(&self, integration: &Integration, status: &str) -> Result<(), String>;
    async fn set_metadata(
        &self,
        integration: &Integration,
        metadata: &serde_json::Value,
    ) -> Result<(), String>;
    /// The provider revoked the account: credentials deleted and status `revoked`
    /// together, and the integration's waiting events marked dead with the reason.
    async fn revoke(&self, integration: &Integration, reason: &str) -> Result<(), String>;
    /// Records what happened, without secrets.
    async fn audit(&self, integration: &Integration, action: &str, details: serde_json::Value);
}

/// Credentials encrypted by the vault, stored in the store.
pub struct VaultCredentials {
    pub store: Store,
    pub vault: Vault,
    /// Cluster mode: a credential is replaced only under this node's lease.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

#[async_trait::async_trait]
impl CredentialStore for VaultCredentials {
    async fn load(&self, integration: &Integration) -> Result<Credentials, String> {
        let rows =
            integrations::credentials(&self.store, &integration.organization_id, &integration.id)
                .await
                .map_err(|e| e.to_string())?;
        let items = rows.iter().map(Sealed::from_row).collect();
        let plaintexts = self
            .vault
            .decrypt_batch(items)
            .await
            .map_err(|e| e.to_string())?;
        let mut values = Vec::with_capacity(rows.len());
        for (row, plaintext) in rows.into_iter().zip(plaintexts) {
            let plaintext = plaintext.map_err(|e| e.to_string())?;
            let text = String::from_utf8(plaintext.expose().clone())
                .map_err(|_| format!("credential {} is not text", row.credential_type))?;
            values.push(CredentialValue {
                credential_type: row.credential_type,
                secret: Secret::new(text),
                expires_at: row.expires_at,
            });
        }
        Ok(Credentials {
            organization_id: integration.organization_id.clone(),
            integration_id: integration.id.clone(),
            external_id: integration.external_id.clone(),
            metadata: serde_json::from_str(&integration.metadata).unwrap_or_default(),
            values,
        })
    }

    async fn save(
        &self,
        integration: &Integration,
        values: Vec<CredentialValue>,
    ) -> Result<(), String> {
        let sealed = seal(
            &self.vault,
            &integration.organization_id,
            &integration.id,
            values,
        )
        .await?;
        let Some(cluster) = &self.cluster else {
            return integrations::replace_credentials(
                &self.store,
                &integration.organization_id,
                &integration.id,
                sealed,
            )
            .await
            .map_err(|e| e.to_string());
        };
        let refused = || {
            cluster.fenced(&integration.id);
            crate::store::StoreError::Fenced(integration.id.clone()).to_string()
        };
        let epoch = cluster.fence(&integration.id).ok_or_else(refused)?;
        match crate::store::cluster::replace_credentials(
            &self.store,
            &integration.organization_id,
            &integration.id,
            cluster.fence_of(epoch),
            sealed,
        )
        .await
        {
            Err(crate::store::StoreError::Fenced(_)) => Err(refused()),
            other => other.map_err(|e| e.to_string()),
        }
    }

    async fn set_status(&self, integration: &Integration, status: &str) -> Result<(), String> {
        integrations::set_status(
            &self.store,
            &integration.organization_id,
            &integration.id,
            status,
        )
        .await
        .map_err(|e| e.to_string())
    }

    async fn set_metadata(
        &self,
        integration: &Integration,
        metadata: &serde_json::Value,
    ) -> Result<(), String> {
        integrations::set_metadata(
            &self.store,
            &integration.organization_id,
            &integration.id,
            metadata,
        )
        .await
        .map_err(|e| e.to_string())
    }

    async fn revoke(&self, integration: &Integration, reason: &str) -> Result<(), String> {
        match integrations::revoke(&self.store, &integration.organization_id, &integration.id).await
        {
            Ok(_) | Err(store::StoreError::NotFound) => {}
            Err(error) => return Err(error.to_string()),
        }
        events::bury_pending(&self.store, &integration.id, reason)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn audit(&self, integration: &Integration, action: &str, details: serde_json::Value) {
        if let Err(error) = audit::record(
            &self.store,
            Some(&integration.organization_id),
            "system",
            action,
            Some(&integration.id),
            details,
        )
        .await
        {
            warn!(integration_id = %integration.id, action, error = %error, "audit entry not written");
        }
    }
}

/// Encrypts credentials for storage, bound to their organization, integration and type.
pub async fn seal(
    vault: &Vault,
    organization_id: &str,
    integration_id: &str,
    values: Vec<CredentialValue>,
) -> Result<Vec<NewCredential>, String> {
    let items = values
        .iter()
        .map(|value| {
            (
                Binding::new(organization_id, integration_id, &value.credential_type),
                Secret::wrap(value.secret.expose().as_bytes().to_vec()),
            )
        })
        .collect();
    let sealed = vault
        .encrypt_batch(items)
        .await
        .map_err(|e| e.to_string())?;
    Ok(values
        .into_iter()
        .zip(sealed)
        .map(|(value, sealed)| NewCredential {
            credential_type: value.credential_type,
            ciphertext: sealed.ciphertext,
            encryption_key_id: sealed.key_id,
            expires_at: value.expires_at,
        })
        .collect())
}

/// What every integration actor of one connector shares.
pub struct IntegrationServices {
    pub connector: Arc<dyn Connector>,
    pub credentials: Arc<dyn CredentialStore>,
    pub breaker: BreakerConfig,
    pub refresh_margin: Duration,
    pub refresh_attempts: u32,
    pub backoff: Backoff,
    pub validation_spread: Duration,
    /// Event processing; `None` where the actor only keeps credentials (tests).
    pub pipeline: Option<Arc<Pipeline>>,
    /// How often integrations poll, for a connector whose integrations do.
    pub poll_interval: Duration,
    /// Cluster mode: the lease this node holds fences every write that matters.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

#[derive(Clone)]
pub struct IntegrationArgs {
    pub integration: Integration,
    /// The earliest expiry among its credentials.
    pub expires_at: Option<NaiveDateTime>,
    pub services: Arc<IntegrationServices>,
}

/// The supervised child for one integration.
pub fn child_spec(args: IntegrationArgs) -> ChildSpec {
    let name = actor_name(&args.integration.id);
    ChildSpec::actor(name, "integration", move || {
        (IntegrationActor, args.clone())
    })
    .observed_with::<IntegrationMsg>()
}

pub enum IntegrationMsg {
    /// Check the credentials with the provider; the reply (if any) gets the outcome.
    Validate(Option<RpcReplyPort<Result<(), String>>>),
    RefreshCredentials,
    /// Process the next pending event, if any (sent by the inbox when events arrive).
    ProcessEvents,
    /// Poll the provider's feed (for a connector that polls).
    Poll,
    Observe(RpcReplyPort<HealthReport>),
}

switchboard_actors::observable!(IntegrationMsg::Observe);

pub struct IntegrationActor;

pub struct IntegrationState {
    integration: Integration,
    services: Arc<IntegrationServices>,
    expires_at: Option<NaiveDateTime>,
    /// The breaker and rate limit around every request to the provider, this actor's
    /// own (validate, refresh) and those its connector's event handler makes.
    provider: ProviderGate,
    last_validated_at: Option<Timestamp>,
    last_refreshed_at: Option<Timestamp>,
    /// What is wrong now, and which part of the actor's work it concerns: the part
    /// that succeeds next clears it.
    last_error: Option<(Work, String)>,
    refresh_failures: u32,
    /// The pending refresh; replaced when rescheduled, aborted when the actor stops.
    refresh_timer: Option<Timer>,
    /// The next event retry, likewise.
    events_timer: Option<Timer>,
    events_processed: u64,
    /// Where polling stands, for an integration that polls (boxed: most do not, and
    /// every integration actor is kept small).
    polling: Option<Box<Polling>>,
}

/// An integration's polling: its cursor and times, as stored, and its next poll.
struct Polling {
    row: PollCursor,
    /// Failed polls in a row, for the backoff.
    failures: u32,
    timer: Option<Timer>,
}

/// How long polled events may take to be stored.
const POLL_STORE_WITHIN: Duration = Duration::from_secs(10);

type Timer = JoinHandle<Result<(), ractor::MessagingErr<IntegrationMsg>>>;

/// The parts of an integration actor's work, for what its `last_error` concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    /// Validating, refreshing or revoking the credentials.
    Credentials,
    /// Processing events.
    Events,
    /// Polling the provider's feed.
    Polling,
}

impl IntegrationState {
    /// Cluster mode: the fence of this integration's writes, or the refusal when this
    /// node no longer holds its lease. `Ok(None)` outside cluster mode.
    fn fence(&self) -> Result<Option<(&crate::cluster::Cluster, i64)>, store::StoreError> {
        let Some(cluster) = &self.services.cluster else {
            return Ok(None);
        };
        match cluster.fence(&self.integration.id) {
            Some(epoch) => Ok(Some((cluster, epoch))),
            None => Err(self.fenced(store::StoreError::Fenced(self.integration.id.clone()))),
        }
    }

    /// Counts a write the lease refused (the keeper stops this actor at its next round).
    fn fenced(&self, error: store::StoreError) -> store::StoreError {
        if let (store::StoreError::Fenced(_), Some(cluster)) = (&error, &self.services.cluster) {
            cluster.fenced(&self.integration.id);
        }
        error
    }

    /// Marks processed events `done`: through the inbox's group commit, or in cluster
    /// mode under this node's lease.
    async fn record_done(
        &self,
        pipeline: &Pipeline,
        done: Vec<String>,
        timeout: Duration,
    ) -> Result<(), String> {
        if done.is_empty() {
            return Ok(());
        }
        match self.fence().map_err(|e| e.to_string())? {
            None => inbox::record_done(&pipeline.registry, &pipeline.store, done, timeout).await,
            Some((cluster, epoch)) => store::cluster::mark_done(
                &pipeline.store,
                &self.integration.id,
                cluster.fence_of(epoch),
                &done,
            )
            .await
            .map_err(|e| self.fenced(e).to_string()),
        }
    }

    async fn mark_failed(
        &self,
        store: &Store,
        event_id: &str,
        attempts: i32,
        reason: &str,
        next_attempt_at: Option<NaiveDateTime>,
    ) -> Result<(), store::StoreError> {
        match self.fence()? {
            None => events::mark_failed(store, event_id, attempts, reason, next_attempt_at).await,
            Some((cluster, epoch)) => store::cluster::mark_failed(
                store,
                &self.integration.id,
                cluster.fence_of(epoch),
                event_id,
                attempts,
                reason,
                next_attempt_at,
            )
            .await
            .map_err(|e| self.fenced(e)),
        }
    }

    async fn save_cursor(&self, store: &Store, row: &PollCursor) -> Result<(), store::StoreError> {
        match self.fence()? {
            None => poll_cursors::save(store, row).await,
            Some((cluster, epoch)) => {
                store::cluster::save_cursor(store, cluster.fence_of(epoch), row)
                    .await
                    .map_err(|e| self.fenced(e))
            }
        }
    }

    /// `work` just succeeded: an error it had left is over.
    fn recovered(&mut self, work: Work) {
        if self.last_error.as_ref().is_some_and(|(of, _)| *of == work) {
            self.last_error = None;
        }
    }

    /// Runs one provider call through the limiter and the breaker.
    async fn call_provider<T>(
        &self,
        call: impl Future<Output = Result<T, ConnectorError>>,
    ) -> Result<T, CallError> {
        self.provider.guard(call).await
    }

    fn schedule_refresh(&mut self, myself: &ActorRef<IntegrationMsg>, delay: Duration) {
        if let Some(timer) = self.refresh_timer.take() {
            timer.abort();
        }
        self.refresh_timer = Some(myself.send_after(delay, || IntegrationMsg::RefreshCredentials));
    }

    /// When the next refresh is due: `refresh_margin` before expiry (now if that
    /// passed). Credentials that live shorter than twice the margin are refreshed
    /// halfway through their life instead, so that short-lived tokens never turn
    /// into a refresh loop.
    fn refresh_delay(&self) -> Option<Duration> {
        let expires_at = self.expires_at?;
        let now = store::now();
        let margin = chrono::Duration::from_std(self.services.refresh_margin).ok()?;
        let margin = margin.min((expires_at - now) / 2);
        Some(
            (expires_at - margin - now)
                .to_std()
                .unwrap_or(Duration::ZERO),
        )
    }

    async fn validate(&mut self, myself: &ActorRef<IntegrationMsg>) -> Result<(), String> {
        let credentials = self.services.credentials.load(&self.integration).await?;
        let connector = Arc::clone(&self.services.connector);
        match self.call_provider(connector.validate(&credentials)).await {
            Ok(()) => {
                self.last_validated_at = Some(Timestamp::now());
                self.recovered(Work::Credentials);
                Ok(())
            }
            Err(error) => {
                let message = error.message();
                self.last_error =
                    Some((Work::Credentials, format!("validation failed: {message}")));
                if let CallError::Failed(ConnectorError::Unauthorized(_)) = error {
                    // An expiring token may just be spent early: refreshed once first.
                    self.credentials_rejected(myself, &message).await;
                }
                Err(message)
            }
        }
    }

    async fn refresh(&mut self, myself: &ActorRef<IntegrationMsg>) {
        if self.integration.status == STATUS_SUSPENDED {
            // The provider refuses tokens while suspended; lifting it triggers a refresh.
            return;
        }
        let outcome = match self.services.credentials.load(&self.integration).await {
            Ok(credentials) => {
                let connector = Arc::clone(&self.services.connector);
                self.call_provider(connector.refresh(&credentials)).await
            }
            Err(error) => Err(CallError::Refused(error)),
        };
        let outcome = match outcome {
            Ok(values) => {
                let expires_at = values.iter().filter_map(|v| v.expires_at).min();
                match self
                    .services
                    .credentials
                    .save(&self.integration, values)
                    .await
                {
                    Ok(()) => Ok(expires_at),
                    Err(error) => Err(format!("storing refreshed credentials failed: {error}")),
                }
            }
            Err(CallError::Failed(ConnectorError::NotSupported)) => return,
            Err(CallError::Failed(ConnectorError::Unauthorized(reason))) => {
                // The provider refused outright (the connector already retried what
                // it could): waiting will not help, so say so now.
                self.mark_error(&reason).await;
                Err(reason)
            }
            Err(error) => Err(error.message()),
        };
        match outcome {
            Ok(expires_at) => {
                info!(integration_id = %self.integration.id, "credentials refreshed");
                self.expires_at = expires_at;
                self.refresh_failures = 0;
                self.last_error = None;
                self.last_refreshed_at = Some(Timestamp::now());
                if self.integration.status == STATUS_ERROR {
                    self.set_status(STATUS_ACTIVE).await;
                }
                self.services
                    .credentials
                    .audit(
                        &self.integration,
                        "credentials.refresh",
                        serde_json::json!({"outcome": "ok"}),
                    )
                    .await;
                if let Some(delay) = self.refresh_delay() {
                    self.schedule_refresh(myself, delay);
                }
            }
            Err(reason) => {
                self.refresh_failures += 1;
                warn!(integration_id = %self.integration.id, failures = self.refresh_failures, error = %reason, "credential refresh failed");
                self.last_error = Some((Work::Credentials, format!("refresh failed: {reason}")));
                self.services
                    .credentials
                    .audit(
                        &self.integration,
                        "credentials.refresh",
                        serde_json::json!({"outcome": "failed", "reason": reason, "failures": self.refresh_failures}),
                    )
                    .await;
                if self.refresh_failures >= self.services.refresh_attempts {
                    self.mark_error(&reason).await;
                }
                let delay = self.services.backoff.delay(self.refresh_failures);
                self.schedule_refresh(myself, delay);
            }
        }
    }

    fn schedule_events(&mut self, myself: &ActorRef<IntegrationMsg>, delay: Duration) {
        if let Some(timer) = self.events_timer.take() {
            timer.abort();
        }
        self.events_timer = Some(myself.send_after(delay, || IntegrationMsg::ProcessEvents));
    }

    /// Processes the oldest pending events, a batch at a time: the connector's handler,
    /// then the routes, one event after the other. Successes are recorded together. A
    /// failure is retried after a backoff and later events wait for it (order is kept);
    /// out of attempts, the event is `dead` and the next one goes.
    async fn process_next_event(&mut self, myself: &ActorRef<IntegrationMsg>) {
        const BATCH: i64 = 512;
        const DONE_TIMEOUT: Duration = Duration::from_secs(10);
        let Some(pipeline) = self.services.pipeline.clone() else {
            return;
        };
        let batch = match events::pending(&pipeline.store, &self.integration.id, BATCH).await {
            Ok(batch) => batch,
            Err(error) => {
                warn!(integration_id = %self.integration.id, error = %error, "reading events failed");
                self.schedule_events(myself, pipeline.retry.delay(1));
                return;
            }
        };
        let full = batch.len() as i64 == BATCH;
        if batch.is_empty() {
            return;
        }
        let connector = Arc::clone(&self.services.connector);
        // Decrypted once for the batch and dropped (zeroized) after it; only for a
        // connector with a handler of its own (a generic webhook goes to routes only).
        let handled_here = batch.iter().any(|e| connector.handles(&e.event_type));
        let credentials = if handled_here {
            match self.services.credentials.load(&self.integration).await {
                Ok(credentials) => Some(credentials),
                Err(error) => {
                    warn!(integration_id = %self.integration.id, error = %error, "credentials unavailable for events");
                    self.last_error =
                        Some((Work::Events, format!("credentials unavailable: {error}")));
                    self.schedule_events(myself, pipeline.retry.delay(1));
                    return;
                }
            }
        } else {
            None
        };
        let mut done = Vec::new();
        let mut wait = None;
        let mut revoked = None;
        for event in batch {
            if let Some(due) = event.next_attempt_at
                && let Ok(left) = (due - store::now()).to_std()
                && !left.is_zero()
            {
                wait = Some(left);
                break;
            }
            // Built only for a handler or a route: most of its cost is the payload's
            // parse, and a generic webhook no route takes needs neither.
            let routed = pipeline.routes.wants(
                event.organization_id.as_deref(),
                &event.connector_type,
                &event.event_type,
            );
            let handles = credentials.is_some() && connector.handles(&event.event_type);
            let envelope = (handles || routed).then(|| Envelope::from_event(&event));
            let handled = match (credentials.as_ref().filter(|_| handles), &envelope) {
                // Not under the limiter as a whole: the handler runs each provider
                // request it makes through the gate, and one that makes none is free.
                (Some(credentials), Some(envelope)) => connector
                    .handle_event(credentials, envelope, &self.provider)
                    .await
                    .map_err(CallError::Failed),
                _ => Ok(EventEffect::None),
            };
            let outcome = match handled {
                Ok(effect) => match envelope.as_ref().filter(|_| routed) {
                    Some(envelope) => pipeline.routes.dispatch(envelope).await.map(|_| effect),
                    None => Ok(effect),
                },
                Err(CallError::Failed(ConnectorError::QuotaSpent { retry_after })) => {
                    // Not a failure: this event and the later ones wait for the quota.
                    wait = Some(retry_after);
                    break;
                }
                Err(error) => {
                    if let CallError::Failed(ConnectorError::Unauthorized(reason)) = &error {
                        self.credentials_rejected(myself, reason).await;
                    }
                    Err(error.message())
                }
            };
            let reason = match outcome {
                Ok(effect) => {
                    self.recovered(Work::Events);
                    self.events_processed += 1;
                    pipeline.metrics.processed.inc();
                    done.push(event.id);
                    match effect {
                        EventEffect::Revoked { reason } => {
                            // Nothing after it can be handled: the rest is buried below.
                            revoked = Some(reason);
                            break;
                        }
                        effect => self.apply(myself, effect).await,
                    }
                    continue;
                }
                Err(reason) => reason,
            };
            let attempts = event.attempts.saturating_add(1);
            self.last_error = Some((Work::Events, format!("event {} failed: {reason}", event.id)));
            if u32::try_from(attempts).unwrap_or(u32::MAX) >= pipeline.max_attempts {
                warn!(integration_id = %self.integration.id, event_id = %event.id, attempts, error = %reason, "event dead");
                pipeline.metrics.dead.inc();
                log_unrecorded(
                    &self.integration.id,
                    self.mark_failed(&pipeline.store, &event.id, attempts, &reason, None)
                        .await,
                );
                continue;
            }
            let delay = pipeline
                .retry
                .delay(u32::try_from(attempts).unwrap_or(u32::MAX));
            let due = store::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            pipeline.metrics.retried.inc();
            log_unrecorded(
                &self.integration.id,
                self.mark_failed(&pipeline.store, &event.id, attempts, &reason, Some(due))
                    .await,
            );
            wait = Some(delay);
            break;
        }
        if let Err(error) = self.record_done(&pipeline, done, DONE_TIMEOUT).await {
            // Not recorded: they stay pending and are processed again (at least once).
            warn!(integration_id = %self.integration.id, error = %error, "processed events not recorded");
            self.schedule_events(myself, pipeline.retry.delay(1));
            return;
        }
        if let Some(reason) = revoked {
            self.revoked_by_provider(myself, &reason).await;
            return;
        }
        match wait {
            Some(delay) => self.schedule_events(myself, delay),
            // More may be waiting behind a full batch: behind whatever else is queued.
            None if full => {
                let _ = myself.send_message(IntegrationMsg::ProcessEvents);
            }
            None => {}
        }
    }

    /// The provider refused the credentials while handling an event (a revoked or
    /// expired token): expiring credentials are refreshed now, others leave the
    /// integration in `error`. The event is retried either way.
    async fn credentials_rejected(&mut self, myself: &ActorRef<IntegrationMsg>, reason: &str) {
        if self.expires_at.is_some() {
            let _ = myself.send_message(IntegrationMsg::RefreshCredentials);
        } else {
            self.mark_error(reason).await;
        }
    }

    /// Applies what an event said about the integration (not a revocation).
    async fn apply(&mut self, myself: &ActorRef<IntegrationMsg>, effect: EventEffect) {
        match effect {
            EventEffect::None | EventEffect::Revoked { .. } => {}
            EventEffect::Status(status) => {
                if self.integration.status == status {
                    return;
                }
                self.set_status(status).await;
                info!(integration_id = %self.integration.id, status, "integration status set by the provider");
                self.services
                    .credentials
                    .audit(
                        &self.integration,
                        "integration.status",
                        serde_json::json!({"status": status, "by": "provider"}),
                    )
                    .await;
                if status == STATUS_SUSPENDED {
                    // Nothing to refresh until the provider lifts the suspension.
                    if let Some(timer) = self.refresh_timer.take() {
                        timer.abort();
                    }
                } else if self.expires_at.is_some() {
                    let _ = myself.send_message(IntegrationMsg::RefreshCredentials);
                }
            }
            EventEffect::Metadata(metadata) => {
                match self
                    .services
                    .credentials
                    .set_metadata(&self.integration, &metadata)
                    .await
                {
                    Ok(()) => self.integration.metadata = metadata.to_string(),
                    Err(error) => {
                        warn!(integration_id = %self.integration.id, error = %error, "metadata not stored")
                    }
                }
            }
        }
    }

    /// The provider revoked the account (uninstalled, tokens revoked): revoke the
    /// integration here too and leave the tree. A failure to record it is retried.
    async fn revoked_by_provider(&mut self, myself: &ActorRef<IntegrationMsg>, reason: &str) {
        if let Err(error) = self
            .services
            .credentials
            .revoke(&self.integration, reason)
            .await
        {
            warn!(integration_id = %self.integration.id, error = %error, "revocation by the provider not recorded yet");
            self.last_error = Some((
                Work::Credentials,
                format!("revocation not recorded: {error}"),
            ));
            let delay = self.services.backoff.delay(1);
            self.schedule_events(myself, delay);
            return;
        }
        warn!(integration_id = %self.integration.id, reason, "integration revoked by the provider");
        self.integration.status = integrations::STATUS_REVOKED.to_string();
        self.services
            .credentials
            .audit(
                &self.integration,
                "integration.revoke",
                serde_json::json!({"by": "provider", "reason": reason}),
            )
            .await;
        switchboard_actors::leave_supervisor(&myself.get_cell(), &actor_name(&self.integration.id));
    }

    async fn mark_error(&mut self, reason: &str) {
        if self.integration.status != STATUS_ERROR {
            warn!(integration_id = %self.integration.id, reason, "integration in error");
            self.set_status(STATUS_ERROR).await;
        }
    }

    async fn set_status(&mut self, status: &str) {
        match self
            .services
            .credentials
            .set_status(&self.integration, status)
            .await
        {
            Ok(()) => {
                info!(integration_id = %self.integration.id, from = %self.integration.status, to = status, "integration status changed");
                self.integration.status = status.to_string();
            }
            Err(error) => {
                warn!(integration_id = %self.integration.id, error = %error, "status not stored")
            }
        }
    }

    /// Picks up polling where the store says it stands: the next poll when it was
    /// due (at once if that passed), from the saved cursor.
    async fn start_polling(&mut self, myself: &ActorRef<IntegrationMsg>, pipeline: &Pipeline) {
        let saved = match poll_cursors::get(&pipeline.store, &self.integration.id, "").await {
            Ok(saved) => saved,
            Err(error) => {
                // Polled from the provider's start: its duplicates are dropped.
                warn!(integration_id = %self.integration.id, error = %error, "poll cursor unreadable: polling without it");
                None
            }
        };
        let row = saved.unwrap_or_else(|| PollCursor {
            integration_id: self.integration.id.clone(),
            stream: String::new(),
            cursor: None,
            last_polled_at: None,
            next_poll_at: None,
            last_error: None,
        });
        let due = row
            .next_poll_at
            .and_then(|at| (at - store::now()).to_std().ok())
            .unwrap_or(Duration::ZERO);
        self.polling = Some(Box::new(Polling {
            row,
            failures: 0,
            timer: None,
        }));
        self.schedule_poll(myself, due);
    }

    /// The next poll after `delay`, with up to a tenth of the interval added so that
    /// integrations started together do not poll together.
    fn schedule_poll(&mut self, myself: &ActorRef<IntegrationMsg>, delay: Duration) {
        let jitter_cap = self.services.poll_interval / 10;
        let jitter = if jitter_cap.is_zero() {
            Duration::ZERO
        } else {
            rand::rng().random_range(Duration::ZERO..=jitter_cap)
        };
        let Some(polling) = self.polling.as_mut() else {
            return;
        };
        if let Some(timer) = polling.timer.take() {
            timer.abort();
        }
        let delay = delay + jitter;
        polling.row.next_poll_at =
            Some(store::now() + chrono::Duration::from_std(delay).unwrap_or_default());
        polling.timer = Some(myself.send_after(delay, || IntegrationMsg::Poll));
    }

    /// Polls one page: under the integration's limit and breaker; its events stored
    /// through the inbox (de-duplicated by their ids); the cursor saved only after
    /// they are durable. Any failure leaves the cursor where it was, so the page is
    /// polled again and what was stored of it is dropped as duplicates.
    async fn poll(&mut self, myself: &ActorRef<IntegrationMsg>) {
        let (Some(pipeline), Some(polling)) = (self.services.pipeline.clone(), &self.polling)
        else {
            return;
        };
        let cursor = polling.row.cursor.clone();
        let polled = match self.services.credentials.load(&self.integration).await {
            Ok(credentials) => {
                let connector = Arc::clone(&self.services.connector);
                self.provider
                    .call(connector.poll(&credentials, cursor.as_deref()))
                    .await
            }
            Err(error) => Err(ConnectorError::Unavailable(format!(
                "credentials unavailable: {error}"
            ))),
        };
        let page = match polled {
            Ok(page) => page,
            Err(ConnectorError::QuotaSpent { retry_after }) => {
                // Not a failure: the quota comes back.
                self.schedule_poll(myself, retry_after);
                return;
            }
            Err(error) => {
                if let ConnectorError::Unauthorized(reason) = &error {
                    self.credentials_rejected(myself, reason).await;
                }
                self.poll_failed(myself, &pipeline, format!("poll failed: {error}"))
                    .await;
                return;
            }
        };
        let stored = futures::future::join_all(page.events.into_iter().map(|event| {
            let new = NewEvent {
                organization_id: Some(self.integration.organization_id.clone()),
                integration_id: Some(self.integration.id.clone()),
                connector_type: self.integration.connector_type.clone(),
                event_type: event.event_type,
                delivery_id: event.delivery_id,
                delivery_scope: event.scope,
                payload: event.payload,
                occurred_at: event.occurred_at,
                dead_reason: None,
            };
            inbox::store(&pipeline.intake, new, POLL_STORE_WITHIN)
        }))
        .await;
        if let Some(error) = stored.iter().find_map(|s| s.as_ref().err()) {
            let message = format!("polled events not stored: {error}");
            self.poll_failed(myself, &pipeline, message).await;
            return;
        }
        let Some(polling) = self.polling.as_ref() else {
            return;
        };
        let mut row = polling.row.clone();
        if page.cursor.is_some() {
            row.cursor = page.cursor;
        }
        row.last_polled_at = Some(store::now());
        row.last_error = None;
        let delay = if page.more {
            Duration::ZERO
        } else {
            self.services.poll_interval
        };
        row.next_poll_at =
            Some(store::now() + chrono::Duration::from_std(delay).unwrap_or_default());
        // Only now that its events are durable.
        if let Err(error) = self.save_cursor(&pipeline.store, &row).await {
            let message = format!("poll cursor not saved: {error}");
            self.poll_failed(myself, &pipeline, message).await;
            return;
        }
        let Some(polling) = self.polling.as_mut() else {
            return;
        };
        polling.row = row;
        polling.failures = 0;
        self.recovered(Work::Polling);
        if page.more {
            let _ = myself.send_message(IntegrationMsg::Poll);
        } else {
            self.schedule_poll(myself, delay);
        }
    }

    /// A poll failed: said in the health and the cursor's row, and polled again after
    /// a backoff (the breaker, if it opened, refuses polls until it lets one through).
    async fn poll_failed(
        &mut self,
        myself: &ActorRef<IntegrationMsg>,
        pipeline: &Pipeline,
        message: String,
    ) {
        warn!(integration_id = %self.integration.id, error = %message, "poll failed");
        let Some(polling) = self.polling.as_mut() else {
            return;
        };
        polling.failures += 1;
        polling.row.last_error = Some(message.clone());
        let delay = self
            .services
            .backoff
            .delay(polling.failures)
            .min(self.services.poll_interval.max(Duration::from_millis(1)));
        let failures = polling.failures;
        self.last_error = Some((Work::Polling, message));
        self.schedule_poll(myself, delay);
        if let Some(polling) = &self.polling
            && let Err(error) = self.save_cursor(&pipeline.store, &polling.row).await
        {
            warn!(integration_id = %self.integration.id, failures, error = %error, "poll state not saved");
        }
    }

    fn report(&self) -> HealthReport {
        let mut report = HealthReport::new(
            actor_name(&self.integration.id),
            "integration",
            Status::Running,
        )
        .with_detail("organization_id", &self.integration.organization_id)
        .with_detail("external_id", &self.integration.external_id)
        .with_detail("connector", &self.integration.connector_type)
        .with_detail("integration_status", &self.integration.status)
        .with_detail(
            "expires_at",
            self.expires_at.map(|t| t.and_utc().to_rfc3339()),
        )
        .with_detail("last_validated_at", self.last_validated_at)
        .with_detail("last_refreshed_at", self.last_refreshed_at)
        .with_detail("refresh_failures", self.refresh_failures)
        .with_detail("limiter", self.provider.limiter());
        if let Some(polling) = &self.polling {
            let time = |t: Option<NaiveDateTime>| t.map(|t| t.and_utc().to_rfc3339());
            report = report.with_detail(
                "poll",
                serde_json::json!({
                    "cursor": polling.row.cursor,
                    "last_polled_at": time(polling.row.last_polled_at),
                    "next_poll_at": time(polling.row.next_poll_at),
                    "last_error": polling.row.last_error,
                    "failures": polling.failures,
                }),
            );
        }
        report.breaker = Some(self.provider.breaker());
        report.last_error = self.last_error.as_ref().map(|(_, error)| error.clone());
        report
    }
}

impl Actor for IntegrationActor {
    type Msg = IntegrationMsg;
    type State = IntegrationState;
    type Arguments = IntegrationArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<IntegrationMsg>,
        args: IntegrationArgs,
    ) -> Result<IntegrationState, ActorProcessingErr> {
        let services = args.services;
        Ok(IntegrationState {
            provider: ProviderGate::new(
                services.breaker.clone(),
                services.connector.tenant_quota(),
            ),
            integration: args.integration,
            expires_at: args.expires_at,
            services,
            last_validated_at: None,
            last_refreshed_at: None,
            last_error: None,
            refresh_failures: 0,
            refresh_timer: None,
            events_timer: None,
            events_processed: 0,
            polling: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<IntegrationMsg>,
        state: &mut IntegrationState,
    ) -> Result<(), ActorProcessingErr> {
        // Spread the validations of many integrations starting together.
        let spread = state.services.validation_spread;
        let delay = if spread.is_zero() {
            Duration::ZERO
        } else {
            rand::rng().random_range(Duration::ZERO..=spread)
        };
        myself.send_after(delay, || IntegrationMsg::Validate(None));
        if let Some(delay) = state.refresh_delay() {
            state.schedule_refresh(&myself, delay);
        }
        // Events that arrived while the actor was down (or the daemon was) come first.
        if let Some(pipeline) = state.services.pipeline.clone() {
            myself.send_message(IntegrationMsg::ProcessEvents)?;
            if state.services.connector.polls(&state.integration) {
                // Boxed like the handlers: a store query's future is large, and every
                // actor's task would otherwise keep room for it (see `handle`).
                Box::pin(state.start_polling(&myself, &pipeline)).await;
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<IntegrationMsg>,
        state: &mut IntegrationState,
    ) -> Result<(), ActorProcessingErr> {
        let poll_timer = state.polling.as_mut().and_then(|p| p.timer.take());
        for timer in [
            state.refresh_timer.take(),
            state.events_timer.take(),
            poll_timer,
        ]
        .into_iter()
        .flatten()
        {
            timer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<IntegrationMsg>,
        message: IntegrationMsg,
        state: &mut IntegrationState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            // The provider calls are boxed: an actor's message loop is allocated once
            // with room for its largest handler future, and a hundred thousand
            // integrations should not each keep room for a refresh in flight.
            IntegrationMsg::Validate(reply) => {
                let outcome = Box::pin(state.validate(&myself)).await;
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
            }
            IntegrationMsg::RefreshCredentials => Box::pin(state.refresh(&myself)).await,
            IntegrationMsg::ProcessEvents => Box::pin(state.process_next_event(&myself)).await,
            IntegrationMsg::Poll => Box::pin(state.poll(&myself)).await,
            IntegrationMsg::Observe(reply) => {
                let _ = reply.send(state.report());
            }
        }
        Ok(())
    }
}

fn log_unrecorded(integration_id: &str, recorded: Result<(), crate::store::StoreError>) {
    if let Err(error) = recorded {
        warn!(integration_id, error = %error, "event retry not recorded; it is retried anyway");
    }
}
