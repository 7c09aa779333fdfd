//! A store that goes away: the daemon stays up, says it is not ready and why, and
//! recovers by itself when the store returns.

mod common;

use std::time::Duration;

use common::db::{Db, TestDb};
use tokio::net::{TcpListener, TcpStream};

/// Forwards every connection on `listener` to `target`.
async fn proxy(listener: TcpListener, target: String) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        let target = target.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_store_fails_readiness_and_recovers_when_it_returns() {
    let Some(db) = TestDb::unmigrated(Db::Postgres).await else {
        return;
    };
    // The daemon is pointed at a port where nothing listens yet.
    let url = db.config.url.expose().clone();
    let real = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("host:port")
        .to_string();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let proxied = url.replace(&real, &format!("127.0.0.1:{port}"));

    let daemon = common::TestDaemon::start_with_database(
        &proxied,
        "[supervision]\nbackoff_base = \"20ms\"\nbackoff_cap = \"200ms\"\nobserve_timeout = \"500ms\"\n",
    )
    .await;
    let (status, body) = daemon.get_json("/readyz").await;
    assert_eq!(status, 503, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = daemon.get_json("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let store = body["checks"]["store"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        store.contains("unreachable") || store.contains("backoff"),
        "{body}"
    );
    assert_ne!(body["checks"]["vault"], "ok");
    assert_eq!(
        daemon.get_json("/healthz").await.0,
        200,
        "alive while the store is down"
    );

    // The store comes back: no restart of the daemon needed.
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(proxy(listener, real));
    daemon.ready().await;
    let (_, tree) = daemon.get_json("/admin/actors").await;
    let store_node = common::child(&tree, "store");
    assert_eq!(store_node["details"]["migrated"], true);
    assert_eq!(store_node["restarts"], 0, "recovered without a crash loop");
    daemon.stop().await;
}
