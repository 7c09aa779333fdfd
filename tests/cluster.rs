//! Cluster mode with real processes: daemons on 127.0.0.1 (each on its own ports) on
//! one PostgreSQL database, two hundred generic webhook integrations each with a route
//! that forwards its events to a sink here. Leases spread fairly and a joining node
//! takes a share; a node killed with SIGKILL while webhooks go to the others has its
//! integrations resumed elsewhere and every acknowledged event forwarded; a node
//! stopped with SIGSTOP past its lease commits nothing when it resumes; a graceful
//! stop hands its leases over without waiting for them to expire.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use common::db::{Db, TestDb};
use common::fake_slack::{self, FakeSlack};
use common::nodes::{Node, integrations, leases, pour, sink, within};
use serde_json::{Value, json};
use switchboard::store::events;

const INTEGRATIONS: usize = 200;

async fn all_done(db: &TestDb, ids: &HashSet<String>) -> bool {
    let done: HashSet<String> = events::list(&db.store, Some("done"), None, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.delivery_id)
        .collect();
    ids.is_subset(&done)
}

fn url_of(db: &TestDb) -> String {
    db.config.url.expose().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn leases_spread_a_joiner_takes_a_share_and_a_killed_nodes_integrations_resume_elsewhere() {
    switchboard::install_crypto_provider();
    let db = TestDb::new(Db::Postgres).await.expect("database");
    let url = url_of(&db);
    let fast = "lease_ttl = \"3s\"\nrenew_every = \"1s\"";
    let (sink, received) = sink().await;
    let one = Node::start(&url, "node-1", fast).await;
    let two = Node::start(&url, "node-2", fast).await;
    let mut three = Node::start(&url, "node-3", fast).await;
    // Created through one node while the others run: the others start their share
    // of the integrations, and run the routes created there.
    let hooks = integrations(&db.store, &one, INTEGRATIONS, &sink).await;

    // Two hundred integrations over three nodes: a share is 67, and what is left
    // over goes to the last to claim.
    within(
        "leases spread over three nodes",
        Duration::from_secs(30),
        || async {
            let held = leases(&one).await;
            held.len() == 3
                && held.values().sum::<i64>() == INTEGRATIONS as i64
                && held.values().all(|n| (63..=68).contains(n))
        },
    )
    .await;
    let view = one.cluster("").await;
    assert_eq!(view["mode"], "cluster");
    assert_eq!(view["node_id"], "node-1");
    let actors = two.admin_json("/admin/actors").await;
    assert_eq!(
        actors["details"]["node_id"], "node-2",
        "any node says which it is"
    );
    let owner = one
        .cluster(&format!("?integration_id={}", hooks[0].id))
        .await;
    assert!(owner["owner"]["held"].as_bool().unwrap(), "{owner}");
    assert!(owner["owner"]["epoch"].as_i64().unwrap() >= 1);

    // A fourth node joins and gets its share: 50 each.
    let four = Node::start(&url, "node-4", fast).await;
    within(
        "the joiner holds a share",
        Duration::from_secs(20),
        || async {
            let held = leases(&one).await;
            held.get("node-4").is_some_and(|n| *n >= 48)
                && held.values().sum::<i64>() == INTEGRATIONS as i64
        },
    )
    .await;

    // node-3 is killed while webhooks go to the three others.
    let apis = vec![one.api.clone(), two.api.clone(), four.api.clone()];
    let pouring = tokio::spawn({
        let (apis, hooks) = (apis.clone(), hooks.clone());
        async move { pour(&apis, &hooks, 2, "kill").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    three.child.start_kill().unwrap();
    three.child.wait().await.unwrap();
    let acked = pouring.await.unwrap();
    assert!(acked.len() >= INTEGRATIONS * 2 * 9 / 10, "{}", acked.len());
    within(
        "the survivors hold every lease",
        Duration::from_secs(20),
        || async {
            let held = leases(&one).await;
            !held.contains_key("node-3") && held.values().sum::<i64>() == INTEGRATIONS as i64
        },
    )
    .await;
    within(
        "every acknowledged event is processed",
        Duration::from_secs(30),
        || async { all_done(&db, &acked).await },
    )
    .await;
    let forwarded: HashSet<String> = received.lock().unwrap().iter().cloned().collect();
    assert!(
        acked.is_subset(&forwarded),
        "every one reached the route's sink"
    );
    drop((one, two, four));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_paused_past_its_lease_commits_nothing_when_it_resumes() {
    switchboard::install_crypto_provider();
    let db = TestDb::new(Db::Postgres).await.expect("database");
    let url = url_of(&db);
    let fast = "lease_ttl = \"2s\"\nrenew_every = \"500ms\"";
    // A sink that holds every request until it is opened: each integration's actor
    // is in the middle of forwarding an event when node-1 is paused.
    let (open, gate) = tokio::sync::watch::channel(false);
    let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = Router::new().route(
        "/sink",
        post({
            let waiting = Arc::clone(&waiting);
            move || {
                let (mut gate, waiting) = (gate.clone(), Arc::clone(&waiting));
                async move {
                    waiting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = gate.wait_for(|open| *open).await;
                    "ok"
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink = format!("http://{}/sink", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let one = Node::start(&url, "node-1", fast).await;
    let hooks = integrations(&db.store, &one, 4, &sink).await;
    let two = Node::start(&url, "node-2", fast).await;
    within("two nodes share them", Duration::from_secs(20), || async {
        let held = leases(&one).await;
        held.len() == 2 && held.values().all(|n| *n == 2)
    })
    .await;
    let acked = pour(std::slice::from_ref(&two.api), &hooks, 3, "pause").await;
    assert_eq!(acked.len(), 12);
    within(
        "each integration is forwarding",
        Duration::from_secs(20),
        || async { waiting.load(std::sync::atomic::Ordering::SeqCst) >= 4 },
    )
    .await;

    // node-1 is paused mid-work, past its lease; node-2 takes everything over and,
    // the sink opened, processes every event.
    one.signal(libc::SIGSTOP);
    within(
        "node-2 holds every lease",
        Duration::from_secs(20),
        || async { two.cluster("").await["leases_held"] == 4 },
    )
    .await;
    open.send_replace(true);
    within(
        "every event is processed by node-2",
        Duration::from_secs(30),
        || async { all_done(&db, &acked).await },
    )
    .await;
    let done_before = events::list(&db.store, Some("done"), None, 1000)
        .await
        .unwrap()
        .len();

    // Resumed, node-1 finishes the forwards it was in: every write it then tries is
    // refused, and it stops those actors.
    one.signal(libc::SIGCONT);
    within(
        "node-1's writes are refused",
        Duration::from_secs(20),
        || async { one.cluster("").await["fenced_writes"].as_u64().unwrap_or(0) >= 2 },
    )
    .await;
    let view = one.cluster("").await;
    assert!(view["leases_lost"].as_u64().unwrap() >= 2, "{view}");
    let metrics = reqwest::get(format!("http://{}/metrics", one.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let fenced = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_cluster_fenced_writes_total "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(fenced.is_some_and(|n| n >= 2), "{metrics}");
    let done_after = events::list(&db.store, Some("done"), None, 1000)
        .await
        .unwrap()
        .len();
    assert_eq!(done_before, done_after);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_hands_leases_over_without_waiting_for_them_to_expire() {
    switchboard::install_crypto_provider();
    let db = TestDb::new(Db::Postgres).await.expect("database");
    let url = url_of(&db);
    // Leases that would take a minute to expire: a takeover sooner is a handover.
    let slow = "lease_ttl = \"60s\"\nrenew_every = \"1s\"";
    let (sink, _) = sink().await;
    let one = Node::start(&url, "node-1", slow).await;
    integrations(&db.store, &one, 10, &sink).await;
    let two = Node::start(&url, "node-2", slow).await;
    within("two nodes share them", Duration::from_secs(20), || async {
        let held = leases(&two).await;
        held.len() == 2 && held.values().all(|n| *n >= 4)
    })
    .await;
    // A data key rotated on node-1 is the one node-2 encrypts with next, even right
    // after node-2 encrypted with the old one.
    integrations(&db.store, &two, 1, &sink).await;
    let rotated: Value = reqwest::Client::new()
        .post(format!("http://{}/admin/vault/rotate", one.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_key = rotated["new_key_id"].as_str().unwrap().to_string();
    let fresh = integrations(&db.store, &two, 1, &sink).await.remove(0);
    let key_ids: Vec<String> = switchboard::store::integrations::credentials(
        &db.store,
        &switchboard::store::integrations::find_live(&db.store, &fresh.id)
            .await
            .unwrap()
            .unwrap()
            .organization_id,
        &fresh.id,
    )
    .await
    .unwrap()
    .into_iter()
    .map(|c| c.encryption_key_id)
    .collect();
    assert!(!key_ids.is_empty());
    assert!(
        key_ids.iter().all(|k| *k == new_key),
        "{key_ids:?} vs {new_key}"
    );

    let mut one = one;
    one.signal(libc::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(15), one.child.wait())
        .await
        .expect("stops in time")
        .unwrap();
    assert!(status.success(), "{status:?}");
    within(
        "node-2 holds all twelve",
        Duration::from_secs(15),
        || async {
            let held = leases(&two).await;
            held.len() == 1 && held.get("node-2") == Some(&12)
        },
    )
    .await;
}

/// The health of a node's Slack Socket Mode client.
async fn socket_health(node: &Node) -> Value {
    node.actor("slack", "slack:socket")
        .await
        .expect("a Socket Mode client")
}

fn event(event_id: &str) -> Value {
    json!({"token": "unused", "team_id": fake_slack::TEAM, "api_app_id": "A0001",
           "type": "event_callback", "event_id": event_id, "event_time": 1_700_000_000,
           "event": {"type": "message", "user": "U0HUMAN", "text": "hello", "ts": "1700000001.000100",
                     "channel": "C0GENERAL", "event_ts": "1700000001.000100"}})
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_mode_keeps_flowing_while_a_node_dies_and_a_node_over_slacks_limit_says_so() {
    switchboard::install_crypto_provider();
    let db = TestDb::new(Db::Postgres).await.expect("database");
    let url = url_of(&db);
    let fast = "lease_ttl = \"3s\"\nrenew_every = \"1s\"";
    let slack = FakeSlack::start().await;
    let section = slack.config_section(true, "");
    let mut one = Node::start_with(&url, "node-1", fast, &section).await;
    let two = Node::start_with(&url, "node-2", fast, &section).await;
    // One connection per node.
    let open = slack.wait_open(&[0, 1], Duration::from_secs(10)).await;
    assert_eq!(open.len(), 2, "{open:?}");

    // A hundred envelopes over both connections; node-1 dies half way. What it had
    // not acknowledged, Slack sends again on node-2's connection.
    let mut sent = Vec::new();
    for n in 0..100 {
        if n == 50 {
            one.child.start_kill().unwrap();
            one.child.wait().await.unwrap();
            within(
                "Slack sees node-1's connection gone",
                Duration::from_secs(10),
                || async { slack.open_connections().len() == 1 },
            )
            .await;
        }
        let connection = slack.open_connections()[n % slack.open_connections().len()];
        sent.push(slack.send_envelope(
            connection,
            "events_api",
            event(&format!("Ev{n:04}")),
            false,
        ));
    }
    for id in &sent {
        assert!(
            slack.wait_ack(id, Duration::from_secs(10)).await.is_some(),
            "{id} acknowledged"
        );
    }
    let acks = slack.state.acks.lock().unwrap().clone();
    for id in &sent {
        assert_eq!(
            acks.iter().filter(|a| &a.envelope_id == id).count(),
            1,
            "{id}"
        );
    }
    let stored: Vec<String> = events::list(&db.store, None, None, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.connector_type == "slack")
        .map(|e| e.delivery_id)
        .collect();
    let distinct: HashSet<&String> = stored.iter().collect();
    assert_eq!(stored.len(), 100, "each event stored once");
    assert_eq!(distinct.len(), 100);

    // Slack's limit reached: a node refused says so, and keeps asking.
    *slack.state.max_connections.lock().unwrap() = Some(1);
    let three = Node::start_with(&url, "node-3", fast, &section).await;
    within("node-3 is refused", Duration::from_secs(10), || async {
        socket_health(&three).await["details"]["state"] == "too_many_websockets"
    })
    .await;
    let health = socket_health(&three).await;
    assert!(
        health["last_error"]
            .as_str()
            .unwrap()
            .contains("too_many_websockets"),
        "{health}"
    );
    drop((two, three));
}

#[tokio::test(flavor = "multi_thread")]
async fn restarts_are_carried_to_the_owner_and_a_revocation_stops_the_actor_where_it_runs() {
    switchboard::install_crypto_provider();
    let db = TestDb::new(Db::Postgres).await.expect("database");
    let url = url_of(&db);
    let fast = "lease_ttl = \"3s\"\nrenew_every = \"1s\"";
    let (sink, _) = sink().await;
    let one = Node::start(&url, "node-1", fast).await;
    let two = Node::start(&url, "node-2", fast).await;
    let hooks = integrations(&db.store, &one, 4, &sink).await;
    within("two nodes share them", Duration::from_secs(20), || async {
        let held = leases(&one).await;
        held.len() == 2 && held.values().all(|n| *n == 2)
    })
    .await;
    // One that node-2 runs, asked of node-1.
    let mut theirs = None;
    for hook in &hooks {
        let owner = one.cluster(&format!("?integration_id={}", hook.id)).await;
        if owner["owner"]["node_id"] == "node-2" {
            theirs = Some(hook.clone());
        }
    }
    let theirs = theirs.expect("node-2 runs one");
    let http = reqwest::Client::new();
    let carried = http
        .post(format!(
            "http://{}/admin/integrations/{}/restart",
            one.admin, theirs.id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(carried.status(), 202);
    let carried: Value = carried.json().await.unwrap();
    assert_eq!(carried["carried_to"], "node-2");
    let actor = format!("integration:{}", theirs.id);
    within("node-2 restarted it", Duration::from_secs(10), || async {
        two.actor("webhook", &actor)
            .await
            .is_some_and(|node| node["manual_restarts"] == 1)
    })
    .await;

    // Revoked through node-1: node-2 stops its actor and lets the lease go.
    let revoked = http
        .post(format!("http://{}/integrations/revoke", one.api))
        .bearer_auth(&theirs.token)
        .json(&json!({"integration_id": theirs.id}))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200, "{:?}", revoked.text().await);
    within("node-2 stops it", Duration::from_secs(10), || async {
        two.actor("webhook", &actor).await.is_none()
    })
    .await;
    let owner = reqwest::get(format!(
        "http://{}/admin/cluster?integration_id={}",
        one.admin, theirs.id
    ))
    .await
    .unwrap();
    assert_eq!(owner.status(), 404, "no lease for a revoked integration");
    drop((one, two));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_restarted_under_the_same_id_runs_its_integrations_again_at_once() {
    switchboard::install_crypto_provider();
    let db = TestDb::new(Db::Postgres).await.expect("database");
    let url = url_of(&db);
    // Leases that would outlive the restart by far.
    let slow = "lease_ttl = \"60s\"\nrenew_every = \"500ms\"";
    let (sink, _) = sink().await;
    let mut first = Node::start(&url, "node-1", slow).await;
    let hooks = integrations(&db.store, &first, 3, &sink).await;
    within(
        "node-1 holds all three",
        Duration::from_secs(20),
        || async { first.cluster("").await["leases_held"] == 3 },
    )
    .await;
    first.child.start_kill().unwrap();
    first.child.wait().await.unwrap();

    // The same node id comes back: the leases still in its name are handed back and
    // claimed again under a new epoch, and its actors run.
    let again = Node::start(&url, "node-1", slow).await;
    within(
        "node-1 runs all three again",
        Duration::from_secs(20),
        || async { again.cluster("").await["leases_held"] == 3 },
    )
    .await;
    let owner = again
        .cluster(&format!("?integration_id={}", hooks[0].id))
        .await;
    assert!(owner["owner"]["epoch"].as_i64().unwrap() >= 2, "{owner}");
    let actor = format!("integration:{}", hooks[0].id);
    assert!(again.actor("webhook", &actor).await.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_stored_on_one_node_is_processed_at_once_by_the_node_that_runs_it() {
    switchboard::install_crypto_provider();
    let db = TestDb::new(Db::Postgres).await.expect("database");
    let url = url_of(&db);
    // Rounds (and their sweep of every local actor) 50 s apart: only the owner's
    // NOTIFY can make the event go within seconds.
    let slow = "lease_ttl = \"150s\"\nrenew_every = \"50s\"";
    let (sink, received) = sink().await;
    let one = Node::start(&url, "node-1", slow).await;
    let two = Node::start(&url, "node-2", slow).await;
    let hooks = integrations(&db.store, &one, 4, &sink).await;
    within("two nodes share them", Duration::from_secs(20), || async {
        let held = leases(&one).await;
        held.len() == 2 && held.values().all(|n| *n == 2)
    })
    .await;
    let mut theirs = None;
    for hook in &hooks {
        let owner = one.cluster(&format!("?integration_id={}", hook.id)).await;
        if owner["owner"]["node_id"] == "node-2" {
            theirs = Some(hook.clone());
        }
    }
    let theirs = theirs.expect("node-2 runs one");
    let acked = pour(std::slice::from_ref(&one.api), &[theirs], 3, "notify").await;
    assert_eq!(acked.len(), 3);
    within(
        "node-2 processes what node-1 stored",
        Duration::from_secs(5),
        || async { all_done(&db, &acked).await },
    )
    .await;
    let forwarded: HashSet<String> = received.lock().unwrap().iter().cloned().collect();
    assert!(acked.is_subset(&forwarded));
    drop((one, two));
}
