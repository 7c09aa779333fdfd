//! The integration lifecycle over HTTP against the real daemon, with a test connector.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::test_connector::{GOOD_CODE, TestConnector};
use common::{TestDaemon, child};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use switchboard::connectors::ConnectorSet;

async fn daemon_with(connector: Arc<TestConnector>, extra: &str) -> TestDaemon {
    let daemon =
        TestDaemon::start_with_connectors(ConnectorSet::default().with(connector), extra).await;
    daemon.ready().await;
    daemon
}

/// Authorizes and completes an acme integration for the token's organization.
async fn connect(daemon: &TestDaemon, token: &str) -> Value {
    daemon
        .connect(token, "acme", json!({"code": GOOD_CODE}))
        .await["integration"]
        .clone()
}

async fn integration_node(daemon: &TestDaemon, id: &str) -> Option<Value> {
    let (_, tree) = daemon.get_json("/admin/actors").await;
    let connector = child(&tree, "connector:acme").clone();
    connector["children"].as_array().and_then(|c| {
        c.iter()
            .find(|n| n["name"] == format!("integration:{id}"))
            .cloned()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_lifecycle_over_http() {
    let connector = Arc::new(TestConnector::with_token_lifetime(Duration::from_secs(
        3600,
    )));
    let daemon = daemon_with(Arc::clone(&connector), "").await;
    let (org, token) = daemon.organization("Acme Corp").await;

    let (status, started) = daemon
        .call_api(
            &token,
            "/integrations/authorize/",
            json!({"connector_type": "acme"}),
        )
        .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["type"], "oauth2");
    let state = started["state"].as_str().unwrap().to_string();
    assert!(started["url"].as_str().unwrap().contains(&state));
    assert!(started["expires_at"].is_string());

    let (status, done) = daemon
        .call_api(
            &token,
            "/integrations/callback",
            json!({"connector_type": "acme", "state": state, "code": GOOD_CODE}),
        )
        .await;
    assert_eq!(status, 201, "{done}");
    let integration = &done["integration"];
    let id = integration["id"].as_str().unwrap().to_string();
    assert_eq!(integration["organization_id"], org);
    assert_eq!(integration["status"], "active");
    assert_eq!(integration["metadata"]["plan"], "pro");
    for field in [
        "external_id",
        "created_at",
        "updated_at",
        "last_used_at",
        "connector_type",
    ] {
        assert!(
            integration.get(field).is_some(),
            "{field} missing: {integration}"
        );
    }

    let (status, listed) = daemon
        .call_api(&token, "/integrations/list", json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["integrations"].as_array().unwrap().len(), 1);

    let (status, report) = daemon
        .call_api(
            &token,
            "/integrations/status",
            json!({"integration_id": id}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let health = &report["health"];
    assert_eq!(health["kind"], "integration");
    assert_eq!(health["breaker"]["state"], "closed");
    assert!(health["details"]["expires_at"].is_string(), "{health}");
    assert!(
        integration_node(&daemon, &id).await.is_some(),
        "actor in the tree"
    );

    // Validation on demand reaches the provider with the decrypted credentials.
    let (status, validated) = daemon
        .post_json(&format!("/admin/integrations/{id}/validate"))
        .await;
    assert_eq!(
        (status, validated["valid"].clone()),
        (200, json!(true)),
        "{validated}"
    );
    let (_, report) = daemon
        .call_api(
            &token,
            "/integrations/status",
            json!({"integration_id": id}),
        )
        .await;
    assert!(
        report["health"]["details"]["last_validated_at"].is_string(),
        "{report}"
    );

    let (status, revoked) = daemon
        .call_api(
            &token,
            "/integrations/revoke",
            json!({"integration_id": id}),
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["integration"]["status"], "revoked");
    assert_eq!(revoked["at_provider"], "revoked");
    assert_eq!(connector.revocations.load(Ordering::SeqCst), 1);
    assert!(
        integration_node(&daemon, &id).await.is_none(),
        "actor stopped and removed"
    );
    let (_, report) = daemon
        .call_api(
            &token,
            "/integrations/status",
            json!({"integration_id": id}),
        )
        .await;
    assert_eq!(report["health"], Value::Null);
    let (status, _) = daemon
        .call_api(
            &token,
            "/integrations/revoke",
            json!({"integration_id": id}),
        )
        .await;
    assert_eq!(status, 404, "revoking twice");

    let entries = switchboard::store::audit::list(&daemon.store, &org, 20)
        .await
        .unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    for action in [
        "integration.authorize",
        "integration.callback",
        "integration.revoke",
    ] {
        assert!(
            actions.contains(&action),
            "{action} not audited: {actions:?}"
        );
    }
    assert!(
        entries
            .iter()
            .all(|e| !e.details.contains("acme-access") && !e.details.contains("refresh-secret"))
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_browser_callback_completes_and_shows_a_page_without_secrets() {
    let daemon = daemon_with(Arc::new(TestConnector::default()), "").await;
    let (_, token) = daemon.organization("Acme").await;
    let (_, started) = daemon
        .call_api(
            &token,
            "/integrations/authorize",
            json!({"connector_type": "acme"}),
        )
        .await;
    let state = started["state"].as_str().unwrap();

    let page = daemon
        .http
        .get(daemon.api_url(&format!(
            "/oauth/acme/callback?state={state}&code={GOOD_CODE}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("is connected"), "{html}");
    assert!(!html.contains(state) && !html.contains(GOOD_CODE) && !html.contains("acme-access"));

    let replay = daemon
        .http
        .get(daemon.api_url(&format!(
            "/oauth/acme/callback?state={state}&code={GOOD_CODE}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 400);
    assert!(replay.text().await.unwrap().contains("already used"));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn states_are_single_use_expiring_and_bound_to_their_organization() {
    let daemon = daemon_with(
        Arc::new(TestConnector::default()),
        "[integrations]\nstate_ttl = \"300ms\"\n",
    )
    .await;
    let (_, token_a) = daemon.organization("A").await;
    let (_, token_b) = daemon.organization("B").await;
    let callback = |token: String, state: Value| {
        let daemon = &daemon;
        async move {
            daemon
                .call_api(
                    &token,
                    "/integrations/callback",
                    json!({"connector_type": "acme", "state": state, "code": GOOD_CODE}),
                )
                .await
        }
    };

    let (_, started) = daemon
        .call_api(
            &token_a,
            "/integrations/authorize",
            json!({"connector_type": "acme"}),
        )
        .await;
    let (status, body) = callback(token_b.clone(), started["state"].clone()).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("state_mismatch")),
        "{body}"
    );
    let (status, _) = callback(token_a.clone(), started["state"].clone()).await;
    assert_eq!(status, 201);
    let (status, body) = callback(token_a.clone(), started["state"].clone()).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("state_used"))
    );
    let (status, body) = callback(token_a.clone(), json!("0123456789abcdef")).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_state"))
    );

    let (_, started) = daemon
        .call_api(
            &token_b,
            "/integrations/authorize",
            json!({"connector_type": "acme"}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, body) = callback(token_b.clone(), started["state"].clone()).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("state_expired")),
        "{body}"
    );

    // A bad code is the tenant's mistake, a clear 422; no token is a 401.
    let (_, started) = daemon
        .call_api(
            &token_b,
            "/integrations/authorize",
            json!({"connector_type": "acme"}),
        )
        .await;
    let (status, body) = daemon
        .call_api(
            &token_b,
            "/integrations/callback",
            json!({"connector_type": "acme", "state": started["state"], "code": "forged"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = daemon
        .call_api("sbt_not-a-token", "/integrations/list", json!({}))
        .await;
    assert_eq!(status, 401);
    let (status, body) = daemon
        .call_api(
            &token_b,
            "/integrations/authorize",
            json!({"connector_type": "myspace"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reauthorizing_replaces_a_pending_integration_but_not_an_active_one() {
    let daemon = daemon_with(Arc::new(TestConnector::default()), "").await;
    let (_, token) = daemon.organization("A").await;
    let (_, first) = daemon
        .call_api(
            &token,
            "/integrations/authorize",
            json!({"connector_type": "acme"}),
        )
        .await;
    let (_, second) = daemon
        .call_api(
            &token,
            "/integrations/authorize",
            json!({"connector_type": "acme"}),
        )
        .await;
    assert_ne!(first["integration_id"], second["integration_id"]);
    let (_, listed) = daemon
        .call_api(
            &token,
            "/integrations/list",
            json!({"connector_type": "acme"}),
        )
        .await;
    let listed = listed["integrations"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "the pending one was replaced");
    assert_eq!(listed[0]["status"], "pending");

    let (status, _) = daemon
        .call_api(
            &token,
            "/integrations/callback",
            json!({"connector_type": "acme", "state": second["state"], "code": GOOD_CODE}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = daemon
        .call_api(
            &token,
            "/integrations/authorize",
            json!({"connector_type": "acme"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_of_one_organization_is_visible_to_another() {
    let daemon = daemon_with(Arc::new(TestConnector::default()), "").await;
    let mut tenants = Vec::new();
    for i in 0..6 {
        let (org, token) = daemon.organization(&format!("tenant-{i}")).await;
        let integration = connect(&daemon, &token).await;
        tenants.push((org, token, integration["id"].as_str().unwrap().to_string()));
    }
    let seed: u64 = rand::rng().random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..40 {
        let a = rng.random_range(0..tenants.len());
        let b = (a + rng.random_range(1..tenants.len())) % tenants.len();
        let (_, _, a_id) = &tenants[a];
        let (_, b_token, _) = &tenants[b];
        for path in ["/integrations/status", "/integrations/revoke"] {
            let (status, body) = daemon
                .call_api(b_token, path, json!({"integration_id": a_id}))
                .await;
            assert_eq!(
                status, 404,
                "seed {seed}: tenant {b} reached {a}'s integration via {path}: {body}"
            );
        }
        let (_, listed) = daemon
            .call_api(b_token, "/integrations/list", json!({}))
            .await;
        assert!(
            listed["integrations"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["id"] != *a_id),
            "seed {seed}: tenant {b} lists {a}'s integration"
        );
    }
    // Every integration is still there and active for its own tenant.
    for (_, token, id) in &tenants {
        let (status, report) = daemon
            .call_api(token, "/integrations/status", json!({"integration_id": id}))
            .await;
        assert_eq!(
            (status, report["integration"]["status"].clone()),
            (200, json!("active"))
        );
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_refresh_opens_the_breaker_and_shows_in_the_tree() {
    // Tokens that live shorter than twice the margin are refreshed halfway: after 1 s.
    // The breaker opens on two failures in a row (threshold 100%), so the start-up
    // validation's success cannot open it beside one failed refresh; that validation
    // is spread over an hour so that it does not land between the two refreshes.
    let connector = Arc::new(TestConnector::with_token_lifetime(Duration::from_secs(2)));
    connector.fail_refresh.store(true, Ordering::SeqCst);
    let daemon = daemon_with(
        Arc::clone(&connector),
        "[circuit_breaker]\nfailure_rate_threshold = 100.0\nsliding_window_size = 2\nminimum_calls = 2\nwait_in_open = \"1h\"\n\
         [supervision]\nbackoff_base = \"10ms\"\nbackoff_cap = \"50ms\"\nobserve_timeout = \"500ms\"\n\
         [integrations]\nrefresh_attempts = 2\nvalidation_spread = \"1h\"\n",
    )
    .await;
    let (_, token) = daemon.organization("A").await;
    let id = connect(&daemon, &token).await["id"]
        .as_str()
        .unwrap()
        .to_string();

    let mut node = Value::Null;
    for _ in 0..200 {
        node = integration_node(&daemon, &id).await.unwrap_or_default();
        if node["breaker"]["state"] == "open" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node["breaker"]["state"], "open", "{node}");
    assert!(
        node["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("refresh failed"),
        "{node}"
    );
    assert_eq!(
        connector.refreshes.load(Ordering::SeqCst),
        2,
        "the open breaker stops further calls"
    );

    let (_, listed) = daemon
        .call_api(&token, "/integrations/list", json!({}))
        .await;
    assert_eq!(
        listed["integrations"][0]["status"], "error",
        "after refresh_attempts failures"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_integration_is_restarted_alone() {
    let connector = Arc::new(TestConnector::default());
    let daemon = daemon_with(Arc::clone(&connector), "").await;
    let (org_a, token_a) = daemon.organization("A").await;
    let (_, token_b) = daemon.organization("B").await;
    let a = connect(&daemon, &token_a).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = connect(&daemon, &token_b).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before_b = integration_node(&daemon, &b).await.unwrap();
    let before_a = integration_node(&daemon, &a).await.unwrap();

    connector.panic_for.lock().unwrap().insert(org_a);
    let (status, _) = daemon
        .post_json(&format!("/admin/integrations/{a}/validate"))
        .await;
    assert_eq!(status, 404, "the actor died answering");

    let mut after_a = Value::Null;
    for _ in 0..200 {
        after_a = integration_node(&daemon, &a).await.unwrap_or_default();
        if after_a["restarts"] == 1 && after_a["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(after_a["restarts"], 1, "{after_a}");
    assert_ne!(after_a["actor_id"], before_a["actor_id"]);
    assert!(after_a["last_error"].is_null(), "recovered: {after_a}");
    assert!(
        after_a["last_failure"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("panicked"),
        "{after_a}"
    );
    let after_b = integration_node(&daemon, &b).await.unwrap();
    assert_eq!(
        after_b["actor_id"], before_b["actor_id"],
        "the sibling kept its actor"
    );
    assert_eq!(after_b["restarts"], 0);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_connector_is_listed_a_page_at_a_time() {
    let daemon = daemon_with(Arc::new(TestConnector::default()), "").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (_, token) = daemon.organization(&format!("tenant-{i}")).await;
        ids.push(
            connect(&daemon, &token).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let names = |node: &Value| -> Vec<String> {
        node["children"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };

    let (status, page) = daemon.get_json("/admin/connectors/acme?limit=2").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["details"]["children"], 3);
    assert_eq!(page["details"]["children_listed"], 2);
    let first = names(&page);
    let (_, rest) = daemon
        .get_json("/admin/connectors/acme?limit=2&offset=2")
        .await;
    let mut all = [first, names(&rest)].concat();
    all.sort();
    let mut expected: Vec<String> = ids.iter().map(|id| format!("integration:{id}")).collect();
    expected.sort();
    assert_eq!(all, expected);

    let (_, failed) = daemon
        .get_json("/admin/connectors/acme?status=failed")
        .await;
    assert!(names(&failed).is_empty());
    let (_, summary) = daemon.get_json("/admin/actors?depth=1").await;
    assert!(
        child(&summary, "connector:acme")["children"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (status, _) = daemon.get_json("/admin/actors?status=sleepy").await;
    assert_eq!(status, 400);

    // An explicit restart of one integration: counted and visible, its siblings untouched.
    let (status, node) = daemon
        .post_json(&format!("/admin/integrations/{}/restart", ids[0]))
        .await;
    assert_eq!(status, 200, "{node}");
    assert_eq!(node["manual_restarts"], 1);
    let (_, page) = daemon.get_json("/admin/connectors/acme").await;
    for child in page["children"].as_array().unwrap() {
        let restarted = child["name"] == format!("integration:{}", ids[0]);
        assert_eq!(child["manual_restarts"], u32::from(restarted), "{child}");
    }
    daemon.stop().await;
}

/// The provider's quota is spent on the requests a handler makes, not on events: with
/// a quota of 5 a minute, events that make no request are all processed, and those
/// that make one stop at the quota (later ones wait for it, in order).
#[tokio::test(flavor = "multi_thread")]
async fn the_quota_limits_provider_requests_not_events() {
    use switchboard::store::events::{self, DeliveryScope, NewEvent};
    let quota = switchboard_actors::Quota::per_minute(std::num::NonZeroU32::new(5).unwrap());
    let connector = Arc::new(TestConnector::with_quota(quota));
    let daemon = daemon_with(
        Arc::clone(&connector),
        "[integrations]\nvalidation_spread = \"0s\"\n",
    )
    .await;
    let (org, token) = daemon.organization("Acme").await;
    let integration = connect(&daemon, &token).await;
    let id = integration["id"].as_str().unwrap().to_string();

    let event = |n: usize, event_type: &str| NewEvent {
        organization_id: Some(org.clone()),
        integration_id: Some(id.clone()),
        connector_type: "acme".into(),
        event_type: event_type.into(),
        delivery_id: format!("d-{n}"),
        delivery_scope: DeliveryScope::Provider,
        payload: "{}".into(),
        occurred_at: None,
        dead_reason: None,
    };
    let batch: Vec<NewEvent> = (0..200)
        .map(|n| event(n, "note.added"))
        .chain((200..220).map(|n| event(n, "api.call")))
        .collect();
    events::write_batch_durably(&daemon.store, batch, &[], Vec::new())
        .await
        .unwrap();
    // A new actor (and quota) drains the backlog as it starts; its start-up validation
    // is a request too. The first actor's own start-up validation is waited for, so
    // that it is not counted against the new actor's quota on a slow machine.
    common::until("the first actor validated", || async {
        connector.validations.load(Ordering::SeqCst) >= 1
    })
    .await;
    let validations = connector.validations.load(Ordering::SeqCst);
    let (status, _) = daemon
        .post_json(&format!("/admin/integrations/{id}/restart"))
        .await;
    assert_eq!(status, 200);
    let requests = || {
        connector.api_requests.load(Ordering::SeqCst) + connector.validations.load(Ordering::SeqCst)
            - validations
    };
    let done = || async {
        events::list(&daemon.store, Some(events::DONE), Some(&id), 1000)
            .await
            .unwrap()
            .len()
    };
    common::until("the quota is spent", || async { requests() == 5 }).await;
    let api = connector.api_requests.load(Ordering::SeqCst) as usize;
    common::until(
        "the 200 free events and the allowed requests are done",
        || async { done().await == 200 + api },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(requests(), 5, "no request beyond the quota");
    assert_eq!(done().await, 200 + api);
    assert_eq!(
        events::pending(&daemon.store, &id, 1000)
            .await
            .unwrap()
            .len(),
        20 - api,
        "the rest wait for the quota, in order"
    );
    daemon.stop().await;
}

/// The tenant API's status and the admin tree read the same report: after an admin
/// restart both show it, with the same actor id.
#[tokio::test(flavor = "multi_thread")]
async fn status_and_the_admin_tree_agree_after_a_restart() {
    let daemon = daemon_with(Arc::new(TestConnector::default()), "").await;
    let (_, token) = daemon.organization("Acme").await;
    let id = connect(&daemon, &token).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, restarted) = daemon
        .post_json(&format!("/admin/integrations/{id}/restart"))
        .await;
    assert_eq!(status, 200);
    // The answer is the actor once restarted, not a snapshot taken mid-restart.
    assert_eq!(restarted["status"], "running", "{restarted}");
    let node = integration_node(&daemon, &id).await.expect("in the tree");
    assert_eq!(restarted["actor_id"], node["actor_id"]);
    let (_, answer) = daemon
        .call_api(
            &token,
            "/integrations/status",
            json!({"integration_id": id}),
        )
        .await;
    let health = &answer["health"];
    assert_eq!(health["manual_restarts"], 1, "{answer}");
    assert!(health["last_restart_at"].is_string(), "{answer}");
    assert!(health["actor_id"].is_string(), "{answer}");
    for field in ["manual_restarts", "last_restart_at", "actor_id", "restarts"] {
        assert_eq!(health[field], node[field], "{field}: {answer} vs {node}");
    }
    daemon.stop().await;
}
