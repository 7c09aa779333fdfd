//! Helpers for the pipeline tests: a receiver for forwarded events, and a sender of
//! Standard Webhooks requests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use switchboard::pipeline::standard_webhooks;
use switchboard::secret::Secret;

/// One forwarded request: its headers and body.
pub type Forwarded = (HeaderMap, Vec<u8>);

/// An HTTP endpoint on loopback that records what routes forward to it.
#[derive(Clone, Default)]
pub struct Receiver {
    pub received: Arc<Mutex<Vec<Forwarded>>>,
    /// How many of the next requests to fail with 503.
    pub fail_next: Arc<AtomicUsize>,
}

impl Receiver {
    pub async fn start() -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let state = state.clone();
                async move {
                    let failing = state
                        .fail_next
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if failing {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    state
                        .received
                        .lock()
                        .unwrap()
                        .push((headers, body.to_vec()));
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, addr)
    }

    /// The forwarded envelopes, in the order they arrived.
    pub fn envelopes(&self) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| serde_json::from_slice(body).unwrap())
            .collect()
    }
}

/// POSTs a signed webhook; `signature` overrides the computed one.
pub async fn send(
    http: &reqwest::Client,
    url: &str,
    secret: &Secret,
    id: &str,
    timestamp: i64,
    body: &str,
    signature: Option<String>,
) -> (u16, Value) {
    let signature = signature.unwrap_or_else(|| {
        standard_webhooks::sign(secret, id, timestamp, body.as_bytes()).unwrap()
    });
    let response = http
        .post(url)
        .header(standard_webhooks::ID, id)
        .header(standard_webhooks::TIMESTAMP, timestamp.to_string())
        .header(standard_webhooks::SIGNATURE, signature)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("ingress answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Connects a generic webhook for the organization of `token`: its URL (on the test
/// daemon's port), signing secret and integration id.
pub async fn connect_webhook(daemon: &super::TestDaemon, token: &str) -> (String, Secret, String) {
    let (status, started) = daemon
        .call_api(
            token,
            "/integrations/authorize",
            json!({"connector_type": "webhook"}),
        )
        .await;
    assert_eq!(
        (status, started["type"].clone()),
        (200, json!("api_key")),
        "{started}"
    );
    let (status, done) = daemon
        .call_api(
            token,
            "/integrations/callback",
            json!({"connector_type": "webhook", "state": started["state"]}),
        )
        .await;
    assert_eq!(status, 201, "{done}");
    let url = done["reveal"]["url"]
        .as_str()
        .unwrap()
        .replace("127.0.0.1:8080", &daemon.api.to_string());
    let secret = Secret::new(done["reveal"]["signing_secret"].as_str().unwrap());
    let integration_id = done["integration"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        done["integration"]["metadata"]["url"],
        done["reveal"]["url"]
    );
    (url, secret, integration_id)
}
