//! The Datadog connector against a fake Datadog on loopback: keys on a named site and
//! found by discovery, the webhook switchboard installs and its secret header, the
//! event stream polled, and `datadog.event` posting back under Datadog's rate limit.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::db::{Db, TestDb};
use common::fake_datadog::{API_KEY, APPLICATION_KEY, FakeDatadog, SECRET_HEADER, SITES, notify};
use common::fake_github::{self, FakeGithub, WEBHOOK_SECRET};
use common::{TestDaemon, until};
use rstest::rstest;
use serde_json::{Value, json};
use switchboard::store::{events, organizations, poll_cursors, tokens};

/// Connects Datadog for the token's organization with `fields` beside the keys:
/// (status, the callback's answer).
async fn connect(daemon: &TestDaemon, token: &str, fields: Value) -> (u16, Value) {
    let mut credentials = json!({"api_key": API_KEY, "application_key": APPLICATION_KEY});
    credentials
        .as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    daemon
        .try_connect(token, "datadog", json!({"credentials": credentials}))
        .await
}

async fn connected(daemon: &TestDaemon, token: &str, fields: Value) -> Value {
    let (status, done) = connect(daemon, token, fields).await;
    assert_eq!(status, 201, "{done}");
    done
}

async fn stored(daemon: &TestDaemon, integration_id: &str) -> Vec<Value> {
    let (status, found) = daemon
        .get_json(&format!(
            "/admin/events?integration_id={integration_id}&limit=100"
        ))
        .await;
    assert_eq!(status, 200, "{found}");
    found["events"].as_array().unwrap().clone()
}

const TEMPLATE_VARIABLES: [&str; 15] = [
    "$ID",
    "$EVENT_TYPE",
    "$EVENT_TITLE",
    "$DATE",
    "$LAST_UPDATED",
    "$ALERT_ID",
    "$ALERT_CYCLE_KEY",
    "$ALERT_TRANSITION",
    "$ALERT_STATUS",
    "$ALERT_PRIORITY",
    "$ALERT_SCOPE",
    "$HOSTNAME",
    "$LINK",
    "$TAGS",
    "$ORG_ID",
];

