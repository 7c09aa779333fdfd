//! The daemon's configuration: TOML, with `${VAR}` / `${VAR:-default}` expansion in
//! every string and a `<key>_file` variant of every secret setting.
//!
//! Loading goes: parse TOML → expand variables and read secret files (every problem
//! collected with its key path) → deserialize strictly (unknown keys are errors, the
//! first reported with its path) → [`Config::validate`] (every problem, with its path).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_actors::{Backoff, BreakerConfig, Intensity, Strategy};

use crate::pipeline::PipelineConfig;
use crate::pipeline::routes::RouteConfig;
pub use crate::problem::Problem;
use crate::secret::Secret;

/// What the daemon runs on without a config.toml: the defaults, with the environment
/// variables that the shipped config.toml also reads.
pub const EMBEDDED_DEFAULT: &str = r#"
[server]
listen = "${SWITCHBOARD_LISTEN:-127.0.0.1:8080}"
[admin]
listen = "${SWITCHBOARD_ADMIN_LISTEN:-127.0.0.1:9090}"
[database]
url = "${DATABASE_URL:-sqlite://data/switchboard.db}"
[log]
level = "${SWITCHBOARD_LOG:-info}"
"#;

/// Settings that hold secrets, and so may be given as `<key>_file` instead.
const SECRET_KEYS: &[&str] = &[
    "token",
    "master_key",
    "client_secret",
    "signing_secret",
    "app_token",
    "private_key",
    "webhook_secret",
    "api_key",
    "app_key",
    "secret_access_key",
    "url",
    "previous_master_keys",
    "secret",
];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub vault: VaultConfig,
    #[serde(default)]
    pub supervision: SupervisionConfig,
    #[serde(default)]
    pub circuit_breaker: BreakerConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub integrations: IntegrationsConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// `[cluster]`: several nodes on one PostgreSQL (see `cluster.rs`); absent, this
    /// node runs every integration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// `[[routes]]`: where an organization's events go after their connector.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// `[connectors.<name>]`: one section per connector, read by the connector itself
    /// (see `connectors::ConnectorSet::from_sections`). A section present enables it.
    #[serde(default)]
    pub connectors: BTreeMap<String, toml::Table>,
}

/// How tenant integrations are authorized and their credentials kept fresh.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntegrationsConfig {
    /// Where this daemon's API is reached from outside: providers send browsers back
    /// to `<public_url>/oauth/<connector>/callback` and webhooks to
    /// `<public_url>/webhooks/...`. Unset, it follows the API's own address
    /// (`http://` + `server.listen` as bound), which suits loopback only.
    pub public_url: Option<String>,
    /// How long an authorization state stays usable.
    #[serde(with = "humantime_serde")]
    pub state_ttl: Duration,
    /// Credentials are refreshed this long before they expire.
    #[serde(with = "humantime_serde")]
    pub refresh_margin: Duration,
    /// Failed refreshes in a row before the integration's status becomes `error`.
    pub refresh_attempts: u32,
    /// Validation at start is spread over this long, so that a restart with many
    /// integrations does not call every provider at once.
    #[serde(with = "humantime_serde")]
    pub validation_spread: Duration,
}

