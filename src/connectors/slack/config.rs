//! `[connectors.slack]`: the Slack app's settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::connectors::section::{Section, checked, require, require_url};
use crate::problem::Problem;
use crate::secret::Secret;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    pub client_id: String,
    pub client_secret: Option<Secret>,
    /// Verifies Events API and interactivity requests (v0 signatures).
    pub signing_secret: Option<Secret>,
    /// The app-level token (`xapp-...`) that opens Socket Mode connections.
    pub app_token: Option<Secret>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub redirect_url: Option<String>,
    #[serde(default)]
    pub socket_mode: bool,
    #[serde(default = "slack_api")]
    pub api_base_url: String,
    /// Where tenants are sent to authorize (`<web>/oauth/v2/authorize`).
    #[serde(default = "slack_web")]
    pub web_base_url: String,
    /// Where Slack's `response_url`s point: an interaction's ephemeral answer is
    /// posted only to a `response_url` under it.
    #[serde(default = "slack_hooks")]
    pub hooks_base_url: String,
    /// Slack user ids allowed to run `restart <connector>` through the bot.
    #[serde(default)]
    pub admins: Vec<String>,
    /// How old a signed request's timestamp may be (Slack: 5 minutes).
    #[serde(with = "humantime_serde", default = "five_minutes")]
    pub timestamp_tolerance: Duration,
    #[serde(with = "humantime_serde", default = "ten_seconds")]
    pub request_timeout: Duration,
    /// How often Socket Mode connections are pinged.
    #[serde(with = "humantime_serde", default = "thirty_seconds")]
    pub ping_interval: Duration,
    /// Socket Mode reconnects: full-jitter backoff between these.
    #[serde(with = "humantime_serde", default = "one_second")]
    pub reconnect_base: Duration,
    #[serde(with = "humantime_serde", default = "two_minutes")]
    pub reconnect_cap: Duration,
    /// The agent service conversations the bot does not know go to: POSTed
    /// `{organization, channel, thread_ts, user, text, messages}`, answers
    /// `{"text": "..."}`, posted in the thread.
    pub agent_url: Option<String>,
    #[serde(with = "humantime_serde", default = "twenty_seconds")]
    pub agent_timeout: Duration,
}

fn twenty_seconds() -> Duration {
    Duration::from_secs(20)
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

fn two_minutes() -> Duration {
    Duration::from_secs(120)
}

fn slack_web() -> String {
    "https://slack.com".to_string()
}

fn slack_hooks() -> String {
    "https://hooks.slack.com".to_string()
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

fn slack_api() -> String {
    "https://slack.com/api".to_string()
}

impl SlackConfig {
    /// Reads and checks the section.
    pub fn from_section(section: &Section) -> Result<Self, Vec<Problem>> {
        let config: Self = section.parse()?;
        let mut problems = Vec::new();
        let key = |field: &str| section.key(field);
        require(
            &mut problems,
            key("client_id"),
            !config.client_id.is_empty(),
        );
        require_url(&mut problems, key("api_base_url"), &config.api_base_url);
        require_url(&mut problems, key("web_base_url"), &config.web_base_url);
        require_url(&mut problems, key("hooks_base_url"), &config.hooks_base_url);
        require(
            &mut problems,
            key("client_secret"),
            config.client_secret.is_some(),
        );
        if config.socket_mode {
            require(&mut problems, key("app_token"), config.app_token.is_some());
        } else {
            require(
                &mut problems,
                key("signing_secret"),
                config.signing_secret.is_some(),
            );
        }
        if let Some(url) = &config.agent_url {
            require_url(&mut problems, key("agent_url"), url);
        }
        checked(config, problems)
    }
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

fn five_minutes() -> Duration {
    Duration::from_secs(300)
}