#[tokio::test(flavor = "multi_thread")]
async fn keys_on_a_named_site_install_a_webhook_whose_secret_header_guards_the_ingress() {
    let datadog = FakeDatadog::start("us3").await;
    // The actor's own first validation runs at once, so that the request counts below
    // cannot be crossed by it landing at a random moment of the test.
    let config = format!(
        "[integrations]\nvalidation_spread = \"0s\"\n{}",
        datadog.config_section("")
    );
    let daemon = TestDaemon::start_configured(&config).await;
    daemon.ready().await;
    let (_, token) = daemon.organization("Acme").await;

    let started = daemon.authorize(&token, "datadog").await;
    assert_eq!(started["type"], "api_key", "{started}");
    assert_eq!(
        started["fields"],
        json!(["api_key", "application_key", "site", "poll", "webhook"])
    );
    let done = connected(&daemon, &token, json!({"site": "us3"})).await;
    let id = done["integration"]["id"].as_str().unwrap().to_string();
    let name = format!("switchboard-{id}");
    assert_eq!(done["reveal"]["webhook_handle"], format!("@webhook-{name}"));
    assert_eq!(done["integration"]["metadata"]["site"], "us3", "{done}");
    assert_eq!(
        done["integration"]["metadata"]["keys_checked"],
        "api_and_application"
    );
    let validations = datadog.validations();
    assert!(
        !validations.is_empty() && validations.iter().all(|site| site == "us3"),
        "only the named site: {validations:?}"
    );
    until("the actor's first validation", || async {
        let (_, report) = daemon
            .call_api(
                &token,
                "/integrations/status",
                json!({"integration_id": id}),
            )
            .await;
        report["health"]["details"]["last_validated_at"].is_string()
    })
    .await;
    assert!(
        !done.to_string().contains(API_KEY),
        "the key is never echoed"
    );

    // The webhook as Datadog saw it: this integration's URL, every variable in the
    // template, the secret in a custom header.
    let webhook = datadog.webhook(&name).expect("webhook created");
    assert_eq!(
        webhook["url"],
        daemon.api_url(&format!("/webhooks/datadog/{id}"))
    );
    assert_eq!(webhook["encode_as"], "json");
    let template: Value = serde_json::from_str(webhook["payload"].as_str().unwrap()).unwrap();
    for variable in TEMPLATE_VARIABLES {
        assert!(
            template
                .as_object()
                .unwrap()
                .values()
                .any(|v| v == variable),
            "{variable} missing from {template}"
        );
    }
    let headers: Value = serde_json::from_str(webhook["custom_headers"].as_str().unwrap()).unwrap();
    let secret = headers[SECRET_HEADER].as_str().unwrap().to_string();
    assert!(secret.len() >= 40, "a generated secret: {secret}");
    assert!(!done.to_string().contains(&secret), "installed, not shown");

    // Notifications: typed by their transition, de-duplicated on $ID.
    let trigger = [
        ("ID", "7310531063410186462"),
        ("EVENT_TYPE", "query_alert_monitor"),
        ("EVENT_TITLE", "[Triggered on {host:web-1}] CPU high"),
        ("DATE", "1764836000000"),
        ("LAST_UPDATED", "1764836000000"),
        ("ALERT_ID", "42"),
        ("ALERT_CYCLE_KEY", "cycle-42-1"),
        ("ALERT_TRANSITION", "Triggered"),
        ("ALERT_SCOPE", "host:web-1"),
        (
            "LINK",
            "https://app.datadoghq.com/event/event?id=7310531063410186462",
        ),
    ];
    let (status, answer) = notify(&daemon.http, &webhook, &trigger).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicate"], false);
    let (status, again) = notify(&daemon.http, &webhook, &trigger).await;
    assert_eq!(
        (status, &again["duplicate"]),
        (200, &json!(true)),
        "{again}"
    );
    let mut recovery = trigger;
    recovery[0].1 = "7310531063410186999";
    recovery[7].1 = "Recovered";
    let (status, _) = notify(&daemon.http, &webhook, &recovery).await;
    assert_eq!(status, 200);

    // A wrong or missing secret stores nothing.
    let mut forged = webhook.clone();
    forged["custom_headers"] = json!({SECRET_HEADER: "not-the-secret"}).to_string().into();
    let mut other = trigger;
    other[0].1 = "1";
    let (status, refused) = notify(&daemon.http, &forged, &other).await;
    assert_eq!(status, 401, "{refused}");
    forged["custom_headers"] = "{}".into();
    let (status, _) = notify(&daemon.http, &forged, &other).await;
    assert_eq!(status, 401);

    let found = stored(&daemon, &id).await;
    assert_eq!(found.len(), 2, "{found:?}");
    let types: Vec<&str> = found
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["monitor.recovered", "monitor.triggered"]);
    // The recovery names the cycle its trigger opened.
    assert_eq!(found[0]["payload"]["alert_cycle_key"], "cycle-42-1");
    let occurred = found[1]["occurred_at"].as_str().unwrap();
    assert!(
        occurred.starts_with("2025-12-04T08:13:20"),
        "$DATE: {occurred}"
    );

    // Nothing of the keys or the secret is in the database in the clear.
    let database = std::fs::read(daemon.data_dir.path().join("switchboard.db")).unwrap();
    for plain in [API_KEY, APPLICATION_KEY, secret.as_str()] {
        assert!(
            !database.windows(plain.len()).any(|w| w == plain.as_bytes()),
            "{plain} stored in the clear"
        );
    }

    // The tenant deletes the webhook in Datadog: validation says so, and the
    // integration stays active (its keys are good).
    let validate_path = format!("/admin/integrations/{id}/validate");
    let (status, validated) = daemon.post_json(&validate_path).await;
    assert_eq!(
        (status, &validated["valid"]),
        (200, &json!(true)),
        "{validated}"
    );
    let removed = datadog
        .state
        .webhooks
        .lock()
        .unwrap()
        .remove(&name)
        .unwrap();
    let (_, validated) = daemon.post_json(&validate_path).await;
    assert_eq!(validated["valid"], false);
    let reason = validated["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("the webhook {name} is gone")),
        "{reason}"
    );
    let (_, listed) = daemon
        .call_api(&token, "/integrations/list", json!({}))
        .await;
    assert_eq!(listed["integrations"][0]["status"], "active", "{listed}");
    datadog
        .state
        .webhooks
        .lock()
        .unwrap()
        .insert(name.clone(), removed);

    // The last request of Datadog's window: nothing more is sent before the reset.
    *datadog.state.validate_keys_exhausted_for.lock().unwrap() = Some(1);
    let webhook_checks = || {
        datadog
            .state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, method, path)| method == "GET" && path.ends_with(&name))
            .count()
    };
    let checked = webhook_checks();
    let (_, validated) = daemon.post_json(&validate_path).await;
    assert_eq!(validated["valid"], false, "{validated}");
    assert!(
        validated["reason"].as_str().unwrap().contains("rate limit"),
        "{validated}"
    );
    assert_eq!(webhook_checks(), checked, "held back until the reset");
    *datadog.state.validate_keys_exhausted_for.lock().unwrap() = None;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, validated) = daemon.post_json(&validate_path).await;
    assert_eq!(validated["valid"], true, "after the reset: {validated}");
    assert_eq!(webhook_checks(), checked + 1);

    // Keys revoked in Datadog: validation says so with Datadog's reason, and the
    // integration is in error.
    *datadog.state.home.lock().unwrap() = "us1".to_string();
    let (status, validated) = daemon
        .post_json(&format!("/admin/integrations/{id}/validate"))
        .await;
    assert_eq!(status, 200, "{validated}");
    assert_eq!(validated["valid"], false);
    let reason = validated["reason"].as_str().unwrap();
    assert!(
        reason.contains("Datadog refused the keys (403): Forbidden"),
        "{reason}"
    );
    let (_, listed) = daemon
        .call_api(&token, "/integrations/list", json!({}))
        .await;
    assert_eq!(listed["integrations"][0]["status"], "error", "{listed}");
    *datadog.state.home.lock().unwrap() = "us3".to_string();

    // Revoking deletes the webhook in Datadog; its URL is gone here.
    let (status, revoked) = daemon
        .call_api(
            &token,
            "/integrations/revoke",
            json!({"integration_id": id}),
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["at_provider"], "revoked");
    assert_eq!(*datadog.state.deleted_webhooks.lock().unwrap(), [name]);
    let (status, _) = notify(&daemon.http, &webhook, &other).await;
    assert_eq!(status, 404);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_without_a_site_are_tried_on_each_and_refusals_say_why() {
    let datadog = FakeDatadog::start("eu1").await;
    let daemon = TestDaemon::start_configured(&datadog.config_section("")).await;
    daemon.ready().await;
    let (_, token) = daemon.organization("Acme").await;

    // Refused keys: Datadog's reason, for the named site or for every site.
    let (status, refused) = connect(
        &daemon,
        &token,
        json!({"site": "eu1", "api_key": "wrong-key"}),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "provider_refused");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("(403): Forbidden"), "{message}");
    let (status, refused) = connect(&daemon, &token, json!({"api_key": "wrong-key"})).await;
    assert_eq!(status, 422, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no Datadog site accepts these keys"),
        "{message}"
    );
    for site in SITES {
        assert!(message.contains(&format!("{site}: ")), "{site}: {message}");
    }
    assert!(!message.contains("wrong-key"), "{message}");

    // A site Datadog does not have, and a field it does not take.
    let (status, refused) = connect(&daemon, &token, json!({"site": "mars1"})).await;
    assert_eq!(status, 422);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown Datadog site 'mars1' (known: us1, us3"),
        "{refused}"
    );
    let (status, refused) = connect(&daemon, &token, json!({"region": "eu"})).await;
    assert_eq!(status, 422, "{refused}");

    // Discovery stops at the first site that answers.
    let asked = datadog.validations().len();
    let done = connected(&daemon, &token, json!({})).await;
    assert_eq!(done["integration"]["metadata"]["site"], "eu1", "{done}");
    // The new actor's own validation, if it already ran, comes after the discovery.
    assert_eq!(
        datadog.validations()[asked..asked + 4],
        ["us1", "us3", "us5", "eu1"]
    );

    // Without the webhook: nothing is installed in Datadog, and the answer gives, once,
    // what to configure by hand; a notification so configured is taken.
    let webhooks = datadog.state.webhooks.lock().unwrap().len();
    let (_, initech) = daemon.organization("Initech").await;
    let done = connected(
        &daemon,
        &initech,
        json!({"site": "eu1", "webhook": "false"}),
    )
    .await;
    assert_eq!(datadog.state.webhooks.lock().unwrap().len(), webhooks);
    assert!(
        done["integration"]["metadata"]["webhook"].is_null(),
        "{done}"
    );
    let reveal = &done["reveal"];
    assert!(
        reveal["custom_headers"][SECRET_HEADER].is_string(),
        "{reveal}"
    );
    let by_hand = json!({
        "url": reveal["url"],
        "payload": reveal["payload"],
        "custom_headers": reveal["custom_headers"].to_string(),
    });
    let (status, answer) = notify(
        &daemon.http,
        &by_hand,
        &[("ID", "by-hand-1"), ("ALERT_TRANSITION", "Warn")],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicate"], false, "{answer}");

    // Where validate_keys is unavailable, the API key alone is checked with v1.
    datadog
        .state
        .validate_keys_missing
        .store(true, Ordering::SeqCst);
    let (_, globex) = daemon.organization("Globex").await;
    let done = connected(&daemon, &globex, json!({"site": "eu1"})).await;
    assert_eq!(
        done["integration"]["metadata"]["keys_checked"], "api_only",
        "{done}"
    );
    daemon.stop().await;
}

