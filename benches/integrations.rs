//! Starts the daemon with N active integrations in the store (default 100,000) and
//! reports the time until every IntegrationActor runs and /readyz answers 200, the
//! resident memory, and the latency of the health tree listings.
//!
//! Run: `cargo bench --bench integrations [-- COUNT]`

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard::connectors::Credentials;
use switchboard::store;

use common::Idle;

/// The daemon binary's allocator, so that the figures are the daemon's; counting the
/// bytes live on the heap, so that they can be told apart from the allocator's own.
#[global_allocator]
static ALLOCATOR: Counting = Counting(mimalloc::MiMalloc);

struct Counting(mimalloc::MiMalloc);

static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { self.0.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { self.0.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            std::sync::atomic::Ordering::Relaxed,
        );
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

/// Bytes live on the heap now, in MiB.
fn live_mib() -> f64 {
    LIVE.load(std::sync::atomic::Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
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

/// Credentials from nowhere: the integration actors of `parts` ask for none.
struct Nowhere;

#[async_trait::async_trait]
impl switchboard::integration::CredentialStore for Nowhere {
    async fn load(&self, _: &store::integrations::Integration) -> Result<Credentials, String> {
        Err("none here".into())
    }
    async fn save(
        &self,
        _: &store::integrations::Integration,
        _: Vec<switchboard::connectors::CredentialValue>,
    ) -> Result<(), String> {
        Ok(())
    }
    async fn set_status(
        &self,
        _: &store::integrations::Integration,
        _: &str,
    ) -> Result<(), String> {
        Ok(())
    }
    async fn set_metadata(
        &self,
        _: &store::integrations::Integration,
        _: &serde_json::Value,
    ) -> Result<(), String> {
        Ok(())
    }
    async fn revoke(&self, _: &store::integrations::Integration, _: &str) -> Result<(), String> {
        Ok(())
    }
    async fn audit(&self, _: &store::integrations::Integration, _: &str, _: serde_json::Value) {}
}

/// A ractor actor that does nothing: what every actor costs before any state.
struct Bare;

impl ractor::Actor for Bare {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(
        &self,
        _: ractor::ActorRef<()>,
        _: (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }
}

/// Where an integration's bytes go: the live heap of N of each part alone.
async fn parts() {
    const N: usize = 10_000;
    let per = |before: f64| (live_mib() - before) * 1024.0 / N as f64;
    let before = live_mib();
    let mut actors = Vec::with_capacity(N);
    for _ in 0..N {
        actors.push(ractor::Actor::spawn(None, Bare, ()).await.expect("spawned"));
    }
    let bare = per(before);
    for (actor, handle) in actors {
        actor.stop(None);
        let _ = handle.await;
    }
    let before = live_mib();
    let supervisor = switchboard_actors::SupervisorSpec::new("parts")
        .registry(switchboard_actors::Registry::unique());
    let (supervisor, handle) = switchboard_actors::SupervisorRef::spawn(supervisor)
        .await
        .expect("supervisor");
    for n in 0..N {
        let child =
            switchboard_actors::ChildSpec::actor(format!("bare:{n}"), "bare", || (Bare, ()));
        supervisor.add_child(child).await.expect("child");
    }
    let supervised = per(before);
    supervisor.stop(Duration::from_secs(10)).await;
    let _ = handle.await;

    // Integration actors alone: no store, no pipeline, credentials from nowhere.
    let services = Arc::new(switchboard::integration::IntegrationServices {
        connector: Arc::new(Idle),
        credentials: Arc::new(Nowhere),
        breaker: switchboard_actors::BreakerConfig::default(),
        refresh_margin: Duration::from_secs(900),
        refresh_attempts: 3,
        backoff: switchboard_actors::Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
        validation_spread: Duration::from_secs(3600),
        pipeline: None,
        poll_interval: Duration::from_secs(60),
        cluster: None,
    });
    let before = live_mib();
    let supervisor = switchboard_actors::SupervisorSpec::new("parts")
        .registry(switchboard_actors::Registry::unique());
    let (supervisor, handle) = switchboard_actors::SupervisorRef::spawn(supervisor)
        .await
        .expect("supervisor");
    for _ in 0..N {
        let now = store::now();
        let integration = store::integrations::Integration {
            id: store::new_id(),
            organization_id: store::new_id(),
            user_id: None,
            connector_type: "bench".into(),
            status: "active".into(),
            external_id: None,
            metadata: "{}".into(),
            created_at: now,
            updated_at: now,
            last_used_at: None,
        };
        let child =
            switchboard::integration::child_spec(switchboard::integration::IntegrationArgs {
                integration,
                expires_at: None,
                services: Arc::clone(&services),
            });
        supervisor.add_child(child).await.expect("child");
    }
    let integrations = per(before);
    supervisor.stop(Duration::from_secs(10)).await;
    let _ = handle.await;
    let before = live_mib();
    let timers: Vec<_> = (0..N)
        .map(|_| tokio::spawn(tokio::time::sleep(Duration::from_secs(600))))
        .collect();
    let timer = per(before);
    timers.iter().for_each(|t| t.abort());
    drop(timers);
    let before = live_mib();
    let gates: Vec<_> = (0..N)
        .map(|_| {
            switchboard::connectors::ProviderGate::new(
                switchboard_actors::BreakerConfig::default(),
                None,
            )
        })
        .collect();
    let gate = per(before);
    drop(gates);
    println!(
        "parts: a bare ractor actor {bare:.1} KiB; one supervised and named {supervised:.1} KiB; \
         an integration actor so supervised, without store or pipeline, {integrations:.1} KiB; \
         a sleeping timer task {timer:.2} KiB; a provider gate (breaker and limiter) {gate:.2} KiB"
    );
}

async fn run(count: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let extra = std::env::var("BENCH_EXTRA_CONFIG").unwrap_or_default();
    let (config, seeding) = common::seeded_config(dir.path(), count, &extra).await;
    println!("seeded {count} active integrations in {seeding:.2?}");

    parts().await;
    let rss_before = resident_mib();
    let live_before = live_mib();
    let started = Instant::now();
    let (admin, shutdown, task) = common::start_idle_daemon(&config).await;
    let listening = started.elapsed();
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
    // Every actor runs once the connector's summary counts them all.
    let summary = common::all_running(&http, admin, count).await;
    // Each actor's first look at its queue (one query each) is in flight for a few
    // seconds after they all run: measured once the heap settles.
    let settle = Instant::now();
    let mut last = live_mib();
    while settle.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = live_mib();
        if (now - last).abs() < last * 0.002 {
            break;
        }
        last = now;
    }
    println!(
        "the heap settled {:.1?} after every actor ran",
        settle.elapsed()
    );
    let live_running = live_mib() - live_before;
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
    println!(
        "live heap: {live_running:.0} MiB once every actor runs ({:.1} KiB per integration)",
        live_running * 1024.0 / count as f64
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
    let live = live_mib() - live_before;
    println!(
        "live heap after every report was observed: {live:.0} MiB ({:.1} KiB per integration; \
         {:.1} KiB of it the supervisor's last known reports); resident {:.0} MiB for the daemon",
        live * 1024.0 / count as f64,
        (live - live_running) * 1024.0 / count as f64,
        resident_mib() - rss_before
    );
    shutdown.trigger();
    let stopped = Instant::now();
    task.await.expect("joined").expect("clean stop");
    println!(
        "graceful stop of {count} integrations: {:.2?}",
        stopped.elapsed()
    );
}
