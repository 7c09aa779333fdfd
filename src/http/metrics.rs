//! Prometheus metrics, rendered at scrape time from the live health tree: restarts and
//! status per actor, breaker states, and build info.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use switchboard_actors::{BreakerState, HealthReport, Status};

use crate::pipeline::metrics::PipelineMetrics;

type Labels = Vec<(&'static str, String)>;

/// The text exposition of `tree`, build info and the pipeline's series.
pub fn render(
    tree: &HealthReport,
    pipeline: Option<&PipelineMetrics>,
    cluster: Option<&crate::cluster::Cluster>,
) -> String {
    let mut registry = Registry::with_prefix("switchboard");
    if let Some(pipeline) = pipeline {
        pipeline.register(&mut registry);
    }
    if let Some(cluster) = cluster {
        register_cluster(&mut registry, cluster);
    }

    let build_info = Family::<Labels, Gauge>::default();
    build_info
        .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
        .set(1);
    registry.register("build_info", "Build information", build_info);

    let restarts = Family::<Labels, Counter>::default();
    let status = Family::<Labels, Gauge>::default();
    let stale = Family::<Labels, Gauge>::default();
    let breaker = Family::<Labels, Gauge>::default();
    let children = Family::<Labels, Gauge>::default();
    for (parent, node) in tree.walk() {
        if let Some(serde_json::Value::Object(by_status)) = node.details.get("children_by_status") {
            for (child_status, count) in by_status {
                children
                    .get_or_create(&vec![
                        ("supervisor", node.name.clone()),
                        ("status", child_status.clone()),
                    ])
                    .set(count.as_i64().unwrap_or(0));
            }
        }
        let actor = |extra: Option<(&'static str, String)>| {
            let mut labels: Labels = vec![
                ("actor", node.name.clone()),
                ("kind", node.kind.clone()),
                ("parent", parent.unwrap_or("").to_string()),
            ];
            labels.extend(extra);
            labels
        };
        restarts
            .get_or_create(&actor(Some(("cause", "failure".to_string()))))
            .inc_by(u64::from(node.restarts));
        restarts
            .get_or_create(&actor(Some(("cause", "manual".to_string()))))
            .inc_by(u64::from(node.manual_restarts));
        for candidate in Status::ALL {
            status
                .get_or_create(&actor(Some(("status", candidate.as_str().to_string()))))
                .set(i64::from(node.status == candidate));
        }
        stale.get_or_create(&actor(None)).set(i64::from(node.stale));
        if let Some(snapshot) = &node.breaker {
            for candidate in [
                BreakerState::Closed,
                BreakerState::Open,
                BreakerState::HalfOpen,
            ] {
                breaker
                    .get_or_create(&actor(Some(("state", candidate.as_str().to_string()))))
                    .set(i64::from(snapshot.state == candidate));
            }
        }
    }
    registry.register(
        "actor_restarts",
        "Restarts per actor, after failures or asked for explicitly",
        restarts,
    );
    registry.register("actor_status", "1 for the actor's current status", status);
    registry.register(
        "actor_report_stale",
        "1 when the actor did not answer its last health query in time",
        stale,
    );
    registry.register(
        "breaker_state",
        "1 for the circuit breaker's current state",
        breaker,
    );

    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

/// Cluster mode: this node's leases, and what it lost or was refused.
fn register_cluster(registry: &mut Registry, cluster: &crate::cluster::Cluster) {
    use std::sync::atomic::Ordering;
    let held = Gauge::<i64>::default();
    held.set(i64::try_from(cluster.held()).unwrap_or(i64::MAX));
    registry.register(
        "cluster_leases_held",
        "Integration leases this node holds",
        held,
    );
    let lost = Counter::<u64>::default();
    lost.inc_by(cluster.leases_lost.load(Ordering::Relaxed));
    registry.register(
        "cluster_leases_lost",
        "Leases that expired under this node and moved to another",
        lost,
    );
    let fenced = Counter::<u64>::default();
    fenced.inc_by(cluster.fenced_writes.load(Ordering::Relaxed));
    registry.register(
        "cluster_fenced_writes",
        "Writes refused because this node's lease had moved on",
        fenced,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_status_restarts_and_build_info() {
        let mut root = HealthReport::new("root", "supervisor", Status::Running);
        let mut acme = HealthReport::new("connector:acme", "connector", Status::Backoff);
        acme.restarts = 3;
        acme.manual_restarts = 1;
        root.children.push(acme);
        let text = render(&root, Some(&PipelineMetrics::default()), None);
        assert!(text.contains("switchboard_build_info{version=\""), "{text}");
        assert!(text.contains(
            "switchboard_actor_restarts_total{actor=\"connector:acme\",kind=\"connector\",parent=\"root\",cause=\"failure\"} 3"
        ), "{text}");
        assert!(text.contains(
            "switchboard_actor_status{actor=\"connector:acme\",kind=\"connector\",parent=\"root\",status=\"backoff\"} 1"
        ), "{text}");
        assert!(
            text.contains("switchboard_events_received_total 0"),
            "{text}"
        );
        assert!(
            text.contains("switchboard_ingest_latency_seconds_bucket"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
