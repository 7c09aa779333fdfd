//! The Slack connector against a fake Slack on loopback: OAuth v2, token rotation,
//! the Events API over HTTP, Socket Mode and the bot.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::fake_slack::{self, FakeSlack, GOOD_CODE, SIGNING_SECRET, TEAM};
use common::{TestDaemon, until};
use serde_json::{Value, json};
use switchboard::connectors::slack::signature;
use switchboard::secret::Secret;

async fn daemon(slack: &FakeSlack, socket_mode: bool, extra: &str) -> TestDaemon {
    let daemon = TestDaemon::start_configured(&slack.config_section(socket_mode, extra)).await;
    daemon.ready().await;
    daemon
}

/// Sends an Events API callback as Slack does (signed now); the status.
async fn post_event(daemon: &TestDaemon, event: &Value) -> u16 {
    let body = serde_json::to_vec(event).unwrap();
    let now = chrono::Utc::now().timestamp();
    daemon
        .http
        .post(daemon.api_url("/webhooks/slack/events"))
        .header("x-slack-request-timestamp", now.to_string())
        .header(
            "x-slack-signature",
            signature::sign(&Secret::new(SIGNING_SECRET), now, &body),
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Starts Slack's OAuth for the token's organization: the state Slack would carry.
async fn start_oauth(daemon: &TestDaemon, token: &str) -> String {
    daemon.authorize(token, "slack").await["state"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Slack sends the browser back with `query`.
async fn redirect(daemon: &TestDaemon, query: &str) -> reqwest::Response {
    daemon
        .http
        .get(daemon.api_url(&format!("/oauth/slack/callback?{query}")))
        .send()
        .await
        .unwrap()
}

/// Installs the app in the fake workspace for the token's organization.
async fn install(daemon: &TestDaemon, token: &str) -> Value {
    let state = start_oauth(daemon, token).await;
    let page = redirect(daemon, &format!("code={GOOD_CODE}&state={state}")).await;
    assert_eq!(page.status(), 200);
    let (_, listed) = daemon
        .call_api(token, "/integrations/list", json!({}))
        .await;
    listed["integrations"][0].clone()
}

async fn events(daemon: &TestDaemon, query: &str) -> Vec<Value> {
    let (status, found) = daemon.get_json(&format!("/admin/events?{query}")).await;
    assert_eq!(status, 200, "{found}");
    found["events"].as_array().unwrap().clone()
}

fn mention(event_id: &str, text: &str, ts: &str) -> Value {
    json!({
        "token": "verification-token-unused",
        "team_id": TEAM,
        "api_app_id": "A0001",
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1_700_000_000,
        "event": {"type": "app_mention", "user": "U0HUMAN", "text": format!("<@{}> {text}", fake_slack::BOT_USER),
                  "ts": ts, "channel": "C0GENERAL", "event_ts": ts}
    })
}

fn command(user: &str, text: &str) -> Value {
    json!({"token": "unused", "team_id": TEAM, "team_domain": "acme", "channel_id": "C0GENERAL",
           "channel_name": "general", "user_id": user, "user_name": "someone", "command": "/switchboard",
           "text": text, "api_app_id": "A0001", "response_url": "https://hooks.slack.test/commands/1",
           "trigger_id": format!("trig-{}", uuid::Uuid::new_v4())})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_oauth_flow_binds_the_workspace_and_revoking_revokes_the_token() {
    let slack = FakeSlack::start().await;
    let daemon = daemon(&slack, false, "").await;
    let (_, token) = daemon.organization("Acme").await;

    let (_, started) = daemon
        .call_api(
            &token,
            "/integrations/authorize",
            json!({"connector_type": "slack"}),
        )
        .await;
    let url = url::Url::parse(started["url"].as_str().unwrap()).unwrap();
    assert_eq!(
        url.as_str().split('?').next(),
        Some("https://slack.test/oauth/v2/authorize")
    );
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["client_id"], fake_slack::CLIENT_ID);
    assert_eq!(
        query["scope"],
        "app_mentions:read,chat:write,commands,im:history"
    );
    assert_eq!(query["state"], started["state"].as_str().unwrap());
    assert!(
        query["redirect_uri"].ends_with("/oauth/slack/callback"),
        "{query:?}"
    );

    // A bad code is the tenant's problem, said plainly.
    let (status, refused) = daemon
        .call_api(
            &token,
            "/integrations/callback",
            json!({"connector_type": "slack", "state": started["state"], "code": "wrong"}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused.to_string().contains("invalid_code"), "{refused}");

    let integration = install(&daemon, &token).await;
    assert_eq!(integration["status"], "active");
    assert_eq!(integration["external_id"], TEAM);
    assert_eq!(integration["metadata"]["bot_user_id"], fake_slack::BOT_USER);
    let id = integration["id"].as_str().unwrap();
    let (status, validated) = daemon
        .post_json(&format!("/admin/integrations/{id}/validate"))
        .await;
    assert_eq!(status, 200, "{validated}");

    let (status, revoked) = daemon
        .call_api(
            &token,
            "/integrations/revoke",
            json!({"integration_id": id}),
        )
        .await;
    assert_eq!(
        (status, revoked["at_provider"].clone()),
        (200, json!("revoked")),
        "{revoked}"
    );
    assert_eq!(slack.state.revoked.lock().unwrap().len(), 1);
    daemon.stop().await;
}

/// A user who denies access is sent back with OAuth's error: the page says what the
/// provider said (escaped), and the pending integration is closed as refused. Extra
/// and repeated parameters never break the page.
#[tokio::test(flavor = "multi_thread")]
async fn a_denied_authorization_shows_the_providers_words_and_closes_the_pending_one() {
    let slack = FakeSlack::start().await;
    let daemon = daemon(&slack, false, "").await;
    let (_, token) = daemon.organization("Acme").await;
    let state = start_oauth(&daemon, &token).await;
    let page = redirect(
        &daemon,
        &format!("error=access_denied&error_description=The+user+%3Cdenied%3E+access&state={state}&scope="),
    )
    .await;
    assert_eq!(page.status(), 400);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        page.headers()
    );
    let text = page.text().await.unwrap();
    assert!(
        text.contains("The user &lt;denied&gt; access (access_denied)"),
        "{text}"
    );
    let (_, listed) = daemon
        .call_api(&token, "/integrations/list", json!({}))
        .await;
    let refused = &listed["integrations"][0];
    assert_eq!(refused["status"], "revoked", "{listed}");
    assert_eq!(refused["metadata"]["refused"]["error"], "access_denied");

    // Authorizing again, then a redirect with a repeated state and Slack's own extras.
    let state = start_oauth(&daemon, &token).await;
    let page = redirect(
        &daemon,
        &format!("code={GOOD_CODE}&state={state}&state={state}&scope=chat%3Awrite&enterprise_id="),
    )
    .await;
    assert_eq!(page.status(), 200, "{}", page.text().await.unwrap());
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_tokens_are_refreshed_and_the_refresh_token_replaced() {
    let slack = FakeSlack::start().await;
    slack.state.rotation.store(true, Ordering::SeqCst);
    // Tokens of 2 seconds: refreshed halfway through their life (the 15-minute margin
    // is longer than they live).
    slack.state.expires_in.store(2, Ordering::SeqCst);
    let daemon = daemon(&slack, false, "").await;
    let (_, token) = daemon.organization("Acme").await;
    let integration = install(&daemon, &token).await;
    assert_eq!(integration["metadata"]["token_rotation"], true);
    until("refreshed", || async {
        slack.state.refreshed.load(Ordering::SeqCst) >= 1
    })
    .await;
    // The spent refresh token is gone at Slack; the next refresh used the new one.
    until("refreshed again with the new refresh token", || async {
        slack.state.refreshed.load(Ordering::SeqCst) >= 2
    })
    .await;
    let id = integration["id"].as_str().unwrap();
    let (_, status) = daemon
        .call_api(
            &token,
            "/integrations/status",
            json!({"integration_id": id}),
        )
        .await;
    assert_eq!(status["integration"]["status"], "active", "{status}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_api_requests_are_verified_challenged_and_stored_once() {
    let slack = FakeSlack::start().await;
    let daemon = daemon(&slack, false, "").await;
    let (_, token) = daemon.organization("Acme").await;
    install(&daemon, &token).await;
    let send = |body: Value, secret: &'static str, age: i64, retry: Option<&'static str>| {
        let body = serde_json::to_vec(&body).unwrap();
        let now = chrono::Utc::now().timestamp() - age;
        let mut request = daemon
            .http
            .post(daemon.api_url("/webhooks/slack/events"))
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", now.to_string())
            .header(
                "x-slack-signature",
                signature::sign(&Secret::new(secret), now, &body),
            );
        if let Some(retry) = retry {
            request = request
                .header("x-slack-retry-num", retry)
                .header("x-slack-retry-reason", "http_timeout");
        }
        request.body(body).send()
    };
    let challenge = send(json!({"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}), SIGNING_SECRET, 0, None)
        .await
        .unwrap();
    assert_eq!(challenge.status(), 200);
    assert_eq!(
        challenge.json::<Value>().await.unwrap()["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );

    let body = mention("Ev0001", "help", "1700000000.000100");
    assert_eq!(
        send(body.clone(), "wrong-secret", 0, None)
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        send(body.clone(), SIGNING_SECRET, 301, None)
            .await
            .unwrap()
            .status(),
        401,
        "stale"
    );
    // Tampered: signed, then changed.
    let raw = serde_json::to_vec(&body).unwrap();
    let now = chrono::Utc::now().timestamp();
    let signed = signature::sign(&Secret::new(SIGNING_SECRET), now, &raw);
    let tampered = String::from_utf8(raw).unwrap().replace("help", "status");
    let response = daemon
        .http
        .post(daemon.api_url("/webhooks/slack/events"))
        .header("x-slack-request-timestamp", now.to_string())
        .header("x-slack-signature", signed)
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(events(&daemon, "status=pending").await.is_empty());

    let first = send(body.clone(), SIGNING_SECRET, 0, None).await.unwrap();
    assert_eq!(first.status(), 200);
    let retry = send(body.clone(), SIGNING_SECRET, 0, Some("1"))
        .await
        .unwrap();
    assert_eq!(retry.json::<Value>().await.unwrap()["duplicate"], true);
    // The mention is answered in its thread.
    until("answered", || async {
        !slack.state.posted.lock().unwrap().is_empty()
    })
    .await;
    let posted = slack.state.posted.lock().unwrap()[0].clone();
    assert_eq!(posted["channel"], "C0GENERAL");
    assert_eq!(posted["thread_ts"], "1700000000.000100");
    assert!(
        posted["text"].as_str().unwrap().contains("Ask me"),
        "{posted}"
    );
    // Its outcome is recorded by the inbox's next group commit, just after the answer.
    until("recorded done", || async {
        !events(&daemon, "status=done").await.is_empty()
    })
    .await;
    let stored = events(&daemon, "status=done").await;
    assert_eq!(stored.len(), 1, "stored once: {stored:?}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slash_commands_over_http_are_answered_at_once_and_restarts_need_an_admin() {
    let slack = FakeSlack::start().await;
    let daemon = daemon(&slack, false, "admins = [\"U0ADMIN\"]\n").await;
    let (_, token) = daemon.organization("Acme").await;
    install(&daemon, &token).await;
    let send = |payload: Value| {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(
                payload
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())),
            )
            .finish();
        let now = chrono::Utc::now().timestamp();
        daemon
            .http
            .post(daemon.api_url("/webhooks/slack/interactive"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", now.to_string())
            .header(
                "x-slack-signature",
                signature::sign(&Secret::new(SIGNING_SECRET), now, body.as_bytes()),
            )
            .body(body)
            .send()
    };
    let status: Value = send(command("U0HUMAN", "status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        status["text"]
            .as_str()
            .unwrap()
            .contains("slack T0001: active"),
        "{status}"
    );

    let refused: Value = send(command("U0HUMAN", "restart slack"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        refused["text"]
            .as_str()
            .unwrap()
            .contains("only switchboard admins"),
        "{refused}"
    );
    let (_, before) = daemon.get_json("/admin/connectors/slack").await;
    assert_eq!(before["manual_restarts"], 0, "{before}");

    let allowed: Value = send(command("U0ADMIN", "restart slack"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        allowed["text"]
            .as_str()
            .unwrap()
            .contains("Restarting the slack connector"),
        "{allowed}"
    );
    until("restarted", || async {
        let (_, node) = daemon.get_json("/admin/actors").await;
        common::child(&node, "connector:slack")["manual_restarts"] == 1
    })
    .await;
    daemon.stop().await;
}

mod socket_mode {
    use super::*;

    /// A daemon in Socket Mode with the workspace installed and the first connection up.
    async fn connected(slack: &FakeSlack, extra: &str) -> (TestDaemon, String) {
        let daemon = daemon(slack, true, extra).await;
        let (_, token) = daemon.organization("Acme").await;
        install(&daemon, &token).await;
        assert_eq!(
            slack.wait_open(&[0], Duration::from_secs(10)).await,
            vec![0]
        );
        (daemon, token)
    }

    async fn socket_node(daemon: &TestDaemon) -> Value {
        let (_, node) = daemon.get_json("/admin/connectors/slack").await;
        node["children"]
            .as_array()
            .and_then(|c| c.iter().find(|n| n["name"] == "slack:socket").cloned())
            .unwrap_or(Value::Null)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn envelopes_are_stored_then_acknowledged_and_mentions_answered_in_their_thread() {
        let slack = FakeSlack::start().await;
        let (daemon, _) = connected(&slack, "").await;
        until("the socket reports connected", || async {
            socket_node(&daemon).await["details"]["state"] == "connected"
        })
        .await;

        let id = slack.send_envelope(
            0,
            "events_api",
            mention("Ev0100", "help", "1700000001.000100"),
            false,
        );
        let ack = slack
            .wait_ack(&id, Duration::from_secs(3))
            .await
            .expect("acknowledged within 3 s");
        // Stored by the time Slack has the acknowledgement.
        let stored = events(&daemon, "limit=100").await;
        assert!(
            stored.iter().any(|e| e["delivery_id"] == "Ev0100"),
            "{stored:?}"
        );
        let latency = ack.at - slack.state.sent_at.lock().unwrap()[&id];
        assert!(latency < Duration::from_secs(3), "{latency:?}");
        assert!(ack.payload.is_none());

        until("answered in the thread", || async {
            !slack.state.posted.lock().unwrap().is_empty()
        })
        .await;
        let posted = slack.state.posted.lock().unwrap()[0].clone();
        assert_eq!(posted["thread_ts"], "1700000001.000100");

        // The same event again (Slack's retry, a new envelope): acknowledged, stored once.
        let again = slack.send_envelope(
            0,
            "events_api",
            mention("Ev0100", "help", "1700000001.000100"),
            false,
        );
        slack
            .wait_ack(&again, Duration::from_secs(3))
            .await
            .expect("acknowledged");
        let stored = events(&daemon, "limit=100").await;
        assert_eq!(
            stored
                .iter()
                .filter(|e| e["delivery_id"] == "Ev0100")
                .count(),
            1
        );
        daemon.stop().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_slash_command_is_answered_in_the_acknowledgement() {
        let slack = FakeSlack::start().await;
        let (daemon, _) = connected(&slack, "").await;
        let id = slack.send_envelope(
            0,
            "slash_commands",
            command("U0HUMAN", "integrations"),
            true,
        );
        let ack = slack
            .wait_ack(&id, Duration::from_secs(3))
            .await
            .expect("acknowledged");
        let payload = ack.payload.expect("an answer in the ack");
        assert!(
            payload["text"]
                .as_str()
                .unwrap()
                .contains("slack T0001: active"),
            "{payload}"
        );
        // Answered once: nothing posted afterwards for it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(slack.state.posted.lock().unwrap().is_empty());
        daemon.stop().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_refresh_requested_disconnect_loses_no_envelope() {
        let slack = FakeSlack::start().await;
        let (daemon, _) = connected(&slack, "").await;
        let mut ids = Vec::new();
        for n in 0..50 {
            ids.push(slack.send_envelope(
                0,
                "events_api",
                mention(&format!("EvA{n:03}"), "ping", "1.1"),
                false,
            ));
        }
        slack.send_frame(0, json!({"type": "disconnect", "reason": "refresh_requested", "debug_info": {"host": "applink-fake"}}));
        // Slack keeps using the old connection until it is closed.
        for n in 0..50 {
            ids.push(slack.send_envelope(
                0,
                "events_api",
                mention(&format!("EvB{n:03}"), "ping", "1.1"),
                false,
            ));
        }
        let open = slack.wait_open(&[1], Duration::from_secs(10)).await;
        assert_eq!(
            open,
            vec![1],
            "the old connection closed once the new one said hello"
        );
        assert_eq!(
            slack.state.connections.lock().unwrap().len(),
            2,
            "one replacement"
        );
        for n in 0..50 {
            ids.push(slack.send_envelope(
                1,
                "events_api",
                mention(&format!("EvC{n:03}"), "ping", "1.1"),
                false,
            ));
        }
        for id in &ids {
            assert!(
                slack.wait_ack(id, Duration::from_secs(5)).await.is_some(),
                "envelope {id} acknowledged"
            );
        }
        let stored = events(&daemon, "limit=1000").await;
        assert_eq!(stored.len(), 150, "each stored once");
        let node = socket_node(&daemon).await;
        assert_eq!(
            node["details"]["last_disconnect_reason"],
            "refresh_requested"
        );
        daemon.stop().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_dropped_socket_reconnects_after_a_ratelimited_open() {
        let slack = FakeSlack::start().await;
        // The first reconnect attempt meets `ratelimited` and waits.
        let (daemon, _) = connected(&slack, "").await;
        slack.state.open_limited.store(true, Ordering::SeqCst);
        slack.drop_connection(0);
        let open = slack.wait_open(&[1], Duration::from_secs(10)).await;
        assert_eq!(open, vec![1]);
        assert!(slack.state.opened.load(Ordering::SeqCst) >= 2);
        let id = slack.send_envelope(1, "events_api", mention("Ev0200", "help", "2.2"), false);
        assert!(slack.wait_ack(&id, Duration::from_secs(3)).await.is_some());
        until("the health shows the reconnect", || async {
            let node = socket_node(&daemon).await;
            node["details"]["reconnects"].as_u64() >= Some(1)
                && node["details"]["state"] == "connected"
        })
        .await;
        daemon.stop().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_connection_is_kept_alive_with_pings() {
        let slack = FakeSlack::start().await;
        // ping_interval is 1 s in the fake's section.
        let (daemon, _) = connected(&slack, "").await;
        until("two pings", || async {
            slack.state.pings.load(Ordering::SeqCst) >= 2
        })
        .await;
        assert_eq!(slack.open_connections(), vec![0], "the same connection");
        daemon.stop().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn link_disabled_backs_off_and_says_so() {
        let slack = FakeSlack::start().await;
        let (daemon, _) = connected(&slack, "").await;
        slack.send_frame(0, json!({"type": "disconnect", "reason": "link_disabled"}));
        until("health says link_disabled", || async {
            let node = socket_node(&daemon).await;
            node["details"]["state"] == "link_disabled"
                && node["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("link_disabled"))
        })
        .await;
        daemon.stop().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_429_from_chat_post_message_is_waited_out() {
        let slack = FakeSlack::start().await;
        let (daemon, _) = connected(&slack, "").await;
        *slack.state.post_limited.lock().unwrap() = Some(1);
        let id = slack.send_envelope(0, "events_api", mention("Ev0300", "help", "3.3"), false);
        slack
            .wait_ack(&id, Duration::from_secs(3))
            .await
            .expect("acknowledged");
        until("posted after the wait", || async {
            !slack.state.posted.lock().unwrap().is_empty()
        })
        .await;
        let times = slack.state.post_times.lock().unwrap().clone();
        assert_eq!(times.len(), 2, "refused once, then posted");
        assert!(
            times[1] - times[0] >= Duration::from_secs(1),
            "{:?}",
            times[1] - times[0]
        );
        daemon.stop().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn uninstalling_the_app_revokes_the_integration() {
        let slack = FakeSlack::start().await;
        let (daemon, token) = connected(&slack, "").await;
        let uninstalled = json!({"team_id": TEAM, "event_id": "Ev0400", "type": "event_callback",
            "event": {"type": "app_uninstalled"}});
        let id = slack.send_envelope(0, "events_api", uninstalled, false);
        slack
            .wait_ack(&id, Duration::from_secs(3))
            .await
            .expect("acknowledged");
        until("revoked", || async {
            let (_, listed) = daemon
                .call_api(&token, "/integrations/list", json!({}))
                .await;
            listed["integrations"][0]["status"] == "revoked"
        })
        .await;
        daemon.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slack_post_route_tells_the_workspace_about_a_pull_request() {
    use common::db::{Db, TestDb};
    use common::fake_github::{FakeGithub, WEBHOOK_SECRET};
    use switchboard::store::{organizations, tokens};

    let db = TestDb::new(Db::Sqlite).await.expect("sqlite");
    let org = organizations::create(&db.store, "Acme").await.unwrap();
    let (_, token) = tokens::create(&db.store, &org.id).await.unwrap();
    let token = token.expose().clone();
    let slack = FakeSlack::start().await;
    let github = FakeGithub::start().await;
    github.install(42, "acme", 1);
    let extra = format!(
        "{}{}[[routes]]\norganization_id = \"{}\"\nconnector = \"github\"\n\
         event_type = \"pull_request.*\"\naction = \"slack.post\"\nchannel = \"C0DEPLOYS\"\n",
        slack.config_section(false, ""),
        github.config_section(),
        org.id
    );
    let daemon = TestDaemon::start_on(db.config.url.expose(), &extra).await;
    daemon.ready().await;
    install(&daemon, &token).await;
    github.installer("code-of-acmes-admin", &[42]);
    let (_, started) = daemon
        .call_api(
            &token,
            "/integrations/authorize",
            json!({"connector_type": "github"}),
        )
        .await;
    let (status, done) = daemon
        .call_api(
            &token,
            "/integrations/callback",
            json!({"connector_type": "github", "state": started["state"], "installation_id": "42", "code": "code-of-acmes-admin"}),
        )
        .await;
    assert_eq!(status, 201, "{done}");

    let body = serde_json::to_vec(&json!({
        "action": "opened",
        "pull_request": {"number": 5, "title": "Add a feature", "html_url": "https://github.com/acme/repo-001/pull/5", "merged": false},
        "repository": {"full_name": "acme/repo-001"},
        "sender": {"login": "octocat"},
        "installation": {"id": 42}
    }))
    .unwrap();
    let response = daemon
        .http
        .post(daemon.api_url("/webhooks/github"))
        .header("x-github-event", "pull_request")
        .header("x-github-delivery", "d-route")
        .header(
            "x-hub-signature-256",
            switchboard::connectors::github::signature::sign(&Secret::new(WEBHOOK_SECRET), &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    until("posted to Slack", || async {
        !slack.state.posted.lock().unwrap().is_empty()
    })
    .await;
    let posted = slack.state.posted.lock().unwrap()[0].clone();
    assert_eq!(posted["channel"], "C0DEPLOYS");
    assert_eq!(posted["blocks"][0]["type"], "section");
    assert!(
        posted["blocks"][1]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .contains("pull_request.opened")
    );
    assert_eq!(
        posted["text"],
        "octocat opened pull request #5 in acme/repo-001: Add a feature <https://github.com/acme/repo-001/pull/5>"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn anything_else_goes_to_the_agent_with_the_thread_and_its_answer_is_posted() {
    use axum::routing::post;
    use std::sync::{Arc, Mutex};

    let asked: Arc<Mutex<Vec<Value>>> = Arc::default();
    let recorded = Arc::clone(&asked);
    let agent = axum::Router::new().route(
        "/agent",
        post(move |axum::Json(body): axum::Json<Value>| {
            let recorded = Arc::clone(&recorded);
            async move {
                recorded.lock().unwrap().push(body);
                axum::Json(json!({"text": "The build is red because a test timed out."}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, agent).await.unwrap() });

    let slack = FakeSlack::start().await;
    *slack.state.thread.lock().unwrap() = vec![
        json!({"user": "U0HUMAN", "text": "deploy failed again", "ts": "1700000005.000100"}),
        json!({"bot_id": "B0001", "text": "I can look into it", "ts": "1700000005.000200"}),
    ];
    let daemon = daemon(
        &slack,
        false,
        &format!("agent_url = \"http://{agent_addr}/agent\"\n"),
    )
    .await;
    let (org, token) = daemon.organization("Acme").await;
    install(&daemon, &token).await;

    let mut event = mention("Ev0500", "why is the build red?", "1700000005.000300");
    event["event"]["thread_ts"] = json!("1700000005.000100");
    assert_eq!(post_event(&daemon, &event).await, 200);
    until("the agent's answer is posted", || async {
        !slack.state.posted.lock().unwrap().is_empty()
    })
    .await;
    let posted = slack.state.posted.lock().unwrap()[0].clone();
    assert_eq!(posted["text"], "The build is red because a test timed out.");
    assert_eq!(posted["thread_ts"], "1700000005.000100");
    let request = asked.lock().unwrap()[0].clone();
    assert_eq!(request["organization"], org);
    assert_eq!(request["channel"], "C0GENERAL");
    assert_eq!(request["thread_ts"], "1700000005.000100");
    assert_eq!(request["user"], "U0HUMAN");
    assert!(
        request["text"]
            .as_str()
            .unwrap()
            .contains("why is the build red?")
    );
    assert_eq!(request["messages"].as_array().unwrap().len(), 2);
    assert_eq!(request["messages"][0]["text"], "deploy failed again");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_slack_no_longer_accepts_puts_the_integration_in_error() {
    let slack = FakeSlack::start().await;
    let daemon = daemon(&slack, false, "").await;
    let (_, token) = daemon.organization("Acme").await;
    let integration = install(&daemon, &token).await;
    // Revoked on Slack's side: chat.postMessage answers invalid_auth.
    slack.state.tokens.lock().unwrap().clear();
    assert_eq!(
        post_event(&daemon, &mention("Ev0600", "help", "6.6")).await,
        200
    );
    let id = integration["id"].as_str().unwrap().to_string();
    until("in error", || async {
        let (_, status) = daemon
            .call_api(
                &token,
                "/integrations/status",
                json!({"integration_id": id}),
            )
            .await;
        status["integration"]["status"] == "error"
    })
    .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_direct_message_is_answered_and_the_bots_own_messages_are_not() {
    let slack = FakeSlack::start().await;
    let daemon = daemon(&slack, false, "").await;
    let (_, token) = daemon.organization("Acme").await;
    install(&daemon, &token).await;
    let dm = |event_id: &str, user: &str, text: &str, ts: &str| {
        json!({"team_id": TEAM, "event_id": event_id, "type": "event_callback",
               "event": {"type": "message", "channel_type": "im", "channel": "D0DM", "user": user,
                         "text": text, "ts": ts}})
    };
    // The bot's own reply comes back as a message event: it must not answer itself.
    assert_eq!(
        post_event(
            &daemon,
            &dm("Ev0701", fake_slack::BOT_USER, "I am switchboard", "7.1")
        )
        .await,
        200
    );
    assert_eq!(
        post_event(&daemon, &dm("Ev0702", "U0HUMAN", "integrations", "7.2")).await,
        200
    );
    until("answered", || async {
        !slack.state.posted.lock().unwrap().is_empty()
    })
    .await;
    until("both processed", || async {
        events(&daemon, "status=done").await.len() == 2
    })
    .await;
    let posted = slack.state.posted.lock().unwrap().clone();
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(posted[0]["channel"], "D0DM");
    assert_eq!(posted[0]["thread_ts"], "7.2");
    assert!(
        posted[0]["text"]
            .as_str()
            .unwrap()
            .contains("slack T0001: active"),
        "{posted:?}"
    );
    daemon.stop().await;
}
