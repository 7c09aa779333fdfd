//! What several benches share: a database of their own on PostgreSQL, and waiting for
//! a daemon started in-process to be ready.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use diesel_async::{AsyncConnection, SimpleAsyncConnection};

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
