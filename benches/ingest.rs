//! Durable webhook ingest under load from a real HTTP load generator (wrk), beside a
//! plain axum handler that answers 200 without storing anything (the ceiling).
//!
//! For each backend (SQLite; PostgreSQL when TEST_DATABASE_URL is set): the daemon
//! runs in this process with the generic webhook, GitHub and Slack connectors; wrk
//! sends pre-signed requests, each with its own delivery id, from 64 connections, in
//! turn to:
//! - `generic`: a generic webhook (Standard Webhooks, a small JSON order);
//! - `github bound`: GitHub push payloads of about 2 KiB (`X-Hub-Signature-256`) for an
//!   installation bound to an organization;
//! - `github unbound`: the same for an installation bound to none (stored dead, with
//!   the reason, in the same write);
//! - `slack`: Events API callbacks (v0 signatures) for a bound workspace;
//! - `datadog`: monitor notifications (the payload template switchboard installed,
//!   filled in; the secret in its custom header) for a connected Datadog org, whose
//!   keys and webhook were set up against the tests' fake Datadog;
//! - `pagerduty`: v3 incident webhooks (`X-PagerDuty-Signature`) for an account whose
//!   key and subscription were set up against the tests' fake PagerDuty.
//!
//! Each connector's run sits between two generic runs and is reported as a share of
//! their mean; every run starts on an empty inbox.
//!
//! The figures are wrk's requests/s and latency percentiles, each connector's rate as a
//! share of the generic one, and the events found stored afterwards.
//!
//! The `floor` runs measure what the store allows on this machine: a bare axum handler
//! that verifies the signature and hands the event to the same group commit
//! (`events::write_batch`) through a channel, with no actor, integration or metrics.
//! The daemon cannot beat it; the gap between the two is the daemon's own cost.
//!
//! Run: `cargo bench --bench ingest [-- SECONDS] [ceiling] [floor] [sqlite] [postgres]
//! [generic|github|slack|datadog|pagerduty]` (needs `wrk` on the PATH); naming runs limits the bench
//! to them (a connector with the generic runs on either side), for profiling one.

mod common;
#[path = "../tests/common/fake_datadog.rs"]
#[allow(dead_code)]
mod fake_datadog;
#[path = "../tests/common/fake_pagerduty.rs"]
#[allow(dead_code)]
mod fake_pagerduty;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use diesel_async::SimpleAsyncConnection;
use serde_json::json;
use switchboard::config::{Config, DatabaseConfig};
use switchboard::connectors::ConnectorSet;
use switchboard::pipeline::standard_webhooks;
use switchboard::secret::Secret;
use switchboard::store::{Store, events, integrations, organizations, tokens};
use switchboard::{Daemon, Shutdown};

use common::PostgresDatabase;

/// The daemon binary's allocator, so that the figures are the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONNECTIONS: usize = 64;
/// Distinct requests in each wrk script, for the ceiling and every daemon run alike: more
/// than a run sends, so that every request is a new event.
const REQUESTS: usize = 500_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: u64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(10);
    let named: Vec<&str> = ["ceiling", "floor", "sqlite", "postgres"]
        .into_iter()
        .filter(|run| args.iter().any(|a| a == run))
        .collect();
    let runs = move |run: &str| named.is_empty() || named.contains(&run);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        switchboard::install_crypto_provider();
        if runs("ceiling") {
            let ceiling = run_ceiling(seconds).await;
            println!("ceiling (axum, 200, nothing stored): {ceiling}");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let postgres = std::env::var("TEST_DATABASE_URL").ok();
        if postgres.is_none() {
            println!("postgres: skipped (TEST_DATABASE_URL not set)");
        }
        if runs("floor") {
            let sqlite = format!("sqlite://{}/floor.db", dir.path().display());
            run_floor("sqlite", &sqlite, seconds).await;
            if let Some(server) = &postgres {
                let database = PostgresDatabase::create(server, "floor").await;
                run_floor("postgres", &database.url, seconds).await;
                database.drop().await;
            }
        }
        if runs("sqlite") {
            let sqlite = format!("sqlite://{}/ingest.db", dir.path().display());
            run_daemon("sqlite", &sqlite, seconds).await;
        }
        if runs("postgres")
            && let Some(server) = &postgres
        {
            let database = PostgresDatabase::create(server, "ingest").await;
            run_daemon("postgres", &database.url, seconds).await;
            database.drop().await;
        }
    });
}

