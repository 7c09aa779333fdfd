//! The `datadog.event` route action: an event routed to it (a GitHub deployment, a
//! PagerDuty acknowledgement) is posted to the organization's Datadog event stream
//! (`POST /api/v1/events`), so that it shows on the tenant's graphs. Tagged with the
//! source connector and its ids; aggregated by the source event's id, so that a
//! retried attempt folds into the first.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use super::api::Wait;
use super::{NAME, Shared};
use crate::pipeline::actions::{self, Action, ActionEvent, ActionKind, Settings, truncated};
use crate::problem::Problem;
use crate::store::integrations::{self, STATUS_ACTIVE};

pub const ACTION: &str = "datadog.event";
/// Datadog's limits on an event's title and text.
const TITLE_MAX: usize = 100;
const TEXT_MAX: usize = 4000;
const ALERT_TYPES: [&str; 4] = ["info", "success", "warning", "error"];

pub struct DatadogEventAction {
    pub shared: Arc<Shared>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventSettings {
    /// Which of the organization's Datadog integrations to post with (the first
    /// active one when unset).
    integration_id: Option<String>,
    /// Tags added to the ones naming the source.
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default = "info")]
    alert_type: String,
}

fn info() -> String {
    "info".to_string()
}

impl ActionKind for DatadogEventAction {
    fn name(&self) -> &'static str {
        ACTION
    }

    fn prepare(&self, settings: &Settings) -> Result<Arc<dyn Action>, Vec<Problem>> {
        let typed: EventSettings = actions::typed_settings(settings)?;
        if !ALERT_TYPES.contains(&typed.alert_type.as_str()) {
            return Err(vec![Problem::new(
                "alert_type",
                format!("must be one of {}", ALERT_TYPES.join(", ")),
            )]);
        }
        Ok(Arc::new(PostEvent {
            shared: Arc::clone(&self.shared),
            settings: typed,
        }))
    }
}

struct PostEvent {
    shared: Arc<Shared>,
    settings: EventSettings,
}

#[async_trait::async_trait]
impl Action for PostEvent {
    fn target(&self) -> String {
        match &self.settings.integration_id {
            Some(id) => format!("datadog:{id}"),
            None => "datadog:events".to_string(),
        }
    }

    async fn run(&self, organization_id: &str, event: &ActionEvent<'_>) -> Result<(), String> {
        let context = self.shared.context.get().ok_or("Datadog is starting")?;
        let integration = integrations::list(&context.store, organization_id, Some(NAME))
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|i| i.status == STATUS_ACTIVE)
            .find(|i| {
                self.settings
                    .integration_id
                    .as_ref()
                    .is_none_or(|id| *id == i.id)
            })
            .ok_or("the organization has no active Datadog integration to post with")?;
        let credentials = context.credentials.load(&integration).await?;
        let (base, keys) = self
            .shared
            .integration(&credentials)
            .map_err(|e| e.to_string())?;
        let envelope = event.envelope;
        let line = event.line();
        let mut tags = vec![
            "source:switchboard".to_string(),
            format!("switchboard_connector:{}", envelope.connector),
            format!("switchboard_event_type:{}", envelope.event_type),
            format!("switchboard_event_id:{}", envelope.id),
        ];
        if let Some(source) = &envelope.integration_id {
            tags.push(format!("switchboard_integration_id:{source}"));
        }
        tags.extend(self.settings.tags.iter().cloned());
        let body = json!({
            "title": truncated(&line, TITLE_MAX),
            "text": truncated(
                &format!(
                    "{line}\n\n{} event `{}` (switchboard event {})",
                    envelope.connector, envelope.event_type, envelope.id
                ),
                TEXT_MAX,
            ),
            "tags": tags,
            "alert_type": self.settings.alert_type,
            "aggregation_key": format!("switchboard-{}", envelope.id),
        });
        self.shared
            .api
            .call(
                base,
                &keys,
                reqwest::Method::POST,
                "/api/v1/events",
                Some(&body),
                Wait::UpTo(self.shared.config.max_rate_limit_wait),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_to_datadogs_limits() {
        assert_eq!(truncated("short", 100), "short");
        let cut = truncated(&"é".repeat(150), TITLE_MAX);
        assert_eq!(cut.chars().count(), TITLE_MAX);
        assert!(cut.ends_with('…'));
    }
}
