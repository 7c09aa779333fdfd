//! Polling, the third intake beside webhooks and sockets: each integration of a
//! connector that polls fetches its feed page by page, stores what it finds through
//! the inbox, and saves its cursor only once that is durable.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::TestDaemon;
use common::db::{Db, TestDb};
use common::feed::{API_KEY, FakeFeed, FeedConnector};
use rstest::rstest;
use serde_json::{Value, json};
use switchboard::connectors::ConnectorSet;
use switchboard::connectors::section::CommonSettings;
use switchboard::store::{events, organizations, poll_cursors, tokens};

const FAST: &str = "[supervision]\nbackoff_base = \"10ms\"\nbackoff_cap = \"50ms\"\n\
                    [integrations]\nvalidation_spread = \"0s\"\n";

fn feed_connectors(feed: &FakeFeed, every: Duration) -> ConnectorSet {
    ConnectorSet::default().with_settings(
        Arc::new(FeedConnector::new(feed)),
        CommonSettings {
            poll_interval: Some(every),
            ..CommonSettings::default()
        },
    )
}

/// Connects the feed for the token's organization: the integration's id.
async fn connect(daemon: &TestDaemon, token: &str) -> String {
    let done = daemon
        .connect(token, "feed", json!({"credentials": {"api_key": API_KEY}}))
        .await;
    done["integration"]["id"].as_str().unwrap().to_string()
}

/// The integration's stored events' delivery ids, in the order stored.
async fn delivery_ids(store: &switchboard::store::Store, id: &str) -> Vec<String> {
    let mut found: Vec<_> = events::list(store, None, Some(id), 1000).await.unwrap();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    found.into_iter().map(|e| e.delivery_id).collect()
}

