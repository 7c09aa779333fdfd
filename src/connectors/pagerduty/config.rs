//! `[connectors.pagerduty]`: the OAuth app (optional: without it tenants connect with
//! API keys only), the API bases per region, and what the webhook subscription asks for.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::connectors::section::{Section, checked, require_positive, require_url};
use crate::problem::Problem;
use crate::secret::Secret;

/// PagerDuty's service regions, with their REST API and Events API bases.
pub const REGIONS: [(&str, &str, &str); 2] = [
    (
        "us",
        "https://api.pagerduty.com",
        "https://events.pagerduty.com",
    ),
    (
        "eu",
        "https://api.eu.pagerduty.com",
        "https://events.eu.pagerduty.com",
    ),
];

/// The incident events a webhook subscription asks for unless the section says.
pub const INCIDENT_EVENTS: [&str; 13] = [
    "incident.triggered",
    "incident.acknowledged",
    "incident.unacknowledged",
    "incident.resolved",
    "incident.reopened",
    "incident.escalated",
    "incident.reassigned",
    "incident.delegated",
    "incident.priority_updated",
    "incident.annotated",
    "incident.responder.added",
    "incident.responder.replied",
    "incident.status_update_published",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// The OAuth app ("classic user OAuth"); without it only API keys connect.
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    /// `read` or `write`; acting on incidents needs `write`.
    #[serde(default = "write")]
    pub scopes: Vec<String>,
    pub redirect_url: Option<String>,
    #[serde(default = "identity")]
    pub identity_base_url: String,
    /// REST API bases by region, for regions whose base is not PagerDuty's own.
    #[serde(default)]
    pub api_urls: BTreeMap<String, String>,
    /// Events API v2 bases by region.
    #[serde(default)]
    pub events_urls: BTreeMap<String, String>,
    /// The events each webhook subscription delivers.
    #[serde(default = "incident_events")]
    pub webhook_events: Vec<String>,
    /// Requests per minute per integration (PagerDuty: 960 per key or user token).
    #[serde(default = "per_minute")]
    pub requests_per_minute: u32,
    #[serde(
        with = "humantime_serde",
        default = "crate::connectors::section::defaults::fifteen_seconds"
    )]
    pub request_timeout: Duration,
    /// The longest a request waits for a rate limit before it gives up this attempt.
    #[serde(
        with = "humantime_serde",
        default = "crate::connectors::section::defaults::one_minute"
    )]
    pub max_rate_limit_wait: Duration,
}

fn write() -> Vec<String> {
    vec!["write".to_string()]
}

fn identity() -> String {
    "https://identity.pagerduty.com".to_string()
}

fn incident_events() -> Vec<String> {
    INCIDENT_EVENTS.iter().map(ToString::to_string).collect()
}

fn per_minute() -> u32 {
    960
}

impl PagerDutyConfig {
    pub fn from_section(section: &Section) -> Result<Self, Vec<Problem>> {
        let config: Self = section.parse()?;
        let mut problems = Vec::new();
        for (table, urls) in [
            ("api_urls", &config.api_urls),
            ("events_urls", &config.events_urls),
        ] {
            for (region, url) in urls {
                let key = section.key(&format!("{table}.{region}"));
                if REGIONS.iter().any(|(known, ..)| known == region) {
                    require_url(&mut problems, key, url);
                } else {
                    problems.push(Problem::new(
                        key,
                        format!("unknown PagerDuty region (known: {})", region_names()),
                    ));
                }
            }
        }
        require_url(
            &mut problems,
            section.key("identity_base_url"),
            &config.identity_base_url,
        );
        if config.client_id.is_some() != config.client_secret.is_some() {
            problems.push(Problem::new(
                section.key("client_secret"),
                "client_id and client_secret go together (both for OAuth, neither for API keys only)",
            ));
        }
        for scope in &config.scopes {
            if !["read", "write"].contains(&scope.as_str()) {
                problems.push(Problem::new(
                    section.key("scopes"),
                    format!(
                        "unknown scope '{scope}' (PagerDuty's classic OAuth has read and write)"
                    ),
                ));
            }
        }
        if config.webhook_events.is_empty() {
            problems.push(Problem::new(
                section.key("webhook_events"),
                "must name at least one event type",
            ));
        }
        if config.requests_per_minute == 0 {
            problems.push(Problem::new(
                section.key("requests_per_minute"),
                "must be at least 1",
            ));
        }
        require_positive(
            &mut problems,
            section.key("request_timeout"),
            config.request_timeout,
        );
        checked(config, problems)
    }

