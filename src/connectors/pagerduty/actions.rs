//! What PagerDuty does for routes and chat buttons.
//!
//! - `pagerduty.trigger`: the routed event sent to the Events API v2 with the route's
//!   routing key. Events about the same subject (a Datadog alert from trigger to
//!   recovery) share one `dedup_key`, so repeats fold into one incident, and the event
//!   that ends the subject resolves it.
//! - `pagerduty.acknowledge`, `pagerduty.resolve`, `pagerduty.note`: on the incident
//!   the event names (a PagerDuty incident event, or an event whose subject offers
//!   PagerDuty buttons), with the organization's PagerDuty integration.
//! - [`operate`]: a click on a chat message's Acknowledge or Resolve button.

use std::sync::Arc;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest;

use super::api::{PagerDutyError, Wait};
use super::events::WebhookEvent;
use super::{NAME, Shared};
use crate::connectors::{ConnectorError, Operated, Operation};
use crate::pipeline::actions::{self, Action, ActionEvent, ActionKind, Settings, truncated};
use crate::problem::Problem;

const SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];
/// The Events API's limit on a summary.
const SUMMARY_MAX: usize = 1024;

pub fn kinds(shared: &Arc<Shared>) -> Vec<Arc<dyn ActionKind>> {
    let mut kinds: Vec<Arc<dyn ActionKind>> = vec![Arc::new(TriggerKind {
        shared: Arc::clone(shared),
    })];
    for verb in [Verb::Acknowledge, Verb::Resolve, Verb::Note] {
        kinds.push(Arc::new(IncidentKind {
            shared: Arc::clone(shared),
            verb,
        }));
    }
    kinds
}

struct TriggerKind {
    shared: Arc<Shared>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerSettings {
    /// The Events API v2 integration key of the PagerDuty service.
    routing_key: String,
    #[serde(default = "us")]
    region: String,
    #[serde(default = "error")]
    severity: String,
    /// What PagerDuty shows as the alert's source.
    #[serde(default = "switchboard")]
    source: String,
}

fn us() -> String {
    "us".into()
}

fn error() -> String {
    "error".into()
}

fn switchboard() -> String {
    "switchboard".into()
}

impl ActionKind for TriggerKind {
    fn name(&self) -> &'static str {
        "pagerduty.trigger"
    }

    fn secret_settings(&self) -> &'static [&'static str] {
        &["routing_key"]
    }

    fn prepare(&self, settings: &Settings) -> Result<Arc<dyn Action>, Vec<Problem>> {
        if !settings.contains_key("routing_key") {
            return Err(vec![Problem::new(
                "routing_key",
                "is required for pagerduty.trigger (the service's Events API v2 integration key)",
            )]);
        }
        let typed: TriggerSettings = actions::typed_settings(settings)?;
        let mut problems = Vec::new();
        if !SEVERITIES.contains(&typed.severity.as_str()) {
            problems.push(Problem::new(
                "severity",
                format!("must be one of {}", SEVERITIES.join(", ")),
            ));
        }
        let events_base = self.shared.config.events_base(&typed.region);
        if events_base.is_none() {
            problems.push(Problem::new(
                "region",
                format!("must be one of {}", super::config::region_names()),
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        // The key's limit is PagerDuty's; paced under a name that does not reveal it.
        let owner = format!(
            "events:{}",
            &hex::encode(sha2::Sha256::digest(typed.routing_key.as_bytes()))[..16]
        );
        Ok(Arc::new(Trigger {
            shared: Arc::clone(&self.shared),
            events_base: events_base.unwrap_or_default(),
            owner,
            settings: typed,
        }))
    }
}

struct Trigger {
    shared: Arc<Shared>,
    events_base: String,
    owner: String,
    settings: TriggerSettings,
}

impl Trigger {
    /// The Events API event for a routed event: trigger, or resolve when it ends its
    /// subject; one dedup key per subject (per event without one).
    fn event(&self, event: &ActionEvent<'_>) -> Value {
        let envelope = event.envelope;
        let subject = event.subject();
        let dedup_key = subject
            .as_ref()
            .map_or_else(|| format!("switchboard:{}", envelope.id), |s| s.key.clone());
        let action = if subject.as_ref().is_some_and(|s| s.ends) {
            "resolve"
        } else {
            "trigger"
        };
        let mut body = json!({
            "routing_key": self.settings.routing_key,
            "event_action": action,
            "dedup_key": dedup_key,
        });
        if action == "trigger" {
            body["payload"] = json!({
                "summary": truncated(&event.line(), SUMMARY_MAX),
                "source": self.settings.source,
                "severity": self.settings.severity,
                "timestamp": envelope.occurred_at.as_deref().unwrap_or(&envelope.received_at),
                "component": envelope.connector,
                "class": envelope.event_type,
                "custom_details": {
                    "switchboard_event_id": envelope.id,
                    "connector": envelope.connector,
                    "event_type": envelope.event_type,
                    "integration_id": envelope.integration_id,
                },
            });
        }
        body
    }
}

#[async_trait::async_trait]
impl Action for Trigger {
    fn target(&self) -> String {
        format!("pagerduty:events:{}", self.settings.region)
    }

    async fn run(&self, _organization_id: &str, event: &ActionEvent<'_>) -> Result<(), String> {
        self.shared
            .api
            .enqueue(
                &self.events_base,
                &self.owner,
                &self.event(event),
                Wait::UpTo(self.shared.config.max_rate_limit_wait),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Acknowledge,
    Resolve,
    Note,
}

impl Verb {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "acknowledge" => Some(Verb::Acknowledge),
            "resolve" => Some(Verb::Resolve),
            "note" => Some(Verb::Note),
            _ => None,
        }
    }

    fn action_name(self) -> &'static str {
        match self {
            Verb::Acknowledge => "pagerduty.acknowledge",
            Verb::Resolve => "pagerduty.resolve",
            Verb::Note => "pagerduty.note",
        }
    }

    /// The incident status it sets.
    fn status(self) -> Option<&'static str> {
        match self {
            Verb::Acknowledge => Some("acknowledged"),
            Verb::Resolve => Some("resolved"),
            Verb::Note => None,
        }
    }
}

