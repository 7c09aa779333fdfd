//! The admin endpoint of a real daemon, driven over HTTP.

mod common;

use common::{TestDaemon, child};
use rstest::rstest;

const TWO_CONNECTORS: &str = "[connectors.aws]\n[connectors.pagerduty]\n";

#[tokio::test]
async fn liveness_and_readiness_answer() {
    let daemon = TestDaemon::start("").await;
    let body = daemon
        .http
        .get(daemon.admin_url("/healthz"))
        .send()
        .await
        .expect("answers")
        .text()
        .await
        .expect("text");
    assert_eq!(body, "ok");

    daemon.ready().await;
    let (status, ready) = daemon.get_json("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"]["store"], "ok");
    assert_eq!(ready["checks"]["vault"], "ok");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["actor_tree"], "ok");
    assert_eq!(ready["checks"]["supervisors"], "ok");
    daemon.stop().await;
}

#[tokio::test]
async fn the_health_tree_shows_every_connector_honestly() {
    let daemon = TestDaemon::start(TWO_CONNECTORS).await;
    let (status, tree) = daemon.get_json("/admin/actors").await;
    assert_eq!(status, 200);
    assert_eq!(tree["name"], "root");
    assert_eq!(tree["status"], "running");
    for name in ["connector:aws", "connector:pagerduty"] {
        let node = child(&tree, name);
        assert_eq!(node["kind"], "connector");
        for field in [
            "name",
            "kind",
            "status",
            "restarts",
            "last_error",
            "last_restart_at",
            "children",
        ] {
            assert!(node.get(field).is_some(), "{name} lacks {field}: {node}");
        }
    }
    // Connectors start beside the tree (it does not wait for them), never `stopped`.
    for name in ["connector:aws", "connector:pagerduty"] {
        let node = child(&tree, name);
        assert!(
            ["starting", "running"].contains(&node["status"].as_str().unwrap()),
            "{node}"
        );
    }

    let (status, aws) = daemon.get_json("/admin/connectors/aws").await;
    assert_eq!(status, 200);
    assert_eq!(aws["name"], "connector:aws");
    daemon.stop().await;
}

#[tokio::test]
async fn restarting_one_connector_leaves_its_siblings_alone() {
    let daemon = TestDaemon::start(TWO_CONNECTORS).await;
    let (_, before) = daemon.get_json("/admin/actors").await;

    let (status, restarted) = daemon.post_json("/admin/connectors/aws/restart").await;
    assert_eq!(status, 200, "{restarted}");
    assert_eq!(restarted["manual_restarts"], 1);
    assert!(restarted["last_restart_at"].is_string());

    let (_, after) = daemon.get_json("/admin/actors").await;
    let (aws_before, aws_after) = (
        child(&before, "connector:aws"),
        child(&after, "connector:aws"),
    );
    assert_ne!(
        aws_before["actor_id"], aws_after["actor_id"],
        "aws has a new actor"
    );
    assert_eq!(aws_after["manual_restarts"], 1);
    assert_eq!(
        aws_after["restarts"], 0,
        "an explicit restart is not a failure"
    );

    let (pagerduty_before, pagerduty_after) = (
        child(&before, "connector:pagerduty"),
        child(&after, "connector:pagerduty"),
    );
    assert_eq!(
        pagerduty_before["actor_id"], pagerduty_after["actor_id"],
        "pagerduty kept its actor"
    );
    assert_eq!(pagerduty_after["restarts"], 0);
    assert_eq!(pagerduty_after["manual_restarts"], 0);
    assert!(pagerduty_after["last_restart_at"].is_null());

    let metrics = daemon
        .http
        .get(daemon.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains(
        "switchboard_actor_restarts_total{actor=\"connector:aws\",kind=\"connector\",parent=\"root\",cause=\"manual\"} 1"
    ), "{metrics}");
    assert!(
        metrics.contains("switchboard_build_info{version="),
        "{metrics}"
    );
    daemon.stop().await;
}

#[rstest]
#[case::unconfigured_connector("GET", "/admin/connectors/datadog")]
#[case::unknown_connector("GET", "/admin/connectors/myspace")]
#[case::restart_unknown_connector("POST", "/admin/connectors/myspace/restart")]
#[case::restart_unconfigured_connector("POST", "/admin/connectors/gcp/restart")]
#[case::restart_unknown_integration(
    "POST",
    "/admin/integrations/0b7a3c52-1d2e-4f6a-9b8c-7d6e5f4a3b2c/restart"
)]
#[case::unknown_path("GET", "/admin/nothing-here")]
#[tokio::test]
async fn unknown_names_and_ids_are_404(#[case] method: &str, #[case] path: &str) {
    let daemon = TestDaemon::start(TWO_CONNECTORS).await;
    let (status, body) = match method {
        "POST" => daemon.post_json(path).await,
        _ => daemon.get_json(path).await,
    };
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    daemon.stop().await;
}

#[tokio::test]
async fn a_configured_token_is_required_except_for_probes() {
    let daemon = TestDaemon::start_with_admin("token = \"t0ps3cret\"", "").await;
    let get = |path: &str, token: Option<&str>| {
        let mut request = daemon.http.get(daemon.admin_url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    for path in ["/admin/actors", "/metrics"] {
        assert_eq!(get(path, None).await.unwrap().status(), 401, "{path}");
        assert_eq!(
            get(path, Some("wrong")).await.unwrap().status(),
            401,
            "{path}"
        );
        assert_eq!(
            get(path, Some("t0ps3cret")).await.unwrap().status(),
            200,
            "{path}"
        );
    }
    let restart = daemon
        .http
        .post(daemon.admin_url("/admin/connectors/aws/restart"))
        .send()
        .await
        .unwrap();
    assert_eq!(restart.status(), 401);
    assert_eq!(get("/healthz", None).await.unwrap().status(), 200);
    daemon.ready().await;
    daemon.stop().await;
}

#[tokio::test]
async fn the_vault_shows_its_keys_and_rotates_online() {
    let daemon = TestDaemon::start("").await;
    daemon.ready().await;
    let (status, vault) = daemon.get_json("/admin/vault").await;
    assert_eq!(status, 200, "{vault}");
    assert_eq!(vault["state"], "ready");
    assert!(vault["master_key"].as_str().unwrap().starts_with("mk_"));
    let keys = vault["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["active"], true);
    assert_eq!(keys[0]["credentials"], 0);
    let first = keys[0]["id"].clone();

    let (status, started) = daemon.post_json("/admin/vault/rotate").await;
    assert_eq!(status, 202, "{started}");
    let new_key = started["new_key_id"].clone();
    assert_ne!(new_key, first);
    let mut vault = serde_json::Value::Null;
    for _ in 0..100 {
        vault = daemon.get_json("/admin/vault").await.1;
        if vault["rotation"]["state"] == "done" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(vault["rotation"]["state"], "done", "{vault}");
    assert_eq!(vault["active_key"], new_key);
    assert_eq!(vault["keys"].as_array().unwrap().len(), 2);
    daemon.stop().await;
}
