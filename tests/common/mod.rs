//! Helpers shared by the black-box tests: a daemon started in-process on port 0.
#![allow(dead_code)]

pub mod binary;
pub mod browser;
pub mod db;
pub mod fake_aws;
pub mod fake_datadog;
pub mod fake_github;
pub mod fake_google;
pub mod fake_pagerduty;
pub mod fake_slack;
pub mod feed;
pub mod memory_credentials;
pub mod nodes;
pub mod test_connector;
pub mod webhooks;

use std::net::SocketAddr;
use std::path::Path;

use switchboard::{Config, Daemon, Shutdown};
use tokio::task::JoinHandle;

/// Configuration text for a daemon on ephemeral loopback ports, plus `extra` sections.
/// `admin_extra` goes into the [admin] section; the database is `database_url`.
pub fn config_text(database_url: &str, admin_extra: &str, extra: &str) -> String {
    let supervision = if extra.contains("[supervision]") {
        String::new()
    } else {
        "[supervision]\nobserve_timeout = \"500ms\"\n".to_string()
    };
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n{admin_extra}\n\
         [database]\nurl = \"{database_url}\"\nconnect_timeout = \"1s\"\n\
         {supervision}{extra}"
    )
}

/// Parses a test's configuration: it reads no environment variable (a developer's
/// own must not change a test) and no file of the working directory.
pub fn parse(text: &str) -> Config {
    Config::parse(text, Path::new("/nonexistent"), &|_| None)
        .unwrap_or_else(|e| panic!("test config is valid: {e:?}"))
}

/// The connectors a test configuration's sections build.
pub fn connectors_of(config: &Config) -> switchboard::connectors::ConnectorSet {
    switchboard::connectors::ConnectorSet::from_sections(&config.connectors)
        .unwrap_or_else(|problems| panic!("test connector sections are valid: {problems:?}"))
}

pub struct TestDaemon {
    pub admin: SocketAddr,
    pub api: SocketAddr,
    pub github_webhooks: Option<SocketAddr>,
    pub shutdown: Shutdown,
    pub task: JoinHandle<Result<(), switchboard::DaemonError>>,
    pub http: reqwest::Client,
    pub data_dir: tempfile::TempDir,
    pub store: switchboard::store::Store,
}

impl TestDaemon {
    pub async fn start(extra: &str) -> TestDaemon {
        Self::start_with_admin("", extra).await
    }

    pub async fn start_with_admin(admin_extra: &str, extra: &str) -> TestDaemon {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/switchboard.db", data_dir.path().display());
        Self::start_config(data_dir, &config_text(&url, admin_extra, extra)).await
    }

    /// A daemon on SQLite with `server_extra` in its [server] section (limits).
    pub async fn start_with_server(server_extra: &str, extra: &str) -> TestDaemon {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/switchboard.db", data_dir.path().display());
        let text = config_text(&url, "", extra).replacen(
            "shutdown_timeout = \"5s\"\n",
            &format!("shutdown_timeout = \"5s\"\n{server_extra}\n"),
            1,
        );
        let connectors = connectors_of(&parse(&text));
        Self::start_full(data_dir, &text, connectors).await
    }

