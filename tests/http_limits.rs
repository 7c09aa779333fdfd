//! Every listener's limits, from outside over real sockets: idle and slow clients are
//! closed, idle sockets cannot lock others out, stalled uploads stay within the body
//! budget, and every error answers in the JSON error shape.

mod common;

use std::time::{Duration, Instant};

use common::TestDaemon;
use common::db::{Db, TestDb};
use rstest::rstest;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes the socket (or `within` passes): what it answered, and
/// whether it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&answer).into(), true),
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&answer).into(), false),
        }
    }
}

/// The JSON body of a raw HTTP answer.
fn body_of(answer: &str) -> Value {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or(Value::Null)
}

const SHORT: &str =
    "header_timeout = \"300ms\"\nidle_timeout = \"600ms\"\nbody_timeout = \"500ms\"";

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_slow_clients_are_closed_after_their_timeout() {
    let daemon = TestDaemon::start_with_server(SHORT, "").await;
    daemon.ready().await;

    // Connected, silent: closed once the head is overdue.
    let mut silent = TcpStream::connect(daemon.api).await.unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(closed, "a silent connection stays open");
    assert!(started.elapsed() >= Duration::from_millis(250));

    // Half a head, then nothing.
    let mut slow_head = TcpStream::connect(daemon.api).await.unwrap();
    slow_head
        .write_all(b"POST /integrations/list HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut slow_head, Duration::from_secs(5)).await;
    assert!(closed, "a slow head is never cut off");

    // A whole head and part of the announced body: 408 once the body is overdue.
    let mut slow_body = TcpStream::connect(daemon.api).await.unwrap();
    slow_body
        .write_all(
            b"POST /integrations/authorize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{\"connector_type\"",
        )
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut slow_body, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(
        body_of(&answer)["error"]["code"],
        "request_timeout",
        "{answer}"
    );
    assert!(closed);

    // A keep-alive connection that answered a request, then went quiet.
    let mut kept = TcpStream::connect(daemon.admin).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 512];
    let n = kept.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let quiet = Instant::now();
    let (_, closed) = read_until_closed(&mut kept, Duration::from_secs(5)).await;
    assert!(closed, "an idle keep-alive connection stays open");
    assert!(quiet.elapsed() >= Duration::from_millis(250));
    daemon.stop().await;
}

/// 2,000 idle sockets on the API listener (each well within its idle timeout): the
/// admin endpoint, the tenant API and new connections are served all the same.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_keeps_serving_with_two_thousand_idle_sockets_held() {
    let daemon =
        TestDaemon::start_with_server("idle_timeout = \"60s\"\nheader_timeout = \"60s\"", "").await;
    daemon.ready().await;
    let (_, token) = daemon.organization("Acme").await;
    let mut idle = Vec::with_capacity(2000);
    for _ in 0..2000 {
        idle.push(TcpStream::connect(daemon.api).await.unwrap());
    }
    assert_eq!(daemon.get_json("/healthz").await.0, 200);
    let (status, listed) = daemon
        .call_api(&token, "/integrations/list", json!({}))
        .await;
    assert_eq!(status, 200, "{listed}");
    drop(idle);
    daemon.stop().await;
}

/// At the connection cap the oldest idle connection makes room: 200 idle sockets
/// against a cap of 50 lock nobody out.
#[tokio::test(flavor = "multi_thread")]
async fn at_the_connection_cap_idle_connections_make_room() {
    let daemon = TestDaemon::start_with_server(
        "idle_timeout = \"60s\"\nheader_timeout = \"60s\"\nmax_connections = 50",
        "",
    )
    .await;
    daemon.ready().await;
    let (_, token) = daemon.organization("Acme").await;
    let mut idle = Vec::with_capacity(200);
    for _ in 0..200 {
        idle.push(TcpStream::connect(daemon.api).await.unwrap());
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for _ in 0..3 {
        let answer = http
            .post(daemon.api_url("/integrations/list"))
            .bearer_auth(&token)
            .json(&json!({}))
            .send()
            .await
            .expect("served at the cap");
        assert_eq!(answer.status().as_u16(), 200);
    }
    drop(idle);
    daemon.stop().await;
}

/// Uploads that announce nearly a MiB, send most of it and stall hold at most the
/// body budget (8 MiB here): the rest are refused with 503 and Retry-After instead
/// of being buffered, and the daemon's memory does not grow by their size.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_uploads_stay_within_the_body_budget() {
    const UPLOADS: usize = 100;
    let daemon = TestDaemon::start_with_server(
        "body_timeout = \"20s\"\nbody_budget_bytes = 8388608\nbody_budget_wait = \"200ms\"",
        "",
    )
    .await;
    daemon.ready().await;
    let resident_before = resident_kib();
    let chunk = vec![b'x'; 900 * 1024];
    let mut uploads = Vec::with_capacity(UPLOADS);
    for _ in 0..UPLOADS {
        let mut stream = TcpStream::connect(daemon.api).await.unwrap();
        stream
            .write_all(
                b"POST /integrations/authorize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                  Content-Length: 983040\r\n\r\n",
            )
            .await
            .unwrap();
        // The kernel takes what fits in its buffers; the rest would block: not awaited.
        let _ = tokio::time::timeout(Duration::from_millis(20), stream.write_all(&chunk)).await;
        uploads.push(stream);
    }
    let mut refused = 0;
    for stream in &mut uploads {
        let (answer, _) = read_until_closed(stream, Duration::from_millis(300)).await;
        if answer.starts_with("HTTP/1.1 503") {
            assert!(answer.to_lowercase().contains("retry-after: 1"), "{answer}");
            assert_eq!(body_of(&answer)["error"]["code"], "unavailable", "{answer}");
            refused += 1;
        }
    }
    // 8 MiB holds 8 uploads of 960 KiB.
    assert!(
        refused >= UPLOADS - 8,
        "only {refused} of {UPLOADS} refused"
    );
    let grown_kib = resident_kib().saturating_sub(resident_before);
    assert!(
        grown_kib < 48 * 1024,
        "resident memory grew {grown_kib} KiB for {UPLOADS} stalled uploads of 900 KiB"
    );
    drop(uploads);
    daemon.stop().await;
}