struct WrkResult {
    requests_per_second: f64,
    p50: String,
    p99: String,
    non_2xx: u64,
    requests: u64,
}

impl std::fmt::Display for WrkResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} req/s, p50 {}, p99 {}, {} requests, {} non-2xx",
            self.requests_per_second, self.p50, self.p99, self.requests, self.non_2xx
        )
    }
}

/// One request of a wrk script: its headers and body (no tab or newline in either).
type Request = (Vec<(&'static str, String)>, String);

/// Standard Webhooks requests for the generic connector, signed with `secret`.
fn generic_request(secret: &Secret, now: i64, round: usize) -> impl Fn(usize) -> Request {
    let secret = secret.clone();
    move |n| {
        let body = r#"{"type":"order.created","order":{"id":42,"total":"19.99"}}"#.to_string();
        let id = format!("bench_{round}_{n}");
        let signature = standard_webhooks::sign(&secret, &id, now, body.as_bytes()).expect("signs");
        let headers = vec![
            ("content-type", "application/json".to_string()),
            ("webhook-id", id),
            ("webhook-timestamp", now.to_string()),
            ("webhook-signature", signature),
        ];
        (headers, body)
    }
}

/// Writes a wrk script that sends `count` pre-signed requests, each once (then wraps
/// around). The requests go to a data file the script reads (a Lua chunk cannot hold
/// them): one per line, tab-separated header names and values, then the body.
///
/// Each wrk thread formats its share of the requests in `init`, so that `request()`
/// allocates nothing: formatting per request made LuaJIT's collector walk the whole
/// table of requests again and again, which cost wrk about 11 µs per request with 400k
/// of them and far less with fewer, skewing the comparison. Every run uses the same
/// count, so wrk does the same work in each.
fn script(path: &Path, count: usize, request: impl Fn(usize) -> Request) -> usize {
    let data_path = path.with_extension("txt");
    let mut data = std::io::BufWriter::new(std::fs::File::create(&data_path).expect("data file"));
    for n in 0..count {
        let (headers, body) = request(n);
        let mut line = String::new();
        for (name, value) in headers {
            let _ = write!(line, "{name}\t{value}\t");
        }
        line.push_str(&body);
        line.push('\n');
        std::io::Write::write_all(&mut data, line.as_bytes()).expect("data written");
    }
    std::io::Write::flush(&mut data).expect("data written");
    let lua = format!(
        r#"
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function init(args)
  local nthreads = 2
  local n = 0
  requests = {{}}
  for line in io.lines("{data}") do
    if n % nthreads == tid then
      local fields = {{}}
      for field in string.gmatch(line, "[^\t]+") do fields[#fields + 1] = field end
      local headers = {{}}
      for i = 1, #fields - 1, 2 do headers[fields[i]] = fields[i + 1] end
      requests[#requests + 1] = wrk.format("POST", nil, headers, fields[#fields])
    end
    n = n + 1
  end
  counter = 0
  -- request() allocates nothing: without cycles over the table, wrk is not the bottleneck.
  collectgarbage("collect")
  collectgarbage("stop")
end
function request()
  counter = counter % #requests + 1
  return requests[counter]
end
"#,
        data = data_path.display()
    );
    std::fs::write(path, lua).expect("script written");
    count
}

fn wrk(url: &str, script: &Path, seconds: u64) -> WrkResult {
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk runs (install it: apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    if !output.status.success() || text.contains("error") {
        println!("wrk: {}", String::from_utf8_lossy(&output.stderr));
    }
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.trim().to_string()))
            .unwrap_or_default()
    };
    WrkResult {
        requests_per_second: find("Requests/sec:").parse().unwrap_or(0.0),
        p50: find("50%"),
        p99: find("99%"),
        non_2xx: find("Non-2xx or 3xx responses:").parse().unwrap_or(0),
        requests: text
            .lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    }
}

async fn run_ceiling(seconds: u64) -> WrkResult {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|_: axum::body::Bytes| async { "ok" }),
    );
    let secret = Secret::new("whsec_Y2VpbGluZy1zZWNyZXQtbm90LWNoZWNrZWQ=");
    load(app, &secret, seconds).await
}

