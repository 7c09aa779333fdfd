//! `[connectors.gcp]`: Google's endpoints (each configurable, so that tests run a
//! fake Google), the scopes access tokens are asked for, and how push tokens are
//! checked.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::connectors::section::{Section, checked, require_url};
use crate::problem::Problem;

pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpConfig {
    /// Where assertions are exchanged for access tokens. A key whose `token_uri` is
    /// another is refused: switchboard sends signed assertions nowhere else.
    #[serde(default = "token_url")]
    pub token_url: String,
    #[serde(default = "tokeninfo_url")]
    pub tokeninfo_url: String,
    /// Cloud Resource Manager, for the validation's `projects.get`.
    #[serde(default = "resource_manager_url")]
    pub resource_manager_url: String,
    /// Google's signing keys for the OIDC tokens Pub/Sub push sends.
    #[serde(default = "jwks_url")]
    pub jwks_url: String,
    /// The `iss` a push token may carry.
    #[serde(default = "issuers")]
    pub oidc_issuers: Vec<String>,
    /// The scopes access tokens are asked for.
    #[serde(default = "scopes")]
    pub scopes: Vec<String>,
    /// The least time between two fetches of Google's keys when a token names a key
    /// that is not cached (a token signed with a made-up `kid` costs no fetch).
    #[serde(
        with = "humantime_serde",
        default = "crate::connectors::section::defaults::one_minute"
    )]
    pub jwks_refetch_interval: Duration,
    #[serde(
        with = "humantime_serde",
        default = "crate::connectors::section::defaults::fifteen_seconds"
    )]
    pub request_timeout: Duration,
}

fn token_url() -> String {
    "https://oauth2.googleapis.com/token".into()
}

fn tokeninfo_url() -> String {
    "https://oauth2.googleapis.com/tokeninfo".into()
}

fn resource_manager_url() -> String {
    "https://cloudresourcemanager.googleapis.com".into()
}

fn jwks_url() -> String {
    "https://www.googleapis.com/oauth2/v3/certs".into()
}

fn issuers() -> Vec<String> {
    vec![
        "https://accounts.google.com".into(),
        "accounts.google.com".into(),
    ]
}

fn scopes() -> Vec<String> {
    vec![CLOUD_PLATFORM.into()]
}

impl GcpConfig {
    pub fn from_section(section: &Section) -> Result<Self, Vec<Problem>> {
        let config: Self = section.parse()?;
        let mut problems = Vec::new();
        for (key, url) in [
            ("token_url", &config.token_url),
            ("tokeninfo_url", &config.tokeninfo_url),
            ("resource_manager_url", &config.resource_manager_url),
            ("jwks_url", &config.jwks_url),
        ] {
            require_url(&mut problems, section.key(key), url);
        }
        if config.scopes.is_empty() {
            problems.push(Problem::new(
                section.key("scopes"),
                "needs at least one scope",
            ));
        }
        if config.oidc_issuers.is_empty() {
            problems.push(Problem::new(
                section.key("oidc_issuers"),
                "needs at least one issuer",
            ));
        }
        checked(config, problems)
    }
}
