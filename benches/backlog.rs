//! How fast one integration's actor works through a backlog: N GitHub push events
//! (default 100,000; no routes) written straight to the inbox's table while the actor
//! is down, then processed from its restart until none is pending.
//!
//! Beside it, the store's floor for the same work: the same batches read and marked
//! done by a plain loop on the store (no actor, no inbox), which the actor cannot beat.
//!
//! Run: `cargo bench --bench backlog [-- COUNT]` (PostgreSQL too when
//! TEST_DATABASE_URL is set).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::config::Config;
use switchboard::connectors::ConnectorSet;
use switchboard::store::events::{self, DeliveryScope, NewEvent};
use switchboard::store::{Store, integrations, organizations};
use switchboard::{Daemon, Shutdown};

use common::PostgresDatabase;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the integration actor reads at a time (its `BATCH`).
const BATCH: i64 = 512;

fn main() {
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        switchboard::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite = |name: &str| format!("sqlite://{}/{name}.db", dir.path().display());
        run("sqlite", &sqlite("backlog"), &sqlite("floor"), count).await;
        match std::env::var("TEST_DATABASE_URL") {
            Ok(server) => {
                let backlog = PostgresDatabase::create(&server, "backlog").await;
                let floor = PostgresDatabase::create(&server, "backlog_floor").await;
                run("postgres", &backlog.url, &floor.url, count).await;
                backlog.drop().await;
                floor.drop().await;
            }
            Err(_) => println!("postgres: skipped (TEST_DATABASE_URL not set)"),
        }
    });
}

fn config(database_url: &str) -> Config {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [database]\nurl = \"{database_url}\"\nmax_connections = 16\n\
         [vault]\nmaster_key = \"{key}\"\n[log]\nlevel = \"warn\"\n\
         [integrations]\nvalidation_spread = \"1h\"\n\
         [connectors.github]\napp_id = \"1\"\napp_slug = \"bench\"\n\
         private_key_file = \"{manifest}/tests/fixtures/github-app-test-key.pem\"\n\
         webhook_secret = \"unused\"\nunverified_installations = true\n\
         api_base_url = \"http://127.0.0.1:9\"\nweb_base_url = \"http://127.0.0.1:9\"\n",
        key = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode([4u8; 32])
        },
        manifest = env!("CARGO_MANIFEST_DIR"),
    );
    Config::parse(&text, Path::new("."), &|_| None).expect("config")
}

/// An organization with a GitHub integration bound to installation 42: their ids.
async fn setup(store: &Store) -> (String, String) {
    store.migrate().await.expect("migrated");
    let org = organizations::create(store, "bench").await.expect("org");
    let pending = integrations::create_pending(store, &org.id, "github", None)
        .await
        .expect("pending");
    integrations::activate(
        store,
        &org.id,
        &pending.id,
        Some("42".into()),
        &json!({}),
        Vec::new(),
    )
    .await
    .expect("bound");
    (org.id, pending.id)
}

/// Writes `count` pending push events for the integration, as ingress stores them.
async fn backlog(store: &Store, organization_id: &str, integration_id: &str, count: usize) {
    let push = json!({
        "ref": "refs/heads/main", "repository": {"full_name": "acme/service"},
        "installation": {"id": 42}, "commits": []
    })
    .to_string();
    for chunk in 0..count.div_ceil(1000) {
        let batch = (0..1000.min(count - chunk * 1000))
            .map(|n| NewEvent {
                organization_id: Some(organization_id.to_string()),
                integration_id: Some(integration_id.to_string()),
                connector_type: "github".into(),
                event_type: "push".into(),
                delivery_id: format!("push-{chunk}-{n}"),
                delivery_scope: DeliveryScope::Provider,
                payload: push.clone(),
                occurred_at: None,
                dead_reason: None,
            })
            .collect();
        events::write_batch_durably(store, batch, &[], Vec::new())
            .await
            .expect("backlog written");
    }
}

async fn run(backend: &str, database_url: &str, floor_url: &str, count: usize) {
    let floor = floor_rate(floor_url, count).await;
    let config = config(database_url);
    let store = Store::connect(&config.database).expect("store");
    let (organization_id, integration_id) = setup(&store).await;
    let shutdown = Shutdown::new();
    let daemon = Daemon::start_with(
        &config,
        ConnectorSet::from_sections(&config.connectors).expect("connectors"),
        shutdown.clone(),
    )
    .await
    .expect("daemon");
    let admin = daemon.admin_addr;
    let task = tokio::spawn(daemon.run_until_shutdown());
    let http = reqwest::Client::new();
    common::wait_ready(&http, admin).await;
    backlog(&store, &organization_id, &integration_id, count).await;
    // The actor drains what arrived while it was down as it starts.
    let started = Instant::now();
    let restarted = http
        .post(format!(
            "http://{admin}/admin/integrations/{integration_id}/restart"
        ))
        .send()
        .await
        .expect("restart");
    assert!(restarted.status().is_success());
    while !events::pending(&store, &integration_id, 1)
        .await
        .expect("pending")
        .is_empty()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    let rate = count as f64 / took.as_secs_f64();
    println!(
        "{backend}: {count} events processed in {:.2} s = {rate:.0} events/s; \
         store floor {floor:.0} events/s ({:.0}% of it)",
        took.as_secs_f64(),
        100.0 * rate / floor
    );
    shutdown.trigger();
    let _ = task.await;
}

/// The store's own rate for the actor's work: read the oldest pending batch, mark it
/// done, again, with nothing in between.
async fn floor_rate(database_url: &str, count: usize) -> f64 {
    let store = Store::connect(&config(database_url).database).expect("store");
    let (organization_id, integration_id) = setup(&store).await;
    backlog(&store, &organization_id, &integration_id, count).await;
    let started = Instant::now();
    loop {
        let batch = events::pending(&store, &integration_id, BATCH)
            .await
            .expect("pending");
        if batch.is_empty() {
            break;
        }
        let ids: Vec<String> = batch.into_iter().map(|e| e.id).collect();
        events::mark_done_all(&store, &ids).await.expect("done");
    }
    count as f64 / started.elapsed().as_secs_f64()
}
