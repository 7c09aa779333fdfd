//! A connector's `[connectors.<name>]` section. The daemon reads the settings every
//! connector may have (its own webhook listener, its polling interval) and hands the
//! rest to the connector, which reads it into its own typed config ("the config is
//! the factory"). Neither the config module nor the shared layers know those types.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::problem::Problem;

/// Settings any connector's section may carry, read by the daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommonSettings {
    /// A listener of its own for the connector's webhooks, as in the seeds;
    /// otherwise they arrive on the API listener.
    pub webhook_listen: Option<SocketAddr>,
    /// How often each integration polls the provider, for a connector that polls.
    #[serde(default, with = "humantime_serde")]
    pub poll_interval: Option<Duration>,
}

const COMMON_KEYS: [&str; 2] = ["webhook_listen", "poll_interval"];

/// One connector's section, split into the common settings and its own.
#[derive(Debug, Clone)]
pub struct Section {
    name: String,
    own: toml::Table,
    pub common: CommonSettings,
}

impl Section {
    pub fn new(name: &str, table: &toml::Table) -> Result<Self, Vec<Problem>> {
        let prefix = format!("connectors.{name}");
        let (common, own): (toml::Table, toml::Table) = table
            .clone()
            .into_iter()
            .partition(|(key, _)| COMMON_KEYS.contains(&key.as_str()));
        let common = crate::problem::deserialize(toml::Value::Table(common), &prefix)
            .map_err(|problem| vec![problem])?;
        Ok(Self {
            name: name.to_string(),
            own,
            common,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connector's own settings, read strictly into its config type: an unknown
    /// or mistyped key is a problem at `connectors.<name>.<key>`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, Vec<Problem>> {
        crate::problem::deserialize(
            toml::Value::Table(self.own.clone()),
            &format!("connectors.{}", self.name),
        )
        .map_err(|problem| vec![problem])
    }

    /// A key's full path, for the connector's own checks.
    pub fn key(&self, field: &str) -> String {
        format!("connectors.{}.{field}", self.name)
    }
}

/// Checks that `url` is an http(s) URL with a host, as a problem at `key`.
pub fn require_url(problems: &mut Vec<Problem>, key: String, url: &str) {
    let valid = ["http://", "https://"].iter().any(|scheme| {
        url.strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty())
    });
    if !valid {
        problems.push(Problem::new(key, format!("'{url}' is not an http(s) URL")));
    }
}

/// A problem at `key` unless `present`.
pub fn require(problems: &mut Vec<Problem>, key: String, present: bool) {
    if !present {
        problems.push(Problem::new(key, "is required"));
    }
}

/// A problem at `key` unless `duration` is longer than zero.
pub fn require_positive(problems: &mut Vec<Problem>, key: String, duration: Duration) {
    if duration.is_zero() {
        problems.push(Problem::new(key, "must be longer than zero"));
    }
}

/// The config when nothing was found wrong with it, else every problem.
pub fn checked<T>(config: T, problems: Vec<Problem>) -> Result<T, Vec<Problem>> {
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

/// Defaults the connectors' sections share, for `#[serde(default = "...")]`.
pub mod defaults {
    use std::time::Duration;

    pub fn fifteen_seconds() -> Duration {
        Duration::from_secs(15)
    }

    pub fn one_minute() -> Duration {
        Duration::from_secs(60)
    }

    pub fn one_hour() -> Duration {
        Duration::from_secs(3600)
    }

    pub fn hundred() -> u32 {
        100
    }
}
