//! The `slack.post` route action: a readable line about a routed event (a GitHub pull
//! request, a generic webhook), posted to `channel` by the organization's own Slack
//! bot.
//!
//! An event that is a step of a subject (a PagerDuty incident) carries the buttons
//! its subject offers (Acknowledge, Resolve), and its subject's later events update
//! that message in place (`chat.update`) instead of posting again: the channel shows
//! one message per incident, saying where it stands and who moved it.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::web_api::SlackError;
use super::{Message, NAME, Shared, bot_token, team_of};
use crate::pipeline::actions::{self, Action, ActionEvent, ActionKind, Control, Settings};
use crate::problem::Problem;
use crate::store::chat_messages::{self, MessageKey};
use crate::store::integrations::{self, STATUS_ACTIVE};

pub const ACTION: &str = "slack.post";
/// The `action_id` prefix of switchboard's buttons; the rest is the operation.
pub const BUTTON_PREFIX: &str = "switchboard:";

pub struct SlackPost {
    pub shared: Arc<Shared>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostSettings {
    /// The channel (id or name).
    channel: String,
}

impl ActionKind for SlackPost {
    fn name(&self) -> &'static str {
        ACTION
    }

    fn prepare(&self, settings: &Settings) -> Result<Arc<dyn Action>, Vec<Problem>> {
        let present = settings
            .get("channel")
            .and_then(|c| c.as_str())
            .is_some_and(|c| !c.is_empty());
        if !present {
            return Err(vec![Problem::new("channel", "is required for slack.post")]);
        }
        let typed: PostSettings = actions::typed_settings(settings)?;
        Ok(Arc::new(Post {
            shared: Arc::clone(&self.shared),
            channel: typed.channel,
        }))
    }
}

struct Post {
    shared: Arc<Shared>,
    channel: String,
}

/// What a button carries back when clicked: the organization whose message it is
/// and what the operation acts on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct ButtonValue {
    #[serde(rename = "o")]
    pub organization_id: String,
    #[serde(rename = "t")]
    pub target: String,
}

/// The message's blocks: the line in mrkdwn, where it came from, and the subject's
/// buttons.
fn blocks(
    line: &str,
    event: &ActionEvent<'_>,
    organization_id: &str,
    controls: &[Control],
) -> Value {
    let envelope = event.envelope;
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": line}}),
        json!({"type": "context", "elements": [{"type": "mrkdwn",
            "text": format!("{} · `{}` · event {}", envelope.connector, envelope.event_type, envelope.id)}]}),
    ];
    if !controls.is_empty() {
        let buttons: Vec<Value> = controls
            .iter()
            .map(|control| {
                let value = ButtonValue {
                    organization_id: organization_id.to_string(),
                    target: control.target.clone(),
                };
                let mut button = json!({
                    "type": "button",
                    "text": {"type": "plain_text", "text": control.label},
                    "action_id": format!("{BUTTON_PREFIX}{}", control.operation),
                    "value": serde_json::to_string(&value).unwrap_or_default(),
                });
                if let Some(style) = &control.style {
                    button["style"] = json!(style);
                }
                button
            })
            .collect();
        blocks.push(json!({"type": "actions", "elements": buttons}));
    }
    Value::Array(blocks)
}

#[async_trait::async_trait]
impl Action for Post {
    fn target(&self) -> String {
        format!("slack:{}", self.channel)
    }

    async fn run(&self, organization_id: &str, event: &ActionEvent<'_>) -> Result<(), String> {
        let context = self.shared.context.get().ok_or("Slack is starting")?;
        let integration = integrations::list(&context.store, organization_id, Some(NAME))
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|i| i.status == STATUS_ACTIVE)
            .ok_or("the organization has no active Slack integration")?;
        let credentials = context.credentials.load(&integration).await?;
        let token = bot_token(&credentials).map_err(|e| e.to_string())?;
        let team = team_of(&credentials);
        let line = event.line();
        let subject = event.subject();
        let controls = subject
            .as_ref()
            .map(|s| s.controls.as_slice())
            .unwrap_or_default();
        let blocks = blocks(&line, event, organization_id, controls);
        let key = subject.as_ref().map(|subject| MessageKey {
            organization_id,
            connector: NAME,
            channel: &self.channel,
            subject: &subject.key,
        });
        let ends = subject.as_ref().is_some_and(|s| s.ends);
        if let Some(key) = key
            && let Some(posted) = chat_messages::find(&context.store, key)
                .await
                .map_err(|e| e.to_string())?
        {
            let at: Value = serde_json::from_str(&posted.message_ref).unwrap_or_default();
            let update =
                json!({"channel": at["channel"], "ts": at["ts"], "text": line, "blocks": blocks});
            match self
                .shared
                .api
                .json(team, "chat.update", token, &update)
                .await
            {
                Ok(_) => {
                    let recorded = if ends {
                        chat_messages::forget(&context.store, key).await
                    } else {
                        chat_messages::touch(&context.store, key).await
                    };
                    return recorded.map_err(|e| e.to_string());
                }
                // Deleted in Slack: post it anew below.
                Err(SlackError::Api(code)) if code == "message_not_found" => {}
                Err(error) => return Err(error.to_string()),
            }
        }
        let message = Message {
            channel: &self.channel,
            text: &line,
            thread_ts: None,
            blocks: Some(blocks),
        };
        let posted = self
            .shared
            .post_message(team, token, message)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(key) = key.filter(|_| !ends) {
            let at = json!({"channel": posted["channel"], "ts": posted["ts"]}).to_string();
            chat_messages::save(&context.store, key, &at)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
