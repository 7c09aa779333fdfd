//! A CloudWatch alarm's change of state, the one event both intakes make: a polled
//! `DescribeAlarmHistory` item and an alarm notification pushed through SNS become
//! the same typed payload with the same delivery id, so a change that arrives both
//! ways is stored once.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::api::HistoryItem;
use crate::connectors::ingress::{IncomingEvent, MAX_DELIVERY_ID};
use crate::pipeline::actions::Subject;
use crate::store::events::DeliveryScope;

/// Event types: `cloudwatch.alarm.alarm`, `.ok`, `.insufficient_data`.
pub const EVENT_PREFIX: &str = "cloudwatch.alarm.";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmStateChange {
    pub alarm_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub region: String,
    /// `OK`, `ALARM` or `INSUFFICIENT_DATA`.
    pub old_state: String,
    pub new_state: String,
    pub reason: String,
    /// When the state changed, RFC 3339 in milliseconds (UTC).
    pub changed_at: String,
    /// How it arrived first: `poll` or `sns`.
    pub via: String,
}

impl AlarmStateChange {
    /// A `StateUpdate` history item of `region`; `None` for one without states.
    pub fn from_history(region: &str, account: Option<&str>, item: &HistoryItem) -> Option<Self> {
        let data: Value = serde_json::from_str(&item.data).ok()?;
        let state = |which: &str, field: &str| data[which][field].as_str().map(str::to_string);
        Some(Self {
            alarm_name: item.alarm_name.clone(),
            alarm_arn: account.map(|account| {
                format!(
                    "arn:aws:cloudwatch:{region}:{account}:alarm:{}",
                    item.alarm_name
                )
            }),
            account: account.map(str::to_string),
            region: region.to_string(),
            old_state: state("oldState", "stateValue")?,
            new_state: state("newState", "stateValue")?,
            reason: state("newState", "stateReason").unwrap_or_else(|| item.summary.clone()),
            changed_at: normalized_time(&item.timestamp)?,
            via: "poll".into(),
        })
    }

    /// An SNS `Message` CloudWatch sent for an alarm; `None` for any other message.
    pub fn from_sns(message: &Value) -> Option<Self> {
        let text = |field: &str| message[field].as_str().map(str::to_string);
        let alarm_arn = text("AlarmArn")?;
        // arn:aws:cloudwatch:<region>:<account>:alarm:<name>: the message's `Region`
        // is a display name ("US East (N. Virginia)").
        let region = alarm_arn.split(':').nth(3)?.to_string();
        Some(Self {
            alarm_name: text("AlarmName")?,
            account: text("AWSAccountId")
                .or_else(|| alarm_arn.split(':').nth(4).map(str::to_string)),
            alarm_arn: Some(alarm_arn),
            region,
            old_state: text("OldStateValue")?,
            new_state: text("NewStateValue")?,
            reason: text("NewStateReason").unwrap_or_default(),
            changed_at: normalized_time(&text("StateChangeTime")?)?,
            via: "sns".into(),
        })
    }

    pub fn event_type(&self) -> String {
        format!("{EVENT_PREFIX}{}", self.new_state.to_ascii_lowercase())
    }

    /// The same for the same change however it arrived: region, alarm, new state and
    /// time (hashed when the alarm's name makes it too long).
    pub fn delivery_id(&self) -> String {
        let id = format!(
            "cloudwatch:{}:{}:{}:{}",
            self.region, self.alarm_name, self.new_state, self.changed_at
        );
        if id.len() <= MAX_DELIVERY_ID {
            id
        } else {
            format!("cloudwatch:sha256:{}", hex::encode(Sha256::digest(id)))
        }
    }

    pub fn occurred_at(&self) -> Option<NaiveDateTime> {
        DateTime::parse_from_rfc3339(&self.changed_at)
            .ok()
            .map(|t| t.naive_utc())
    }

    pub fn into_incoming(self) -> IncomingEvent {
        IncomingEvent {
            delivery_id: self.delivery_id(),
            scope: DeliveryScope::Integration,
            event_type: self.event_type(),
            occurred_at: self.occurred_at(),
            payload: serde_json::to_string(&self).unwrap_or_default(),
        }
    }

    /// "CloudWatch alarm HighCPU (us-east-1) is ALARM, was OK: Threshold Crossed: …"
    pub fn describe(&self) -> String {
        let mut line = format!(
            "CloudWatch alarm {} ({}) is {}, was {}",
            self.alarm_name, self.region, self.new_state, self.old_state
        );
        if !self.reason.is_empty() {
            line.push_str(": ");
            line.push_str(&crate::pipeline::actions::truncated(&self.reason, 300));
        }
        line
    }

    /// One alarm's life, from leaving `OK` until it is back.
    pub fn subject(&self) -> Subject {
        Subject {
            key: format!("{}:alarm:{}:{}", super::NAME, self.region, self.alarm_name),
            ends: self.new_state == "OK",
            controls: Vec::new(),
        }
    }
}

/// A CloudWatch time (`2024-05-01T10:00:00.123Z` in the history, `…+0000` in SNS
/// messages) as RFC 3339 UTC in milliseconds.
pub fn normalized_time(text: &str) -> Option<String> {
    let parsed = DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()?;
    Some(
        parsed
            .with_timezone(&Utc)
            .to_rfc3339_opts(SecondsFormat::Millis, true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_change_polled_and_pushed_is_one_event() {
        let item = HistoryItem {
            alarm_name: "HighCPU".into(),
            timestamp: "2026-12-05T10:00:00.123Z".into(),
            summary: "Alarm updated from OK to ALARM".into(),
            data: json!({"version": "1.0",
                "oldState": {"stateValue": "OK", "stateReason": "fine"},
                "newState": {"stateValue": "ALARM", "stateReason": "Threshold Crossed: 1 datapoint [93.0] was greater than 80.0"}})
            .to_string(),
        };
        let polled = AlarmStateChange::from_history("eu-west-1", Some("111122223333"), &item)
            .expect("a state change");
        let pushed = AlarmStateChange::from_sns(&json!({
            "AlarmName": "HighCPU",
            "AlarmArn": "arn:aws:cloudwatch:eu-west-1:111122223333:alarm:HighCPU",
            "AWSAccountId": "111122223333",
            "Region": "EU (Ireland)",
            "NewStateValue": "ALARM",
            "OldStateValue": "OK",
            "NewStateReason": "Threshold Crossed: 1 datapoint [93.0] was greater than 80.0",
            "StateChangeTime": "2026-12-05T10:00:00.123+0000",
        }))
        .expect("an alarm message");
        assert_eq!(polled.delivery_id(), pushed.delivery_id());
        assert_eq!(polled.event_type(), "cloudwatch.alarm.alarm");
        assert_eq!(
            polled,
            AlarmStateChange {
                via: "poll".into(),
                ..pushed.clone()
            }
        );
        assert_eq!(pushed.subject().key, "aws:alarm:eu-west-1:HighCPU");
        assert!(!pushed.subject().ends);
        assert_eq!(
            pushed.describe(),
            "CloudWatch alarm HighCPU (eu-west-1) is ALARM, was OK: Threshold Crossed: 1 datapoint [93.0] was greater than 80.0"
        );
        assert!(AlarmStateChange::from_sns(&json!({"hello": "world"})).is_none());
        let long = AlarmStateChange {
            alarm_name: "x".repeat(255),
            ..pushed
        };
        assert!(long.delivery_id().len() <= MAX_DELIVERY_ID);
    }
}
