//! What PagerDuty's v3 webhooks deliver, typed where switchboard reads it:
//! `{"event": {"id", "event_type", "resource_type", "occurred_at", "agent", "data"}}`.
//! Incident events describe the incident (`data`); service events the service.

use std::borrow::Cow;

use chrono::NaiveDateTime;
use serde::Deserialize;
use serde_json::Value;

use crate::pipeline::actions::{Control, Subject};

pub const PING: &str = "pagey.ping";

#[derive(Debug, Deserialize)]
struct Delivery<'a> {
    #[serde(borrow)]
    event: WebhookEvent<'a>,
}

/// What the ingress reads of a delivery: its type and time, borrowed from the body;
/// the rest is skipped, not built (the payload is stored as it came).
#[derive(Debug, Deserialize)]
pub struct Head<'a> {
    #[serde(borrow)]
    pub event_type: Cow<'a, str>,
    #[serde(default, borrow)]
    pub occurred_at: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct HeadDelivery<'a> {
    #[serde(borrow)]
    event: Head<'a>,
}

impl<'a> Head<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, String> {
        serde_json::from_slice::<HeadDelivery<'a>>(body)
            .map(|delivery| delivery.event)
            .map_err(|e| format!("not a PagerDuty webhook event: {e}"))
    }

    pub fn occurred_at(&self) -> Option<NaiveDateTime> {
        occurred_at(self.occurred_at.as_deref())
    }
}

fn occurred_at(raw: Option<&str>) -> Option<NaiveDateTime> {
    chrono::DateTime::parse_from_rfc3339(raw?)
        .ok()
        .map(|at| at.naive_utc())
}

/// One webhook event.
#[derive(Debug, Deserialize)]
pub struct WebhookEvent<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow)]
    pub event_type: Cow<'a, str>,
    #[serde(default, borrow)]
    pub resource_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub occurred_at: Option<Cow<'a, str>>,
    /// Who caused it (a user, or the service for an automatic change).
    #[serde(default, borrow)]
    pub agent: Option<Reference<'a>>,
    #[serde(default, borrow)]
    pub data: Data<'a>,
}

/// A reference to another PagerDuty object, with its readable summary.
#[derive(Debug, Default, Deserialize)]
pub struct Reference<'a> {
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub summary: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub html_url: Option<Cow<'a, str>>,
}

/// The event's object: an incident's fields, or a service's.
#[derive(Debug, Default, Deserialize)]
pub struct Data<'a> {
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub number: Option<u64>,
    #[serde(default, borrow)]
    pub status: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub title: Option<Cow<'a, str>>,
    /// A service's name.
    #[serde(default, borrow)]
    pub summary: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub urgency: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub priority: Option<Reference<'a>>,
    #[serde(default, borrow)]
    pub service: Option<Reference<'a>>,
    #[serde(default, borrow)]
    pub assignees: Vec<Reference<'a>>,
    #[serde(default, borrow)]
    pub html_url: Option<Cow<'a, str>>,
}

impl<'a> WebhookEvent<'a> {
    /// Reads a delivery's body.
    pub fn parse(body: &'a [u8]) -> Result<Self, String> {
        serde_json::from_slice::<Delivery<'a>>(body)
            .map(|delivery| delivery.event)
            .map_err(|e| format!("not a PagerDuty webhook event: {e}"))
    }

    /// A stored event's payload, read again.
    pub fn from_value(payload: &'a Value) -> Option<Self> {
        Delivery::deserialize(payload)
            .ok()
            .map(|delivery| delivery.event)
    }

    pub fn occurred_at(&self) -> Option<NaiveDateTime> {
        occurred_at(self.occurred_at.as_deref())
    }

    pub fn is_incident(&self) -> bool {
        self.event_type.starts_with("incident.")
    }

    fn agent(&self) -> Option<&str> {
        self.agent.as_ref()?.summary.as_deref()
    }

