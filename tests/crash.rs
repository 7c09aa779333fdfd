//! The daemon, run as a process, killed with SIGKILL while webhooks pour in, then
//! started again: every acknowledged event is in the store and gets processed.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::binary::serve;
use common::webhooks::send;
use serde_json::json;
use switchboard::pipeline::standard_webhooks::unix_now;
use switchboard::secret::Secret;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// Starts `switchboard serve` in `dir`; returns the child and its (api, admin) addresses.
async fn ready(http: &reqwest::Client, admin: &str) {
    for _ in 0..400 {
        if let Ok(response) = http.get(format!("http://{admin}/readyz")).send().await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never ready");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_event_survives_a_sigkill_and_is_processed() {
    switchboard::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[connectors.webhook]\n",
    )
    .unwrap();
    let created = std::process::Command::new(BIN)
        .args(["orgs", "create", "Acme"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&created.stdout);
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("api token:"))
        .unwrap()
        .trim()
        .to_string();

    let http = reqwest::Client::new();
    let (mut child, api, admin) = serve(dir.path()).await;
    ready(&http, &admin).await;
    let call = |path: &str, body: serde_json::Value| {
        http.post(format!("http://{api}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let started: serde_json::Value = call(
        "/integrations/authorize",
        json!({"connector_type": "webhook"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let done: serde_json::Value = call(
        "/integrations/callback",
        json!({"connector_type": "webhook", "state": started["state"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let path = done["reveal"]["url"]
        .as_str()
        .unwrap()
        .split("/webhooks/")
        .nth(1)
        .unwrap()
        .to_string();
    let secret = Secret::new(done["reveal"]["signing_secret"].as_str().unwrap());

    // 16 senders; the daemon is killed half way through.
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let senders: Vec<_> = (0..16)
        .map(|s| {
            let (http, secret, acked) = (http.clone(), secret.clone(), Arc::clone(&acked));
            let url = format!("http://{api}/webhooks/{path}");
            tokio::spawn(async move {
                for n in 0..40 {
                    let id = format!("crash_{s}_{n}");
                    let (status, _) = match tokio::time::timeout(
                        Duration::from_secs(5),
                        send(
                            &http,
                            &url,
                            &secret,
                            &id,
                            unix_now(),
                            r#"{"type":"tick"}"#,
                            None,
                        ),
                    )
                    .await
                    {
                        Ok(result) => result,
                        Err(_) => return,
                    };
                    if status == 200 {
                        acked.lock().unwrap().insert(id);
                    }
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < 150 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    for sender in senders {
        let _ = sender.await;
    }
    let acked: HashSet<String> = acked.lock().unwrap().clone();
    assert!(acked.len() >= 150);

    // Started again: everything acknowledged is there and gets processed.
    let (_child, _api, admin) = serve(dir.path()).await;
    ready(&http, &admin).await;
    let mut done = HashSet::new();
    for _ in 0..400 {
        let listed: serde_json::Value = http
            .get(format!(
                "http://{admin}/admin/events?status=done&limit=10000"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        done = listed["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["delivery_id"].as_str().unwrap().to_string())
            .collect();
        if acked.is_subset(&done) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let missing: Vec<&String> = acked.difference(&done).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events not processed: {missing:?}",
        missing.len()
    );
}