impl Default for IntegrationsConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            state_ttl: Duration::from_secs(600),
            refresh_margin: Duration::from_secs(15 * 60),
            refresh_attempts: 5,
            validation_spread: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The tenant API, webhooks and OAuth callbacks.
    pub listen: SocketAddr,
    /// How long a graceful shutdown may take in all: draining requests, stopping actors.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    // The limits below apply to every listener (API, admin, connector-owned).
    /// A request's head must arrive within this (from the connection's start or the
    /// request's first byte).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A request's body must arrive within this once its head did.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// A connection with nothing read, written or in flight for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Open connections per listener; at the cap the oldest idle one is closed.
    pub max_connections: usize,
    /// The most bytes of headers a request may carry (431 beyond).
    pub max_header_bytes: usize,
    /// Bytes of request bodies the daemon holds buffered at once, all listeners
    /// together; a request over it waits `body_budget_wait`, then gets 503.
    pub body_budget_bytes: u64,
    #[serde(with = "humantime_serde")]
    pub body_budget_wait: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_header_bytes: 32 * 1024,
            body_budget_bytes: 64 * 1024 * 1024,
            body_budget_wait: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Bearer token for /admin/* and /metrics; required off loopback.
    pub token: Option<Secret>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (embedded default) or `postgres://...`. May hold a password.
    pub url: Secret,
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("sqlite://data/switchboard.db"),
            max_connections: 8,
            connect_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(5),
        }
    }
}

impl DatabaseConfig {
    /// The URL with any password replaced, for logs and `check-config`.
    pub fn display_url(&self) -> String {
        let url = self.url.expose();
        match (url.find("://"), url.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                let credentials = &url[scheme_end + 3..at];
                match credentials.split_once(':') {
                    Some((user, _)) => {
                        format!(
                            "{}{user}:{}{}",
                            &url[..scheme_end + 3],
                            crate::secret::REDACTED,
                            &url[at..]
                        )
                    }
                    None => url.to_string(),
                }
            }
            _ => url.to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultConfig {
    /// 32 bytes, base64. When absent, one is generated into the data directory.
    pub master_key: Option<Secret>,
    /// Master keys being rotated out: data keys they wrap are re-wrapped at start.
    #[serde(default)]
    pub previous_master_keys: Vec<Secret>,
    /// Credentials re-encrypted per transaction during a data-key rotation.
    pub rotation_batch: u32,
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            master_key: None,
            previous_master_keys: Vec::new(),
            rotation_batch: 500,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionConfig {
    /// How connector supervisors treat their integrations (the root is always one_for_one).
    pub strategy: Strategy,
    pub max_restarts: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
    /// How long each actor may take to stop before it is killed.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How long a health query waits for an actor before showing its last report.
    #[serde(with = "humantime_serde")]
    pub observe_timeout: Duration,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        let intensity = Intensity::default();
        let backoff = Backoff::default();
        Self {
            strategy: Strategy::OneForOne,
            max_restarts: intensity.max_restarts,
            window: intensity.window,
            backoff_base: backoff.base,
            backoff_cap: backoff.cap,
            shutdown_timeout: Duration::from_secs(5),
            observe_timeout: Duration::from_millis(500),
        }
    }
}

impl SupervisionConfig {
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff_base, self.backoff_cap)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A level (`info`) or a filter (`info,switchboard=debug`); `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path} has {} problem(s):\n{}", problems.len(), list(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads, expands, deserializes and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base_dir, &|name| std::env::var(name).ok()).map_err(
            |error| match error {
                ParseError::Syntax(message) => ConfigError::Syntax {
                    path: path.to_path_buf(),
                    message,
                },
                ParseError::Invalid(problems) => ConfigError::Invalid {
                    path: path.to_path_buf(),
                    problems,
                },
            },
        )
    }

    /// The configuration used where there is no config.toml: every default, on
    /// loopback, SQLite under ./data, and the environment variables the shipped
    /// config.toml reads.
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Self::parse(EMBEDDED_DEFAULT, Path::new("."), &|name| {
            std::env::var(name).ok()
        })
        .map_err(|error| match error {
            ParseError::Syntax(message) => ConfigError::Syntax {
                path: PathBuf::from("(embedded default)"),
                message,
            },
            ParseError::Invalid(problems) => ConfigError::Invalid {
                path: PathBuf::from("(embedded default)"),
                problems,
            },
        })
    }

    /// Parses configuration text; `env` looks variables up, relative `*_file` paths
    /// are read from `base_dir`.
    pub fn parse(
        text: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ParseError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ParseError::Syntax(e.message().to_string()))?;
        let mut problems = Vec::new();
        resolve_table(&mut table, "", base_dir, env, &mut problems);
        if !problems.is_empty() {
            return Err(ParseError::Invalid(problems));
        }
        let config: Config = crate::problem::deserialize(toml::Value::Table(table), "")
            .map_err(|problem| ParseError::Invalid(vec![problem]))?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ParseError::Invalid(problems))
        }
    }

    /// Every semantic problem, each with its key path.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();

        match &self.admin.token {
            Some(token) if token.expose().trim().is_empty() => {
                problems.push(Problem::new("admin.token", "must not be empty"));
            }
            None if !self.admin.listen.ip().is_loopback() => problems.push(Problem::new(
                "admin.token",
                format!(
                    "required when admin.listen ({}) is not a loopback address",
                    self.admin.listen
                ),
            )),
            _ => {}
        }
        if self.admin.listen.port() != 0 && self.admin.listen == self.server.listen {
            problems.push(Problem::new(
                "admin.listen",
                format!("must differ from server.listen ({})", self.server.listen),
            ));
        }

        let url = self.database.url.expose();
        match url.split_once("://") {
            Some(("sqlite", "")) => {
                problems.push(Problem::new("database.url", "sqlite:// needs a file path"));
            }
            Some(("sqlite" | "postgres" | "postgresql", _)) => {}
            _ => problems.push(Problem::new(
                "database.url",
                format!(
                    "unsupported database URL '{}': use sqlite://PATH or postgres://...",
                    self.database.display_url()
                ),
            )),
        }
        if self.database.max_connections == 0 {
            problems.push(Problem::new(
                "database.max_connections",
                "must be at least 1",
            ));
        }

        let master_keys = self
            .vault
            .master_key
            .iter()
            .map(|key| ("vault.master_key".to_string(), key));
        let previous = self
            .vault
            .previous_master_keys
            .iter()
            .enumerate()
            .map(|(i, key)| (format!("vault.previous_master_keys[{i}]"), key));
        for (path, key) in master_keys.chain(previous) {
            if crate::vault::MasterKey::from_base64(key.expose()).is_err() {
                problems.push(Problem::new(
                    path,
                    "must be 32 bytes encoded as base64 (e.g. `openssl rand -base64 32`)",
                ));
            }
        }
        if self.vault.rotation_batch == 0 {
            problems.push(Problem::new("vault.rotation_batch", "must be at least 1"));
        }

        let supervision = &self.supervision;
        if supervision.window.is_zero() {
            problems.push(Problem::new(
                "supervision.window",
                "must be longer than zero",
            ));
        }
        if supervision.backoff_base > supervision.backoff_cap {
            problems.push(Problem::new(
                "supervision.backoff_base",
                "must not exceed supervision.backoff_cap",
            ));
        }
        if supervision.observe_timeout.is_zero() {
            problems.push(Problem::new(
                "supervision.observe_timeout",
                "must be longer than zero",
            ));
        }
        problems.extend(
            self.circuit_breaker
                .problems()
                .into_iter()
                .map(|p| Problem::new("circuit_breaker", p)),
        );
        if !valid_log_filter(&self.log.level) {
            problems.push(Problem::new(
                "log.level",
                format!(
                    "'{}' is not a level or filter (try info or debug)",
                    self.log.level
                ),
            ));
        }
        if self.integrations.refresh_attempts == 0 {
            problems.push(Problem::new(
                "integrations.refresh_attempts",
                "must be at least 1",
            ));
        }
        if self.integrations.state_ttl.is_zero() {
            problems.push(Problem::new(
                "integrations.state_ttl",
                "must be longer than zero",
            ));
        }
        if let Some(url) = &self.integrations.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problems.push(Problem::new(
                "integrations.public_url",
                "must be an http(s) URL",
            ));
        }
        if self.pipeline.max_body_bytes == 0 {
            problems.push(Problem::new(
                "pipeline.max_body_bytes",
                "must be at least 1",
            ));
        }
        if self.pipeline.max_batch == 0 {
            problems.push(Problem::new("pipeline.max_batch", "must be at least 1"));
        }
        if self.pipeline.max_attempts == 0 {
            problems.push(Problem::new("pipeline.max_attempts", "must be at least 1"));
        }
        for (index, route) in self.routes.iter().enumerate() {
            if route.organization_id.is_empty() {
                problems.push(Problem::new(
                    format!("routes[{index}].organization_id"),
                    "is required",
                ));
            }
        }
        if let Some(cluster) = &self.cluster {
            problems.extend(cluster.problems(self.database.url.expose()));
            if self.vault.master_key.is_none() {
                problems.push(Problem::new(
                    "vault.master_key",
                    "required in cluster mode: every node must unwrap the same data keys \
                     (a key generated into one node's data directory is that node's alone)",
                ));
            }
        }
        // Each connector's section and each route's action settings are checked by
        // their owners: `connectors::check`.
        problems
    }

    /// The effective configuration as TOML, every secret redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database.url = Secret::new(self.database.display_url());
        let mut text = toml::to_string_pretty(&RedactedUrl(&shown)).unwrap_or_default();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    }
}

/// A level (`info`) or directives like `info,switchboard=debug`: anything else is
/// most likely a typo that tracing would silently read as a target name.
fn valid_log_filter(filter: &str) -> bool {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let directives: Vec<&str> = filter.split(',').map(str::trim).collect();
    !directives.is_empty()
        && directives.iter().all(|directive| {
            let level = directive
                .rsplit_once('=')
                .map_or(*directive, |(_, level)| level);
            LEVELS.contains(&level.to_ascii_lowercase().as_str())
        })
        && tracing_subscriber::EnvFilter::try_new(filter).is_ok()
}

/// Serializes the config with the database URL shown (password-less) instead of redacted.
struct RedactedUrl<'a>(&'a Config);

impl Serialize for RedactedUrl<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut value = toml::Value::try_from(self.0).map_err(serde::ser::Error::custom)?;
        // Connector sections and route settings are free-form here: their secrets are
        // found by name.
        for free_form in ["connectors", "routes"] {
            if let Some(part) = value.get_mut(free_form) {
                redact_secret_keys(part);
            }
        }
        if let Some(database) = value.get_mut("database").and_then(|d| d.as_table_mut()) {
            database.insert("url".into(), self.0.database.url.expose().as_str().into());
        }
        value.serialize(serializer)
    }
}

/// Replaces every value under a secret's key name with `[redacted]`.
fn redact_secret_keys(value: &mut toml::Value) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table.iter_mut() {
                if SECRET_KEYS.contains(&key.as_str()) {
                    *value = crate::secret::REDACTED.into();
                } else {
                    redact_secret_keys(value);
                }
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(redact_secret_keys),
        _ => {}
    }
}

#[derive(Debug)]
pub enum ParseError {
    Syntax(String),
    Invalid(Vec<Problem>),
}

fn resolve_table(
    table: &mut toml::Table,
    path: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        let key_path = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if let Some(value) = table.get_mut(&key) {
            resolve_value(value, &key_path, base_dir, env, problems);
        }
        // `<secret>_file`: read the secret from a file (trailing newline trimmed).
        let Some(base) = key.strip_suffix("_file") else {
            continue;
        };
        if !SECRET_KEYS.contains(&base) {
            continue;
        }
        let Some(toml::Value::String(file)) = table.remove(&key) else {
            problems.push(Problem::new(key_path, "must be a file path"));
            continue;
        };
        if table.contains_key(base) {
            problems.push(Problem::new(
                key_path,
                format!("give either {base} or {key}, not both"),
            ));
            continue;
        }
        let file_path = base_dir.join(&file);
        match std::fs::read_to_string(&file_path) {
            Ok(secret) => {
                table.insert(
                    base.to_string(),
                    secret.trim_end_matches(['\r', '\n']).into(),
                );
            }
            Err(error) => problems.push(Problem::new(
                key_path,
                format!("cannot read {}: {error}", file_path.display()),
            )),
        }
    }
}

fn resolve_value(
    value: &mut toml::Value,
    path: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    match value {
        toml::Value::String(text) => match expand(text, env) {
            Ok(expanded) => *text = expanded,
            Err(message) => problems.push(Problem::new(path, message)),
        },
        toml::Value::Table(table) => resolve_table(table, path, base_dir, env, problems),
        toml::Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                resolve_value(item, &format!("{path}[{index}]"), base_dir, env, problems);
            }
        }
        _ => {}
    }
}

/// Expands `${VAR}` and `${VAR:-default}`; `$$` is a literal `$`.
fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in '{text}'"))?;
            let expression = &body[..end];
            let (name, default) = match expression.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expression, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("'${{{expression}}}' is not a variable name"));
            }
            match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(format!("environment variable {name} is not set"));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Variables for tests: a fixed map instead of the process environment.
pub fn env_from(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn parse(text: &str) -> Result<Config, ParseError> {
        Config::parse(
            text,
            Path::new("."),
            &env_from(&[("PORT", "9999"), ("TOKEN", "s3cret")]),
        )
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Err(ParseError::Invalid(problems)) => problems.iter().map(|p| p.to_string()).collect(),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn the_embedded_default_runs_on_loopback_and_reads_the_environment() {
        let quiet = |_: &str| None;
        let config = Config::parse(EMBEDDED_DEFAULT, Path::new("."), &quiet).unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(config.database.url.expose(), "sqlite://data/switchboard.db");
        let env = |name: &str| match name {
            "SWITCHBOARD_LISTEN" => Some("127.0.0.1:18080".to_string()),
            "DATABASE_URL" => Some("postgres://sb@db/sb".to_string()),
            _ => None,
        };
        let config = Config::parse(EMBEDDED_DEFAULT, Path::new("."), &env).unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:18080");
        assert_eq!(config.database.url.expose(), "postgres://sb@db/sb");
    }

    #[test]
    fn cluster_mode_needs_postgresql_a_shared_master_key_and_a_renewal_inside_the_lease() {
        assert_eq!(
            problems("[cluster]\nlease_ttl = \"3s\"\nrenew_every = \"3s\""),
            [
                "cluster: cluster mode needs a PostgreSQL store (database.url = \"postgres://...\"): \
                 the nodes coordinate through it, and a SQLite file belongs to one node",
                "cluster.renew_every: must be longer than zero and shorter than lease_ttl (3s)",
                "vault.master_key: required in cluster mode: every node must unwrap the same data \
                 keys (a key generated into one node's data directory is that node's alone)",
            ]
        );
        let config = parse(
            "[database]\nurl = \"postgres://sb@db/sb\"\n[vault]\nmaster_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n[cluster]\n",
        )
        .expect("valid");
        let cluster = config.cluster.expect("on");
        assert_eq!(cluster.lease_ttl, Duration::from_secs(15));
        assert_eq!(cluster.renew_every(), Duration::from_secs(5));
        assert!(
            parse("").unwrap().cluster.is_none(),
            "off unless configured"
        );
    }

    #[test]
    fn the_empty_file_is_the_embedded_default() {
        let config = parse("").expect("valid");
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(config.database.url.expose(), "sqlite://data/switchboard.db");
        assert!(config.connectors.is_empty());
    }

    #[rstest]
    #[case("a${PORT}b", "a9999b")]
    #[case("${MISSING:-fallback}", "fallback")]
    #[case("${PORT:-1}", "9999")]
    #[case("cost: $$5, $x", "cost: $5, $x")]
    fn expands_variables(#[case] text: &str, #[case] expected: &str) {
        let env = env_from(&[("PORT", "9999")]);
        assert_eq!(expand(text, &env).expect("expands"), expected);
    }

    #[test]
    fn expansion_applies_inside_the_toml_and_names_missing_variables() {
        let config =
            parse("[admin]\nlisten = \"127.0.0.1:${PORT}\"\ntoken = \"${TOKEN}\"").unwrap();
        assert_eq!(config.admin.listen.port(), 9999);
        assert_eq!(config.admin.token.unwrap().expose(), "s3cret");
        assert_eq!(
            problems("[admin]\ntoken = \"${NOPE}\""),
            ["admin.token: environment variable NOPE is not set"]
        );
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "from-file\n").unwrap();
        let config = Config::parse(
            "[admin]\ntoken_file = \"token\"",
            dir.path(),
            &env_from(&[]),
        )
        .expect("valid");
        assert_eq!(config.admin.token.unwrap().expose(), "from-file");

        let both = Config::parse(
            "[admin]\ntoken = \"x\"\ntoken_file = \"token\"",
            dir.path(),
            &env_from(&[]),
        );
        assert!(matches!(both, Err(ParseError::Invalid(p)) if p[0].key == "admin.token_file"));
    }

    #[rstest]
    #[case("[server]\nlisten = \"nowhere\"", "server.listen:")]
    #[case(
        "[server]\nlistn = \"127.0.0.1:1\"",
        "server.listn: unknown field `listn`"
    )]
    #[case("[bogus]\nx = 1", "bogus: unknown field `bogus`")]
    #[case(
        "[admin]\nlisten_file = \"x\"",
        "admin.listen_file: unknown field `listen_file`"
    )]
    fn deserialization_errors_name_the_key(#[case] text: &str, #[case] expected: &str) {
        let found = problems(text);
        assert!(found[0].starts_with(expected), "{found:?}");
    }

    #[test]
    fn validation_reports_every_problem_with_its_key() {
        let found = problems(
            "[admin]\nlisten = \"0.0.0.0:9090\"\n[database]\nurl = \"mysql://x\"\n\
             [supervision]\nbackoff_base = \"10s\"\nbackoff_cap = \"1s\"\n[log]\nlevel = \"loud!\"\n\
             [vault]\nmaster_key = \"short\"",
        );
        let keys: Vec<&str> = found.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "admin.token",
                "database.url",
                "vault.master_key",
                "supervision.backoff_base",
                "log.level"
            ]
        );
    }

    #[test]
    fn redacted_output_hides_every_secret() {
        let config = parse(
            "[admin]\ntoken = \"${TOKEN}\"\n[database]\nurl = \"postgres://app:hunter2@db/sw\"\n\
             [connectors.slack]\nclient_id = \"cid\"\nclient_secret = \"cs-123\"\nsigning_secret = \"ss-456\"",
        )
        .expect("valid");
        let shown = config.to_redacted_toml();
        for secret in ["s3cret", "hunter2", "cs-123", "ss-456"] {
            assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
        }
        assert!(shown.contains("postgres://app:[redacted]@db/sw"), "{shown}");
        assert!(shown.contains("client_id = \"cid\""), "{shown}");
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
