//! Pub/Sub push deliveries as switchboard stores them, and the Cloud Monitoring
//! incidents among them, typed.
//!
//! A delivery is `{"message": {"data": "<base64>", "attributes": {...}, "messageId",
//! "publishTime"}, "subscription": "projects/<p>/subscriptions/<name>"}`. What is
//! stored is the message with `data` decoded (JSON when it is JSON, else text, else
//! left in base64 as `data_base64`), so that routes read it without decoding.

use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
struct Delivery {
    message: Message,
    #[serde(default)]
    subscription: String,
}

/// Pub/Sub sends the id and time twice, in camelCase and in snake_case: either will do.
#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    attributes: serde_json::Map<String, Value>,
    #[serde(default, rename = "messageId")]
    message_id_camel: Option<String>,
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default, rename = "publishTime")]
    publish_time_camel: Option<String>,
    #[serde(default)]
    publish_time: Option<String>,
}

/// One push delivery, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct PushedMessage {
    pub message_id: String,
    pub event_type: String,
    pub occurred_at: Option<chrono::NaiveDateTime>,
    /// What is stored.
    pub payload: Value,
}

impl PushedMessage {
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let delivery: Delivery = serde_json::from_slice(body)
            .map_err(|e| format!("not a Pub/Sub push delivery: {e}"))?;
        let message = delivery.message;
        let message_id = message
            .message_id_camel
            .or(message.message_id)
            .filter(|id| !id.is_empty())
            .ok_or("message.messageId is missing")?;
        let publish_time = message.publish_time_camel.or(message.publish_time);
        let (data_field, data) = match &message.data {
            None => ("data", Value::Null),
            Some(encoded) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|_| "message.data is not base64".to_string())?;
                match String::from_utf8(raw) {
                    Ok(text) => (
                        "data",
                        serde_json::from_str(&text).unwrap_or(Value::String(text)),
                    ),
                    Err(_) => ("data_base64", Value::String(encoded.clone())),
                }
            }
        };
        let subscription_name = delivery
            .subscription
            .rsplit('/')
            .next()
            .filter(|name| !name.is_empty())
            .unwrap_or("pubsub.message")
            .to_string();
        let event_type = match incident_state(&data) {
            Some(state) => format!("monitoring.incident.{state}"),
            None => subscription_name,
        };
        let occurred_at = publish_time
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.naive_utc());
        let mut payload = json!({
            "subscription": delivery.subscription,
            "message_id": message_id,
            "publish_time": publish_time,
            "attributes": message.attributes,
        });
        payload[data_field] = data;
        Ok(Self {
            message_id,
            event_type,
            occurred_at,
            payload,
        })
    }
}

/// `open` or `closed` for a Cloud Monitoring incident notification.
fn incident_state(data: &Value) -> Option<String> {
    let state = data.get("incident")?.get("state")?.as_str()?;
    let clean: String = state
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!clean.is_empty()).then_some(clean)
}

/// A readable line for a stored message.
pub fn describe(payload: &Value) -> Option<String> {
    if let Some(incident) = payload["data"].get("incident") {
        let text = |name: &str| incident[name].as_str().unwrap_or_default();
        let mut line = format!(
            "GCP incident {}: {}",
            text("state"),
            [text("policy_name"), text("summary")]
                .into_iter()
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join(": ")
        );
        if !text("url").is_empty() {
            line.push_str(&format!(" {}", text("url")));
        }
        return Some(line);
    }
    let subscription = payload["subscription"].as_str()?;
    Some(format!(
        "GCP Pub/Sub message {} on {subscription}",
        payload["message_id"].as_str().unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(data: &Value) -> Vec<u8> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(data.to_string());
        json!({
            "message": {"data": encoded, "attributes": {"k": "v"}, "messageId": "136969346945",
                        "publishTime": "2026-12-04T10:00:00.123Z"},
            "subscription": "projects/acme-prod/subscriptions/alerts-push"
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn an_incident_is_typed_and_other_messages_take_the_subscriptions_name() {
        let incident = json!({"version": "1.2", "incident": {
            "incident_id": "0.abc", "state": "open", "policy_name": "High latency",
            "summary": "p99 above 2 s", "url": "https://console.cloud.google.com/monitoring/alerting/incidents/0.abc"}});
        let pushed = PushedMessage::parse(&delivery(&incident)).unwrap();
        assert_eq!(pushed.event_type, "monitoring.incident.open");
        assert_eq!(pushed.message_id, "136969346945");
        assert_eq!(
            pushed.payload["data"]["incident"]["policy_name"],
            "High latency"
        );
        assert_eq!(pushed.payload["attributes"]["k"], "v");
        assert_eq!(
            describe(&pushed.payload).unwrap(),
            "GCP incident open: High latency: p99 above 2 s https://console.cloud.google.com/monitoring/alerting/incidents/0.abc"
        );
        assert_eq!(
            pushed.occurred_at.unwrap().and_utc().to_rfc3339(),
            "2026-12-04T10:00:00.123+00:00"
        );

        let other = PushedMessage::parse(&delivery(&json!({"build": 7}))).unwrap();
        assert_eq!(other.event_type, "alerts-push");
        assert!(PushedMessage::parse(b"{\"message\": {}}").is_err());
        assert!(PushedMessage::parse(br#"{"message":{"messageId":"1","data":"%%%"}}"#).is_err());
    }
}