/// This process's resident set, from /proc.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The shape every error has: `{"error":{"code","message"}}`, and nothing else.
fn assert_error_shape(what: &str, status: u16, expected: u16, body: &Value) {
    assert_eq!(status, expected, "{what}: {body}");
    let error = &body["error"];
    assert!(
        error["code"].is_string() && error["message"].is_string(),
        "{what}: {body}"
    );
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_answers_in_the_json_error_shape() {
    let daemon = TestDaemon::start_configured("[connectors.webhook]\n").await;
    daemon.ready().await;
    let (_, token) = daemon.organization("Acme").await;
    let http = reqwest::Client::new();
    let huge_header = "h".repeat(40 * 1024);
    let huge_body = vec![b' '; 3 * 1024 * 1024];
    let api = |path: &str| daemon.api_url(path);
    let admin = |path: &str| daemon.admin_url(path);
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        (
            "GET on a POST route",
            http.get(api("/integrations/authorize")).bearer_auth(&token),
            405,
        ),
        ("DELETE on healthz", http.delete(admin("/healthz")), 405),
        (
            "PUT on a webhook",
            http.put(api("/webhooks/generic/x")),
            405,
        ),
        ("unknown API path", http.get(api("/nope")), 404),
        ("unknown admin path", http.get(admin("/admin/nope")), 404),
        (
            "bad query",
            http.get(admin("/admin/events?limit=many")),
            400,
        ),
        (
            "unknown query field",
            http.get(admin("/admin/actors?depth=1&colour=red")),
            400,
        ),
        (
            "huge header",
            http.get(admin("/healthz"))
                .header("x-big", huge_header.as_str()),
            431,
        ),
        (
            "huge body",
            http.post(api("/integrations/authorize"))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(huge_body.clone()),
            413,
        ),
        (
            "huge webhook",
            http.post(api("/webhooks/github")).body(huge_body),
            413,
        ),
        (
            "unknown generic webhook",
            http.post(api(
                "/webhooks/generic/00000000-0000-0000-0000-000000000000",
            ))
            .body("{}"),
            404,
        ),
        (
            "bad JSON",
            http.post(api("/integrations/authorize"))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body("{nope"),
            400,
        ),
        (
            "no token",
            http.post(api("/integrations/list")).body("{}"),
            401,
        ),
    ];
    for (what, request, expected) in cases {
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            content_type.starts_with("application/json"),
            "{what}: {content_type}"
        );
        assert_error_shape(what, status, expected, &body);
    }
    daemon.stop().await;
}

/// Re-authorizing replaces a pending integration, also when the requests race: each
/// gets a state, and one pending integration is left.
#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_authorizations_each_get_a_state_and_one_stays_pending(#[case] backend: Db) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let daemon = TestDaemon::start_on(db.config.url.expose(), "[connectors.webhook]\n").await;
    daemon.ready().await;
    let (_, token) = daemon.organization("Acme").await;
    let answers = futures::future::join_all((0..16).map(|_| {
        daemon.call_api(
            &token,
            "/integrations/authorize",
            json!({"connector_type": "webhook"}),
        )
    }))
    .await;
    let mut states = std::collections::HashSet::new();
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
        states.insert(answer["state"].as_str().unwrap().to_string());
    }
    assert_eq!(states.len(), 16);
    let (_, listed) = daemon
        .call_api(&token, "/integrations/list", json!({}))
        .await;
    let pending: Vec<&Value> = listed["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "pending")
        .collect();
    assert_eq!(pending.len(), 1, "{listed}");
    daemon.stop().await;
}
