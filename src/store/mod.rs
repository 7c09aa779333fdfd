//! The durable store: diesel-async over a deadpool pool, on PostgreSQL or SQLite.
//!
//! `database.url` picks the backend strictly: `sqlite://PATH` (WAL, a busy timeout and
//! foreign keys on every connection; the directory is created) or `postgres://...`.
//! Both run the same portable schema ([`schema`]) from their own migration tree, both
//! embedded in the binary.
//!
//! Repositories ([`organizations`], [`tokens`], [`integrations`], ...) write each query
//! once; the [`with_conn!`] and [`write_tx!`] macros expand it for both backends.

pub mod audit;
pub mod chat_messages;
pub mod cluster;
pub mod events;
mod group_commit;
pub mod integrations;
pub mod monitor;
pub mod oauth_states;
pub mod organizations;
pub mod poll_cursors;
pub mod routes;
pub mod schema;
pub mod sqlite_writer;
pub mod tokens;
pub mod vault_keys;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use diesel::SqliteConnection;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures::FutureExt;

use crate::config::DatabaseConfig;
use crate::secret::Secret;
use sqlite_writer::SqliteWriter;

pub type SqliteAsync = SyncConnectionWrapper<SqliteConnection>;

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL: {0} (use sqlite://PATH or postgres://...)")]
    UnsupportedUrl(String),
    #[error("the store is unreachable: {0}")]
    Unreachable(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("{0}")]
    Conflict(String),
    /// A unique constraint refused a row. The constraint is named here for the logs;
    /// what callers show is only that it exists already.
    #[error("already exists ({constraint})")]
    Duplicate { constraint: String },
    /// A queued write that did not commit, or whose commit did not reach the disk.
    #[error("the write failed: {0}")]
    Write(String),
    #[error("not found")]
    NotFound,
    /// Cluster mode: the write was started under a lease that has moved on (this node
    /// stalled past it); nothing was written.
    #[error("the lease on integration {0} moved on: the write was refused")]
    Fenced(String),
    #[error("query failed: {0}")]
    Query(diesel::result::Error),
}

impl From<diesel::result::Error> for StoreError {
    fn from(error: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match error {
            Error::NotFound => StoreError::NotFound,
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                StoreError::Duplicate {
                    constraint: info.constraint_name().unwrap_or(info.message()).to_string(),
                }
            }
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
                StoreError::Unreachable(info.message().to_string())
            }
            other => StoreError::Query(other),
        }
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for StoreError {
    fn from(error: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        StoreError::Unreachable(error.to_string())
    }
}

impl StoreError {
    /// Whether trying again later may succeed (the store is down, not the request wrong).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unreachable(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// A pool of connections to one backend. Cheap to clone.
#[derive(Clone)]
pub enum Store {
    Postgres {
        pool: Pool<AsyncPgConnection>,
        url: Secret,
    },
    Sqlite {
        pool: Pool<SqliteAsync>,
        path: PathBuf,
        /// The inbox's group commits go through this one connection.
        writer: Arc<SqliteWriter>,
    },
}

/// The SQLite file holds tenants' event payloads: its directory is created 0700 and
/// the file 0600 before SQLite opens it (its `-wal` and `-shm` take the file's mode).
/// Files left readable by others by an older version are made private.
fn private_sqlite_files(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let failed = |what: &Path, e: std::io::Error| {
        StoreError::Unreachable(format!("cannot create {}: {e}", what.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| failed(dir, e))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| failed(path, e))?;
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        if let Ok(meta) = std::fs::metadata(&file)
            && meta.permissions().mode() & 0o077 != 0
        {
            let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
        }
    }
    Ok(())
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Postgres { .. } => f.write_str("Store::Postgres"),
            Store::Sqlite { path, .. } => write!(f, "Store::Sqlite({})", path.display()),
        }
    }
}

/// Runs `$body` with `$conn` bound to a pooled connection of whichever backend.
#[macro_export]
macro_rules! with_conn {
    ($store:expr, |$conn:ident| $body:expr) => {
        match $store {
            $crate::store::Store::Postgres { pool, .. } => {
                let mut pooled = pool.get().await?;
                let $conn = &mut *pooled;
                $body
            }
            $crate::store::Store::Sqlite { pool, .. } => {
                let mut pooled = pool.get().await?;
                let $conn = &mut *pooled;
                $body
            }
        }
    };
}

