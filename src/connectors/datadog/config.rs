//! `[connectors.datadog]`: the API base of each Datadog site, and how integrations
//! that poll read the event stream.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::connectors::section::{Section, checked, require_positive, require_url};
use crate::problem::Problem;

/// Datadog's sites, in the order keys are tried when a tenant names none, with
/// their API bases.
pub const SITES: [(&str, &str); 7] = [
    ("us1", "https://api.datadoghq.com"),
    ("us3", "https://api.us3.datadoghq.com"),
    ("us5", "https://api.us5.datadoghq.com"),
    ("eu1", "https://api.datadoghq.eu"),
    ("ap1", "https://api.ap1.datadoghq.com"),
    ("ap2", "https://api.ap2.datadoghq.com"),
    ("us1-fed", "https://api.ddog-gov.com"),
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatadogConfig {
    /// API bases by site, for the sites whose base is not Datadog's own (tests point
    /// them at a fake).
    #[serde(default)]
    pub site_urls: BTreeMap<String, String>,
    /// The events a polling integration reads (Datadog's events search syntax):
    /// monitor alerts by default.
    #[serde(default = "alerts_only")]
    pub poll_query: String,
    /// How far back a new polling integration starts reading.
    #[serde(with = "humantime_serde", default = "ten_minutes")]
    pub poll_lookback: Duration,
    /// How far each sweep reaches back before the end of the last one, for events
    /// Datadog indexes late; what is read twice is dropped as a duplicate.
    #[serde(
        with = "humantime_serde",
        default = "crate::connectors::section::defaults::one_minute"
    )]
    pub poll_overlap: Duration,
    /// Events per page (Datadog allows up to 1000).
    #[serde(default = "crate::connectors::section::defaults::hundred")]
    pub poll_page_size: u32,
    #[serde(
        with = "humantime_serde",
        default = "crate::connectors::section::defaults::fifteen_seconds"
    )]
    pub request_timeout: Duration,
    /// The longest a route action waits for Datadog's rate limit to reset before it
    /// gives up this attempt (the event is retried later).
    #[serde(
        with = "humantime_serde",
        default = "crate::connectors::section::defaults::one_minute"
    )]
    pub max_rate_limit_wait: Duration,
}

fn alerts_only() -> String {
    "source:alert".to_string()
}

fn ten_minutes() -> Duration {
    Duration::from_secs(600)
}

impl DatadogConfig {
    pub fn from_section(section: &Section) -> Result<Self, Vec<Problem>> {
        let config: Self = section.parse()?;
        let mut problems = Vec::new();
        for (site, url) in &config.site_urls {
            let key = section.key(&format!("site_urls.{site}"));
            if SITES.iter().any(|(known, _)| known == site) {
                require_url(&mut problems, key, url);
            } else {
                problems.push(Problem::new(
                    key,
                    format!("unknown Datadog site (known: {})", site_names()),
                ));
            }
        }
        if !(1..=1000).contains(&config.poll_page_size) {
            problems.push(Problem::new(
                section.key("poll_page_size"),
                "must be between 1 and 1000",
            ));
        }
        require_positive(
            &mut problems,
            section.key("request_timeout"),
            config.request_timeout,
        );
        checked(config, problems)
    }

    /// Every site with the API base this daemon uses for it, in discovery order.
    pub fn site_bases(&self) -> Vec<(String, String)> {
        SITES
            .iter()
            .map(|(site, default)| {
                let base = self.site_urls.get(*site).map_or(*default, String::as_str);
                ((*site).to_string(), base.trim_end_matches('/').to_string())
            })
            .collect()
    }
}

pub fn site_names() -> String {
    SITES
        .iter()
        .map(|(site, _)| *site)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let table: toml::Table = toml::from_str(text).unwrap();
        let section = Section::new("datadog", &table).unwrap();
        match DatadogConfig::from_section(&section) {
            Ok(_) => Vec::new(),
            Err(found) => found.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn sites_default_to_datadogs_bases_and_overrides_are_checked() {
        let table: toml::Table =
            toml::from_str("[site_urls]\neu1 = \"http://127.0.0.1:9/eu1/\"").unwrap();
        let config =
            DatadogConfig::from_section(&Section::new("datadog", &table).unwrap()).expect("valid");
        let bases = config.site_bases();
        assert_eq!(bases[0], ("us1".into(), "https://api.datadoghq.com".into()));
        assert_eq!(bases[3], ("eu1".into(), "http://127.0.0.1:9/eu1".into()));
        assert_eq!(
            problems("[site_urls]\nmars1 = \"http://x\""),
            [format!(
                "connectors.datadog.site_urls.mars1: unknown Datadog site (known: {})",
                site_names()
            )]
        );
        assert_eq!(
            problems("poll_page_size = 0\n[site_urls]\nus3 = \"ftp://x\""),
            [
                "connectors.datadog.site_urls.us3: 'ftp://x' is not an http(s) URL",
                "connectors.datadog.poll_page_size: must be between 1 and 1000"
            ]
        );
    }
}