/// Serves `app` on loopback and loads its `/hook` with wrk, requests signed with `secret`.
async fn load(app: axum::Router, secret: &Secret, seconds: u64) -> WrkResult {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("load.lua");
    script(
        &path,
        REQUESTS,
        generic_request(secret, standard_webhooks::unix_now(), 0),
    );
    let url = format!("http://{addr}/hook");
    tokio::task::spawn_blocking(move || wrk(&url, &path, seconds))
        .await
        .expect("wrk")
}

const GITHUB_SECRET: &str = "bench-github-webhook-secret";
const SLACK_SIGNING_SECRET: &str = "bench-slack-signing-secret";
const BOUND_INSTALLATION: u64 = 4242;
const UNBOUND_INSTALLATION: u64 = 777;
const TEAM: &str = "T0BENCH";

/// A GitHub push of about 2 KiB for `installation`: the body is the same for every
/// request (GitHub's signature covers the body only; the delivery id is a header).
fn github_request(installation: u64) -> impl Fn(usize) -> Request {
    let commits: Vec<serde_json::Value> = (0..6)
        .map(|n| {
            json!({"id": format!("{n:040x}"), "message": format!("Commit number {n}: tidy the build"),
                   "timestamp": "2026-12-04T12:00:00Z", "author": {"name": "Ada", "email": "ada@example.com"},
                   "added": [], "removed": [], "modified": ["src/lib.rs", "README.md"]})
        })
        .collect();
    let body = json!({
        "ref": "refs/heads/main", "before": "0".repeat(40), "after": "f".repeat(40),
        "repository": {"id": 1, "full_name": "acme/service", "private": true},
        "pusher": {"name": "ada"}, "installation": {"id": installation}, "commits": commits,
    })
    .to_string();
    let signature = switchboard::connectors::github::signature::sign(
        &Secret::new(GITHUB_SECRET),
        body.as_bytes(),
    );
    move |n| {
        let headers = vec![
            ("content-type", "application/json".to_string()),
            ("x-github-event", "push".to_string()),
            ("x-github-delivery", format!("bench-{installation}-{n}")),
            ("x-hub-signature-256", signature.clone()),
        ];
        (headers, body.clone())
    }
}

/// Slack Events API callbacks for the bound workspace, each with its own event id.
fn slack_request(now: i64) -> impl Fn(usize) -> Request {
    let secret = Secret::new(SLACK_SIGNING_SECRET);
    move |n| {
        let body = json!({
            "token": "unused", "team_id": TEAM, "api_app_id": "A0BENCH", "type": "event_callback",
            "event_id": format!("Ev{n:08}"), "event_time": now,
            "event": {"type": "reaction_added", "user": "U0ADA", "reaction": "tada",
                      "item": {"type": "message", "channel": "C0DEPLOYS", "ts": "1764849600.000100"},
                      "event_ts": "1764849601.000200"},
        })
        .to_string();
        let signature =
            switchboard::connectors::slack::signature::sign(&secret, now, body.as_bytes());
        let headers = vec![
            ("content-type", "application/json".to_string()),
            ("x-slack-request-timestamp", now.to_string()),
            ("x-slack-signature", signature),
        ];
        (headers, body)
    }
}

/// Datadog monitor notifications for one integration: the installed template with
/// `$ID` and the alert's fields filled in, the secret in its header.
fn datadog_request(template: &str, secret: &str) -> impl Fn(usize) -> Request {
    let (template, secret) = (template.to_string(), secret.to_string());
    move |n| {
        let fill = [
            ("$ID", format!("dd-{n}")),
            ("$EVENT_TYPE", "query_alert_monitor".to_string()),
            (
                "$EVENT_TITLE",
                "[Triggered on {host:web-1}] CPU high".to_string(),
            ),
            ("$DATE", "1764836000000".to_string()),
            ("$ALERT_ID", "42".to_string()),
            ("$ALERT_TRANSITION", "Triggered".to_string()),
            ("$ALERT_SCOPE", "host:web-1".to_string()),
        ];
        let body = fill.iter().fold(template.clone(), |body, (name, value)| {
            body.replace(&format!("\"{name}\""), &json!(value).to_string())
        });
        let headers = vec![
            ("content-type", "application/json".to_string()),
            (fake_datadog::SECRET_HEADER, secret.clone()),
        ];
        (headers, body)
    }
}

