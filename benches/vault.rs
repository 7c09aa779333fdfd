//! The vault's throughput and the cost of a data-key rotation.
//!
//! 1. encrypt+decrypt of a 256-byte credential: raw AES-256-GCM, through the vault
//!    actor one call at a time, from concurrent callers, and in batch messages;
//! 2. rotation of N credentials (default 100,000) on SQLite and, when
//!    TEST_DATABASE_URL is set, PostgreSQL: time taken, and the read latency
//!    (load a credential row + decrypt it) seen by concurrent callers meanwhile.
//!
//! Run: `cargo bench --bench vault [-- COUNT]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use diesel_async::SimpleAsyncConnection;
use rand::Rng;
use switchboard::config::DatabaseConfig;
use switchboard::secret::Secret;
use switchboard::store::{self, Store, integrations, organizations};
use switchboard::vault::cipher::{Cipher, random_key};
use switchboard::vault::{Binding, MasterKey, Sealed, Vault, VaultArgs, rotation};
use switchboard_actors::Backoff;

const CREDENTIAL: usize = 256;
const OPS: usize = 200_000;

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
        throughput().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite = format!("sqlite://{}/bench.db", dir.path().display());
        rotation_run("sqlite", &sqlite, count).await;
        match std::env::var("TEST_DATABASE_URL") {
            Ok(server) => {
                let name = format!("sb_bench_{}", std::process::id());
                admin(&server, &format!("CREATE DATABASE {name}")).await;
                let url = format!(
                    "{}/{name}",
                    server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b)
                );
                rotation_run("postgres", &url, count).await;
                admin(&server, &format!("DROP DATABASE {name} WITH (FORCE)")).await;
            }
            Err(_) => println!("postgres: skipped (TEST_DATABASE_URL not set)"),
        }
    });
}

async fn admin(server: &str, sql: &str) {
    use diesel_async::AsyncConnection;
    let mut conn = diesel_async::AsyncPgConnection::establish(server)
        .await
        .expect("postgres");
    conn.batch_execute(sql).await.expect("admin statement");
}

fn binding(i: usize) -> Binding {
    Binding::new(
        format!("org-{}", i % 97),
        format!("integration-{i}"),
        "bot_token",
    )
}

fn rate(ops: usize, took: Duration) -> String {
    format!(
        "{:>9.0} ops/s ({:.2} µs/op)",
        ops as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / ops as f64
    )
}

async fn start_vault(store: &Store) -> Vault {
    let (_, store_ready) = tokio::sync::watch::channel(true);
    let (vault, _) = Vault::spawn(VaultArgs {
        store: store.clone(),
        master: Arc::new(MasterKey::from_bytes(&[42; 32])),
        previous: Arc::new(vec![]),
        store_ready,
        backoff: Backoff::default(),
        resume_rotation: false,
        rotation_batch: 500,
        active_key_check: switchboard::vault::ACTIVE_KEY_CHECK,
    })
    .await
    .expect("vault");
    vault
        .ready(Duration::from_secs(30))
        .await
        .expect("vault ready");
    vault
}