    /// A daemon on another database; its master key file goes to a temp dir.
    pub async fn start_with_database(url: &str, extra: &str) -> TestDaemon {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let key = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode([9u8; 32])
        };
        let extra = format!("[vault]\nmaster_key = \"{key}\"\n{extra}");
        Self::start_config(data_dir, &config_text(url, "", &extra)).await
    }

    /// A daemon on SQLite that also runs `connectors`.
    pub async fn start_with_connectors(
        connectors: switchboard::connectors::ConnectorSet,
        extra: &str,
    ) -> TestDaemon {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/switchboard.db", data_dir.path().display());
        let text = config_text(&url, "", extra);
        Self::start_full(data_dir, &text, connectors).await
    }

    /// A daemon on an existing database (`url`) running `connectors` (and those its
    /// configuration's sections build).
    pub async fn start_on_with_connectors(
        url: &str,
        connectors: switchboard::connectors::ConnectorSet,
        extra: &str,
    ) -> TestDaemon {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let key = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode([5u8; 32])
        };
        let text = config_text(
            url,
            "",
            &format!("[vault]\nmaster_key = \"{key}\"\n{extra}"),
        );
        Self::start_full(data_dir, &text, connectors).await
    }

    /// A daemon on an existing database (`url`), from `config.connectors`.
    pub async fn start_on(url: &str, extra: &str) -> TestDaemon {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let key = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode([5u8; 32])
        };
        let text = config_text(
            url,
            "",
            &format!("[vault]\nmaster_key = \"{key}\"\n{extra}"),
        );
        let config = parse(&text);
        let connectors = connectors_of(&config);
        Self::start_full(data_dir, &text, connectors).await
    }

    /// A daemon on SQLite running the connectors its configuration builds.
    pub async fn start_configured(extra: &str) -> TestDaemon {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/switchboard.db", data_dir.path().display());
        let text = config_text(&url, "", extra);
        let connectors = connectors_of(&parse(&text));
        Self::start_full(data_dir, &text, connectors).await
    }

    async fn start_config(data_dir: tempfile::TempDir, text: &str) -> TestDaemon {
        Self::start_full(data_dir, text, connectors_of(&parse(text))).await
    }

    async fn start_full(
        data_dir: tempfile::TempDir,
        text: &str,
        connectors: switchboard::connectors::ConnectorSet,
    ) -> TestDaemon {
        switchboard::install_crypto_provider();
        let config = parse(text);
        let shutdown = Shutdown::new();
        let daemon = Daemon::start_with(&config, connectors, shutdown.clone())
            .await
            .expect("daemon starts");
        let (admin, api) = (daemon.admin_addr, daemon.api_addr);
        let github_webhooks = daemon.webhook_addr("github");
        let store = daemon.tree().store().clone();
        let task = tokio::spawn(daemon.run_until_shutdown());
        TestDaemon {
            admin,
            api,
            github_webhooks,
            shutdown,
            task,
            http: reqwest::Client::new(),
            data_dir,
            store,
        }
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Waits until /readyz says ready (the store migrated, the vault loaded).
    pub async fn ready(&self) {
        for _ in 0..200 {
            if self.get_json("/readyz").await.0 == 200 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!(
            "daemon never became ready: {}",
            self.get_json("/readyz").await.1
        );
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// A new organization and its API token.
    pub async fn organization(&self, name: &str) -> (String, String) {
        let org = switchboard::store::organizations::create(&self.store, name)
            .await
            .expect("org");
        let (_, token) = switchboard::store::tokens::create(&self.store, &org.id)
            .await
            .expect("token");
        (org.id, token.expose().clone())
    }

    /// Starts authorizing `connector` for the token's organization: the answer (its
    /// `state`, `type`, and what the connector asks for).
    pub async fn authorize(&self, token: &str, connector: &str) -> serde_json::Value {
        let (status, started) = self
            .call_api(
                token,
                "/integrations/authorize",
                serde_json::json!({"connector_type": connector}),
            )
            .await;
        assert_eq!(status, 200, "{started}");
        started
    }

    /// Authorizes `connector` and posts the callback with `fields` (a code,
    /// credentials): the callback's status and answer, whatever they are.
    pub async fn try_connect(
        &self,
        token: &str,
        connector: &str,
        fields: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let started = self.authorize(token, connector).await;
        let mut callback =
            serde_json::json!({"connector_type": connector, "state": started["state"]});
        if let (Some(callback), Some(fields)) = (callback.as_object_mut(), fields.as_object()) {
            callback.extend(fields.clone());
        }
        self.call_api(token, "/integrations/callback", callback)
            .await
    }

    /// Authorizes `connector` for the token's organization and completes it with the
    /// callback's `fields` (a code, credentials): the callback's answer.
    pub async fn connect(
        &self,
        token: &str,
        connector: &str,
        fields: serde_json::Value,
    ) -> serde_json::Value {
        let (status, done) = self.try_connect(token, connector, fields).await;
        assert_eq!(status, 201, "{done}");
        done
    }

    /// POSTs `body` to the tenant API with `token`: (status, JSON body or null).
    pub async fn call_api(
        &self,
        token: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(self.api_url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("api answers");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .get(self.admin_url(path))
            .send()
            .await
            .expect("admin answers");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn post_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(self.admin_url(path))
            .send()
            .await
            .expect("admin answers");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn stop(self) {
        self.shutdown.trigger();
        let result = tokio::time::timeout(std::time::Duration::from_secs(10), self.task)
            .await
            .expect("daemon stops in time")
            .expect("daemon task joins");
        result.expect("daemon stops cleanly");
    }
}

/// Polls `check` every 10 ms until it holds; panics naming `what` after 10 s.
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..1000 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("not within 10 s: {what}");
}

/// The node named `name` among the children of `tree`.
pub fn child<'a>(tree: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    tree["children"]
        .as_array()
        .and_then(|children| children.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("{name} not in {tree}"))
}