/// PagerDuty incident webhooks for one integration, signed with its subscription's
/// secret, each with its own webhook id.
fn pagerduty_request(secret: &str) -> impl Fn(usize) -> Request {
    let secret = secret.to_string();
    move |n| {
        let event = fake_pagerduty::incident_event(
            "incident.triggered",
            &format!("PINC{n}"),
            n as u64,
            "triggered",
            "Checkout",
        );
        let body = event.to_string();
        let headers = vec![
            ("content-type", "application/json".to_string()),
            ("x-webhook-id", format!("wh-{n}")),
            (
                "x-pagerduty-signature",
                fake_pagerduty::sign(&[&secret], body.as_bytes()),
            ),
        ];
        (headers, body)
    }
}

/// An integration bound to a provider account, made directly in the store (no
/// provider to authorize against here).
async fn bound_integration(store: &Store, organization_id: &str, connector: &str, account: &str) {
    let pending = integrations::create_pending(store, organization_id, connector, None)
        .await
        .expect("pending integration");
    integrations::activate(
        store,
        organization_id,
        &pending.id,
        Some(account.to_string()),
        &json!({}),
        Vec::new(),
    )
    .await
    .expect("integration bound");
}

async fn run_daemon(backend: &str, database_url: &str, seconds: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    // Datadog's keys are checked and its webhook installed as a tenant connects.
    let datadog = fake_datadog::FakeDatadog::start("us1").await;
    let pagerduty = fake_pagerduty::FakePagerDuty::start("us").await;
    // Providers' APIs point at a closed port: nothing here calls them (validation at
    // start is spread over an hour).
    let nowhere = "http://127.0.0.1:9";
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [database]\nurl = \"{database_url}\"\nmax_connections = 16\n\
         [vault]\nmaster_key = \"{key}\"\n[log]\nlevel = \"warn\"\n\
         [integrations]\nvalidation_spread = \"1h\"\n\
         [connectors.webhook]\n\
         [connectors.github]\napp_id = \"1\"\napp_slug = \"bench\"\n\
         private_key_file = \"{manifest}/tests/fixtures/github-app-test-key.pem\"\n\
         webhook_secret = \"{GITHUB_SECRET}\"\nunverified_installations = true\n\
         api_base_url = \"{nowhere}\"\nweb_base_url = \"{nowhere}\"\n\
         [connectors.slack]\nclient_id = \"bench\"\nclient_secret = \"unused\"\n\
         signing_secret = \"{SLACK_SIGNING_SECRET}\"\napi_base_url = \"{nowhere}/api\"\n\
         {datadog}{pagerduty}{extra}",
        datadog = datadog.config_section(""),
        pagerduty = pagerduty.config_section(""),
        key = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode([4u8; 32])
        },
        manifest = env!("CARGO_MANIFEST_DIR"),
        extra = std::env::var("BENCH_EXTRA_CONFIG").unwrap_or_default()
    );
    let config = Config::parse(&text, Path::new("."), &|_| None).expect("config");
    let store = Store::connect(&config.database).expect("store");
    store.migrate().await.expect("migrated");
    let org = organizations::create(&store, "bench").await.expect("org");
    let (_, token) = tokens::create(&store, &org.id).await.expect("token");
    bound_integration(&store, &org.id, "github", &BOUND_INSTALLATION.to_string()).await;
    bound_integration(&store, &org.id, "slack", TEAM).await;

    let shutdown = Shutdown::new();
    let daemon = Daemon::start_with(
        &config,
        ConnectorSet::from_sections(&config.connectors).expect("connector sections"),
        shutdown.clone(),
    )
    .await
    .expect("daemon");
    let (api, admin) = (daemon.api_addr, daemon.admin_addr);
    let task = tokio::spawn(daemon.run_until_shutdown());
    let http = reqwest::Client::new();
    common::wait_ready(&http, admin).await;
    // Authorizes a connector for the bench's organization and completes it with
    // `fields`: the callback's answer.
    let connect = async |connector: &str, fields: serde_json::Value| -> serde_json::Value {
        let call = async |path: &str, body: serde_json::Value| -> serde_json::Value {
            http.post(format!("http://{api}{path}"))
                .bearer_auth(token.expose())
                .json(&body)
                .send()
                .await
                .expect("the tenant API answers")
                .json()
                .await
                .expect("JSON")
        };
        let started = call(
            "/integrations/authorize",
            json!({"connector_type": connector}),
        )
        .await;
        let mut callback = json!({"connector_type": connector, "state": started["state"]});
        if let (Some(callback), Some(fields)) = (callback.as_object_mut(), fields.as_object()) {
            callback.extend(fields.clone());
        }
        call("/integrations/callback", callback).await
    };
    let done = connect("webhook", json!({})).await;
    let generic_path = done["reveal"]["url"]
        .as_str()
        .unwrap()
        .split("/webhooks/")
        .nth(1)
        .unwrap()
        .to_string();
    let secret = Secret::new(done["reveal"]["signing_secret"].as_str().unwrap());
    let done = connect(
        "datadog",
        json!({"credentials": {"api_key": fake_datadog::API_KEY,
               "application_key": fake_datadog::APPLICATION_KEY, "site": "us1"}}),
    )
    .await;
    let datadog_id = done["integration"]["id"]
        .as_str()
        .expect("Datadog connected");
    let webhook = datadog
        .webhook(&format!("switchboard-{datadog_id}"))
        .expect("webhook installed");
    let datadog_template = webhook["payload"].as_str().unwrap().to_string();
    let datadog_secret =
        serde_json::from_str::<serde_json::Value>(webhook["custom_headers"].as_str().unwrap())
            .unwrap()[fake_datadog::SECRET_HEADER]
            .as_str()
            .unwrap()
            .to_string();
    let done = connect(
        "pagerduty",
        json!({"credentials": {"api_key": fake_pagerduty::USER_KEY, "region": "us"}}),
    )
    .await;
    let pagerduty_id = done["integration"]["id"]
        .as_str()
        .expect("PagerDuty connected")
        .to_string();
    let (_, _, pagerduty_secret) = pagerduty.only_subscription();

    let now = standard_webhooks::unix_now();
    // Each connector's run sits between two generic runs, and its share is of their
    // mean: on this shared machine the rate drifts by up to a tenth over a bench (the
    // generic runs show how much).
    let generic = |round: usize| -> (String, String, Box<dyn Fn(usize) -> Request>) {
        (
            format!("generic #{round}"),
            format!("/webhooks/{generic_path}"),
            Box::new(generic_request(&secret, now, round)),
        )
    };
    let connector = |name: &str, path: &str, request: Box<dyn Fn(usize) -> Request>| {
        (name.to_string(), path.to_string(), request)
    };
    let runs = vec![
        generic(0),
        connector(
            "github bound",
            "/webhooks/github",
            Box::new(github_request(BOUND_INSTALLATION)),
        ),
        generic(1),
        connector(
            "github unbound",
            "/webhooks/github",
            Box::new(github_request(UNBOUND_INSTALLATION)),
        ),
        generic(2),
        connector(
            "slack",
            "/webhooks/slack/events",
            Box::new(slack_request(now)),
        ),
        generic(3),
        connector(
            "datadog",
            &format!("/webhooks/datadog/{datadog_id}"),
            Box::new(datadog_request(&datadog_template, &datadog_secret)),
        ),
        generic(4),
        connector(
            "pagerduty",
            &format!("/webhooks/pagerduty/{pagerduty_id}"),
            Box::new(pagerduty_request(&pagerduty_secret)),
        ),
        generic(5),
    ];
    // `generic` alone: for comparing one build with another.
    // Naming connectors (`generic`, `github`, `slack`, `datadog`, `pagerduty`) runs only them, each
    // with the generic runs on either side: for comparing builds, or one connector.
    let connectors = ["generic", "github", "slack", "datadog", "pagerduty"];
    let chosen: Vec<String> = std::env::args()
        .filter(|a| connectors.contains(&a.as_str()))
        .collect();
    let is_generic = |name: &str| name.starts_with("generic");
    let wanted =
        |name: &str| !is_generic(name) && chosen.iter().any(|c| name.starts_with(c.as_str()));
    let names: Vec<String> = runs.iter().map(|(name, _, _)| name.clone()).collect();
    let keep: Vec<bool> = (0..names.len())
        .map(|i| {
            let name = &names[i];
            chosen.is_empty()
                || wanted(name)
                || (is_generic(name)
                    && (chosen.iter().any(|c| c == "generic")
                        || names.get(i + 1).is_some_and(|n| wanted(n))
                        || (i > 0 && wanted(&names[i - 1]))))
        })
        .collect();
    let mut rates: Vec<(String, f64)> = Vec::new();
    for ((name, path, request), keep) in runs.into_iter().zip(keep) {
        if !keep {
            continue;
        }
        let url = format!("http://{api}{path}");
        // One request of the run's own kind must be stored before the load starts.
        let (headers, body) = request(usize::MAX);
        let mut probe = http.post(&url).body(body);
        for (header, value) in headers {
            probe = probe.header(header, value);
        }
        let probe = probe.send().await.expect("probe");
        let status = probe.status();
        assert!(
            status.is_success(),
            "{name}: probe refused: {status} {}",
            probe.text().await.unwrap_or_default()
        );
        let script_path = dir.path().join("ingest.lua");
        let count = script(&script_path, REQUESTS, request);
        empty_inbox(&store).await;
        let before = count_events(&store).await;
        let result = tokio::task::spawn_blocking(move || wrk(&url, &script_path, seconds))
            .await
            .expect("wrk");
        let after = count_events(&store).await;
        let stored: i64 =
            after.iter().map(|(_, n)| n).sum::<i64>() - before.iter().map(|(_, n)| n).sum::<i64>();
        let dead = |counts: &[(String, i64)]| {
            counts
                .iter()
                .find(|(s, _)| s == "dead")
                .map_or(0, |(_, n)| *n)
        };
        let dead = dead(&after) - dead(&before);
        println!(
            "{backend}, {name}: {result}; {stored} events stored ({dead} dead) of {count} distinct ids"
        );
        rates.push((name, result.requests_per_second));
    }
    for window in rates.windows(3) {
        let [(before, generic_before), (name, rate), (_, generic_after)] = window else {
            continue;
        };
        if !before.starts_with("generic") || name.starts_with("generic") {
            continue;
        }
        let generic = (generic_before + generic_after) / 2.0;
        println!(
            "{backend}, {name}: {:.1}% of generic ({rate:.0} against {generic:.0} req/s)",
            100.0 * rate / generic
        );
    }
    let generics: Vec<f64> = rates
        .iter()
        .filter(|(name, _)| name.starts_with("generic"))
        .map(|(_, rate)| *rate)
        .collect();
    if let (Some(low), Some(high)) = (
        generics.iter().copied().reduce(f64::min),
        generics.iter().copied().reduce(f64::max),
    ) {
        println!("{backend}, generic runs: {low:.0} to {high:.0} req/s (the drift)");
    }
    let tree: serde_json::Value = http
        .get(format!("http://{admin}/admin/actors"))
        .send()
        .await
        .expect("health tree")
        .json()
        .await
        .expect("health JSON");
    let inbox = find_report(&tree, "inbox").map(|r| &r["details"]);
    let per_batch = inbox
        .and_then(|d| Some(d["stored"].as_f64()? / d["batches"].as_f64()?))
        .unwrap_or(0.0);
    println!("{backend}: {per_batch:.1} events per group commit");
    shutdown.trigger();
    let _ = task.await;
}

