//! What arrives from Slack, typed where switchboard acts on it: Events API callbacks,
//! slash commands and interactive payloads, over HTTP or Socket Mode alike.

use serde::Deserialize;
use serde_json::Value;

/// An `event_callback`'s inner event, with the fields the bot reads.
#[derive(Debug, Clone, Deserialize)]
pub struct InnerEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub subtype: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub bot_id: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub channel_type: Option<String>,
    #[serde(default)]
    pub ts: Option<String>,
    #[serde(default)]
    pub thread_ts: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventCallback {
    pub team_id: String,
    pub event_id: String,
    pub event: InnerEvent,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SlashCommand {
    pub team_id: String,
    pub user_id: String,
    pub channel_id: String,
    pub command: String,
    #[serde(default)]
    pub text: String,
}

/// Where a payload comes from and how it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub team_id: String,
    /// `app_mention`, `message.im`, `slash_command`, `interactive.block_actions`, ...
    pub event_type: String,
    /// The de-duplication id: the event id for Events API callbacks.
    pub delivery_id: Option<String>,
}

/// Classifies a Socket Mode envelope's payload (or an HTTP body) by its envelope type
/// (`events_api`, `slash_commands`, `interactive`).
pub fn classify(envelope_type: &str, payload: &Value) -> Option<Classified> {
    let text = |pointer: &str| {
        payload
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    match envelope_type {
        "events_api" => {
            let kind = text("/event/type")?;
            let event_type = match text("/event/channel_type") {
                Some(channel_type) if kind == "message" => format!("message.{channel_type}"),
                _ => kind,
            };
            Some(Classified {
                team_id: text("/team_id")?,
                event_type,
                delivery_id: text("/event_id"),
            })
        }
        "slash_commands" => Some(Classified {
            team_id: text("/team_id")?,
            event_type: "slash_command".to_string(),
            delivery_id: None,
        }),
        "interactive" => Some(Classified {
            team_id: text("/team/id").or_else(|| text("/team_id"))?,
            event_type: format!("interactive.{}", text("/type").unwrap_or_default()),
            delivery_id: None,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_are_classified_by_team_type_and_id() {
        let mention = json!({"team_id": "T1", "event_id": "Ev1", "type": "event_callback",
            "event": {"type": "app_mention", "text": "<@UBOT> help", "user": "U1", "ts": "1.1", "channel": "C1"}});
        assert_eq!(
            classify("events_api", &mention),
            Some(Classified {
                team_id: "T1".into(),
                event_type: "app_mention".into(),
                delivery_id: Some("Ev1".into())
            })
        );
        let dm = json!({"team_id": "T1", "event_id": "Ev2", "event": {"type": "message", "channel_type": "im"}});
        assert_eq!(
            classify("events_api", &dm).unwrap().event_type,
            "message.im"
        );
        let command = json!({"team_id": "T1", "command": "/switchboard", "text": "status", "user_id": "U1", "channel_id": "C1"});
        assert_eq!(
            classify("slash_commands", &command).unwrap().event_type,
            "slash_command"
        );
        let action = json!({"type": "block_actions", "team": {"id": "T9"}});
        assert_eq!(classify("interactive", &action).unwrap().team_id, "T9");
        assert_eq!(classify("events_api", &json!({})), None);
    }
}
