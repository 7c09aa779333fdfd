//! Cluster mode, measured with real processes (the release binary) on one PostgreSQL
//! database (a fresh one on the server of TEST_DATABASE_URL), 100 generic webhook
//! integrations each with a route forwarding to a sink in this process.
//!
//! - `failover`: three nodes; one is killed with SIGKILL, ten times for each
//!   `lease_ttl` (15 s, then 5 s; `renew_every` a third): the seconds from the kill
//!   until the survivors hold every lease (median, max). Then three graceful stops
//!   (SIGTERM) per setting: the seconds until the others hold the stopped node's
//!   leases (the handover gap).
//! - `ingest`: signed webhooks from 32 concurrent senders for SECONDS each, to one node
//!   without `[cluster]` (the baseline), then to a cluster of 1, 2 and 3 nodes (senders
//!   spread over them): acknowledged webhooks/s, and each as a share of the baseline,
//!   measured in the same run. On this 2-core machine the nodes, PostgreSQL and the
//!   senders share the cores: more nodes cannot be faster here; the figure is what
//!   cluster mode costs.
//!
//! Run: `TEST_DATABASE_URL=postgres://... cargo bench --bench cluster [-- failover|ingest] [SECONDS]`

#[path = "../tests/common/binary.rs"]
#[allow(dead_code)]
mod binary;
mod common;
#[path = "../tests/common/nodes.rs"]
#[allow(dead_code)]
mod nodes;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nodes::{Hook, Node, integrations, leases, sink};
use switchboard::config::DatabaseConfig;
use switchboard::pipeline::standard_webhooks;
use switchboard::secret::Secret;
use switchboard::store::Store;

use common::PostgresDatabase;

const INTEGRATIONS: usize = 100;
const KILLS: usize = 10;
const HANDOVERS: usize = 3;

fn cluster_settings(ttl: Duration) -> String {
    format!(
        "lease_ttl = \"{}ms\"\nrenew_every = \"{}ms\"",
        ttl.as_millis(),
        ttl.as_millis() / 3
    )
}

