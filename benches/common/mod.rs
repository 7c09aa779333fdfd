//! What several benches share: a database of their own on PostgreSQL, waiting for a
//! daemon started in-process to be ready, and a store seeded with many integrations of
//! a connector that costs nothing.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use switchboard::connectors::{
    AuthorizationStart, AuthorizeRequest, Authorized, CallbackRequest, Connector, ConnectorError,
    Credentials,
};
use switchboard::store::{self, Store};

/// A database of its own on the PostgreSQL `server`, for one run.
pub struct PostgresDatabase {
    server: String,
    name: String,
    pub url: String,
}

impl PostgresDatabase {
    pub async fn create(server: &str, run: &str) -> Self {
        let name = format!("sb_{run}_{}", std::process::id());
        admin(server, &format!("CREATE DATABASE {name}")).await;
        let url = format!(
            "{}/{name}",
            server.rsplit_once('/').map_or(server, |(b, _)| b)
        );
        Self {
            server: server.to_string(),
            name,
            url,
        }
    }

    pub async fn drop(self) {
        admin(
            &self.server,
            &format!("DROP DATABASE {} WITH (FORCE)", self.name),
        )
        .await;
    }
}

async fn admin(server: &str, sql: &str) {
    let mut conn = diesel_async::AsyncPgConnection::establish(server)
        .await
        .expect("postgres");
    conn.batch_execute(sql).await.expect("admin statement");
}

/// Waits until the daemon's `/readyz` on `admin` answers 200.
pub async fn wait_ready(http: &reqwest::Client, admin: SocketAddr) {
    while http
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A provider that accepts everything at once: the cost measured is the daemon's.
pub struct Idle;

#[async_trait::async_trait]
impl Connector for Idle {
    fn name(&self) -> &str {
        "bench"
    }
    async fn authorize(&self, _: &AuthorizeRequest) -> Result<AuthorizationStart, ConnectorError> {
        Ok(AuthorizationStart::api_key(&[]))
    }
    async fn complete(&self, _: &CallbackRequest) -> Result<Authorized, ConnectorError> {
        Err(ConnectorError::NotSupported)
    }
    async fn validate(&self, _: &Credentials) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// A daemon on `config` running the `bench` connector, serving in the background:
/// its admin address, its shutdown, and its task.
pub async fn start_idle_daemon(
    config: &switchboard::config::Config,
) -> (
    SocketAddr,
    switchboard::Shutdown,
    tokio::task::JoinHandle<Result<(), switchboard::DaemonError>>,
) {
    let shutdown = switchboard::Shutdown::new();
    let daemon = switchboard::Daemon::start_with(
        config,
        switchboard::connectors::ConnectorSet::default().with(std::sync::Arc::new(Idle)),
        shutdown.clone(),
    )
    .await
    .expect("daemon starts");
    let admin = daemon.admin_addr;
    (admin, shutdown, tokio::spawn(daemon.run_until_shutdown()))
}

/// Waits until every one of `count` integrations of the `bench` connector runs: its
/// summary (`/admin/connectors/bench?depth=0`) then.
pub async fn all_running(
    http: &reqwest::Client,
    admin: SocketAddr,
    count: usize,
) -> serde_json::Value {
    loop {
        let summary: serde_json::Value = http
            .get(format!("http://{admin}/admin/connectors/bench?depth=0"))
            .send()
            .await
            .expect("the connector's summary")
            .json()
            .await
            .expect("JSON");
        if summary["details"]["children_by_status"]["running"].as_u64() == Some(count as u64) {
            return summary;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A daemon's configuration on a SQLite store in `dir` (loopback listeners on free
/// ports, logs at `warn`, plus `extra`) whose store holds `count` active integrations
/// of the `bench` connector; and how long seeding them took.
pub async fn seeded_config(
    dir: &std::path::Path,
    count: usize,
    extra: &str,
) -> (switchboard::config::Config, Duration) {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [database]\nurl = \"sqlite://{}/bench.db\"\n[vault]\nmaster_key = \"{}\"\n\
         [log]\nlevel = \"warn\"\n{extra}",
        dir.display(),
        {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode([3u8; 32])
        },
    );
    let config = switchboard::config::Config::parse(&text, std::path::Path::new("."), &|_| None)
        .expect("config");
    let store = Store::connect(&config.database).expect("store");
    store.migrate().await.expect("migrated");
    let started = std::time::Instant::now();
    seed(&store, count).await;
    (config, started.elapsed())
}

/// `count` active integrations of the `bench` connector, each in an organization of its
/// own (`tenant-<n>`), written straight into a SQLite store.
pub async fn seed(store: &Store, count: usize) {
    let now = store::now().format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    let Store::Sqlite { pool, .. } = store else {
        unreachable!("the benchmark seeds SQLite")
    };
    let mut conn = pool.get().await.expect("connection");
    for start in (0..count).step_by(2000) {
        let ids: Vec<(String, String)> = (start..(start + 2000).min(count))
            .map(|_| (store::new_id(), store::new_id()))
            .collect();
        let orgs: Vec<String> = ids
            .iter()
            .enumerate()
            .map(|(i, (org, _))| format!("('{org}','tenant-{}','{now}')", start + i))
            .collect();
        let integrations: Vec<String> = ids
            .iter()
            .map(|(org, id)| {
                format!(
                    "('{id}','{org}',NULL,'bench','active','T-{id}','{{}}','{now}','{now}',NULL)"
                )
            })
            .collect();
        conn.batch_execute(&format!(
            "BEGIN; INSERT INTO organizations VALUES {}; INSERT INTO integrations VALUES {}; COMMIT;",
            orgs.join(","),
            integrations.join(",")
        ))
        .await
        .expect("seeded");
    }
}