/// Runs `$body` in a write transaction; SQLite takes the write lock up front
/// (`BEGIN IMMEDIATE`) so that concurrent writers queue instead of failing.
#[macro_export]
macro_rules! write_tx {
    ($store:expr, |$conn:ident| $body:expr) => {{
        use diesel_async::AsyncConnection as _;
        match $store {
            $crate::store::Store::Postgres { pool, .. } => {
                let mut pooled = pool.get().await?;
                pooled
                    .transaction::<_, $crate::store::StoreError, _>(async |$conn| $body)
                    .await
            }
            $crate::store::Store::Sqlite { pool, .. } => {
                let mut pooled = pool.get().await?;
                pooled
                    .immediate_transaction::<_, $crate::store::StoreError, _>(async |$conn| $body)
                    .await
            }
        }
    }};
}

impl Store {
    /// Builds the pool for `config.url`; no connection is made until one is needed.
    pub fn connect(config: &DatabaseConfig) -> Result<Store, StoreError> {
        let url = config.url.expose();
        let timeouts = deadpool::managed::Timeouts {
            wait: Some(config.connect_timeout),
            create: Some(config.connect_timeout),
            recycle: Some(config.connect_timeout),
        };
        let max_size = config.max_connections as usize;
        match url.split_once("://") {
            Some(("postgres" | "postgresql", _)) => {
                // No test query on every checkout (a round trip per query): a connection
                // known to be broken is still discarded then, and one that broke unseen
                // fails its query, which the callers treat as the store being down.
                let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
                manager_config.recycling_method = RecyclingMethod::Fast;
                let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
                    url,
                    manager_config,
                );
                let pool = Pool::builder(manager)
                    .max_size(max_size)
                    .timeouts(timeouts)
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
                    .map_err(|e| StoreError::Unreachable(e.to_string()))?;
                Ok(Store::Postgres {
                    pool,
                    url: config.url.clone(),
                })
            }
            Some(("sqlite", path)) if !path.is_empty() => {
                let path = PathBuf::from(path);
                private_sqlite_files(&path)?;
                let busy = config.busy_timeout;
                let mut manager_config = ManagerConfig::<SqliteAsync>::default();
                // A local file does not go away: no test query on every checkout (it
                // is a round trip through a blocking thread).
                manager_config.recycling_method = RecyclingMethod::Fast;
                manager_config.custom_setup =
                    Box::new(move |path| open_sqlite_async(path.to_string(), busy).boxed());
                let manager = AsyncDieselConnectionManager::<SqliteAsync>::new_with_config(
                    path.to_string_lossy(),
                    manager_config,
                );
                let pool = Pool::builder(manager)
                    .max_size(max_size)
                    .timeouts(timeouts)
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
                    .map_err(|e| StoreError::Unreachable(e.to_string()))?;
                let writer = Arc::new(SqliteWriter::start(path.clone(), busy)?);
                Ok(Store::Sqlite { pool, path, writer })
            }
            _ => Err(StoreError::UnsupportedUrl(config.display_url())),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Store::Postgres { .. } => Backend::Postgres,
            Store::Sqlite { .. } => Backend::Sqlite,
        }
    }

    /// The directory that holds local state (the SQLite file's; `./data` otherwise).
    pub fn data_dir(&self) -> PathBuf {
        match self {
            Store::Sqlite { path, .. } => path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            Store::Postgres { .. } => PathBuf::from("data"),
        }
    }

    /// Applies every pending migration; returns how many ran.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        self.with_migration_harness(|harness| match harness {
            Harness::Postgres(conn) => conn
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|applied| applied.len()),
            Harness::Sqlite(conn) => conn
                .run_pending_migrations(SQLITE_MIGRATIONS)
                .map(|applied| applied.len()),
        })
        .await
    }

    /// Reverts every applied migration (tests, and going back a release).
    pub async fn revert_all(&self) -> Result<usize, StoreError> {
        self.with_migration_harness(|harness| match harness {
            Harness::Postgres(conn) => conn
                .revert_all_migrations(POSTGRES_MIGRATIONS)
                .map(|reverted| reverted.len()),
            Harness::Sqlite(conn) => conn
                .revert_all_migrations(SQLITE_MIGRATIONS)
                .map(|reverted| reverted.len()),
        })
        .await
    }

    /// Checks that a connection can be had and answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        use diesel_async::SimpleAsyncConnection;
        with_conn!(self, |conn| conn.batch_execute("SELECT 1").await)?;
        Ok(())
    }

    /// Migrations use diesel's synchronous harness: run it on a thread of its own with
    /// a dedicated connection, so that it works from any runtime flavour.
    async fn with_migration_harness<F>(&self, run: F) -> Result<usize, StoreError>
    where
        F: FnOnce(Harness<'_>) -> diesel::migration::Result<usize> + Send + 'static,
    {
        use diesel::Connection;
        let target = match self {
            Store::Postgres { url, .. } => Target::Postgres(url.clone()),
            Store::Sqlite { path, .. } => Target::Sqlite(path.clone()),
        };
        let (done, result) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let outcome = match target {
                Target::Postgres(url) => {
                    match diesel_async::async_connection_wrapper::AsyncConnectionWrapper::<
                        AsyncPgConnection,
                    >::establish(url.expose())
                    {
                        Ok(mut conn) => run(Harness::Postgres(&mut conn))
                            .map_err(|e| StoreError::Migration(e.to_string())),
                        Err(e) => Err(StoreError::Unreachable(e.to_string())),
                    }
                }
                Target::Sqlite(path) => {
                    match open_sqlite(&path.to_string_lossy(), Duration::from_secs(30)) {
                        Ok(mut conn) => run(Harness::Sqlite(&mut conn))
                            .map_err(|e| StoreError::Migration(e.to_string())),
                        Err(e) => Err(StoreError::Unreachable(e.to_string())),
                    }
                }
            };
            let _ = done.send(outcome);
        });
        result
            .await
            .map_err(|_| StoreError::Migration("migration thread panicked".to_string()))?
    }
}