/// Every run starts on an empty inbox: otherwise each would pay for the rows (and
/// the index pages) of the runs before it, which on PostgreSQL alone costs a quarter
/// of the rate by the fifth run.
async fn empty_inbox(store: &Store) {
    match store {
        Store::Postgres { pool, .. } => {
            let mut conn = pool.get().await.expect("connection");
            conn.batch_execute("TRUNCATE events; CHECKPOINT;")
                .await
                .expect("inbox emptied");
        }
        Store::Sqlite { pool, .. } => {
            let mut conn = pool.get().await.expect("connection");
            conn.batch_execute("DELETE FROM events; PRAGMA wal_checkpoint(TRUNCATE);")
                .await
                .expect("inbox emptied");
        }
    }
}

/// Events by status.
async fn count_events(store: &Store) -> Vec<(String, i64)> {
    events::count_by_status(store)
        .await
        .expect("events counted")
}

const FLOOR_ORGANIZATION: &str = "019ae2f0-4c1a-7d3e-9b52-6f0e8a1c2d34";
const FLOOR_INTEGRATION: &str = "019ae2f0-4c1b-7a11-8e27-3b9d5f6a7c80";

/// An event handed to the floor's batcher, and where its outcome goes.
type Handed = (events::NewEvent, tokio::sync::oneshot::Sender<bool>);

