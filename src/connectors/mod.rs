//! Connectors: one per provider (Slack, GitHub, PagerDuty, Datadog, AWS, GCP, generic
//! webhooks), each enabled by its `[connectors.<name>]` section.
//!
//! A provider becomes available when its own implementation lands; until then its
//! section is accepted and validated, and the daemon says plainly that the provider is
//! not available instead of pretending to connect.

mod config;

use std::fmt;

use serde::Serialize;

pub use config::{
    AwsConfig, ConnectorsConfig, DatadogConfig, GcpConfig, GithubConfig, PagerdutyConfig,
    SlackConfig, WebhookConfig,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectorKind {
    Slack,
    Github,
    Pagerduty,
    Datadog,
    Aws,
    Gcp,
    Webhook,
}

impl ConnectorKind {
    pub const ALL: [ConnectorKind; 7] = [
        ConnectorKind::Slack,
        ConnectorKind::Github,
        ConnectorKind::Pagerduty,
        ConnectorKind::Datadog,
        ConnectorKind::Aws,
        ConnectorKind::Gcp,
        ConnectorKind::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorKind::Slack => "slack",
            ConnectorKind::Github => "github",
            ConnectorKind::Pagerduty => "pagerduty",
            ConnectorKind::Datadog => "datadog",
            ConnectorKind::Aws => "aws",
            ConnectorKind::Gcp => "gcp",
            ConnectorKind::Webhook => "webhook",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// The name of its supervisor in the actor tree.
    pub fn actor_name(self) -> String {
        format!("connector:{}", self.as_str())
    }

    /// Why this build cannot connect to the provider, if it cannot.
    pub fn unavailable_reason(self) -> Option<&'static str> {
        // Each provider's implementation lands with its own issue; none has yet.
        Some(
            "this provider is not implemented in this build: its events and integrations are not handled",
        )
    }
}

impl fmt::Display for ConnectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
