//! The pipeline's Prometheus series: events received, duplicates, processed, retried
//! and dead, and how long ingest takes (verify + durable write + acknowledgement).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub struct PipelineMetrics {
    pub received: Counter,
    pub duplicates: Counter,
    pub processed: Counter,
    pub retried: Counter,
    pub dead: Counter,
    /// Seconds from a webhook's arrival to its acknowledgement.
    pub ingest_seconds: Histogram,
    /// Webhook requests by connector and outcome (`stored`, `duplicate`, `unbound`,
    /// `answered`, `refused`, `unavailable`).
    pub webhooks: Family<Vec<(&'static str, String)>, Counter>,
}

/// What became of a webhook request, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    Stored,
    Duplicate,
    /// Stored dead: no integration is bound to the account it names.
    Unbound,
    /// Answered at once, nothing to store (a handshake).
    Answered,
    Refused,
    Unavailable,
}

impl WebhookOutcome {
    const ALL: [WebhookOutcome; 6] = [
        WebhookOutcome::Stored,
        WebhookOutcome::Duplicate,
        WebhookOutcome::Unbound,
        WebhookOutcome::Answered,
        WebhookOutcome::Refused,
        WebhookOutcome::Unavailable,
    ];

    fn label(self) -> &'static str {
        match self {
            WebhookOutcome::Stored => "stored",
            WebhookOutcome::Duplicate => "duplicate",
            WebhookOutcome::Unbound => "unbound",
            WebhookOutcome::Answered => "answered",
            WebhookOutcome::Refused => "refused",
            WebhookOutcome::Unavailable => "unavailable",
        }
    }
}

/// One connector's webhook counters, looked up once: counting a request is then one
/// atomic increment.
#[derive(Clone)]
pub struct WebhookCounters([Counter; 6]);

impl WebhookCounters {
    pub fn count(&self, outcome: WebhookOutcome) {
        self.0[outcome as usize].inc();
    }
}

impl PipelineMetrics {
    /// The webhook counters of `connector`.
    pub fn webhook_counters(&self, connector: &str) -> WebhookCounters {
        WebhookCounters(WebhookOutcome::ALL.map(|outcome| {
            self.webhooks
                .get_or_create(&vec![
                    ("connector", connector.to_string()),
                    ("outcome", outcome.label().to_string()),
                ])
                .clone()
        }))
    }
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        Self {
            received: Counter::default(),
            duplicates: Counter::default(),
            processed: Counter::default(),
            retried: Counter::default(),
            dead: Counter::default(),
            ingest_seconds: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
            webhooks: Family::default(),
        }
    }
}

impl PipelineMetrics {
    /// Adds the series to `registry` (clones share their values).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "events_received",
            "Events stored in the inbox",
            self.received.clone(),
        );
        registry.register(
            "events_duplicate",
            "Redeliveries acknowledged and not stored again",
            self.duplicates.clone(),
        );
        registry.register(
            "events_processed",
            "Events processed successfully",
            self.processed.clone(),
        );
        registry.register(
            "events_retried",
            "Failed processing attempts to be retried",
            self.retried.clone(),
        );
        registry.register(
            "events_dead",
            "Events that ran out of attempts or lost their integration",
            self.dead.clone(),
        );
        registry.register(
            "webhooks",
            "Webhook requests by connector and outcome",
            self.webhooks.clone(),
        );
        registry.register(
            "ingest_latency_seconds",
            "From a webhook's arrival to its acknowledgement",
            self.ingest_seconds.clone(),
        );
    }
}