/// The saved poll cursor of an integration, as JSON.
async fn saved_cursor(store: &switchboard::store::Store, id: &str) -> Option<Value> {
    poll_cursors::get(store, id, "")
        .await
        .unwrap()
        .and_then(|row| row.cursor)
        .map(|cursor| serde_json::from_str(&cursor).unwrap())
}

async fn delivery_ids(store: &switchboard::store::Store, id: &str) -> Vec<String> {
    let mut ids: Vec<String> = events::list(store, None, Some(id), 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.delivery_id)
        .collect();
    ids.sort();
    ids
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn the_polled_stream_survives_a_restart_mid_sweep_and_an_alert_pushed_and_polled_is_stored_once(
    #[case] backend: Db,
) {
    let db = TestDb::new(backend).await.expect("database");
    let org = organizations::create(&db.store, "Acme").await.unwrap();
    let (_, token) = tokens::create(&db.store, &org.id).await.unwrap();
    let token = token.expose().clone();
    let datadog = FakeDatadog::start("us1").await;
    datadog.state.page_size.store(2, Ordering::SeqCst);
    let url = db.config.url.expose().clone();
    let config = format!(
        "[supervision]\nbackoff_base = \"10ms\"\nbackoff_cap = \"50ms\"\n\
         [integrations]\nvalidation_spread = \"0s\"\n{}",
        datadog.config_section("poll_interval = \"200ms\"\npoll_page_size = 2")
    );
    let daemon = TestDaemon::start_on(&url, &config).await;
    daemon.ready().await;
    let done = connected(&daemon, &token, json!({"site": "us1", "poll": "true"})).await;
    let id = done["integration"]["id"].as_str().unwrap().to_string();
    let webhook = datadog.webhook(&format!("switchboard-{id}")).unwrap();

    // Pushed first, then found in the stream too: one event.
    let (status, _) = notify(
        &daemon.http,
        &webhook,
        &[("ID", "1001"), ("ALERT_TRANSITION", "Triggered")],
    )
    .await;
    assert_eq!(status, 200);
    for n in 1001..=1005 {
        datadog.publish(&n.to_string(), "Triggered", 42);
    }
    let expected = |last: u32| -> Vec<String> { (1001..=last).map(|n| n.to_string()).collect() };
    until("the stream is stored", || async {
        delivery_ids(&db.store, &id).await.len() >= 5
    })
    .await;
    assert_eq!(delivery_ids(&db.store, &id).await, expected(1005));
    let paged = datadog
        .state
        .stream_queries
        .lock()
        .unwrap()
        .iter()
        .any(|q| q.contains_key("page[cursor]"));
    assert!(paged, "three pages of two");
    let queries = datadog.state.stream_queries.lock().unwrap().clone();
    assert_eq!(queries[0]["filter[query]"], "source:alert");
    assert_eq!(queries[0]["sort"], "timestamp");

    // A crash mid-sweep: the saved cursor is the sweep's second page.
    daemon.stop().await;
    let first = queries[0].clone();
    let mut row = poll_cursors::get(&db.store, &id, "")
        .await
        .unwrap()
        .unwrap();
    let after = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode("offset:2")
    };
    row.cursor = Some(
        json!({"from": first["filter[from]"].parse::<i64>().unwrap(),
               "to": chrono::Utc::now().timestamp_millis(), "after": after})
        .to_string(),
    );
    row.next_poll_at = None;
    poll_cursors::save(&db.store, &row).await.unwrap();
    let asked = queries.len();
    datadog.publish("1006", "Recovered", 42);
    let daemon = TestDaemon::start_on(&url, &config).await;
    daemon.ready().await;
    until("the new alert is stored", || async {
        delivery_ids(&db.store, &id).await.len() >= 6
    })
    .await;
    let resumed = datadog.state.stream_queries.lock().unwrap()[asked].clone();
    assert_eq!(resumed.get("page[cursor]"), Some(&after), "{resumed:?}");
    // Nothing lost, nothing twice, and the sweep over.
    until("the sweep ends", || async {
        saved_cursor(&db.store, &id)
            .await
            .is_some_and(|c| c.get("after").is_none())
    })
    .await;
    assert_eq!(delivery_ids(&db.store, &id).await, expected(1006));
    let recovered = events::list(&db.store, None, Some(&id), 1000)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.delivery_id == "1006")
        .unwrap();
    assert_eq!(recovered.event_type, "monitor.recovered");
    let payload: Value = serde_json::from_str(&recovered.payload).unwrap();
    assert_eq!(payload["source"], "poll");
    assert_eq!(payload["alert_cycle_key"], "42-host:web-1");

    // A page cursor Datadog no longer accepts (they expire): the sweep starts again
    // from its beginning, and what it reads again is dropped as duplicates.
    daemon.stop().await;
    let mut row = poll_cursors::get(&db.store, &id, "")
        .await
        .unwrap()
        .unwrap();
    let first_from = first["filter[from]"].parse::<i64>().unwrap();
    row.cursor = Some(
        json!({"from": first_from, "to": chrono::Utc::now().timestamp_millis(), "after": "expired"})
            .to_string(),
    );
    row.next_poll_at = None;
    poll_cursors::save(&db.store, &row).await.unwrap();
    let asked = datadog.state.stream_queries.lock().unwrap().len();
    datadog.publish("1007", "Warn", 42);
    let daemon = TestDaemon::start_on(&url, &config).await;
    daemon.ready().await;
    until("the alert after the expired cursor is stored", || async {
        delivery_ids(&db.store, &id).await.len() >= 7
    })
    .await;
    let queries = datadog.state.stream_queries.lock().unwrap()[asked..].to_vec();
    assert_eq!(
        queries[0].get("page[cursor]").map(String::as_str),
        Some("expired")
    );
    assert!(
        !queries[1].contains_key("page[cursor]")
            && queries[1]["filter[from]"] == first_from.to_string(),
        "the sweep starts again: {queries:?}"
    );
    assert_eq!(delivery_ids(&db.store, &id).await, expected(1007));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_github_event_is_posted_to_datadog_and_a_429_is_waited_out() {
    let github = FakeGithub::start().await;
    github.install(42, "acme", 1);
    let datadog = FakeDatadog::start("us1").await;
    let daemon = TestDaemon::start_configured(&format!(
        "{}{}",
        github.config_section(),
        datadog.config_section("")
    ))
    .await;
    daemon.ready().await;
    let (_, token) = daemon.organization("Acme").await;
    fake_github::connect(&github, &daemon, &token, 42).await;
    connected(&daemon, &token, json!({"site": "us1"})).await;
    let (status, created) = daemon
        .call_api(
            &token,
            "/routes/create",
            json!({"connector": "github", "event_type": "pull_request.*", "action": "datadog.event",
                   "settings": {"tags": ["team:platform"]}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    // Datadog's limit is spent: the first post is answered 429, resetting in 1 s.
    *datadog.state.rate_limit_posts.lock().unwrap() = Some((1, Some(1)));

    let (status, answer) = fake_github::deliver(
        &daemon,
        "pull_request",
        "delivery-datadog-1",
        &fake_github::pull_request(42, 7),
        WEBHOOK_SECRET,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let event_id = answer["id"].as_str().unwrap().to_string();
    until("Datadog has the event", || async {
        datadog.state.posted.lock().unwrap().len() == 2
    })
    .await;
    let posted = datadog.state.posted.lock().unwrap().clone();
    assert_eq!(posted[0].1, json!({"refused": 429}));
    assert!(
        posted[1].0 - posted[0].0 >= Duration::from_millis(950),
        "sent again only after the reset: {:?}",
        posted[1].0 - posted[0].0
    );
    let body = &posted[1].1;
    let title = body["title"].as_str().unwrap();
    assert!(title.contains("Add a feature"), "{body}");
    let tags: Vec<&str> = body["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for tag in [
        "source:switchboard",
        "switchboard_connector:github",
        "switchboard_event_type:pull_request.opened",
        &format!("switchboard_event_id:{event_id}"),
        "team:platform",
    ] {
        assert!(tags.contains(&tag), "{tag} not in {tags:?}");
    }
    assert_eq!(body["aggregation_key"], format!("switchboard-{event_id}"));
    until("the event is done", || async {
        let (_, event) = daemon.get_json(&format!("/admin/events/{event_id}")).await;
        event["status"] == "done"
    })
    .await;
    let (_, event) = daemon.get_json(&format!("/admin/events/{event_id}")).await;
    // The wait was not a failed attempt.
    assert_eq!(
        (&event["attempts"], &event["last_error"]),
        (&json!(0), &Value::Null),
        "{event}"
    );
    daemon.stop().await;
}
