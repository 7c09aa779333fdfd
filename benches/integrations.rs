//! Starts the daemon with N active integrations in the store (default 100,000) and
//! reports the time until every IntegrationActor runs and /readyz answers 200, the
//! resident memory, and the latency of the health tree listings.
//!
//! Run: `cargo bench --bench integrations [-- COUNT]`

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_async::SimpleAsyncConnection;
use switchboard::config::Config;
use switchboard::connectors::{
    AuthorizationStart, AuthorizeRequest, Authorized, CallbackRequest, Connector, ConnectorError,
    ConnectorSet, Credentials,
};
use switchboard::store::{self, Store};
use switchboard::{Daemon, Shutdown};

/// A provider that accepts everything at once: the cost measured is the daemon's.
struct Idle;

#[async_trait::async_trait]
impl Connector for Idle {
    fn name(&self) -> &str {
        "bench"
    }
    async fn authorize(&self, _: &AuthorizeRequest) -> Result<AuthorizationStart, ConnectorError> {
        Ok(AuthorizationStart::ApiKey { fields: vec![] })
    }
    async fn complete(&self, _: &CallbackRequest) -> Result<Authorized, ConnectorError> {
        Err(ConnectorError::NotSupported)
    }
    async fn validate(&self, _: &Credentials) -> Result<(), ConnectorError> {
        Ok(())
    }
}

fn resident_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

async fn seed(store: &Store, count: usize) {
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

fn main() {
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(count));
}

async fn run(count: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [database]\nurl = \"sqlite://{}/bench.db\"\n[vault]\nmaster_key = \"{}\"\n\
         [log]\nlevel = \"warn\"\n{}",
        dir.path().display(),
        {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode([3u8; 32])
        },
        std::env::var("BENCH_EXTRA_CONFIG").unwrap_or_default()
    );
    let config = Config::parse(&text, Path::new("."), &|_| None).expect("config");
    let store = Store::connect(&config.database).expect("store");
    store.migrate().await.expect("migrated");
    let seeded = Instant::now();
    seed(&store, count).await;
    println!(
        "seeded {count} active integrations in {:.2?}",
        seeded.elapsed()
    );
    drop(store);

    let rss_before = resident_mib();
    let started = Instant::now();
    let shutdown = Shutdown::new();
    let daemon = Daemon::start_with(
        &config,
        ConnectorSet::default().with(Arc::new(Idle)),
        shutdown.clone(),
    )
    .await
    .expect("daemon starts");
    let admin = daemon.admin_addr;
    let listening = started.elapsed();
    let task = tokio::spawn(daemon.run_until_shutdown());
    let http = reqwest::Client::new();
    loop {
        let ready = http
            .get(format!("http://{admin}/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16());
        if matches!(ready, Ok(200)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = started.elapsed();
    let summary: serde_json::Value = http
        .get(format!("http://{admin}/admin/connectors/bench?depth=0"))
        .send()
        .await
        .expect("connector")
        .json()
        .await
        .expect("json");
    println!("listening after {listening:.2?}; /readyz 200 after {ready:.2?}");
    if std::env::var_os("BENCH_DEBUG").is_some() {
        println!("{summary}");
    }
    println!(
        "connector:bench children by status: {}",
        summary["details"]["children_by_status"]
    );
    println!(
        "resident memory: {:.0} MiB in all, {:.0} MiB for the daemon ({:.1} KiB per integration)",
        resident_mib(),
        resident_mib() - rss_before,
        (resident_mib() - rss_before) * 1024.0 / count as f64
    );

    for (label, path) in [
        (
            "GET /admin/actors (default page, 1000 per node)",
            "/admin/actors",
        ),
        (
            "GET /admin/connectors/bench?limit=100",
            "/admin/connectors/bench?limit=100",
        ),
        (
            "GET /admin/connectors/bench?depth=0 (summary)",
            "/admin/connectors/bench?depth=0",
        ),
        (
            "GET /admin/actors?limit=1000000 (everything)",
            "/admin/actors?limit=1000000",
        ),
    ] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let body = http
                .get(format!("http://{admin}{path}"))
                .send()
                .await
                .expect("answers")
                .bytes()
                .await
                .expect("body");
            times.push(t.elapsed());
            bytes = body.len();
        }
        times.sort();
        println!(
            "{label}: median {:.2?}, max {:.2?}, {} KiB",
            times[2],
            times[4],
            bytes / 1024
        );
    }
    shutdown.trigger();
    let stopped = Instant::now();
    task.await.expect("joined").expect("clean stop");
    println!(
        "graceful stop of {count} integrations: {:.2?}",
        stopped.elapsed()
    );
}