async fn until<F: AsyncFn() -> bool>(what: &str, check: F) {
    for _ in 0..400 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn health(daemon: &TestDaemon, token: &str, id: &str) -> Value {
    let (status, body) = daemon
        .call_api(token, "/integrations/status", json!({"integration_id": id}))
        .await;
    assert_eq!(status, 200, "{body}");
    body["health"].clone()
}

fn expected(count: usize) -> Vec<String> {
    (0..count).map(|n| format!("ev-{n}")).collect()
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn pages_are_polled_in_order_and_a_crash_before_the_cursor_is_saved_loses_and_repeats_nothing(
    #[case] backend: Db,
) {
    let db = TestDb::new(backend).await.expect("database");
    let org = organizations::create(&db.store, "Acme").await.unwrap();
    let (_, token) = tokens::create(&db.store, &org.id).await.unwrap();
    let token = token.expose().clone();
    let feed = FakeFeed::start(2).await;
    feed.publish(0, 5);
    let url = db.config.url.expose().clone();
    let every = Duration::from_millis(200);
    let daemon =
        TestDaemon::start_on_with_connectors(&url, feed_connectors(&feed, every), FAST).await;
    daemon.ready().await;
    let id = connect(&daemon, &token).await;

    // Three pages (2, 2, 1), one after the other, then the cursor at the end.
    until("the backlog is stored", || async {
        delivery_ids(&db.store, &id).await.len() == 5
    })
    .await;
    assert_eq!(delivery_ids(&db.store, &id).await, expected(5));
    until("the cursor is saved", || async {
        let row = poll_cursors::get(&db.store, &id, "").await.unwrap();
        row.and_then(|r| r.cursor).as_deref() == Some("5")
    })
    .await;
    let poll = &health(&daemon, &token, &id).await["details"]["poll"];
    assert_eq!(poll["cursor"], "5", "{poll}");
    assert!(
        poll["last_polled_at"].is_string() && poll["next_poll_at"].is_string(),
        "{poll}"
    );

    // New events are found at the next interval.
    feed.publish(5, 2);
    until("the new events are stored", || async {
        delivery_ids(&db.store, &id).await.len() == 7
    })
    .await;

    // A crash after the last pages were stored but before their cursor was saved:
    // the store holds the events and the cursor of two pages before.
    daemon.stop().await;
    let mut row = poll_cursors::get(&db.store, &id, "")
        .await
        .unwrap()
        .unwrap();
    row.cursor = Some("2".into());
    row.next_poll_at = None;
    poll_cursors::save(&db.store, &row).await.unwrap();
    let requests = feed.requests();
    let daemon =
        TestDaemon::start_on_with_connectors(&url, feed_connectors(&feed, every), FAST).await;
    daemon.ready().await;
    until("the cursor is back at the end", || async {
        let row = poll_cursors::get(&db.store, &id, "").await.unwrap();
        row.and_then(|r| r.cursor).as_deref() == Some("7")
    })
    .await;
    assert!(feed.requests() > requests, "the pages were polled again");
    // Polled again, stored once.
    assert_eq!(delivery_ids(&db.store, &id).await, expected(7));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_feed_opens_the_integrations_breaker_and_polling_resumes_after() {
    let feed = FakeFeed::start(10).await;
    feed.publish(0, 3);
    feed.state.failing.store(true, Ordering::SeqCst);
    let config = format!(
        "{FAST}[circuit_breaker]\nsliding_window_size = 2\nminimum_calls = 2\n\
         wait_in_open = \"1s\"\npermitted_calls_in_half_open = 1\n"
    );
    let daemon = TestDaemon::start_with_connectors(
        feed_connectors(&feed, Duration::from_millis(50)),
        &config,
    )
    .await;
    daemon.ready().await;
    let (_, token) = daemon.organization("Acme").await;
    let id = connect(&daemon, &token).await;

    until("the breaker opens", || async {
        health(&daemon, &token, &id).await["breaker"]["state"] == "open"
    })
    .await;
    let report = health(&daemon, &token, &id).await;
    // The feed's own answer, or (once open) the breaker refusing the poll.
    let error = report["details"]["poll"]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("503") || error.contains("circuit breaker is open"),
        "{report}"
    );
    assert!(
        report["details"]["poll"]["failures"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert!(feed.requests() >= 1, "the failure reached the feed");
    assert!(
        report["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("poll failed"),
        "{report}"
    );
    // Open, it makes no request: polls are refused without reaching the feed.
    let requests = feed.requests();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        feed.requests(),
        requests,
        "no request while the breaker is open"
    );
    assert!(delivery_ids(&daemon.store, &id).await.is_empty());

    // The feed recovers: the breaker lets a trial poll through and polling resumes.
    feed.state.failing.store(false, Ordering::SeqCst);
    until("the feed's events are stored", || async {
        delivery_ids(&daemon.store, &id).await.len() == 3
    })
    .await;
    until("the breaker closes", || async {
        health(&daemon, &token, &id).await["breaker"]["state"] == "closed"
    })
    .await;
    assert!(health(&daemon, &token, &id).await["details"]["poll"]["last_error"].is_null());
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spent_quota_paces_polling_without_counting_as_a_failure() {
    let feed = FakeFeed::start(1).await;
    feed.publish(0, 6);
    // Two requests a second, in a burst of two: six pages take at least two seconds.
    let quota = switchboard_actors::Quota::per_second(std::num::NonZeroU32::new(2).unwrap());
    let connectors = ConnectorSet::default().with_settings(
        Arc::new(FeedConnector::new(&feed).with_quota(quota)),
        CommonSettings {
            poll_interval: Some(Duration::from_millis(50)),
            ..CommonSettings::default()
        },
    );
    let daemon = TestDaemon::start_with_connectors(connectors, FAST).await;
    daemon.ready().await;
    let (_, token) = daemon.organization("Acme").await;
    let id = connect(&daemon, &token).await;

    until("every page is stored", || async {
        delivery_ids(&daemon.store, &id).await.len() == 6
    })
    .await;
    assert_eq!(delivery_ids(&daemon.store, &id).await, expected(6));
    let times = feed.state.request_times.lock().unwrap().clone();
    let (first, sixth) = (times[0], times[5]);
    assert!(
        sixth - first >= Duration::from_millis(1900),
        "six pages within {:?}: the quota was not honoured",
        sixth - first
    );
    // Waiting for the quota is not a failure: no error, no backoff, breaker closed.
    let report = health(&daemon, &token, &id).await;
    assert!(
        report["details"]["poll"]["last_error"].is_null(),
        "{report}"
    );
    assert_eq!(report["details"]["poll"]["failures"], 0, "{report}");
    assert_eq!(report["breaker"]["state"], "closed", "{report}");
    daemon.stop().await;
}