/// The floor: a bare handler over the daemon's group commit (see the module comment).
async fn run_floor(backend: &str, database_url: &str, seconds: u64) {
    let store = Store::connect(&DatabaseConfig {
        url: Secret::new(database_url),
        max_connections: 16,
        ..DatabaseConfig::default()
    })
    .expect("store");
    store.migrate().await.expect("migrated");
    // One batch at a time, as the inbox writes them: whatever queued meanwhile.
    let (hand, mut handed) = tokio::sync::mpsc::unbounded_channel::<Handed>();
    let batches = store.clone();
    tokio::spawn(async move {
        let mut queued = Vec::new();
        while handed.recv_many(&mut queued, 256).await > 0 {
            let (batch, replies): (Vec<_>, Vec<_>) = queued.drain(..).unzip();
            let settled = vec![true; batch.len()];
            events::write_batch(&batches, batch, &settled, Vec::new(), move |written| {
                let stored = written.is_ok();
                for reply in replies {
                    let _ = reply.send(stored);
                }
            })
            .await;
        }
    });
    let secret = Secret::new("whsec_Zmxvb3Itc2VjcmV0LWZvci10aGUtYmVuY2g=");
    let key = secret.clone();
    let handler = move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
        let (hand, key) = (hand.clone(), key.clone());
        async move {
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            let Ok(timestamp) = standard_webhooks::verify(
                &key,
                header(standard_webhooks::ID),
                header(standard_webhooks::TIMESTAMP),
                header(standard_webhooks::SIGNATURE),
                &body,
                Duration::from_secs(300),
                standard_webhooks::unix_now(),
            ) else {
                return axum::http::StatusCode::UNAUTHORIZED;
            };
            // The row the daemon writes: owned by an organization and an integration.
            let event = events::NewEvent {
                organization_id: Some(FLOOR_ORGANIZATION.into()),
                integration_id: Some(FLOOR_INTEGRATION.into()),
                connector_type: "webhook".into(),
                event_type: "order.created".into(),
                delivery_id: header(standard_webhooks::ID).unwrap_or_default().into(),
                delivery_scope: events::DeliveryScope::Integration,
                payload: String::from_utf8_lossy(&body).into_owned(),
                occurred_at: chrono::DateTime::from_timestamp(timestamp, 0).map(|t| t.naive_utc()),
                dead_reason: None,
            };
            let (reply, stored) = tokio::sync::oneshot::channel();
            let _ = hand.send((event, reply));
            match stored.await {
                Ok(true) => axum::http::StatusCode::OK,
                _ => axum::http::StatusCode::SERVICE_UNAVAILABLE,
            }
        }
    };
    let app = axum::Router::new().route("/hook", axum::routing::post(handler));
    let result = load(app, &secret, seconds).await;
    let stored = events::list(&store, None, None, 1_000_000)
        .await
        .expect("events")
        .len();
    println!("floor, {backend}: {result}; {stored} events stored (of {REQUESTS} distinct ids)");
}

/// The report named `name` in the admin health tree.
fn find_report<'a>(report: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    if report["name"] == name {
        return Some(report);
    }
    let children = report["children"]
        .as_array()
        .or_else(|| report.as_array())?;
    children.iter().find_map(|child| find_report(child, name))
}
