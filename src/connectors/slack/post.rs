//! The `slack.post` route action: a readable line about a routed event (a GitHub pull
//! request, a generic webhook), posted to `channel` by the organization's own Slack
//! bot.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use super::{Message, NAME, Shared, bot_token, team_of};
use crate::pipeline::actions::{self, Action, ActionEvent, ActionKind, Settings};
use crate::problem::Problem;
use crate::store::integrations::{self, STATUS_ACTIVE};

pub const ACTION: &str = "slack.post";

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
        let envelope = event.envelope;
        let line = event.line();
        let message = Message {
            channel: &self.channel,
            text: &line,
            thread_ts: None,
            // The line in mrkdwn, and where it came from in a context line.
            blocks: Some(json!([
                {"type": "section", "text": {"type": "mrkdwn", "text": line}},
                {"type": "context", "elements": [{"type": "mrkdwn",
                    "text": format!("{} · `{}` · event {}", envelope.connector, envelope.event_type, envelope.id)}]}
            ])),
        };
        self.shared
            .post_message(team_of(&credentials), token, message)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
