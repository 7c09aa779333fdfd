//! The event pipeline end to end, on SQLite and on PostgreSQL: generic signed
//! webhooks in, durable inbox, ordered processing, retries, dead letters, routes out.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::TestDaemon;
use common::db::{Db, TestDb};
use common::webhooks::{Receiver, connect_webhook, send};
use rstest::rstest;
use serde_json::{Value, json};
use switchboard::pipeline::standard_webhooks::{self, unix_now};
use switchboard::secret::Secret;
use switchboard::store::{events, organizations, tokens};

const ROUTE_SECRET: &str = "whsec_cm91dGUtc2VjcmV0LWZvci10ZXN0cw==";

struct Setup {
    daemon: TestDaemon,
    receiver: Receiver,
    url: String,
    secret: Secret,
    integration_id: String,
    _db: TestDb,
}

/// A daemon with the webhook connector, one route for `order.*` events to a receiver,
/// and one connected generic webhook.
async fn setup(backend: Db, pipeline: &str) -> Option<Setup> {
    let db = TestDb::new(backend).await?;
    let org = organizations::create(&db.store, "Acme").await.unwrap();
    let (_, token) = tokens::create(&db.store, &org.id).await.unwrap();
    let (receiver, addr) = Receiver::start().await;
    let extra = format!(
        "[connectors.webhook]\n[pipeline]\nretry_base = \"10ms\"\nretry_cap = \"40ms\"\n{pipeline}\n\
         [[routes]]\norganization_id = \"{}\"\nconnector = \"webhook\"\nevent_type = \"order.*\"\n\
         action = \"http.forward\"\nurl = \"http://{addr}/hook\"\nsecret = \"{ROUTE_SECRET}\"\n",
        org.id
    );
    let daemon = TestDaemon::start_on(db.config.url.expose(), &extra).await;
    daemon.ready().await;

    let (url, secret, integration_id) = connect_webhook(&daemon, token.expose()).await;
    Some(Setup {
        daemon,
        receiver,
        url,
        secret,
        integration_id,
        _db: db,
    })
}

async fn events_of(setup: &Setup, status: &str) -> Vec<Value> {
    let (code, body) = setup
        .daemon
        .get_json(&format!(
            "/admin/events?status={status}&integration_id={}&limit=1000",
            setup.integration_id
        ))
        .await;
    assert_eq!(code, 200, "{body}");
    // The admin listing is newest first: these helpers hand events in stored order.
    let mut found = body["events"].as_array().unwrap().clone();
    found.reverse();
    found
}