    /// The REST API base of `region`.
    pub fn api_base(&self, region: &str) -> Option<String> {
        base(&self.api_urls, region, |(_, api, _)| api)
    }

    /// The Events API v2 base of `region`.
    pub fn events_base(&self, region: &str) -> Option<String> {
        base(&self.events_urls, region, |(_, _, events)| events)
    }

    /// The region whose REST API an id_token's `aud` names: a base URL or a host.
    pub fn region_of_audience(&self, audience: &str) -> Option<&'static str> {
        let audience = audience.trim_end_matches('/');
        REGIONS.iter().map(|(region, ..)| *region).find(|region| {
            self.api_base(region).is_some_and(|base| {
                base == audience
                    || url::Url::parse(&base)
                        .ok()
                        .and_then(|url| url.host_str().map(|h| h == audience))
                        .unwrap_or(false)
            })
        })
    }

    pub fn oauth_enabled(&self) -> bool {
        self.client_id.is_some() && self.client_secret.is_some()
    }
}

fn base(
    overrides: &BTreeMap<String, String>,
    region: &str,
    default: fn(&(&str, &'static str, &'static str)) -> &'static str,
) -> Option<String> {
    let known = REGIONS.iter().find(|entry| entry.0 == region)?;
    let url = overrides
        .get(region)
        .map_or_else(|| default(known), String::as_str);
    Some(url.trim_end_matches('/').to_string())
}

pub fn region_names() -> String {
    REGIONS
        .iter()
        .map(|(region, ..)| *region)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<PagerDutyConfig, Vec<String>> {
        let table: toml::Table = toml::from_str(text).unwrap();
        PagerDutyConfig::from_section(&Section::new("pagerduty", &table).unwrap())
            .map_err(|found| found.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn regions_default_to_pagerdutys_bases_and_audiences_name_them() {
        let config = read("[api_urls]\neu = \"http://127.0.0.1:9/eu/\"").expect("valid");
        assert_eq!(config.api_base("us").unwrap(), "https://api.pagerduty.com");
        assert_eq!(config.api_base("eu").unwrap(), "http://127.0.0.1:9/eu");
        assert_eq!(
            config.events_base("eu").unwrap(),
            "https://events.eu.pagerduty.com"
        );
        assert_eq!(
            config.region_of_audience("https://api.pagerduty.com"),
            Some("us")
        );
        assert_eq!(config.region_of_audience("api.pagerduty.com"), Some("us"));
        assert_eq!(
            config.region_of_audience("http://127.0.0.1:9/eu"),
            Some("eu")
        );
        assert_eq!(config.region_of_audience("https://api.example.com"), None);
        assert!(!config.oauth_enabled());
    }

    #[test]
    fn bad_settings_are_named() {
        assert_eq!(
            read("client_id = \"x\"\nscopes = [\"admin\"]\n[api_urls]\nmars = \"http://x\"")
                .unwrap_err(),
            [
                "connectors.pagerduty.api_urls.mars: unknown PagerDuty region (known: us, eu)",
                "connectors.pagerduty.client_secret: client_id and client_secret go together (both for OAuth, neither for API keys only)",
                "connectors.pagerduty.scopes: unknown scope 'admin' (PagerDuty's classic OAuth has read and write)",
            ]
        );
    }
}
