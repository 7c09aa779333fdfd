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

/// A TCP proxy that can be cut: every connection through it dies with it.
struct Proxy {
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(port: u16, target: String) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let registry = std::sync::Arc::clone(&tasks);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let connection = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                registry.lock().unwrap().push(connection);
            }
        });
        tasks.lock().unwrap().push(accept);
        Proxy { tasks }
    }

    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_the_store_cannot_take_is_refused_with_503_and_nothing_is_acknowledged() {
    use common::webhooks::send;
    use switchboard::pipeline::standard_webhooks::unix_now;
    use switchboard::secret::Secret;

    let Some(db) = TestDb::new(Db::Postgres).await else {
        return;
    };
    let org = switchboard::store::organizations::create(&db.store, "Acme")
        .await
        .unwrap();
    let (_, token) = switchboard::store::tokens::create(&db.store, &org.id)
        .await
        .unwrap();
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
    let proxy = Proxy::start(port, real.clone()).await;
    let daemon = common::TestDaemon::start_on(
        &url.replace(&real, &format!("127.0.0.1:{port}")),
        // The store monitor's own checks come seconds apart: readiness must follow
        // what the webhooks see, not wait for them.
        "[connectors.webhook]\n[supervision]\nbackoff_base = \"10s\"\nbackoff_cap = \"60s\"\nobserve_timeout = \"500ms\"\n",
    )
    .await;
    daemon.ready().await;
    let (_, started) = daemon
        .call_api(
            token.expose(),
            "/integrations/authorize",
            serde_json::json!({"connector_type": "webhook"}),
        )
        .await;
    let (_, done) = daemon
        .call_api(
            token.expose(),
            "/integrations/callback",
            serde_json::json!({"connector_type": "webhook", "state": started["state"]}),
        )
        .await;
    let hook = done["reveal"]["url"]
        .as_str()
        .unwrap()
        .replace("127.0.0.1:8080", &daemon.api.to_string());
    let secret = Secret::new(done["reveal"]["signing_secret"].as_str().unwrap());
    let http = reqwest::Client::new();
    assert_eq!(
        send(&http, &hook, &secret, "before", unix_now(), "{}", None)
            .await
            .0,
        200
    );

    proxy.cut();
    let (status, body) = send(&http, &hook, &secret, "during", unix_now(), "{}", None).await;
    assert_eq!(status, 503, "{body}");
    common::until("readiness says the store is down", || async {
        daemon.get_json("/readyz").await.0 == 503
    })
    .await;

    let proxy = Proxy::start(port, real).await;
    let mut status = 0;
    for _ in 0..100 {
        status = send(&http, &hook, &secret, "after", unix_now(), "{}", None)
            .await
            .0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "ingest recovers with the store");
    // Ready as soon as the store took an event, well before the monitor's next check.
    let recovered = std::time::Instant::now();
    let mut ready = false;
    while recovered.elapsed() < Duration::from_secs(2) {
        if daemon.get_json("/readyz").await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        ready,
        "readiness lags the store: {}",
        daemon.get_json("/readyz").await.1
    );
    let stored: Vec<String> = switchboard::store::events::list(&db.store, None, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.delivery_id)
        .collect();
    assert_eq!(
        stored,
        ["before", "after"],
        "the refused webhook was not stored"
    );
    daemon.stop().await;
    proxy.cut();
}

/// A PostgreSQL database that does not exist is named as such, with the command that
/// creates it, while the daemon keeps retrying.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_database_is_named_with_the_command_that_creates_it() {
    let Some(db) = TestDb::unmigrated(Db::Postgres).await else {
        return;
    };
    let url = db.config.url.expose().clone();
    let (server, _) = url.rsplit_once('/').expect("a database in the URL");
    let missing = format!("{server}/switchboard_missing_{}", std::process::id());
    let daemon = common::TestDaemon::start_with_database(&missing, "").await;
    common::until("the store says why", || async {
        let (_, body) = daemon.get_json("/readyz").await;
        body["checks"]["store"]
            .as_str()
            .is_some_and(|s| s.contains("does not exist: create it with `createdb"))
    })
    .await;
    let (status, body) = daemon.get_json("/readyz").await;
    assert_eq!(status, 503);
    let said = body["checks"]["store"].as_str().unwrap();
    assert!(
        said.contains(&format!("switchboard_missing_{}", std::process::id())),
        "{said}"
    );
    daemon.stop().await;
}
