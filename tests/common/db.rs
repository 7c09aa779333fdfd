//! Test databases: a fresh SQLite file, or a fresh PostgreSQL database created on the
//! server named by TEST_DATABASE_URL and dropped afterwards.

use std::path::PathBuf;

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use switchboard::config::DatabaseConfig;
use switchboard::secret::Secret;
use switchboard::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub struct TestDb {
    pub store: Store,
    pub config: DatabaseConfig,
    /// The SQLite file (SQLite only).
    pub sqlite_path: Option<PathBuf>,
    _dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// A migrated, empty store; `None` (with a printed skip) when PostgreSQL is asked
    /// for and TEST_DATABASE_URL is unset outside CI. In CI its absence is a failure.
    pub async fn new(backend: Db) -> Option<TestDb> {
        let db = Self::unmigrated(backend).await?;
        db.store.migrate().await.expect("migrations apply");
        Some(db)
    }

    pub async fn unmigrated(backend: Db) -> Option<TestDb> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, sqlite_path, postgres) = match backend {
            Db::Sqlite => {
                let path = dir.path().join("switchboard.db");
                (format!("sqlite://{}", path.display()), Some(path), None)
            }
            Db::Postgres => {
                let server = postgres_server()?;
                let name = format!("sb_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = AsyncPgConnection::establish(&server)
                    .await
                    .expect("TEST_DATABASE_URL is reachable");
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("test database created");
                let url = replace_database(&server, &name);
                (url, None, Some((server, name)))
            }
        };
        let config = DatabaseConfig {
            url: Secret::new(url),
            max_connections: 8,
            ..DatabaseConfig::default()
        };
        let store = Store::connect(&config).expect("store pool");
        Some(TestDb {
            store,
            config,
            sqlite_path,
            _dir: dir,
            postgres,
        })
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((server, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside async: use a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                if let Ok(mut admin) = AsyncPgConnection::establish(&server).await {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
            Ok::<(), std::io::Error>(())
        })
        .join();
    }
}

fn postgres_server() -> Option<String> {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("TEST_DATABASE_URL must be set in CI: the PostgreSQL cases cannot be skipped")
        }
        _ => {
            eprintln!("skipping the PostgreSQL case: TEST_DATABASE_URL is not set");
            None
        }
    }
}

/// `postgres://user@host:port/db?x` with `db` replaced.
fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end);
    let prefix = path_start.map_or(base, |i| &base[..i]);
    match query {
        Some(query) => format!("{prefix}/{name}?{query}"),
        None => format!("{prefix}/{name}"),
    }
}
