//! Daemons run as real processes in cluster mode on one PostgreSQL database, for the
//! cluster tests and the failover bench: start, signal and ask them; generic webhook
//! integrations with a forwarding route each; signed webhooks poured over them.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};
use switchboard::pipeline::standard_webhooks;
use switchboard::secret::Secret;
use switchboard::store::{Store, organizations, tokens};

use super::binary::serve;

/// One daemon of the cluster.
pub struct Node {
    pub name: String,
    pub child: tokio::process::Child,
    pub api: String,
    pub admin: String,
    _dir: tempfile::TempDir,
}

impl Node {
    pub async fn start(url: &str, name: &str, cluster: &str) -> Node {
        Self::start_with(url, name, cluster, "").await
    }

    /// With `extra` configuration sections (another connector's).
    pub async fn start_with(url: &str, name: &str, cluster: &str, extra: &str) -> Node {
        let section = format!("[cluster]\nnode_id = \"{name}\"\n{cluster}\n");
        Self::launch(url, name, &section, extra).await
    }

    /// One node on the same database without `[cluster]`: it runs every integration.
    pub async fn single(url: &str, name: &str) -> Node {
        Self::launch(url, name, "", "").await
    }

    async fn launch(url: &str, name: &str, cluster: &str, extra: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let key = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        };
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n\
                 [admin]\nlisten = \"127.0.0.1:0\"\n\
                 [database]\nurl = \"{url}\"\nmax_connections = 6\n\
                 [vault]\nmaster_key = \"{key}\"\n\
                 [integrations]\nvalidation_spread = \"0s\"\n\
                 [pipeline]\nretry_base = \"50ms\"\nretry_cap = \"200ms\"\n\
                 {cluster}[connectors.webhook]\n{extra}\n"
            ),
        )
        .unwrap();
        let (child, api, admin) = serve(dir.path()).await;
        let node = Node {
            name: name.to_string(),
            child,
            api,
            admin,
            _dir: dir,
        };
        node.ready().await;
        node
    }

    pub async fn ready(&self) {
        let http = reqwest::Client::new();
        for _ in 0..400 {
            if let Ok(response) = http
                .get(format!("http://{}/readyz", self.admin))
                .send()
                .await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{} never ready", self.name);
    }

    /// `/admin/cluster` as this node answers it.
    pub async fn cluster(&self, query: &str) -> Value {
        self.admin_json(&format!("/admin/cluster{query}")).await
    }

    /// A GET on this node's admin endpoint: the JSON answer (null if none).
    pub async fn admin_json(&self, path: &str) -> Value {
        reqwest::get(format!("http://{}{path}", self.admin))
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null)
    }

    /// The actor named `name` under `connector` on this node, if it runs here.
    pub async fn actor(&self, connector: &str, name: &str) -> Option<Value> {
        let tree = self
            .admin_json(&format!("/admin/connectors/{connector}"))
            .await;
        tree["children"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: a plain kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }
}

/// Leases held per live node, as `node` sees them.
pub async fn leases(node: &Node) -> BTreeMap<String, i64> {
    node.cluster("").await["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node_id"].as_str().unwrap().to_string(),
                n["leases"].as_i64().unwrap(),
            )
        })
        .collect()
}

pub async fn within<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within {limit:?}: {what}");
}

/// A generic webhook integration: where to send and how to sign.
#[derive(Clone)]
pub struct Hook {
    /// The organization's API token.
    pub token: String,
    pub id: String,
    pub path: String,
    pub secret: Secret,
}

/// Creates `count` organizations, each with a generic webhook integration and a
/// route forwarding its events to `sink`, through `node`'s API.
pub async fn integrations(store: &Store, node: &Node, count: usize, sink: &str) -> Vec<Hook> {
    let http = reqwest::Client::new();
    let mut hooks = Vec::new();
    for n in 0..count {
        let org = organizations::create(store, &format!("Tenant {n}"))
            .await
            .unwrap();
        let (_, token) = tokens::create(store, &org.id).await.unwrap();
        let call = |path: &str, body: Value| {
            http.post(format!("http://{}{path}", node.api))
                .bearer_auth(token.expose())
                .json(&body)
                .send()
        };
        let started: Value = call(
            "/integrations/authorize",
            json!({"connector_type": "webhook"}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let done: Value = call(
            "/integrations/callback",
            json!({"connector_type": "webhook", "state": started["state"]}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let route = call(
            "/routes/create",
            json!({"connector": "webhook", "action": "http.forward", "settings": {"url": sink}}),
        )
        .await
        .unwrap();
        assert_eq!(route.status(), 201);
        hooks.push(Hook {
            token: token.expose().clone(),
            id: done["integration"]["id"].as_str().unwrap().to_string(),
            path: done["reveal"]["url"]
                .as_str()
                .unwrap()
                .split("/webhooks/")
                .nth(1)
                .unwrap()
                .to_string(),
            secret: Secret::new(done["reveal"]["signing_secret"].as_str().unwrap()),
        });
    }
    hooks
}

/// A sink that records the delivery ids of the events forwarded to it.
pub async fn sink() -> (String, Arc<Mutex<Vec<String>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&received);
    let app = Router::new().route(
        "/sink",
        post(move |body: String| {
            let seen = Arc::clone(&seen);
            async move {
                if let Ok(event) = serde_json::from_str::<Value>(&body)
                    && let Some(id) = event["delivery_id"].as_str()
                {
                    seen.lock().unwrap().push(id.to_string());
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/sink"), received)
}

/// Sends `per_hook` signed webhooks to each hook, round-robin over `apis`: the ids
/// acknowledged with a 200.
pub async fn pour(apis: &[String], hooks: &[Hook], per_hook: usize, tag: &str) -> HashSet<String> {
    let http = reqwest::Client::new();
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let tasks: Vec<_> = hooks
        .iter()
        .enumerate()
        .map(|(i, hook)| {
            let (http, hook, acked) = (http.clone(), hook.clone(), Arc::clone(&acked));
            let apis = apis.to_vec();
            let tag = tag.to_string();
            tokio::spawn(async move {
                for n in 0..per_hook {
                    let api = &apis[(i + n) % apis.len()];
                    let id = format!("{tag}_{i}_{n}");
                    let url = format!("http://{api}/webhooks/{}", hook.path);
                    let sent = tokio::time::timeout(
                        Duration::from_secs(5),
                        send(&http, &url, &hook.secret, &id),
                    )
                    .await;
                    if let Ok((200, _)) = sent {
                        acked.lock().unwrap().insert(id);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    acked.lock().unwrap().clone()
}

/// POSTs one signed generic webhook (a small JSON body): the status.
async fn send(http: &reqwest::Client, url: &str, secret: &Secret, id: &str) -> (u16, ()) {
    let body = r#"{"type":"tick"}"#;
    let timestamp = standard_webhooks::unix_now();
    let signature = standard_webhooks::sign(secret, id, timestamp, body.as_bytes()).unwrap();
    let status = http
        .post(url)
        .header(standard_webhooks::ID, id)
        .header(standard_webhooks::TIMESTAMP, timestamp.to_string())
        .header(standard_webhooks::SIGNATURE, signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16());
    (status, ())
}
