//! Test databases: a fresh SQLite file, or a fresh PostgreSQL database created on the
//! server named by TEST_DATABASE_URL (or a throwaway server of the test process's own
//! when it is unset) and dropped afterwards.

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
    /// A migrated, empty store. PostgreSQL's is a database of its own on the server of
    /// [`postgres_server`]; `Some` always (the `Option` is for callers written when
    /// a case could be skipped).
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

/// The PostgreSQL server the cases run on: TEST_DATABASE_URL's, or else a throwaway
/// one this test process starts from the installed server binaries. Where there is
/// neither, the PostgreSQL case fails saying how to get one: it never passes unrun.
fn postgres_server() -> Option<String> {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => match throwaway::server() {
            Ok(url) => Some(url),
            Err(why) => panic!(
                "the PostgreSQL cases need a server and none could be started ({why}): set \
                 TEST_DATABASE_URL=postgres://user@host:port/db, or install PostgreSQL's \
                 server binaries (Debian: apt-get install postgresql) so that the tests \
                 start a throwaway one"
            ),
        },
    }
}

/// A PostgreSQL server of this test process's own: a cluster initialized in a
/// temporary directory, listening on a free loopback port, stopped with the process.
mod throwaway {
    use std::os::unix::fs::chown;
    use std::os::unix::process::CommandExt;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();

    pub fn server() -> Result<String, String> {
        SERVER.get_or_init(start).clone()
    }

    /// Where initdb and postgres are: pg_config's answer, or Debian's layout.
    fn binaries() -> Result<PathBuf, String> {
        let from_pg_config = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        let mut candidates: Vec<PathBuf> = from_pg_config.into_iter().collect();
        let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|dirs| dirs.flatten().map(|d| d.path().join("bin")).collect())
            .unwrap_or_default();
        debian.sort();
        candidates.extend(debian.into_iter().rev());
        candidates
            .into_iter()
            .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
            .ok_or_else(|| "no initdb and postgres binaries were found".to_string())
    }

    /// PostgreSQL refuses to run as root: as root, the server runs as `postgres`.
    fn run_as() -> Option<(u32, u32)> {
        // SAFETY: geteuid only reads the process's credentials.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
    }

    fn command(program: &Path, user: Option<(u32, u32)>) -> Command {
        let mut command = Command::new(program);
        if let Some((uid, gid)) = user {
            command.uid(uid).gid(gid);
        }
        command.env_clear().stdin(Stdio::null());
        command
    }

    const PREFIX: &str = "switchboard-test-pg-";

    /// The clusters of test processes that have exited (their servers stopped with
    /// them): a process cannot remove its own as it exits.
    fn remove_stale_clusters() {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(PREFIX)
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    fn start() -> Result<String, String> {
        let bin = binaries()?;
        let user = run_as();
        remove_stale_clusters();
        let dir = std::env::temp_dir().join(format!("{PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if let Some((uid, gid)) = user {
            chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
        }
        let data = dir.join("data");
        let initdb = command(&bin.join("initdb"), user)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !initdb.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&initdb.stderr)
            ));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("no free port: {e}"))?;
        let mut postgres = command(&bin.join("postgres"), user);
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe. The server stops when the thread that
        // started it ends: a thread that lives as long as this process.
        unsafe {
            postgres.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let (started, outcome) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let child = postgres.spawn();
            let _ = started.send(child.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            if let Ok(mut child) = child {
                let _ = child.wait();
            }
            loop {
                std::thread::park();
            }
        });
        outcome
            .recv()
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("postgres: {e}"))?;
        let since = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if since.elapsed() > Duration::from_secs(30) {
                return Err("the throwaway server did not start in 30 s".to_string());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Accepting connections before it accepts logins: give it a moment more.
        std::thread::sleep(Duration::from_millis(300));
        eprintln!(
            "PostgreSQL cases run on a throwaway server on 127.0.0.1:{port} (TEST_DATABASE_URL is not set)"
        );
        Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
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