async fn wait_for(setup: &Setup, status: &str, count: usize) -> Vec<Value> {
    for _ in 0..500 {
        let found = events_of(setup, status).await;
        if found.len() >= count {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "never {count} {status} events: {:?}",
        events_of(setup, status).await
    );
}

fn order(n: usize) -> String {
    json!({"type": "order.created", "order": n}).to_string()
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_stored_once_processed_in_order_and_forwarded_signed(#[case] backend: Db) {
    let Some(setup) = setup(backend, "").await else {
        return;
    };
    let http = reqwest::Client::new();
    let now = unix_now();

    // 40 concurrent senders, then a redelivery of one of them.
    let sends: Vec<_> = (0..40)
        .map(|n| {
            let (http, url, secret) = (http.clone(), setup.url.clone(), setup.secret.clone());
            tokio::spawn(async move {
                send(
                    &http,
                    &url,
                    &secret,
                    &format!("msg_{n}"),
                    now,
                    &order(n),
                    None,
                )
                .await
            })
        })
        .collect();
    for sent in sends {
        let (status, body) = sent.await.unwrap();
        assert_eq!(
            (status, body["duplicate"].clone()),
            (200, json!(false)),
            "{body}"
        );
    }
    let (status, body) = send(
        &http,
        &setup.url,
        &setup.secret,
        "msg_7",
        now,
        &order(7),
        None,
    )
    .await;
    assert_eq!(
        (status, body["duplicate"].clone()),
        (200, json!(true)),
        "a redelivery is acknowledged"
    );
    let (status, _) = send(
        &http,
        &setup.url,
        &setup.secret,
        "msg_user",
        now,
        r#"{"type":"user.created"}"#,
        None,
    )
    .await;
    assert_eq!(status, 200);
    // No route takes it and generic webhooks have no handler: with nothing left to do,
    // it is `done` by the time it is acknowledged, without waiting in the queue.
    let settled = events_of(&setup, "done").await;
    assert!(
        settled.iter().any(|e| e["delivery_id"] == "msg_user"),
        "{settled:?}"
    );

    let done = wait_for(&setup, "done", 41).await;
    assert_eq!(done.len(), 41, "stored once each");
    // Forwarded in the order they were stored, each signed with the route's secret.
    let stored_order: Vec<Value> = done
        .iter()
        .filter(|e| e["event_type"] == "order.created")
        .map(|e| e["id"].clone())
        .collect();
    let envelopes = setup.receiver.envelopes();
    let forwarded: Vec<Value> = envelopes.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(
        forwarded, stored_order,
        "order kept, the user.created event not routed"
    );
    let route_secret = Secret::new(ROUTE_SECRET);
    for (headers, body) in setup.receiver.received.lock().unwrap().iter() {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let verified = standard_webhooks::verify(
            &route_secret,
            header(standard_webhooks::ID),
            header(standard_webhooks::TIMESTAMP),
            header(standard_webhooks::SIGNATURE),
            body,
            Duration::from_secs(300),
            unix_now(),
        );
        assert!(verified.is_ok(), "{verified:?}");
    }
    let envelope = &envelopes[0];
    for field in [
        "id",
        "organization_id",
        "integration_id",
        "connector",
        "event_type",
        "delivery_id",
        "occurred_at",
        "received_at",
        "payload",
    ] {
        assert!(
            envelope.get(field).is_some(),
            "{field} missing from {envelope}"
        );
    }
    assert_eq!(envelope["payload"]["type"], "order.created");

    let metrics = setup
        .daemon
        .http
        .get(setup.daemon.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("switchboard_events_received_total 41"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_events_duplicate_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_events_processed_total 41"),
        "forwarded and settled events both count as processed: {metrics}"
    );
    // Webhook requests, by connector and outcome.
    for counted in [
        "switchboard_webhooks_total{connector=\"webhook\",outcome=\"stored\"} 41",
        "switchboard_webhooks_total{connector=\"webhook\",outcome=\"duplicate\"} 1",
    ] {
        assert!(metrics.contains(counted), "{counted} in {metrics}");
    }
    setup.daemon.stop().await;
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn only_correctly_signed_webhooks_are_stored(#[case] backend: Db) {
    let Some(setup) = setup(backend, "max_body_bytes = 2048").await else {
        return;
    };
    let http = reqwest::Client::new();
    let now = unix_now();
    let body = order(1);
    let wrong = Secret::new("whsec_d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA==");
    let valid = standard_webhooks::sign(&setup.secret, "msg_ok", now, body.as_bytes()).unwrap();

    let cases = [
        (
            "wrong secret",
            send(&http, &setup.url, &wrong, "msg_a", now, &body, None).await,
        ),
        (
            "stale timestamp",
            send(
                &http,
                &setup.url,
                &setup.secret,
                "msg_b",
                now - 301,
                &body,
                None,
            )
            .await,
        ),
        (
            "tampered body",
            send(
                &http,
                &setup.url,
                &setup.secret,
                "msg_c",
                now,
                &order(2),
                Some(
                    standard_webhooks::sign(&setup.secret, "msg_c", now, body.as_bytes()).unwrap(),
                ),
            )
            .await,
        ),
    ];
    for (name, (status, answer)) in &cases {
        assert_eq!(*status, 401, "{name}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_signature");
    }
    let several = format!("v1,AAAA v2,whatever {valid}");
    let (status, _) = send(
        &http,
        &setup.url,
        &setup.secret,
        "msg_ok",
        now,
        &body,
        Some(several),
    )
    .await;
    assert_eq!(status, 200, "one valid signature among several");
    let big = json!({"type": "order.big", "pad": "x".repeat(4096)}).to_string();
    let (status, answer) = send(&http, &setup.url, &setup.secret, "msg_big", now, &big, None).await;
    assert_eq!(status, 413, "{answer}");
    let unknown = setup.url.replace(
        &setup.integration_id,
        "00000000-0000-0000-0000-000000000000",
    );
    assert_eq!(
        send(&http, &unknown, &setup.secret, "msg_d", now, &body, None)
            .await
            .0,
        404
    );

    let all = events::list(&setup.daemon.store, None, Some(&setup.integration_id), 100)
        .await
        .unwrap();
    assert_eq!(
        all.iter()
            .map(|e| e.delivery_id.as_str())
            .collect::<Vec<_>>(),
        ["msg_ok"],
        "nothing refused was stored"
    );
    setup.daemon.stop().await;
}

/// A webhook-id is chosen by each tenant's own sender: two organizations sending the
/// same one both have their event stored, and each is answered with its own event's id,
/// never the other's.
#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn the_same_webhook_id_from_two_organizations_is_stored_for_each(#[case] backend: Db) {
    let Some(setup) = setup(backend, "").await else {
        return;
    };
    let (_, other_token) = setup.daemon.organization("Globex").await;
    let (other_url, other_secret, other_integration) =
        connect_webhook(&setup.daemon, &other_token).await;
    let http = reqwest::Client::new();
    let now = unix_now();
    let body = order(1);
    let (status, first) = send(
        &http,
        &setup.url,
        &setup.secret,
        "order-1001",
        now,
        &body,
        None,
    )
    .await;
    assert_eq!(
        (status, &first["duplicate"]),
        (200, &json!(false)),
        "{first}"
    );
    let (status, second) = send(
        &http,
        &other_url,
        &other_secret,
        "order-1001",
        now,
        &body,
        None,
    )
    .await;
    assert_eq!(
        (status, &second["duplicate"]),
        (200, &json!(false)),
        "{second}"
    );
    assert_ne!(first["id"], second["id"], "each tenant gets its own event");
    // A redelivery within one integration is still a duplicate, answered with its own id.
    let (_, again) = send(
        &http,
        &other_url,
        &other_secret,
        "order-1001",
        now,
        &body,
        None,
    )
    .await;
    assert_eq!(
        (&again["duplicate"], &again["id"]),
        (&json!(true), &second["id"])
    );

    for (integration, answered) in [
        (&setup.integration_id, &first),
        (&other_integration, &second),
    ] {
        let stored = events::list(&setup.daemon.store, None, Some(integration), 10)
            .await
            .unwrap();
        assert_eq!(stored.len(), 1, "{integration}: {stored:?}");
        assert_eq!(stored[0].id, answered["id"].as_str().unwrap());
        assert_eq!(stored[0].delivery_id, "order-1001");
    }
    setup.daemon.stop().await;
}

/// Delivery ids that are empty or over-long are refused with a clear 400, and a body
/// that is not UTF-8 with a 415: nothing of them is stored. A UTF-8 body is stored
/// exactly as it was signed.
#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn odd_ids_and_bodies_are_refused_and_text_is_stored_exactly(#[case] backend: Db) {
    let Some(setup) = setup(backend, "").await else {
        return;
    };
    let http = reqwest::Client::new();
    let now = unix_now();
    let body = order(1);
    let (status, answer) = send(&http, &setup.url, &setup.secret, "", now, &body, None).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("empty"),
        "{answer}"
    );
    let long = "x".repeat(201);
    let (status, answer) = send(&http, &setup.url, &setup.secret, &long, now, &body, None).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("longer"),
        "{answer}"
    );
    let (status, _) = send(
        &http,
        &setup.url,
        &setup.secret,
        &"y".repeat(200),
        now,
        &body,
        None,
    )
    .await;
    assert_eq!(status, 200, "an id of 200 bytes is kept");

    // Latin-1 bytes: not UTF-8. Correctly signed, yet refused rather than altered.
    let latin1: &[u8] = b"{\"type\":\"order.created\",\"name\":\"Jos\xe9\"}";
    let signature = standard_webhooks::sign(&setup.secret, "msg_latin1", now, latin1).unwrap();
    let response = http
        .post(&setup.url)
        .header(standard_webhooks::ID, "msg_latin1")
        .header(standard_webhooks::TIMESTAMP, now.to_string())
        .header(standard_webhooks::SIGNATURE, signature)
        .body(latin1.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "unsupported_encoding", "{answer}");

    let text = "{\"type\":\"order.created\",\"name\":\"José\",\"note\":\"\\u00e9 \\\\ ✓\"}";
    let (status, stored) = send(
        &http,
        &setup.url,
        &setup.secret,
        "msg_utf8",
        now,
        text,
        None,
    )
    .await;
    assert_eq!(status, 200, "{stored}");

    let all = events::list(&setup.daemon.store, None, Some(&setup.integration_id), 100)
        .await
        .unwrap();
    let mut ids: Vec<&str> = all.iter().map(|e| e.delivery_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        ["msg_utf8", "y".repeat(200).as_str()],
        "nothing refused was stored"
    );
    let utf8 = all.iter().find(|e| e.delivery_id == "msg_utf8").unwrap();
    assert_eq!(
        utf8.payload.as_bytes(),
        text.as_bytes(),
        "stored byte for byte"
    );
    setup.daemon.stop().await;
}