/// Seconds until every lease is held by a live node other than `gone`, asked of
/// `survivor` every 20 ms.
async fn until_taken_over(survivor: &Node, gone: &str, started: Instant) -> f64 {
    loop {
        let held = leases(survivor).await;
        if !held.contains_key(gone) && held.values().sum::<i64>() == INTEGRATIONS as i64 {
            return started.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn balanced(node: &Node, nodes: usize) {
    let share = (INTEGRATIONS / nodes) as i64;
    nodes::within("leases spread", Duration::from_secs(120), || async {
        let held = leases(node).await;
        held.len() == nodes
            && held.values().sum::<i64>() == INTEGRATIONS as i64
            && held.values().all(|n| *n >= share - 2)
    })
    .await;
}

fn summary(mut figures: Vec<f64>) -> String {
    figures.sort_by(f64::total_cmp);
    let median = figures[figures.len() / 2];
    let max = figures[figures.len() - 1];
    let all: Vec<String> = figures.iter().map(|f| format!("{f:.2}")).collect();
    format!("median {median:.2} s, max {max:.2} s ({})", all.join(" "))
}

async fn failover(url: &str, store: &Store) {
    let (sink, _) = sink().await;
    let mut generation = 0;
    let mut name = || {
        generation += 1;
        format!("node-{generation}")
    };
    let mut created = false;
    for ttl in [Duration::from_secs(15), Duration::from_secs(5)] {
        let settings = cluster_settings(ttl);
        let mut running = vec![Node::start(url, &name(), &settings).await];
        if !created {
            integrations(store, &running[0], INTEGRATIONS, &sink).await;
            created = true;
        }
        for _ in 0..2 {
            running.push(Node::start(url, &name(), &settings).await);
        }
        balanced(&running[0], 3).await;
        let mut kills = Vec::new();
        for _ in 0..KILLS {
            let mut victim = running.remove(0);
            let started = Instant::now();
            victim.child.start_kill().unwrap();
            victim.child.wait().await.unwrap();
            kills.push(until_taken_over(&running[0], &victim.name, started).await);
            running.push(Node::start(url, &name(), &settings).await);
            balanced(&running[0], 3).await;
        }
        let mut handovers = Vec::new();
        for _ in 0..HANDOVERS {
            let mut leaving = running.remove(0);
            let started = Instant::now();
            leaving.signal(libc::SIGTERM);
            handovers.push(until_taken_over(&running[0], &leaving.name, started).await);
            leaving.child.wait().await.unwrap();
            running.push(Node::start(url, &name(), &settings).await);
            balanced(&running[0], 3).await;
        }
        println!(
            "lease_ttl {ttl:?}: failover after SIGKILL over {KILLS} kills: {}",
            summary(kills)
        );
        println!(
            "lease_ttl {ttl:?}: handover after SIGTERM over {HANDOVERS} stops: {}",
            summary(handovers)
        );
        for mut node in running {
            node.signal(libc::SIGTERM);
            let _ = node.child.wait().await;
        }
    }
}

/// Sends signed webhooks from 32 tasks for `seconds`, spread over `apis`: acked/s.
async fn load(apis: &[String], hooks: &[Hook], seconds: u64, run: &str) -> f64 {
    let http = reqwest::Client::new();
    let acked = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..32)
        .map(|task| {
            let (http, acked) = (http.clone(), Arc::clone(&acked));
            let (apis, hooks, run) = (apis.to_vec(), hooks.to_vec(), run.to_string());
            tokio::spawn(async move {
                let mut n = 0usize;
                while Instant::now() < deadline {
                    let hook = &hooks[(task * 7 + n) % hooks.len()];
                    let api = &apis[(task + n) % apis.len()];
                    let id = format!("{run}_{task}_{n}");
                    let body = r#"{"type":"tick"}"#;
                    let at = standard_webhooks::unix_now();
                    let signature =
                        standard_webhooks::sign(&hook.secret, &id, at, body.as_bytes()).unwrap();
                    let sent = http
                        .post(format!("http://{api}/webhooks/{}", hook.path))
                        .header(standard_webhooks::ID, &id)
                        .header(standard_webhooks::TIMESTAMP, at.to_string())
                        .header(standard_webhooks::SIGNATURE, signature)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    if sent.is_ok_and(|r| r.status() == 200) {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    acked.load(Ordering::Relaxed) as f64 / seconds as f64
}

async fn ingest(url: &str, store: &Store, seconds: u64) {
    let (sink, _) = sink().await;
    let settings = cluster_settings(Duration::from_secs(15));
    let single = Node::single(url, "single").await;
    let hooks = integrations(store, &single, INTEGRATIONS, &sink).await;
    let baseline = load(std::slice::from_ref(&single.api), &hooks, seconds, "single").await;
    println!("one node without [cluster]: {baseline:.0} webhooks/s (the baseline)");
    let mut single = single;
    single.signal(libc::SIGTERM);
    let _ = single.child.wait().await;
    let mut running: Vec<Node> = Vec::new();
    for size in 1..=3 {
        running.push(Node::start(url, &format!("node-{size}"), &settings).await);
        balanced(&running[0], size).await;
        let apis: Vec<String> = running.iter().map(|n| n.api.clone()).collect();
        let rate = load(&apis, &hooks, seconds, &format!("cluster{size}")).await;
        println!(
            "cluster of {size}: {rate:.0} webhooks/s, {:.1}% of the baseline",
            100.0 * rate / baseline
        );
    }
    for mut node in running {
        node.signal(libc::SIGTERM);
        let _ = node.child.wait().await;
    }
}

#[tokio::main]
async fn main() {
    switchboard::install_crypto_provider();
    let Ok(server) = std::env::var("TEST_DATABASE_URL") else {
        eprintln!("set TEST_DATABASE_URL to a PostgreSQL server: cluster mode needs one");
        std::process::exit(2);
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds = args
        .iter()
        .find_map(|a| a.parse::<u64>().ok())
        .unwrap_or(10);
    let chosen = |part: &str| {
        !args.iter().any(|a| a == "failover" || a == "ingest") || args.iter().any(|a| a == part)
    };
    for (part, run) in [("ingest", "cl_ingest"), ("failover", "cl_failover")] {
        if !chosen(part) {
            continue;
        }
        let database = PostgresDatabase::create(&server, run).await;
        let store = Store::connect(&DatabaseConfig {
            url: Secret::new(database.url.clone()),
            ..DatabaseConfig::default()
        })
        .expect("store");
        store.migrate().await.expect("migrated");
        if part == "ingest" {
            ingest(&database.url, &store, seconds).await;
        } else {
            failover(&database.url, &store).await;
        }
        drop(store);
        database.drop().await;
    }
}
