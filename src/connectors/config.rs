//! The `[connectors.<name>]` sections. A section present enables its connector.
//!
//! Every provider has a configurable API base URL so that tests (and proxies) can
//! point it elsewhere; secrets take a `<key>_file` variant like every secret setting.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConnectorKind;
use crate::config::Problem;
use crate::secret::Secret;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorsConfig {
    pub slack: Option<SlackConfig>,
    pub github: Option<GithubConfig>,
    pub pagerduty: Option<PagerdutyConfig>,
    pub datadog: Option<DatadogConfig>,
    pub aws: Option<AwsConfig>,
    pub gcp: Option<GcpConfig>,
    pub webhook: Option<WebhookConfig>,
}

impl ConnectorsConfig {
    /// The connectors whose section is present, in a fixed order.
    pub fn enabled(&self) -> Vec<ConnectorKind> {
        let present = [
            (ConnectorKind::Slack, self.slack.is_some()),
            (ConnectorKind::Github, self.github.is_some()),
            (ConnectorKind::Pagerduty, self.pagerduty.is_some()),
            (ConnectorKind::Datadog, self.datadog.is_some()),
            (ConnectorKind::Aws, self.aws.is_some()),
            (ConnectorKind::Gcp, self.gcp.is_some()),
            (ConnectorKind::Webhook, self.webhook.is_some()),
        ];
        present
            .into_iter()
            .filter_map(|(kind, on)| on.then_some(kind))
            .collect()
    }

    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(slack) = &self.slack {
            require(
                &mut problems,
                "connectors.slack.client_id",
                !slack.client_id.is_empty(),
            );
            require_url(
                &mut problems,
                "connectors.slack.api_base_url",
                &slack.api_base_url,
            );
            require_url(
                &mut problems,
                "connectors.slack.web_base_url",
                &slack.web_base_url,
            );
            require(
                &mut problems,
                "connectors.slack.client_secret",
                slack.client_secret.is_some(),
            );
            if slack.socket_mode {
                require(
                    &mut problems,
                    "connectors.slack.app_token",
                    slack.app_token.is_some(),
                );
            } else {
                require(
                    &mut problems,
                    "connectors.slack.signing_secret",
                    slack.signing_secret.is_some(),
                );
            }
        }
        if let Some(github) = &self.github {
            require(
                &mut problems,
                "connectors.github.app_id",
                !github.app_id.is_empty(),
            );
            require(
                &mut problems,
                "connectors.github.app_slug",
                !github.app_slug.is_empty(),
            );
            require_url(
                &mut problems,
                "connectors.github.api_base_url",
                &github.api_base_url,
            );
            require_url(
                &mut problems,
                "connectors.github.web_base_url",
                &github.web_base_url,
            );
            require(
                &mut problems,
                "connectors.github.webhook_secret",
                github.webhook_secret.is_some(),
            );
            let oauth_client = github.client_id.is_some() && github.client_secret.is_some();
            if !oauth_client && !github.unverified_installations {
                problems.push(Problem::new(
                    "connectors.github.client_id",
                    "client_id and client_secret (the App's OAuth client) are required to \
                     confirm who installed the app; or set unverified_installations = true \
                     to bind installations on the caller's word",
                ));
            }
            match &github.private_key {
                None => problems.push(Problem::new("connectors.github.private_key", "is required")),
                Some(key) => {
                    if let Err(error) = super::github::app_jwt::AppJwt::new(&github.app_id, key) {
                        problems.push(Problem::new("connectors.github.private_key", error));
                    }
                }
            }
        }
        if let Some(pagerduty) = &self.pagerduty {
            require_url(
                &mut problems,
                "connectors.pagerduty.api_base_url",
                &pagerduty.api_base_url,
            );
        }
        if let Some(datadog) = &self.datadog {
            require_url(
                &mut problems,
                "connectors.datadog.api_base_url",
                &datadog.api_base_url,
            );
        }
        if let Some(aws) = &self.aws {
            require(
                &mut problems,
                "connectors.aws.region",
                !aws.region.is_empty(),
            );
            if let Some(endpoint) = &aws.endpoint_url {
                require_url(&mut problems, "connectors.aws.endpoint_url", endpoint);
            }
        }
        if let Some(gcp) = &self.gcp {
            require_url(&mut problems, "connectors.gcp.token_url", &gcp.token_url);
        }
        if let Some(webhook) = &self.webhook
            && webhook.timestamp_tolerance.is_zero()
        {
            problems.push(Problem::new(
                "connectors.webhook.timestamp_tolerance",
                "must be longer than zero",
            ));
        }
        problems
    }
}

fn require(problems: &mut Vec<Problem>, key: &str, ok: bool) {
    if !ok {
        problems.push(Problem::new(key, "is required"));
    }
}

fn require_url(problems: &mut Vec<Problem>, key: &str, url: &str) {
    let valid = ["http://", "https://"].iter().any(|scheme| {
        url.strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty())
    });
    if !valid {
        problems.push(Problem::new(key, format!("'{url}' is not an http(s) URL")));
    }
}

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

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

fn slack_api() -> String {
    "https://slack.com/api".to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    pub app_id: String,
    pub app_slug: String,
    /// The App's private key (PEM), for the app JWT.
    pub private_key: Option<Secret>,
    pub webhook_secret: Option<Secret>,
    /// An own listener for GitHub webhooks, as in the seeds; otherwise the API listener.
    pub webhook_listen: Option<SocketAddr>,
    #[serde(default = "github_api")]
    pub api_base_url: String,
    /// Where tenants are sent to install the app, and where the code GitHub sends
    /// back with them is exchanged (`/login/oauth/access_token`).
    #[serde(default = "github_web")]
    pub web_base_url: String,
    /// The App's OAuth client: with "Request user authorization (OAuth) during
    /// installation" on, GitHub sends a `code` to the setup URL; switchboard exchanges
    /// it and binds the installation only if that user can access it.
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    /// Binds an installation id on the caller's word when GitHub sent no code: any
    /// organization holding a state could bind another's installation. Off unless
    /// the operator turns it on.
    #[serde(default)]
    pub unverified_installations: bool,
    #[serde(with = "humantime_serde", default = "ten_seconds")]
    pub request_timeout: Duration,
}

fn github_web() -> String {
    "https://github.com".to_string()
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

fn github_api() -> String {
    "https://api.github.com".to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerdutyConfig {
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    /// Verifies v3 webhook signatures.
    pub webhook_secret: Option<Secret>,
    #[serde(default = "pagerduty_api")]
    pub api_base_url: String,
}

fn pagerduty_api() -> String {
    "https://api.pagerduty.com".to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatadogConfig {
    pub webhook_secret: Option<Secret>,
    #[serde(default = "datadog_api")]
    pub api_base_url: String,
}

fn datadog_api() -> String {
    "https://api.datadoghq.com".to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    pub region: String,
    /// Overrides the AWS endpoints (LocalStack, tests).
    pub endpoint_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpConfig {
    #[serde(default = "gcp_token_url")]
    pub token_url: String,
}

fn gcp_token_url() -> String {
    "https://oauth2.googleapis.com/token".to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// How old a signed webhook's timestamp may be (Standard Webhooks: 5 minutes).
    #[serde(with = "humantime_serde", default = "five_minutes")]
    pub timestamp_tolerance: Duration,
}

fn five_minutes() -> Duration {
    Duration::from_secs(300)
}
