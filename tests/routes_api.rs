//! Tenant routes through the tenant API: created, listed, tested and deleted by the
//! organization's own token, effective at once, kept across restarts, secrets sealed.

mod common;

use std::time::Duration;

use common::TestDaemon;
use common::db::{Db, TestDb};
use common::webhooks::{Receiver, connect_webhook, send};
use rstest::rstest;
use serde_json::{Value, json};
use switchboard::pipeline::standard_webhooks::{self, unix_now};
use switchboard::secret::Secret;
use switchboard::store::{organizations, routes, tokens};

async fn start(db: &TestDb) -> TestDaemon {
    let daemon = TestDaemon::start_on(
        db.config.url.expose(),
        "[connectors.webhook]\n[pipeline]\nretry_base = \"10ms\"\nretry_cap = \"40ms\"\n",
    )
    .await;
    daemon.ready().await;
    daemon
}

/// Waits until the receiver has `count` requests.
async fn received(receiver: &Receiver, count: usize) -> Vec<Value> {
    for _ in 0..400 {
        if receiver.envelopes().len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    receiver.envelopes()
}

/// Sends a signed generic webhook of `event_type`; the status.
async fn deliver(daemon: &TestDaemon, url: &str, secret: &Secret, id: &str, kind: &str) -> u16 {
    let body = json!({"type": kind, "n": id}).to_string();
    send(&daemon.http, url, secret, id, unix_now(), &body, None)
        .await
        .0
}

/// The receiver's `index`th request is signed with `secret` (Standard Webhooks).
fn assert_signed(receiver: &Receiver, index: usize, secret: &str) {
    let requests = receiver.received.lock().unwrap();
    let (headers, body) = &requests[index];
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    standard_webhooks::verify(
        &Secret::new(secret),
        header(standard_webhooks::ID),
        header(standard_webhooks::TIMESTAMP),
        header(standard_webhooks::SIGNATURE),
        body,
        Duration::from_secs(300),
        unix_now(),
    )
    .unwrap_or_else(|e| panic!("request {index} is not signed with the route's secret: {e:?}"));
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn a_route_created_through_the_api_forwards_at_once_and_after_a_restart(#[case] backend: Db) {
    let db = TestDb::new(backend).await.expect("database");
    let org = organizations::create(&db.store, "Acme").await.unwrap();
    let (_, token) = tokens::create(&db.store, &org.id).await.unwrap();
    let token = token.expose().clone();
    let (receiver, addr) = Receiver::start().await;
    let daemon = start(&db).await;
    let (url, secret, _) = connect_webhook(&daemon, &token).await;

    // No secret given: one is generated, and shown this once.
    let (status, created) = daemon
        .call_api(
            &token,
            "/routes/create",
            json!({"connector": "webhook", "event_type": "order.*", "action": "http.forward",
                   "settings": {"url": format!("http://{addr}/hook")}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let route_id = created["route"]["id"].as_str().unwrap().to_string();
    let route_secret = created["generated"]["secret"].as_str().unwrap().to_string();
    assert!(route_secret.starts_with("whsec_"), "{created}");
    assert!(created["route"]["settings"].get("secret").is_none());

    // Effective at once: no restart.
    assert_eq!(
        deliver(&daemon, &url, &secret, "msg_1", "order.created").await,
        200
    );
    assert_eq!(
        deliver(&daemon, &url, &secret, "msg_2", "invoice.paid").await,
        200
    );
    let forwarded = received(&receiver, 1).await;
    assert_eq!(forwarded.len(), 1, "{forwarded:?}");
    assert_eq!(forwarded[0]["event_type"], "order.created");
    // Signed with the generated secret.
    assert_signed(&receiver, 0, &route_secret);

    // Listed without its secret; stored without it in the clear.
    let (status, listed) = daemon.call_api(&token, "/routes/list", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(listed["routes"][0]["id"], route_id.as_str());
    assert_eq!(listed["routes"][0]["has_secret_settings"], true);
    assert!(!listed.to_string().contains(&route_secret));
    let rows = routes::list(&db.store, &org.id).await.unwrap();
    let ciphertext = rows[0].secrets.as_ref().expect("sealed secret");
    let secret_bytes = route_secret.as_bytes();
    assert!(
        !ciphertext
            .windows(secret_bytes.len())
            .any(|w| w == secret_bytes)
    );
    assert!(!rows[0].settings.contains(&route_secret));

    // A new daemon on the same database runs the route from the store.
    let old_api = daemon.api.to_string();
    daemon.stop().await;
    let daemon = start(&db).await;
    let url = url.replace(&old_api, &daemon.api.to_string());
    assert_eq!(
        deliver(&daemon, &url, &secret, "msg_3", "order.shipped").await,
        200
    );
    let forwarded = received(&receiver, 2).await;
    assert_eq!(forwarded.len(), 2, "{forwarded:?}");
    assert_eq!(forwarded[1]["event_type"], "order.shipped");

    // A key rotation moves the route's sealed settings under the new key too, and a
    // daemon that reads them back signs with the same secret.
    let before = routes::list(&db.store, &org.id).await.unwrap()[0].clone();
    let (status, started) = daemon.post_json("/admin/vault/rotate").await;
    assert_eq!(status, 202, "{started}");
    let new_key = started["new_key_id"].as_str().unwrap().to_string();
    let mut vault = Value::Null;
    for _ in 0..200 {
        vault = daemon.get_json("/admin/vault").await.1;
        if vault["rotation"]["state"] == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(vault["rotation"]["report"]["route_settings"], 1, "{vault}");
    let after = routes::list(&db.store, &org.id).await.unwrap()[0].clone();
    assert_eq!(after.encryption_key_id.as_deref(), Some(new_key.as_str()));
    assert_ne!(after.encryption_key_id, before.encryption_key_id);
    assert_ne!(after.secrets, before.secrets);
    // Read back from the store by a new daemon: the re-encrypted settings open.
    let old_api = daemon.api.to_string();
    daemon.stop().await;
    let daemon = start(&db).await;
    let url = url.replace(&old_api, &daemon.api.to_string());
    assert_eq!(
        deliver(&daemon, &url, &secret, "msg_5", "order.rotated").await,
        200
    );
    let forwarded = received(&receiver, 3).await;
    assert_eq!(forwarded[2]["event_type"], "order.rotated");
    assert_signed(&receiver, 2, &route_secret);

    // Deleted: the next event goes nowhere.
    let (status, _) = daemon
        .call_api(&token, "/routes/delete", json!({"route_id": route_id}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        deliver(&daemon, &url, &secret, "msg_4", "order.lost").await,
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.envelopes().len(), 3);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_are_the_organizations_own_and_bad_ones_are_refused_by_name() {
    let db = TestDb::new(Db::Sqlite).await.expect("database");
    let daemon = start(&db).await;
    let (_, acme) = daemon.organization("Acme").await;
    let (_, other) = daemon.organization("Other").await;
    let (receiver, addr) = Receiver::start().await;
    let hook = format!("http://{addr}/hook");

    // Each bad route is refused with the status and a message naming what is wrong.
    let refusals = [
        (
            json!({"connector": "webhook", "action": "http.forward", "settings": {}}),
            422,
            "settings.url",
        ),
        (
            json!({"connector": "webhook", "action": "http.forward",
                "settings": {"url": hook, "secret": "not-a-whsec"}}),
            422,
            "settings.secret",
        ),
        (
            json!({"connector": "webhook", "action": "http.forward",
                "settings": {"url": hook, "colour": "red"}}),
            422,
            "colour",
        ),
        (
            json!({"connector": "webhook", "action": "fax.send"}),
            422,
            "fax.send",
        ),
        (
            json!({"connector": "nowhere", "action": "http.forward", "settings": {"url": hook}}),
            404,
            "nowhere",
        ),
    ];
    for (route, status, named) in refusals {
        let (code, body) = daemon
            .call_api(&acme, "/routes/create", route.clone())
            .await;
        assert_eq!(code, status, "{route}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{route}: {body}");
    }
    let (status, _) = daemon
        .call_api("not-a-token", "/routes/list", json!({}))
        .await;
    assert_eq!(status, 401);

    let (status, created) = daemon
        .call_api(
            &acme,
            "/routes/create",
            json!({"connector": "webhook", "event_type": "order.*",
            "action": "http.forward", "settings": {"url": hook}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let route_id = created["route"]["id"].as_str().unwrap();

    // Another organization neither sees, tests nor deletes it.
    let (_, listed) = daemon.call_api(&other, "/routes/list", json!({})).await;
    assert_eq!(listed["routes"], json!([]));
    for path in ["/routes/test", "/routes/delete"] {
        let (status, body) = daemon
            .call_api(&other, path, json!({"route_id": route_id}))
            .await;
        assert_eq!(status, 404, "{path}: {body}");
    }

    // The test sends one synthetic event through the route and says how it went.
    let (status, tested) = daemon
        .call_api(&acme, "/routes/test", json!({"route_id": route_id}))
        .await;
    assert_eq!(
        (status, tested["ok"].clone()),
        (200, json!(true)),
        "{tested}"
    );
    let forwarded = received(&receiver, 1).await;
    assert_eq!(forwarded[0]["event_type"], "order.test");
    assert_eq!(forwarded[0]["payload"]["switchboard_route_test"], true);
    receiver
        .fail_next
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let (status, tested) = daemon
        .call_api(&acme, "/routes/test", json!({"route_id": route_id}))
        .await;
    assert_eq!(
        (status, tested["ok"].clone()),
        (200, json!(false)),
        "{tested}"
    );
    assert!(
        tested["error"].as_str().unwrap().contains("503"),
        "{tested}"
    );
    daemon.stop().await;
}