    /// A readable line: `Incident #42 acknowledged by Jane Doe: Disk full on db-1`.
    pub fn describe(&self) -> String {
        let data = &self.data;
        if self.is_incident() {
            let what = self
                .event_type
                .strip_prefix("incident.")
                .unwrap_or_default()
                .replace(['_', '.'], " ");
            let number = data
                .number
                .map_or_else(|| "Incident".to_string(), |n| format!("Incident #{n}"));
            let by = self.agent().map(|a| format!(" by {a}")).unwrap_or_default();
            let title = data.title.as_deref().unwrap_or("(no title)");
            let mut facts = Vec::new();
            if let Some(service) = data.service.as_ref().and_then(|s| s.summary.as_deref()) {
                facts.push(format!("service {service}"));
            }
            if let Some(urgency) = &data.urgency {
                facts.push(format!("{urgency} urgency"));
            }
            if let Some(priority) = data.priority.as_ref().and_then(|p| p.summary.as_deref()) {
                facts.push(format!("priority {priority}"));
            }
            let assignees: Vec<&str> = data
                .assignees
                .iter()
                .filter_map(|a| a.summary.as_deref())
                .collect();
            if !assignees.is_empty() {
                facts.push(format!("assigned to {}", assignees.join(", ")));
            }
            let facts = if facts.is_empty() {
                String::new()
            } else {
                format!(" ({})", facts.join(", "))
            };
            format!("{number} {what}{by}: {title}{facts}")
        } else {
            let name = data
                .summary
                .as_deref()
                .or(data.id.as_deref())
                .unwrap_or("?");
            format!("PagerDuty {} ({name})", self.event_type.replace('.', " "))
        }
    }

    /// The incident this event is a step of, with the buttons its status allows.
    pub fn subject(&self) -> Option<Subject> {
        if !self.is_incident() {
            return None;
        }
        let id = self.data.id.as_deref()?;
        let status = self.data.status.as_deref().unwrap_or("triggered");
        let control = |label: &str, verb: &str, style: &str| Control {
            label: label.to_string(),
            operation: format!("{}.{verb}", super::NAME),
            target: id.to_string(),
            style: Some(style.to_string()),
        };
        let controls = match status {
            "triggered" => vec![
                control("Acknowledge", "acknowledge", "primary"),
                control("Resolve", "resolve", "danger"),
            ],
            "acknowledged" => vec![control("Resolve", "resolve", "danger")],
            _ => Vec::new(),
        };
        Some(Subject {
            key: format!("{}:incident:{id}", super::NAME),
            ends: status == "resolved",
            controls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn incident(event_type: &str, status: &str) -> Value {
        json!({"event": {
            "id": "01DEN1HNJ4WZ5R4TV5QZ7GVWAU", "event_type": event_type,
            "resource_type": "incident", "occurred_at": "2026-12-04T10:00:00.000Z",
            "agent": {"id": "PUSER1", "summary": "Jane Doe", "type": "user_reference"},
            "data": {"id": "PINC42", "type": "incident", "number": 42, "status": status,
                "title": "Disk full on db-1", "urgency": "high",
                "html_url": "https://acme.pagerduty.com/incidents/PINC42",
                "service": {"id": "PSVC1", "summary": "Checkout"},
                "assignees": [{"id": "PUSER2", "summary": "Sam Roe"}],
                "priority": {"id": "PP1", "summary": "P1"}}
        }})
    }

    #[test]
    fn incidents_read_as_a_line_and_a_subject_whose_buttons_follow_the_status() {
        let triggered = incident("incident.triggered", "triggered");
        let event = WebhookEvent::from_value(&triggered).unwrap();
        assert_eq!(
            event.describe(),
            "Incident #42 triggered by Jane Doe: Disk full on db-1 (service Checkout, high urgency, priority P1, assigned to Sam Roe)"
        );
        let subject = event.subject().unwrap();
        assert_eq!(subject.key, "pagerduty:incident:PINC42");
        assert!(!subject.ends);
        assert_eq!(
            subject
                .controls
                .iter()
                .map(|c| c.operation.as_str())
                .collect::<Vec<_>>(),
            ["pagerduty.acknowledge", "pagerduty.resolve"]
        );
        assert_eq!(
            event.occurred_at().unwrap().to_string(),
            "2026-12-04 10:00:00"
        );

        let acknowledged = incident("incident.acknowledged", "acknowledged");
        let subject = WebhookEvent::from_value(&acknowledged)
            .unwrap()
            .subject()
            .unwrap();
        assert_eq!(subject.controls.len(), 1);
        let resolved = incident("incident.resolved", "resolved");
        let subject = WebhookEvent::from_value(&resolved)
            .unwrap()
            .subject()
            .unwrap();
        assert!(subject.ends && subject.controls.is_empty());

        let service = json!({"event": {"id": "E2", "event_type": "service.updated",
            "data": {"id": "PSVC1", "summary": "Checkout"}}});
        let event = WebhookEvent::from_value(&service).unwrap();
        assert_eq!(event.describe(), "PagerDuty service updated (Checkout)");
        assert_eq!(event.subject(), None);
        assert!(WebhookEvent::parse(b"{\"event\": 3}").is_err());
        let body = serde_json::to_vec(&triggered).unwrap();
        let head = Head::parse(&body).unwrap();
        assert_eq!(head.event_type, "incident.triggered");
        assert_eq!(
            head.occurred_at().unwrap().to_string(),
            "2026-12-04 10:00:00"
        );
        assert!(Head::parse(b"{\"event\": {}}").is_err());
    }
}