async fn throughput() {
    let mut plaintext = vec![0u8; CREDENTIAL];
    rand::rng().fill(&mut plaintext[..]);

    // Raw AES-256-GCM, same binding construction, no actor.
    let cipher = Cipher::new(&random_key());
    let started = Instant::now();
    for i in 0..OPS {
        let aad = binding(i).associated_data();
        let sealed = cipher.seal(&aad, &plaintext);
        let opened = cipher.open(&aad, &sealed).expect("opens");
        assert_eq!(opened.len(), CREDENTIAL);
    }
    println!(
        "raw aes-256-gcm encrypt+decrypt:       {}",
        rate(OPS, started.elapsed())
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let store = connect(&format!("sqlite://{}/throughput.db", dir.path().display())).await;
    let vault = start_vault(&store).await;

    let calls = OPS / 4;
    let started = Instant::now();
    for i in 0..calls {
        let sealed = vault
            .encrypt(binding(i), Secret::wrap(plaintext.clone()))
            .await
            .expect("encrypt");
        vault.decrypt(binding(i), sealed).await.expect("decrypt");
    }
    println!(
        "vault actor, one caller:               {}",
        rate(calls, started.elapsed())
    );

    let callers = 8;
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let (vault, plaintext) = (vault.clone(), plaintext.clone());
            tokio::spawn(async move {
                for i in (c..calls).step_by(callers) {
                    let sealed = vault
                        .encrypt(binding(i), Secret::wrap(plaintext.clone()))
                        .await
                        .expect("encrypt");
                    vault.decrypt(binding(i), sealed).await.expect("decrypt");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller");
    }
    println!(
        "vault actor, {callers} concurrent callers:      {}",
        rate(calls, started.elapsed())
    );

    let batch = 256;
    let started = Instant::now();
    for chunk in (0..OPS).collect::<Vec<_>>().chunks(batch) {
        let items = chunk
            .iter()
            .map(|i| (binding(*i), Secret::wrap(plaintext.clone())))
            .collect();
        let sealed = vault.encrypt_batch(items).await.expect("encrypt batch");
        let items = chunk
            .iter()
            .zip(sealed)
            .map(|(i, s)| (binding(*i), s))
            .collect();
        let opened = vault.decrypt_batch(items).await.expect("decrypt batch");
        assert!(opened.iter().all(Result::is_ok));
    }
    println!(
        "vault actor, batches of {batch}:          {}",
        rate(OPS, started.elapsed())
    );
}

async fn connect(url: &str) -> Store {
    let store = Store::connect(&DatabaseConfig {
        url: Secret::new(url),
        max_connections: 16,
        ..DatabaseConfig::default()
    })
    .expect("store");
    store.migrate().await.expect("migrations");
    store
}

/// Inserts `count` integrations, each with an encrypted 256-byte credential, in
/// multi-row statements (setup only: the daemon stores one integration at a time).
async fn seed(store: &Store, vault: &Vault, count: usize) -> Vec<(String, String)> {
    let org = organizations::create(store, "bench").await.expect("org");
    let now = store::now().format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    let mut ids = Vec::with_capacity(count);
    let mut plaintext = vec![0u8; CREDENTIAL];
    rand::rng().fill(&mut plaintext[..]);
    for chunk_start in (0..count).step_by(1000) {
        let chunk: Vec<usize> = (chunk_start..(chunk_start + 1000).min(count)).collect();
        let integration_ids: Vec<String> = chunk.iter().map(|_| store::new_id()).collect();
        let items = chunk
            .iter()
            .zip(&integration_ids)
            .map(|(_, id)| {
                (
                    Binding::new(&org.id, id, "bot_token"),
                    Secret::wrap(plaintext.clone()),
                )
            })
            .collect();
        let sealed = vault.encrypt_batch(items).await.expect("encrypt");
        let blob = |bytes: &[u8]| match store.backend() {
            store::Backend::Sqlite => format!("X'{}'", hex::encode(bytes)),
            store::Backend::Postgres => format!("'\\x{}'::bytea", hex::encode(bytes)),
        };
        let integrations_sql: Vec<String> = chunk
            .iter()
            .zip(&integration_ids)
            .map(|(i, id)| {
                format!(
                    "('{id}','{}',NULL,'bench{i}','active',NULL,'{{}}','{now}','{now}',NULL)",
                    org.id
                )
            })
            .collect();
        let credentials_sql: Vec<String> = integration_ids
            .iter()
            .zip(&sealed)
            .map(|(id, s)| {
                format!(
                    "('{}','{id}','{}','bot_token',{},'{}',NULL,'{now}','{now}')",
                    store::new_id(),
                    org.id,
                    blob(&s.ciphertext),
                    s.key_id
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO integrations VALUES {}; INSERT INTO integration_credentials VALUES {};",
            integrations_sql.join(","),
            credentials_sql.join(",")
        );
        execute(store, &sql).await;
        ids.extend(integration_ids.into_iter().map(|id| (org.id.clone(), id)));
    }
    ids
}

async fn execute(store: &Store, sql: &str) {
    match store {
        Store::Postgres { pool, .. } => pool
            .get()
            .await
            .expect("conn")
            .batch_execute(sql)
            .await
            .expect("seed"),
        Store::Sqlite { pool, .. } => pool
            .get()
            .await
            .expect("conn")
            .batch_execute(sql)
            .await
            .expect("seed"),
    }
}

async fn read_one(store: &Store, vault: &Vault, org: &str, id: &str) {
    let row = integrations::credentials(store, org, id)
        .await
        .expect("row")
        .remove(0);
    vault
        .decrypt(
            Binding::new(org, id, "bot_token"),
            Sealed {
                key_id: row.encryption_key_id,
                ciphertext: row.ciphertext,
            },
        )
        .await
        .expect("readable");
}

/// Latencies of reads made by `readers` concurrent callers until `stop` is set.
fn readers(
    store: &Store,
    vault: &Vault,
    ids: &Arc<Vec<(String, String)>>,
    stop: &Arc<AtomicBool>,
    readers: usize,
) -> Vec<tokio::task::JoinHandle<Vec<Duration>>> {
    (0..readers)
        .map(|_| {
            let (store, vault, ids, stop) = (
                store.clone(),
                vault.clone(),
                Arc::clone(ids),
                Arc::clone(stop),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (org, id) = &ids[rand::rng().random_range(0..ids.len())];
                    let started = Instant::now();
                    read_one(&store, &vault, org, id).await;
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
        .collect()
}

fn percentiles(mut latencies: Vec<Duration>) -> String {
    if latencies.is_empty() {
        return "no reads".to_string();
    }
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    format!(
        "{} reads, p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        latencies.len(),
        at(0.50),
        at(0.99),
        latencies[latencies.len() - 1]
    )
}

async fn rotation_run(backend: &str, url: &str, count: usize) {
    let store = connect(url).await;
    let vault = start_vault(&store).await;
    let seeded = Instant::now();
    let ids = Arc::new(seed(&store, &vault, count).await);
    println!(
        "{backend}: seeded {count} credentials in {:.2?}",
        seeded.elapsed()
    );

    // Baseline read latency, then during the rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let baseline = readers(&store, &vault, &ids, &stop, 4);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut before = Vec::new();
    for reader in baseline {
        before.extend(reader.await.expect("reader"));
    }
    println!("{backend}: reads before rotation: {}", percentiles(before));

    let stop = Arc::new(AtomicBool::new(false));
    let during = readers(&store, &vault, &ids, &stop, 4);
    let report = rotation::rotate(&store, &vault, 500)
        .await
        .expect("rotation");
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for reader in during {
        latencies.extend(reader.await.expect("reader"));
    }
    assert_eq!(report.reencrypted, count);
    println!(
        "{backend}: rotated {} credentials in {:.2?} ({:.0}/s), batches of 500",
        report.reencrypted,
        report.took,
        report.reencrypted as f64 / report.took.as_secs_f64()
    );
    println!(
        "{backend}: reads during rotation: {}",
        percentiles(latencies)
    );
}
