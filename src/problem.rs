//! One thing wrong with a configuration (or a route's settings), at a key path such as
//! `admin.listen` or `connectors.slack.client_id`: shared by the config module, the
//! connectors' sections and the routes, which do not import one another.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Deserializes `value` strictly into `T`; the first error becomes a problem at its
/// key path under `prefix` (`""` for the top level).
pub fn deserialize<T, D>(value: D, prefix: &str) -> Result<T, Problem>
where
    T: serde::de::DeserializeOwned,
    D: for<'de> serde::Deserializer<'de>,
{
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let key = match (prefix.is_empty(), path.as_str()) {
            (true, ".") => "(top level)".to_string(),
            (true, _) => path,
            (false, ".") => prefix.to_string(),
            (false, _) => format!("{prefix}.{path}"),
        };
        // toml appends "in `table`" lines; the key path already says where.
        let message = error.inner().to_string();
        let message = message.lines().next().unwrap_or_default().to_string();
        Problem::new(key, message)
    })
}
