//! Spawns 100,000 supervised children under one supervisor and reports the time, the
//! memory per child, and that restarting one child leaves the others untouched.
//!
//! Run: `cargo bench -p switchboard-actors --bench spawn_children [-- COUNT]`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use switchboard_actors::{ChildSpec, Registry, SupervisorRef, SupervisorSpec};

/// A child that does nothing but exist: the cost measured is the supervision's.
struct Idle;

impl Actor for Idle {
    type Msg = ();
    type State = ();
    type Arguments = Arc<AtomicU64>;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        starts: Arc<AtomicU64>,
    ) -> Result<(), ActorProcessingErr> {
        starts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
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
    let starts = Arc::new(AtomicU64::new(0));
    let registry = Registry::unique();
    let children: Vec<ChildSpec> = (0..count)
        .map(|i| {
            let starts = Arc::clone(&starts);
            ChildSpec::actor(format!("integration:{i}"), "integration", move || {
                (Idle, Arc::clone(&starts))
            })
        })
        .collect();
    let named = std::env::var_os("UNNAMED").is_none();
    let spec = SupervisorSpec::new("bench");
    let spec = if named {
        spec.registry(registry.clone())
    } else {
        spec
    };
    let spec = children.into_iter().fold(spec, SupervisorSpec::child);

    let rss_before = resident_bytes();
    let started = Instant::now();
    let (supervisor, _) = SupervisorRef::spawn(spec).await.expect("supervisor starts");
    let spawn_time = started.elapsed();
    let rss_after = resident_bytes();
    assert_eq!(starts.load(Ordering::Relaxed), count as u64);

    let per_child = rss_after.saturating_sub(rss_before) / count as u64;
    println!("children:        {count}");
    println!(
        "spawn time:      {spawn_time:.2?} ({:.1} µs per child)",
        spawn_time.as_secs_f64() * 1e6 / count as f64
    );
    println!(
        "resident growth: {:.1} MiB ({per_child} bytes per child)",
        rss_after.saturating_sub(rss_before) as f64 / (1024.0 * 1024.0)
    );

    // Restart one child; every other keeps its actor.
    let target = format!("integration:{}", count / 2);
    let before: Vec<_> = (0..count)
        .map(|i| {
            registry
                .lookup_cell(&format!("integration:{i}"))
                .map(|c| c.get_id())
        })
        .collect();
    let restart_started = Instant::now();
    supervisor.restart_child(&target).await.expect("restart");
    let restart_time = restart_started.elapsed();
    let changed: Vec<usize> = (0..count)
        .filter(|i| {
            registry
                .lookup_cell(&format!("integration:{i}"))
                .map(|c| c.get_id())
                != before[*i]
        })
        .collect();
    assert_eq!(changed, vec![count / 2], "only the restarted child changed");
    assert_eq!(starts.load(Ordering::Relaxed), count as u64 + 1);
    println!("restart one:     {restart_time:.2?}; children whose actor changed: {changed:?}");

    let observe_started = Instant::now();
    let report = supervisor.observe(Duration::from_secs(5)).await;
    println!(
        "observe tree:    {:.2?} ({} nodes)",
        observe_started.elapsed(),
        report.children.len() + 1
    );

    let stop_started = Instant::now();
    supervisor.stop(Duration::from_secs(60)).await;
    println!("stop all:        {:.2?}", stop_started.elapsed());
}
