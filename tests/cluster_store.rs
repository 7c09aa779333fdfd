//! The lease table of cluster mode, on a real PostgreSQL database of each test's own:
//! fair shares, epochs that grow with every change of owner, renewals that show a lost
//! lease, a graceful leave that frees leases at once and notifies, and a fenced write
//! that keeps its lease until it commits. Every time is the database's.

mod common;

use std::time::Duration;

use common::db::{Db, TestDb};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures::StreamExt;
use serde_json::json;
use switchboard::store::cluster::{self, Fence, LEASES_CHANNEL};
use switchboard::store::integrations::{self, NewIntegration};
use switchboard::store::{Store, organizations};

const LONG: Duration = Duration::from_secs(60);

async fn postgres() -> TestDb {
    TestDb::new(Db::Postgres).await.expect("database")
}

/// `count` active integrations: their ids.
async fn integrations(store: &Store, count: usize) -> Vec<String> {
    integrations_of(store, count)
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect()
}

/// `count` active integrations, each of an organization of its own (one per
/// connector per organization): (organization id, integration id).
async fn integrations_of(store: &Store, count: usize) -> Vec<(String, String)> {
    let mut made = Vec::new();
    for n in 0..count {
        let org = organizations::create(store, &format!("Tenant {n}"))
            .await
            .unwrap();
        let integration = integrations::create(
            store,
            NewIntegration {
                organization_id: org.id.clone(),
                user_id: None,
                connector_type: "webhook".into(),
                status: "active".into(),
                external_id: None,
                metadata: json!({}),
            },
            Vec::new(),
        )
        .await
        .unwrap();
        made.push((org.id, integration.id));
    }
    made
}

fn ids(leases: &[cluster::Lease]) -> Vec<String> {
    let mut ids: Vec<String> = leases.iter().map(|l| l.integration_id.clone()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn leases_spread_by_fair_share_and_a_joining_node_gets_one() {
    let db = postgres().await;
    let store = &db.store;
    let mut all = integrations(store, 30).await;
    all.sort();
    assert_eq!(cluster::sync_leases(store).await.unwrap(), 30);
    let nodes = ["node-a", "node-b", "node-c"];
    for node in nodes {
        cluster::heartbeat(store, node, "test", LONG).await.unwrap();
    }
    let share = cluster::fair_share(30, 3, 0);
    let mut claimed = Vec::new();
    for node in nodes {
        let leases = cluster::claim(store, node, LONG, share).await.unwrap();
        assert_eq!(leases.len(), 10, "{node}");
        assert!(leases.iter().all(|l| l.epoch == 1));
        claimed.extend(ids(&leases));
    }
    claimed.sort();
    assert_eq!(claimed, all, "each integration claimed once");
    let live = cluster::live_nodes(store).await.unwrap();
    let held: Vec<(&str, i64)> = live
        .iter()
        .map(|n| (n.node_id.as_str(), n.leases))
        .collect();
    assert_eq!(held, [("node-a", 10), ("node-b", 10), ("node-c", 10)]);
    assert!(live.iter().all(|n| n.heartbeat_age < 5.0));

    // A fourth node: nothing is free, so each of the others hands back what is over
    // its new share, and the newcomer takes it.
    cluster::heartbeat(store, "node-d", "test", LONG)
        .await
        .unwrap();
    let share = cluster::fair_share(30, 4, 0);
    assert!(
        cluster::claim(store, "node-d", LONG, share)
            .await
            .unwrap()
            .is_empty()
    );
    for node in nodes {
        let mut mine = ids(&cluster::renew(store, node, LONG).await.unwrap());
        let over: Vec<String> = mine.split_off(share as usize);
        assert_eq!(
            cluster::release(store, node, &over).await.unwrap(),
            over.len()
        );
    }
    let taken = cluster::claim(store, "node-d", LONG, share).await.unwrap();
    assert_eq!(taken.len(), 6);
    assert!(
        taken.iter().all(|l| l.epoch == 2),
        "a new owner, a new epoch"
    );
}

#[tokio::test]
async fn an_expired_lease_moves_on_with_a_new_epoch_and_fences_its_old_owner() {
    let db = postgres().await;
    let store = &db.store;
    let id = integrations(store, 1).await.remove(0);
    cluster::sync_leases(store).await.unwrap();
    let short = Duration::from_millis(300);
    let first = cluster::claim(store, "node-a", short, 5).await.unwrap();
    assert_eq!(first.len(), 1);
    let a = Fence {
        node_id: "node-a",
        epoch: first[0].epoch,
    };
    let mut conn = AsyncPgConnection::establish(db.config.url.expose())
        .await
        .unwrap();
    assert!(cluster::holds(&mut conn, &id, a).await.unwrap());
    // Held, it is not free for another node.
    assert!(
        cluster::claim(store, "node-b", LONG, 5)
            .await
            .unwrap()
            .is_empty()
    );

    // node-a stalls past its lease (paused, partitioned): node-b takes it over.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let taken = cluster::claim(store, "node-b", LONG, 5).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].epoch, a.epoch + 1);
    // node-a's renewal shows the loss, and its fence no longer holds.
    assert!(
        cluster::renew(store, "node-a", LONG)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!cluster::holds(&mut conn, &id, a).await.unwrap());
    let b = Fence {
        node_id: "node-b",
        epoch: taken[0].epoch,
    };
    assert!(cluster::holds(&mut conn, &id, b).await.unwrap());
    let owner = cluster::owner(store, &id).await.unwrap().unwrap();
    assert_eq!(owner.node_id.as_deref(), Some("node-b"));
    assert!(owner.held);
}

#[tokio::test]
async fn a_fenced_write_keeps_its_lease_until_it_commits() {
    let db = postgres().await;
    let store = &db.store;
    let id = integrations(store, 1).await.remove(0);
    cluster::sync_leases(store).await.unwrap();
    let short = Duration::from_millis(300);
    let lease = cluster::claim(store, "node-a", short, 1).await.unwrap();
    let a = Fence {
        node_id: "node-a",
        epoch: lease[0].epoch,
    };
    let mut conn = AsyncPgConnection::establish(db.config.url.expose())
        .await
        .unwrap();
    conn.batch_execute("BEGIN").await.unwrap();
    assert!(cluster::holds(&mut conn, &id, a).await.unwrap());
    // The lease expires while the write is open: no node can claim it under it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        cluster::claim(store, "node-b", LONG, 1)
            .await
            .unwrap()
            .is_empty()
    );
    conn.batch_execute("COMMIT").await.unwrap();
    let taken = cluster::claim(store, "node-b", LONG, 1).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].epoch, a.epoch + 1);
}

