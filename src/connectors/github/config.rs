//! `[connectors.github]`: the GitHub App's settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::connectors::section::{Section, checked, require, require_url};
use crate::problem::Problem;
use crate::secret::Secret;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    pub app_id: String,
    pub app_slug: String,
    /// The App's private key (PEM), for the app JWT.
    pub private_key: Option<Secret>,
    pub webhook_secret: Option<Secret>,
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

impl GithubConfig {
    /// Reads and checks the section.
    pub fn from_section(section: &Section) -> Result<Self, Vec<Problem>> {
        let config: Self = section.parse()?;
        let mut problems = Vec::new();
        let key = |field: &str| section.key(field);
        require(&mut problems, key("app_id"), !config.app_id.is_empty());
        require(&mut problems, key("app_slug"), !config.app_slug.is_empty());
        require_url(&mut problems, key("api_base_url"), &config.api_base_url);
        require_url(&mut problems, key("web_base_url"), &config.web_base_url);
        require(
            &mut problems,
            key("webhook_secret"),
            config.webhook_secret.is_some(),
        );
        let oauth_client = config.client_id.is_some() && config.client_secret.is_some();
        if !oauth_client && !config.unverified_installations {
            problems.push(Problem::new(
                key("client_id"),
                "client_id and client_secret (the App's OAuth client) are required to \
                 confirm who installed the app; or set unverified_installations = true \
                 to bind installations on the caller's word",
            ));
        }
        match &config.private_key {
            None => problems.push(Problem::new(key("private_key"), "is required")),
            Some(private_key) => {
                if let Err(error) = super::app_jwt::AppJwt::new(&config.app_id, private_key) {
                    problems.push(Problem::new(key("private_key"), error));
                }
            }
        }
        checked(config, problems)
    }
}
