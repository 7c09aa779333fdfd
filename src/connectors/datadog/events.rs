//! Datadog's events as switchboard stores them: the JSON payload its webhook sends
//! (from the template switchboard installs), and the same shape built from an event
//! the events API returns to a polling integration, so routes see one shape either
//! way and the two intakes share one de-duplication id.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::{Value, json};

/// The payload template switchboard installs with its webhook: Datadog substitutes
/// each `$VARIABLE` (as a JSON string) when it notifies.
pub fn payload_template() -> String {
    json!({
        "id": "$ID",
        "event_type": "$EVENT_TYPE",
        "title": "$EVENT_TITLE",
        "date": "$DATE",
        "last_updated": "$LAST_UPDATED",
        "alert_id": "$ALERT_ID",
        "alert_cycle_key": "$ALERT_CYCLE_KEY",
        "alert_transition": "$ALERT_TRANSITION",
        "alert_status": "$ALERT_STATUS",
        "alert_priority": "$ALERT_PRIORITY",
        "alert_scope": "$ALERT_SCOPE",
        "hostname": "$HOSTNAME",
        "link": "$LINK",
        "tags": "$TAGS",
        "org_id": "$ORG_ID"
    })
    .to_string()
}

/// One Datadog event, typed (every field as Datadog filled it in; empty when it had
/// nothing to put there). Read straight from the payload's bytes, borrowing its
/// text, without building a JSON tree: the ingress reads one per webhook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DatadogEvent<'a> {
    #[serde(borrow, deserialize_with = "text")]
    pub id: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "text")]
    pub event_type: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "text")]
    pub title: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "text")]
    pub date: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "text")]
    pub last_updated: Cow<'a, str>,
    /// The monitor's id, for a monitor alert.
    #[serde(borrow, deserialize_with = "text")]
    pub alert_id: Cow<'a, str>,
    /// One alert from its trigger to its recovery: what a route resolves by.
    #[serde(borrow, deserialize_with = "text")]
    pub alert_cycle_key: Cow<'a, str>,
    /// `Triggered`, `Re-Triggered`, `Recovered`, `Warn`, `No Data`, `Renotify`.
    #[serde(borrow, deserialize_with = "text")]
    pub alert_transition: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "text")]
    pub alert_status: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "text")]
    pub alert_priority: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "text")]
    pub alert_scope: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "text")]
    pub hostname: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "text")]
    pub link: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "text")]
    pub tags: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "text")]
    pub org_id: Cow<'a, str>,
}

/// A template variable's value as text: Datadog fills them in as strings; a
/// hand-made template may give numbers or null.
fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Cow<'de, str>, D::Error> {
    struct Text;
    impl<'de> Visitor<'de> for Text {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string, a number or null")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_string()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_string()))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_string()))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_string()))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_string()))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(""))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(""))
        }
    }
    deserializer.deserialize_any(Text)
}

impl<'a> DatadogEvent<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, String> {
        // A struct would also be read from an array, by position: only objects are.
        if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err("the body is not a JSON object".into());
        }
        serde_json::from_slice(payload)
            .map_err(|e| format!("the body is not a Datadog payload: {e}"))
    }

    /// The event in a stored payload.
    pub fn from_value(value: &'a Value) -> Result<Self, String> {
        if !value.is_object() {
            return Err("the payload is not a JSON object".into());
        }
        Self::deserialize(value).map_err(|e| e.to_string())
    }

    /// The de-duplication id: Datadog's event id (`$ID`), or, for a template without
    /// it, the alert's cycle, transition and time together.
    pub fn delivery_id(&self) -> Option<String> {
        if filled(&self.id) {
            return Some(self.id.to_string());
        }
        let parts = [
            &self.alert_cycle_key,
            &self.alert_transition,
            &self.last_updated,
        ];
        parts
            .iter()
            .all(|p| filled(p))
            .then(|| format!("{}:{}:{}", parts[0], parts[1], parts[2]))
    }

    /// The event type routes match: `monitor.<transition>` for a monitor alert, else
    /// Datadog's own `$EVENT_TYPE`.
    pub fn switchboard_type(&self) -> String {
        if filled(&self.alert_transition) {
            return transition_type(&self.alert_transition);
        }
        if filled(&self.event_type) {
            return self.event_type.to_string();
        }
        "event".to_string()
    }

    /// When it happened: `$DATE`, in epoch milliseconds (or seconds).
    pub fn occurred_at(&self) -> Option<chrono::NaiveDateTime> {
        let raw: i64 = self.date.trim().parse().ok()?;
        // Below 10^11 it can only be seconds (10^11 ms is March 1973).
        let millis = if raw < 100_000_000_000 {
            raw * 1000
        } else {
            raw
        };
        chrono::DateTime::from_timestamp_millis(millis).map(|t| t.naive_utc())
    }

    /// `Datadog monitor triggered: High CPU (host:web-1) https://…`
    pub fn describe(&self) -> String {
        let what = if filled(&self.alert_transition) {
            format!(
                "Datadog monitor {}",
                transition_type(&self.alert_transition)
                    .trim_start_matches("monitor.")
                    .replace('_', " ")
            )
        } else {
            format!("Datadog {}", self.switchboard_type().replace('_', " "))
        };
        let mut line = format!("{what}: {}", self.title.trim());
        if filled(&self.alert_scope) {
            line.push_str(&format!(" ({})", self.alert_scope));
        }
        if filled(&self.link) {
            line.push_str(&format!(" {}", self.link));
        }
        line
    }
}