struct IncidentKind {
    shared: Arc<Shared>,
    verb: Verb,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncidentSettings {
    /// Which of the organization's PagerDuty integrations acts (the one the event
    /// came from, else the first active one, when unset).
    integration_id: Option<String>,
    /// The note's text (`pagerduty.note`); the event's line when unset.
    content: Option<String>,
}

impl ActionKind for IncidentKind {
    fn name(&self) -> &'static str {
        self.verb.action_name()
    }

    fn prepare(&self, settings: &Settings) -> Result<Arc<dyn Action>, Vec<Problem>> {
        let typed: IncidentSettings = actions::typed_settings(settings)?;
        if typed.content.is_some() && self.verb != Verb::Note {
            return Err(vec![Problem::new(
                "content",
                "is a setting of pagerduty.note only",
            )]);
        }
        Ok(Arc::new(OnIncident {
            shared: Arc::clone(&self.shared),
            verb: self.verb,
            settings: typed,
        }))
    }
}

struct OnIncident {
    shared: Arc<Shared>,
    verb: Verb,
    settings: IncidentSettings,
}

/// The PagerDuty incident an event names: its own incident events', or the target
/// of a PagerDuty button its subject offers.
fn incident_of(event: &ActionEvent<'_>) -> Option<String> {
    let envelope = event.envelope;
    if envelope.connector == NAME {
        let parsed = WebhookEvent::from_value(&envelope.payload)?;
        return parsed
            .is_incident()
            .then(|| parsed.data.id.as_deref().map(str::to_string))
            .flatten();
    }
    event.subject()?.controls.into_iter().find_map(|control| {
        control
            .operation
            .starts_with(&format!("{NAME}."))
            .then_some(control.target)
    })
}

#[async_trait::async_trait]
impl Action for OnIncident {
    fn target(&self) -> String {
        format!("pagerduty:incidents:{}", self.verb.action_name())
    }

    async fn run(&self, organization_id: &str, event: &ActionEvent<'_>) -> Result<(), String> {
        let incident = incident_of(event).ok_or("the event names no PagerDuty incident")?;
        let envelope = event.envelope;
        let preferred = self
            .settings
            .integration_id
            .as_deref()
            .or((envelope.connector == NAME)
                .then_some(envelope.integration_id.as_deref())
                .flatten());
        let credentials = self
            .shared
            .integration_of(organization_id, preferred)
            .await
            .map_err(|e| e.to_string())?;
        let wait = Wait::UpTo(self.shared.config.max_rate_limit_wait);
        let outcome = match self.verb.status() {
            Some(status) => {
                set_status(&self.shared, &credentials, &incident, status, None, wait).await
            }
            None => {
                let content = self
                    .settings
                    .content
                    .clone()
                    .unwrap_or_else(|| event.line());
                add_note(&self.shared, &credentials, &incident, &content, wait).await
            }
        };
        match outcome {
            Ok(Operated::Done(_)) => Ok(()),
            // Already as asked: nothing to retry.
            Ok(Operated::Declined(reason)) => {
                tracing::info!(incident = %incident, reason = %reason, "PagerDuty action had nothing to do");
                Ok(())
            }
            Err(error) => Err(error.to_string()),
        }
    }
}

