//! The durable event pipeline: ingress stores every event in the inbox before it is
//! acknowledged; each integration's actor processes its own events in arrival order,
//! through its connector's handler and then the routes; failures are retried with
//! backoff and end `dead` with their last error when attempts run out. Delivery is
//! at-least-once: an event is processed again if the daemon stops before recording it.
//!
//! - [`inbox`]: the `inbox` actor, which batches concurrent inserts (group commit);
//! - [`routes`]: operator and tenant routes, and the pipeline's own `http.forward`;
//! - [`actions`]: what a route action is, whoever offers it;
//! - [`standard_webhooks`]: the signatures generic webhooks and forwards use;
//! - [`metrics`]: counters and the ingest latency histogram.

pub mod actions;
pub mod inbox;
pub mod metrics;
pub mod routes;
pub mod standard_webhooks;
pub mod tenant_routes;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_actors::Backoff;

use crate::store::Store;
use crate::store::events::Event;

/// `[pipeline]`: ingest limits and the retry policy of event processing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Largest webhook body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Most events written in one inbox transaction.
    pub max_batch: usize,
    /// How long the inbox lets a batch gather before writing it (group commit). None
    /// by default: a batch is what queued while the previous one was being written,
    /// which under load is everything in flight and costs an idle daemon no latency.
    #[serde(with = "humantime_serde")]
    pub batch_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_cap: Duration,
    /// Attempts before an event is `dead`.
    pub max_attempts: u32,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_batch: 256,
            batch_delay: Duration::ZERO,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(300),
            max_attempts: 8,
        }
    }
}

/// The normalized form of every event: what handlers and routes see.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    pub id: String,
    pub organization_id: Option<String>,
    pub integration_id: Option<String>,
    pub connector: String,
    pub event_type: String,
    pub delivery_id: String,
    pub occurred_at: Option<String>,
    pub received_at: String,
    /// The provider's payload, as it came (JSON when it is JSON).
    pub payload: serde_json::Value,
}

impl Envelope {
    pub fn from_event(event: &Event) -> Self {
        let time = |t: chrono::NaiveDateTime| t.and_utc().to_rfc3339();
        Envelope {
            id: event.id.clone(),
            organization_id: event.organization_id.clone(),
            integration_id: event.integration_id.clone(),
            connector: event.connector_type.clone(),
            event_type: event.event_type.clone(),
            delivery_id: event.delivery_id.clone(),
            occurred_at: event.occurred_at.map(time),
            received_at: time(event.received_at),
            payload: serde_json::from_str(&event.payload)
                .unwrap_or_else(|_| serde_json::Value::String(event.payload.clone())),
        }
    }
}

/// Who processes events: connectors with a handler of their own, and the routes. An
/// event neither takes (a generic webhook no route matches) has nothing to wait for:
/// the inbox stores it `done` at once instead of queueing it for its integration.
pub struct Consumers {
    pub handlers: Arc<dyn Handlers>,
    pub routes: Arc<routes::Routes>,
}

/// Which events a connector's own handler takes (see
/// [`Connector::handles`](crate::connectors::Connector::handles)).
pub trait Handlers: Send + Sync + 'static {
    fn handles(&self, connector: &str, event_type: &str) -> bool;
}

impl Consumers {
    /// Whether anything processes this event. One that no integration owns is stored
    /// dead with its reason, not done.
    pub fn wanted(&self, event: &crate::store::events::NewEvent) -> bool {
        event.integration_id.is_none()
            || self
                .handlers
                .handles(&event.connector_type, &event.event_type)
            || self.routes.wants(
                event.organization_id.as_deref(),
                &event.connector_type,
                &event.event_type,
            )
    }
}

/// What the integration actors need to process events.
pub struct Pipeline {
    pub store: Store,
    /// Where polled events are handed to the inbox.
    pub intake: Arc<inbox::Intake>,
    /// Where the inbox is found (it records processed events).
    pub registry: switchboard_actors::Registry,
    pub routes: Arc<routes::Routes>,
    pub retry: Backoff,
    pub max_attempts: u32,
    pub metrics: Arc<metrics::PipelineMetrics>,
}