impl DatadogEvent<'_> {
    /// The alert this event is a step of, from trigger to recovery: its cycle key
    /// (the monitor and scope when Datadog gave none). A recovery ends it.
    pub fn subject(&self) -> Option<crate::pipeline::actions::Subject> {
        let key = if filled(&self.alert_cycle_key) {
            self.alert_cycle_key.to_string()
        } else if filled(&self.alert_id) {
            format!("{}/{}", self.alert_id, self.alert_scope.trim())
        } else {
            return None;
        };
        Some(crate::pipeline::actions::Subject {
            key: format!("{}:alert:{key}", super::NAME),
            ends: self.switchboard_type() == "monitor.recovered",
            controls: Vec::new(),
        })
    }
}

/// A template variable Datadog filled in: not empty, and not the variable itself
/// (Datadog leaves a `$VARIABLE` it has no value for as it is).
fn filled(value: &str) -> bool {
    let value = value.trim();
    !value.is_empty() && !value.starts_with('$')
}

/// `Triggered` → `monitor.triggered`, `No Data` → `monitor.no_data`. A re-trigger is a
/// trigger (the alert opens again); an unknown transition keeps its own name.
pub fn transition_type(transition: &str) -> String {
    let normalized = transition.trim().to_ascii_lowercase();
    let name = match normalized.as_str() {
        "triggered" | "re-triggered" | "retriggered" => "triggered",
        "recovered" => "recovered",
        "warn" | "warning" | "re-warn" => "warn",
        "no data" | "no_data" | "re-no data" => "no_data",
        "renotify" => "renotify",
        other => {
            return format!(
                "monitor.{}",
                other
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect::<String>()
            );
        }
    };
    format!("monitor.{name}")
}