/// Sets an incident's status as `from` (the integration's `from` when `None` or when
/// PagerDuty does not know `from`). An incident already resolved, or already in the
/// status asked, is declined with a reason a person can read.
async fn set_status(
    shared: &Shared,
    credentials: &crate::connectors::Credentials,
    incident: &str,
    status: &str,
    from: Option<&str>,
    wait: Wait,
) -> Result<Operated, ConnectorError> {
    let path = format!(
        "/incidents/{}",
        crate::connectors::http::path_segment(incident)
    );
    let account = shared.account(credentials, None)?;
    let current = shared
        .rest(&account, Method::GET, &path, None, wait)
        .await?;
    let name = incident_name(&current["incident"], incident);
    match current["incident"]["status"].as_str() {
        Some("resolved") => return Ok(Operated::Declined(format!("{name} is already resolved"))),
        Some(now) if now == status => {
            return Ok(Operated::Declined(format!("{name} is already {status}")));
        }
        _ => {}
    }
    let body = json!({"incident": {"type": "incident_reference", "status": status}});
    let mut outcome = shared
        .rest(
            &shared.account(credentials, from)?,
            Method::PUT,
            &path,
            Some(&body),
            wait,
        )
        .await;
    if from.is_some()
        && matches!(&outcome, Err(PagerDutyError::BadRequest { message, .. }) if message.to_ascii_lowercase().contains("from"))
    {
        // The person is not a PagerDuty user under that email: act as the integration.
        outcome = shared
            .rest(&account, Method::PUT, &path, Some(&body), wait)
            .await;
    }
    match outcome {
        Ok(_) => Ok(Operated::Done(format!("{name} {status}"))),
        // PagerDuty's answer when the incident was resolved in between (assumed: a
        // 400 whose errors say "resolved"; unconfirmed, the GET above covers most).
        Err(PagerDutyError::BadRequest { message, .. })
            if message.to_ascii_lowercase().contains("resolved") =>
        {
            Ok(Operated::Declined(format!("{name} is already resolved")))
        }
        Err(error) => Err(error.into()),
    }
}

async fn add_note(
    shared: &Shared,
    credentials: &crate::connectors::Credentials,
    incident: &str,
    content: &str,
    wait: Wait,
) -> Result<Operated, ConnectorError> {
    let account = shared.account(credentials, None)?;
    let body = json!({"note": {"content": content}});
    shared
        .rest(
            &account,
            Method::POST,
            &format!(
                "/incidents/{}/notes",
                crate::connectors::http::path_segment(incident)
            ),
            Some(&body),
            wait,
        )
        .await?;
    Ok(Operated::Done(format!("note added to incident {incident}")))
}

fn incident_name(incident: &Value, id: &str) -> String {
    incident["incident_number"]
        .as_u64()
        .or_else(|| incident["number"].as_u64())
        .map_or_else(|| format!("Incident {id}"), |n| format!("Incident #{n}"))
}

/// A click on a chat button: the organization's own PagerDuty integration acts, as
/// the person who clicked when PagerDuty knows their email.
pub async fn operate(shared: &Shared, operation: &Operation) -> Result<Operated, ConnectorError> {
    let verb = operation
        .name
        .strip_prefix(&format!("{NAME}."))
        .and_then(Verb::parse)
        .and_then(Verb::status)
        .ok_or_else(|| {
            ConnectorError::Invalid(format!(
                "PagerDuty offers no operation '{}'",
                operation.name
            ))
        })?;
    let credentials = match shared
        .integration_of(&operation.organization_id, None)
        .await
    {
        Ok(credentials) => credentials,
        Err(ConnectorError::Invalid(reason)) => return Ok(Operated::Declined(reason)),
        Err(error) => return Err(error),
    };
    set_status(
        shared,
        &credentials,
        &operation.target,
        verb,
        operation.by.email.as_deref(),
        // A click's answer waits for this; the event is retried after a longer limit.
        Wait::UpTo(shared.config.max_rate_limit_wait),
    )
    .await
}