#[tokio::test]
async fn a_graceful_leave_frees_every_lease_at_once_and_tells_the_others() {
    let db = postgres().await;
    let store = &db.store;
    integrations(store, 4).await;
    cluster::sync_leases(store).await.unwrap();
    cluster::heartbeat(store, "node-a", "test", LONG)
        .await
        .unwrap();
    cluster::heartbeat(store, "node-b", "test", LONG)
        .await
        .unwrap();
    assert_eq!(
        cluster::claim(store, "node-a", LONG, 10)
            .await
            .unwrap()
            .len(),
        4
    );
    let mut listener = AsyncPgConnection::establish(db.config.url.expose())
        .await
        .unwrap();
    listener
        .batch_execute(&format!("LISTEN {LEASES_CHANNEL}"))
        .await
        .unwrap();

    assert_eq!(cluster::leave(store, "node-a").await.unwrap(), 4);
    let notifications = listener.notifications_stream();
    let mut notifications = std::pin::pin!(notifications);
    let notification = tokio::time::timeout(Duration::from_secs(5), notifications.next())
        .await
        .expect("notified within 5 s")
        .expect("a notification")
        .expect("readable");
    assert_eq!(notification.channel, LEASES_CHANNEL);
    assert_eq!(notification.payload, "node-a");
    let live: Vec<String> = cluster::live_nodes(store)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    assert_eq!(live, ["node-b"]);
    let taken = cluster::claim(store, "node-b", LONG, 10).await.unwrap();
    assert_eq!(taken.len(), 4, "free at once, not after the lease's time");
    assert!(taken.iter().all(|l| l.epoch == 2));
}

#[tokio::test]
async fn revoked_integrations_lose_their_lease_and_sqlite_is_refused() {
    let db = postgres().await;
    let store = &db.store;
    let made = integrations_of(store, 2).await;
    let ids: Vec<String> = made.iter().map(|(_, id)| id.clone()).collect();
    cluster::sync_leases(store).await.unwrap();
    integrations::revoke(store, &made[0].0, &ids[0])
        .await
        .unwrap();
    assert_eq!(cluster::sync_leases(store).await.unwrap(), 1);
    assert!(cluster::owner(store, &ids[0]).await.unwrap().is_none());
    let taken = cluster::claim(store, "node-a", LONG, 10).await.unwrap();
    assert_eq!(self::ids(&taken), [ids[1].clone()]);

    let sqlite = TestDb::new(Db::Sqlite).await.expect("sqlite");
    let refused = cluster::heartbeat(&sqlite.store, "node-a", "test", LONG)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("PostgreSQL"), "{refused}");
}