/// Batches smaller than the load (`max_batch = 2`): the inbox writes whenever two new
/// events or processed ids wait, and nothing is lost or reordered.
#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn inbox_batches_smaller_than_the_load_lose_and_reorder_nothing(#[case] backend: Db) {
    let Some(setup) = setup(backend, "max_batch = 2").await else {
        return;
    };
    let http = reqwest::Client::new();
    let now = unix_now();
    let sends: Vec<_> = (0..30)
        .map(|n| {
            let (http, url, secret) = (http.clone(), setup.url.clone(), setup.secret.clone());
            tokio::spawn(async move {
                send(
                    &http,
                    &url,
                    &secret,
                    &format!("small_{n}"),
                    now,
                    &order(n),
                    None,
                )
                .await
            })
        })
        .collect();
    for sent in sends {
        assert_eq!(sent.await.unwrap().0, 200);
    }
    let done = wait_for(&setup, "done", 30).await;
    assert_eq!(done.len(), 30);
    let stored_order: Vec<Value> = done.iter().map(|e| e["id"].clone()).collect();
    let forwarded: Vec<Value> = setup
        .receiver
        .envelopes()
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(
        forwarded, stored_order,
        "forwarded once each, in stored order"
    );
    setup.daemon.stop().await;
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn failures_are_retried_then_dead_and_a_replay_delivers(#[case] backend: Db) {
    let Some(setup) = setup(backend, "max_attempts = 3").await else {
        return;
    };
    let http = reqwest::Client::new();

    // Two failures, then the route answers: done on the third attempt.
    setup.receiver.fail_next.store(2, Ordering::SeqCst);
    assert_eq!(
        send(
            &http,
            &setup.url,
            &setup.secret,
            "msg_retry",
            unix_now(),
            &order(1),
            None
        )
        .await
        .0,
        200
    );
    let done = wait_for(&setup, "done", 1).await;
    assert_eq!(done[0]["attempts"], 2, "{done:?}");

    // Three failures: out of attempts, dead with its last error; later events still flow.
    setup.receiver.fail_next.store(3, Ordering::SeqCst);
    assert_eq!(
        send(
            &http,
            &setup.url,
            &setup.secret,
            "msg_dead",
            unix_now(),
            &order(2),
            None
        )
        .await
        .0,
        200
    );
    let dead = wait_for(&setup, "dead", 1).await;
    assert!(
        dead[0]["last_error"].as_str().unwrap().contains("503"),
        "{dead:?}"
    );
    assert_eq!(
        send(
            &http,
            &setup.url,
            &setup.secret,
            "msg_after",
            unix_now(),
            &order(3),
            None
        )
        .await
        .0,
        200
    );
    wait_for(&setup, "done", 2).await;

    // Replayed once the route is healthy: processed again, done.
    let id = dead[0]["id"].as_str().unwrap();
    let (status, replayed) = setup
        .daemon
        .post_json(&format!("/admin/events/{id}/replay"))
        .await;
    assert_eq!(
        (status, replayed["event"]["status"].clone()),
        (200, json!("pending")),
        "{replayed}"
    );
    wait_for(&setup, "done", 3).await;
    assert!(events_of(&setup, "dead").await.is_empty());
    assert_eq!(
        setup.daemon.post_json("/admin/events/nope/replay").await.0,
        404
    );
    setup.daemon.stop().await;
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn restarting_the_connector_under_load_loses_and_refuses_nothing(#[case] backend: Db) {
    let Some(setup) = setup(backend, "").await else {
        return;
    };
    let http = reqwest::Client::new();
    let sender = {
        let (http, url, secret) = (http.clone(), setup.url.clone(), setup.secret.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for n in 0..150 {
                let (status, _) = send(
                    &http,
                    &url,
                    &secret,
                    &format!("load_{n}"),
                    unix_now(),
                    &order(n),
                    None,
                )
                .await;
                statuses.push(status);
            }
            statuses
        })
    };
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let (status, body) = setup
            .daemon
            .post_json("/admin/connectors/webhook/restart")
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let statuses = sender.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every webhook acknowledged: {statuses:?}"
    );
    let done = wait_for(&setup, "done", 150).await;
    assert_eq!(done.len(), 150);
    let (_, connector) = setup
        .daemon
        .get_json("/admin/connectors/webhook?depth=0")
        .await;
    assert_eq!(connector["manual_restarts"], 3);
    setup.daemon.stop().await;
}

