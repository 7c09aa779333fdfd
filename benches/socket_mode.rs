//! Socket Mode acknowledgement latency: a fake Slack (the tests' one) sends
//! `events_api` envelopes at a steady rate over one WebSocket, and measures for each
//! the time from sending it to receiving its acknowledgement, which switchboard sends
//! only once the event is stored.
//!
//! For each backend (SQLite; PostgreSQL when TEST_DATABASE_URL is set).
//! Run: `cargo bench --bench socket_mode [-- ENVELOPES_PER_SECOND SECONDS]` (1000, 10).

mod common;
#[path = "../tests/common/fake_slack.rs"]
#[allow(dead_code)]
mod fake_slack;

use std::path::Path;
use std::time::Duration;

use fake_slack::{FakeSlack, GOOD_CODE, TEAM};
use serde_json::json;
use switchboard::config::Config;
use switchboard::connectors::ConnectorSet;
use switchboard::store::{Store, events, organizations, tokens};
use switchboard::{Daemon, Shutdown};

use common::PostgresDatabase;

fn main() {
    let numbers: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rate = numbers.first().copied().unwrap_or(1000);
    let seconds = numbers.get(1).copied().unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        switchboard::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite = format!("sqlite://{}/socket.db", dir.path().display());
        run("sqlite", &sqlite, rate, seconds).await;
        if let Ok(server) = std::env::var("TEST_DATABASE_URL") {
            let database = PostgresDatabase::create(&server, "socket").await;
            run("postgres", &database.url, rate, seconds).await;
            database.drop().await;
        } else {
            println!("postgres: skipped (TEST_DATABASE_URL not set)");
        }
    });
}

async fn run(backend: &str, database_url: &str, rate: u64, seconds: u64) {
    let slack = FakeSlack::start().await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [database]\nurl = \"{database_url}\"\nmax_connections = 16\n\
         [vault]\nmaster_key = \"{}\"\n[log]\nlevel = \"warn\"\n{}",
        {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode([4u8; 32])
        },
        slack.config_section(true, "")
    );
    let config = Config::parse(&text, Path::new("."), &|_| None).expect("config");
    let store = Store::connect(&config.database).expect("store");
    store.migrate().await.expect("migrated");
    let org = organizations::create(&store, "bench").await.expect("org");
    let (_, token) = tokens::create(&store, &org.id).await.expect("token");
    let shutdown = Shutdown::new();
    let daemon = Daemon::start_with(
        &config,
        ConnectorSet::from_sections(&config.connectors).expect("connector sections"),
        shutdown.clone(),
    )
    .await
    .expect("daemon");
    let (api, admin_addr) = (daemon.api_addr, daemon.admin_addr);
    let task = tokio::spawn(daemon.run_until_shutdown());
    let http = reqwest::Client::new();
    common::wait_ready(&http, admin_addr).await;
    let started: serde_json::Value = http
        .post(format!("http://{api}/integrations/authorize"))
        .bearer_auth(token.expose())
        .json(&json!({"connector_type": "slack"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let state = started["state"].as_str().unwrap();
    http.get(format!(
        "http://{api}/oauth/slack/callback?code={GOOD_CODE}&state={state}"
    ))
    .send()
    .await
    .unwrap();
    assert_eq!(
        slack.wait_open(&[0], Duration::from_secs(10)).await,
        vec![0],
        "connected"
    );

    // A steady rate: one envelope every 1/rate s, for `seconds`.
    let total = rate * seconds;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let began = std::time::Instant::now();
    let mut ids = Vec::with_capacity(total as usize);
    for n in 0..total {
        tick.tick().await;
        let payload = json!({
            "team_id": TEAM, "api_app_id": "A0001", "type": "event_callback",
            "event_id": format!("EvBench{n:08}"), "event_time": 1_700_000_000,
            "event": {"type": "reaction_added", "user": "U0HUMAN", "reaction": "tada",
                      "item": {"type": "message", "channel": "C0GENERAL", "ts": "1700000000.000100"},
                      "event_ts": "1700000000.000200"}
        });
        ids.push(slack.send_envelope(0, "events_api", payload, false));
    }
    let sending = began.elapsed();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while slack.state.acks.lock().unwrap().len() < ids.len() && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let acks = slack.state.acks.lock().unwrap().clone();
    let sent_at = slack.state.sent_at.lock().unwrap().clone();
    let mut latencies: Vec<Duration> = acks
        .iter()
        .filter_map(|ack| sent_at.get(&ack.envelope_id).map(|at| ack.at - *at))
        .collect();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let stored = events::list(&store, None, None, 100_000)
        .await
        .map(|list| list.len())
        .unwrap_or(0);
    println!(
        "{backend}: {} envelopes in {:.1}s ({:.0}/s), {} acknowledged, {} stored; ack latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ids.len(),
        sending.as_secs_f64(),
        ids.len() as f64 / sending.as_secs_f64(),
        acks.len(),
        stored,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}