enum Target {
    Postgres(Secret),
    Sqlite(PathBuf),
}

enum Harness<'a> {
    Postgres(
        &'a mut diesel_async::async_connection_wrapper::AsyncConnectionWrapper<AsyncPgConnection>,
    ),
    Sqlite(&'a mut SqliteConnection),
}

/// Opens a SQLite connection set up as every connection of ours is. `synchronous =
/// FULL`: a commit is on disk before it returns. (The inbox's writer relaxes this on
/// its own connection and syncs the WAL itself: see [`sqlite_writer`].)
pub(crate) fn open_sqlite(
    path: &str,
    busy: Duration,
) -> diesel::ConnectionResult<SqliteConnection> {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;
    configure_sqlite();
    let mut conn = SqliteConnection::establish(path)?;
    conn.batch_execute(&format!(
        // busy_timeout first: switching to WAL waits for a lock like any other statement.
        "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        busy.as_millis()
    ))
    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
    Ok(conn)
}

/// SQLite's process-wide settings, made once before its first connection opens.
///
/// Multi-thread mode: no mutex around each call on a connection, since no connection
/// of ours is ever used by two threads at once (diesel's is `Send` but not `Sync`).
/// No memory statistics: they take a global mutex on every allocation. Together they
/// were some forty lock and unlock pairs per inserted event, on the inbox writer.
fn configure_sqlite() {
    static CONFIGURED: std::sync::Once = std::sync::Once::new();
    CONFIGURED.call_once(|| {
        use libsqlite3_sys::{SQLITE_CONFIG_MEMSTATUS, SQLITE_CONFIG_MULTITHREAD, sqlite3_config};
        // SAFETY: sqlite3_config must not run beside any other SQLite call; every
        // connection of ours opens through here, after this `Once`. Once SQLite is
        // initialized it refuses (SQLITE_MISUSE) and keeps its defaults, which are safe.
        unsafe {
            sqlite3_config(SQLITE_CONFIG_MULTITHREAD);
            sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int);
        }
    });
}

async fn open_sqlite_async(path: String, busy: Duration) -> diesel::ConnectionResult<SqliteAsync> {
    tokio::task::spawn_blocking(move || open_sqlite(&path, busy).map(SyncConnectionWrapper::new))
        .await
        .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?
}

/// Now, in UTC, at the microsecond precision both backends keep.
pub fn now() -> NaiveDateTime {
    let now = Utc::now().naive_utc();
    now.with_nanosecond_truncated()
}

trait TruncateNanos {
    fn with_nanosecond_truncated(self) -> Self;
}

impl TruncateNanos for NaiveDateTime {
    fn with_nanosecond_truncated(self) -> Self {
        use chrono::Timelike;
        let micros = self.nanosecond() / 1_000;
        self.with_nanosecond(micros * 1_000).unwrap_or(self)
    }
}

/// A new random id (UUIDv4), for rows created at a low rate.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A new time-ordered id (UUIDv7), for rows inserted at a high rate: consecutive ids
/// land on the same index page.
pub fn new_ordered_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