/// An event from `GET /api/v2/events`, in the webhook's shape (plus `"source":
/// "poll"` and the original under `event`).
///
/// Assumed, as the events API documents them: `attributes.attributes.evt.id` is
/// the event's id the webhook's `$ID` carries (the v1 id), so an alert both pushed
/// and polled has one delivery id; the transition is the monitor title's
/// `[Triggered …]` prefix, else read from the event's status. The events API has no
/// cycle key: its `aggregation_key` (one per monitor and group since March 2025)
/// stands in, and is the same for an alert's trigger and its recovery.
pub fn from_polled(event: &Value) -> Option<(String, Value)> {
    let outer = &event["attributes"];
    let inner = &outer["attributes"];
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let id = [&inner["evt"]["id"], &event["id"]]
        .into_iter()
        .map(text)
        .find(|id| !id.is_empty())?;
    let title = [&inner["title"], &inner["event_object"]]
        .into_iter()
        .map(text)
        .find(|t| !t.is_empty())
        .unwrap_or_default();
    let transition = title_transition(&title)
        .or_else(|| status_transition(inner["status"].as_str().unwrap_or_default()))
        .unwrap_or_default();
    let monitor_id = [&inner["monitor_id"], &inner["monitor"]["id"]]
        .into_iter()
        .map(text)
        .find(|t| !t.is_empty())
        .unwrap_or_default();
    let scope = inner["monitor_groups"]
        .as_array()
        .map(|groups| {
            groups
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let tags = outer["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let timestamp = text(&inner["timestamp"]);
    let payload = json!({
        "id": id,
        "event_type": text(&inner["evt"]["type"]),
        "title": title,
        "date": timestamp,
        "last_updated": timestamp,
        "alert_id": monitor_id,
        "alert_cycle_key": text(&inner["aggregation_key"]),
        "alert_transition": transition,
        "alert_status": text(&inner["status"]),
        "alert_priority": text(&inner["priority"]),
        "alert_scope": scope,
        "hostname": text(&inner["hostname"]),
        "link": "",
        "tags": tags,
        "org_id": "",
        "source": "poll",
        "event": event,
    });
    Some((id, payload))
}

/// `[Triggered on {host:a}] CPU high` → `Triggered`.
fn title_transition(title: &str) -> Option<String> {
    let inside = title.strip_prefix('[')?.split(']').next()?;
    let word = inside.split(" on ").next()?.trim();
    let known = [
        "Triggered",
        "Re-Triggered",
        "Recovered",
        "Warn",
        "No Data",
        "Renotify",
    ];
    known
        .iter()
        .find(|k| k.eq_ignore_ascii_case(word))
        .map(|k| (*k).to_string())
}

fn status_transition(status: &str) -> Option<String> {
    Some(
        match status {
            "error" | "failure" => "Triggered",
            "warning" => "Warn",
            "success" => "Recovered",
            _ => return None,
        }
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_map_to_monitor_event_types() {
        for (transition, expected) in [
            ("Triggered", "monitor.triggered"),
            ("Re-Triggered", "monitor.triggered"),
            ("Recovered", "monitor.recovered"),
            ("Warn", "monitor.warn"),
            ("No Data", "monitor.no_data"),
            ("Renotify", "monitor.renotify"),
            ("Muted Alert", "monitor.muted_alert"),
        ] {
            assert_eq!(transition_type(transition), expected, "{transition}");
        }
    }

    #[test]
    fn a_pushed_payload_is_typed_and_described() {
        let body = json!({
            "id": "7310531063410186462", "event_type": "query_alert_monitor",
            "title": "[Triggered on {host:web-1}] CPU high", "date": "1733300000000",
            "last_updated": "1733300000000", "alert_id": "42", "alert_cycle_key": "cyc-1",
            "alert_transition": "Triggered", "alert_scope": "host:web-1",
            "link": "https://app.datadoghq.com/event/event?id=1", "tags": "$TAGS"
        });
        let text = body.to_string();
        let event = DatadogEvent::parse(text.as_bytes()).unwrap();
        assert_eq!(event.delivery_id().as_deref(), Some("7310531063410186462"));
        assert_eq!(event.switchboard_type(), "monitor.triggered");
        assert_eq!(
            event.occurred_at().unwrap().and_utc().to_rfc3339(),
            "2024-12-04T08:13:20+00:00"
        );
        assert_eq!(
            event.describe(),
            "Datadog monitor triggered: [Triggered on {host:web-1}] CPU high (host:web-1) https://app.datadoghq.com/event/event?id=1"
        );
        // No $ID in a hand-made template: the cycle, transition and time stand in.
        let body = json!({"alert_cycle_key": "cyc-1", "alert_transition": "Recovered",
                          "last_updated": 1733300060000_i64, "id": "$ID"});
        let text = body.to_string();
        let event = DatadogEvent::parse(text.as_bytes()).unwrap();
        assert_eq!(
            event.delivery_id().as_deref(),
            Some("cyc-1:Recovered:1733300060000")
        );
        assert_eq!(DatadogEvent::parse(b"{}").unwrap().delivery_id(), None);
        assert!(DatadogEvent::parse(b"[1]").is_err());
        let other = DatadogEvent::parse(br#"{"id":"9","event_type":"synthetics_alert"}"#).unwrap();
        assert_eq!(other.switchboard_type(), "synthetics_alert");
    }

    #[test]
    fn a_polled_event_takes_the_webhooks_shape_and_id() {
        let polled = json!({
            "id": "AAAAAWgN8Xwgr1vKDQ",
            "type": "event",
            "attributes": {
                "tags": ["env:prod", "team:a"],
                "timestamp": "2024-12-04T08:13:20Z",
                "attributes": {
                    "evt": {"id": "7310531063410186462", "type": "query_alert_monitor"},
                    "title": "[Recovered on {host:web-1}] CPU high",
                    "timestamp": 1733300000000_i64,
                    "monitor_id": 42,
                    "monitor_groups": ["host:web-1"],
                    "aggregation_key": "agg-42",
                    "status": "success"
                }
            }
        });
        let (id, payload) = from_polled(&polled).unwrap();
        assert_eq!(id, "7310531063410186462");
        let event = DatadogEvent::from_value(&payload).unwrap();
        assert_eq!(event.switchboard_type(), "monitor.recovered");
        assert_eq!(event.alert_id, "42");
        assert_eq!(event.alert_scope, "host:web-1");
        assert_eq!(event.alert_cycle_key, "agg-42");
        assert_eq!(event.tags, "env:prod,team:a");
        assert_eq!(payload["source"], "poll");
    }
}