/// The admin listing an operator reads: newest first, a page at a time with cursors
/// that keep the filters, filters by type, connector and time, the payload as JSON
/// when it is JSON, RFC 3339 times, one event by id, and a 404 for an integration
/// that does not exist.
#[tokio::test(flavor = "multi_thread")]
async fn admin_events_page_newest_first_with_filters_and_readable_payloads() {
    let setup = setup(Db::Sqlite, "").await.expect("SQLite always runs");
    let http = reqwest::Client::new();
    let now = unix_now();
    let mut sent = Vec::new();
    for (n, body) in [
        r#"{"type":"order.created","n":1}"#,
        r#"{"type":"order.shipped","n":2}"#,
        r#"{"type":"order.created","n":3}"#,
        "plain text, not JSON",
        r#"{"type":"order.created","n":5}"#,
    ]
    .into_iter()
    .enumerate()
    {
        let (status, answer) = send(
            &http,
            &setup.url,
            &setup.secret,
            &format!("m{n}"),
            now,
            body,
            None,
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        sent.push(answer["id"].as_str().unwrap().to_string());
    }
    let daemon = &setup.daemon;
    let get =
        |query: String| async move { daemon.get_json(&format!("/admin/events?{query}")).await };
    let ids = |page: &Value| -> Vec<String> {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    let id = &setup.integration_id;
    let (status, first) = get(format!("integration_id={id}&limit=2")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        ids(&first),
        [sent[4].clone(), sent[3].clone()],
        "newest first"
    );
    let (_, second) = get(first["next"].as_str().unwrap().to_string()).await;
    assert_eq!(ids(&second), [sent[2].clone(), sent[1].clone()]);
    let (_, third) = get(second["next"].as_str().unwrap().to_string()).await;
    assert_eq!(ids(&third), [sent[0].clone()]);
    assert!(third["next"].is_null(), "{third}");
    let (_, back) = get(second["prev"].as_str().unwrap().to_string()).await;
    assert_eq!(ids(&back), ids(&first), "prev leads back");

    let (_, created) = get(format!("integration_id={id}&event_type=order.created")).await;
    assert_eq!(
        ids(&created),
        [sent[4].clone(), sent[2].clone(), sent[0].clone()]
    );
    let (_, text) = get("connector=webhook&event_type=webhook".to_string()).await;
    let text = &text["events"][0];
    assert_eq!(
        (&text["payload"], &text["payload_format"]),
        (&json!("plain text, not JSON"), &json!("text"))
    );
    let (_, none) = get("connector=github".to_string()).await;
    assert!(ids(&none).is_empty());
    let (_, later) = get("since=2100-01-01T00:00:00Z".to_string()).await;
    assert!(ids(&later).is_empty());
    let (_, earlier) = get("until=2100-01-01T00:00:00Z&limit=1000".to_string()).await;
    assert_eq!(ids(&earlier).len(), 5);
    let (status, bad) = get("since=yesterday".to_string()).await;
    assert_eq!(status, 400, "{bad}");
    let (status, unknown) =
        get("integration_id=00000000-0000-0000-0000-000000000000".to_string()).await;
    assert_eq!(status, 404, "{unknown}");

    let (status, one) = setup
        .daemon
        .get_json(&format!("/admin/events/{}", sent[1]))
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["payload"]["type"], "order.shipped");
    assert_eq!(one["payload_format"], "json");
    assert_eq!(one["attempts"], 0);
    assert!(one["received_at"].as_str().unwrap().ends_with('Z'), "{one}");
    assert_eq!(setup.daemon.get_json("/admin/events/nope").await.0, 404);
    setup.daemon.stop().await;
}
