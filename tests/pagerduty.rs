//! The PagerDuty connector against a fake PagerDuty on loopback: API keys and OAuth,
//! the webhook subscription and its one-time secret guarding the ingress, revoke,
//! tokens refreshed before expiry, `pagerduty.trigger` folding an alert's events into
//! one incident, and incidents acknowledged and resolved from Slack buttons.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::fake_datadog::{self, FakeDatadog};
use common::fake_pagerduty::{
    ACCOUNT_ID, ACCOUNT_KEY, FakePagerDuty, GOOD_CODE, USER_EMAIL, USER_KEY, deliver,
    incident_event, sign,
};
use common::fake_slack::{self, FakeSlack};
use common::{TestDaemon, until};
use serde_json::{Value, json};
use switchboard::connectors::slack::signature;
use switchboard::secret::Secret;

async fn stored(daemon: &TestDaemon, integration_id: &str) -> Vec<Value> {
    let (status, found) = daemon
        .get_json(&format!(
            "/admin/events?integration_id={integration_id}&limit=100"
        ))
        .await;
    assert_eq!(status, 200, "{found}");
    found["events"].as_array().unwrap().clone()
}

async fn authorize_with(daemon: &TestDaemon, token: &str, flow: &str) -> Value {
    let (status, started) = daemon
        .call_api(
            token,
            "/integrations/authorize",
            json!({"connector_type": "pagerduty", "flow": flow}),
        )
        .await;
    assert_eq!(status, 200, "{started}");
    started
}

/// Completes an api_key authorization with `credentials`: (status, answer).
async fn connect_key(daemon: &TestDaemon, token: &str, credentials: Value) -> (u16, Value) {
    let started = authorize_with(daemon, token, "api_key").await;
    daemon
        .call_api(
            token,
            "/integrations/callback",
            json!({"connector_type": "pagerduty", "state": started["state"], "credentials": credentials}),
        )
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_key_connects_and_the_subscriptions_one_time_secret_guards_the_ingress() {
    let pagerduty = FakePagerDuty::start("eu").await;
    let daemon = TestDaemon::start_configured(&pagerduty.config_section("")).await;
    daemon.ready().await;
    let (_, token) = daemon.organization("Acme").await;

    let started = authorize_with(&daemon, &token, "api_key").await;
    assert_eq!(started["type"], "api_key", "{started}");
    assert_eq!(
        started["fields"],
        json!([
            "api_key",
            "region",
            "from",
            "service_id",
            "team_id",
            "webhook"
        ])
    );
    let (status, refused) = daemon
        .call_api(
            &token,
            "/integrations/authorize",
            json!({"connector_type": "pagerduty", "flow": "carrier_pigeon"}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");

    // No region given: the key is tried in the US, refused, then in the EU.
    let (status, done) = connect_key(&daemon, &token, json!({"api_key": USER_KEY})).await;
    assert_eq!(status, 201, "{done}");
    let integration = &done["integration"];
    let id = integration["id"].as_str().unwrap().to_string();
    let metadata = &integration["metadata"];
    assert_eq!(metadata["region"], "eu", "{metadata}");
    assert_eq!(metadata["key_kind"], "user");
    assert_eq!(metadata["from"], USER_EMAIL);
    let regions: Vec<String> = pagerduty
        .calls_to("/abilities")
        .iter()
        .map(|c| c.region.clone())
        .collect();
    assert_eq!(regions, ["us", "eu"]);
    assert!(
        pagerduty.calls_to("/abilities")[1]
            .authorization
            .starts_with("Token token=")
    );

    // The subscription as PagerDuty saw it, and the secret only its answer held.
    let (subscription_id, created, secret) = pagerduty.only_subscription();
    assert_eq!(metadata["webhook"]["id"], subscription_id.as_str());
    let created = &created["webhook_subscription"];
    let url = daemon.api_url(&format!("/webhooks/pagerduty/{id}"));
    assert_eq!(created["type"], "webhook_subscription");
    assert_eq!(created["delivery_method"]["type"], "http_delivery_method");
    assert_eq!(created["filter"], json!({"type": "account_reference"}));
    let events = created["events"].as_array().unwrap();
    assert_eq!(events.len(), 13);
    assert!(events.contains(&json!("incident.acknowledged")));
    let delivery_url = created["delivery_method"]["url"].as_str().unwrap();
    assert!(
        delivery_url.ends_with(&format!("/webhooks/pagerduty/{id}")),
        "{delivery_url}"
    );

    let triggered = serde_json::to_vec(&incident_event(
        "incident.triggered",
        "PINC42",
        42,
        "triggered",
        "Checkout",
    ))
    .unwrap();
    let http = &daemon.http;
    let (status, first) = deliver(
        http,
        &url,
        &triggered,
        Some(sign(&[&secret], &triggered)),
        "wh-1",
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = deliver(
        http,
        &url,
        &triggered,
        Some(sign(&[&secret], &triggered)),
        "wh-1",
    )
    .await;
    assert_eq!(
        (status, &again["duplicate"]),
        (200, &json!(true)),
        "{again}"
    );
    // During a rotation PagerDuty signs with both secrets: one matching is enough.
    let (status, rotated) = deliver(
        http,
        &url,
        &triggered,
        Some(sign(&["the-next-secret", &secret], &triggered)),
        "wh-2",
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    // Refused, and nothing stored: a wrong secret, a tampered body, no header, junk.
    let wrong = deliver(
        http,
        &url,
        &triggered,
        Some(sign(&["not-the-secret"], &triggered)),
        "wh-3",
    )
    .await;
    assert_eq!(wrong.0, 403, "{}", wrong.1);
    let mut tampered = triggered.clone();
    let at = tampered.iter().position(|b| *b == b'4').unwrap();
    tampered[at] = b'5';
    let tampered = deliver(
        http,
        &url,
        &tampered,
        Some(sign(&[&secret], &triggered)),
        "wh-4",
    )
    .await;
    assert_eq!(tampered.0, 403, "{}", tampered.1);
    assert_eq!(deliver(http, &url, &triggered, None, "wh-5").await.0, 400);
    assert_eq!(
        deliver(http, &url, &triggered, Some("v1=not-hex".into()), "wh-6")
            .await
            .0,
        400
    );
    // A ping is answered and not kept.
    let ping = serde_json::to_vec(&json!({"event": {"id": "P1", "event_type": "pagey.ping", "resource_type": "pagey", "occurred_at": "2026-12-04T10:00:00Z", "data": {"message": "Hello from your friend Pagey!", "type": "ping"}}})).unwrap();
    assert_eq!(
        deliver(http, &url, &ping, Some(sign(&[&secret], &ping)), "wh-7")
            .await
            .0,
        200
    );

    let found = stored(&daemon, &id).await;
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found
            .iter()
            .all(|e| e["event_type"] == "incident.triggered")
    );

    // Neither the key nor the secret is in the database in the clear.
    let database = std::fs::read(daemon.data_dir.path().join("switchboard.db")).unwrap();
    for plain in [USER_KEY, secret.as_str()] {
        assert!(
            !database.windows(plain.len()).any(|w| w == plain.as_bytes()),
            "{plain} stored in the clear"
        );
    }

    // Validation sees a subscription PagerDuty disabled, and enables it again.
    pagerduty
        .state
        .subscriptions
        .lock()
        .unwrap()
        .get_mut(&subscription_id)
        .unwrap()
        .2 = true;
    let validate = format!("/admin/integrations/{id}/validate");
    let (_, validated) = daemon.post_json(&validate).await;
    assert_eq!(validated["valid"], false, "{validated}");
    assert!(
        validated["reason"]
            .as_str()
            .unwrap()
            .contains("temporarily disabled"),
        "{validated}"
    );
    assert_eq!(pagerduty.calls_to("/enable").len(), 1);
    let (_, validated) = daemon.post_json(&validate).await;
    assert_eq!(validated["valid"], true, "{validated}");

    let (status, revoked) = daemon
        .call_api(
            &token,
            "/integrations/revoke",
            json!({"integration_id": id}),
        )
        .await;
    assert_eq!(
        (status, &revoked["at_provider"]),
        (200, &json!("revoked")),
        "{revoked}"
    );
    assert_eq!(
        *pagerduty.state.deleted_subscriptions.lock().unwrap(),
        [subscription_id]
    );
    let after = deliver(
        http,
        &url,
        &triggered,
        Some(sign(&[&secret], &triggered)),
        "wh-8",
    )
    .await;
    assert_eq!(after.0, 404, "{}", after.1);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_key_needs_a_from_email_and_bad_input_is_named() {
    let pagerduty = FakePagerDuty::start("us").await;
    let daemon = TestDaemon::start_configured(&pagerduty.config_section("")).await;
    daemon.ready().await;
    let (_, token) = daemon.organization("Acme").await;

    let (status, refused) = connect_key(
        &daemon,
        &token,
        json!({"api_key": ACCOUNT_KEY, "region": "us"}),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused.to_string().contains("credentials.from is required"),
        "{refused}"
    );
    let (status, refused) = connect_key(&daemon, &token, json!({"api_key": "revoked-key"})).await;
    assert_eq!(status, 422, "{refused}");
    let reason = refused.to_string();
    assert!(
        reason.contains("us: ") && reason.contains("eu: "),
        "{reason}"
    );
    let (status, refused) = connect_key(
        &daemon,
        &token,
        json!({"api_key": ACCOUNT_KEY, "region": "mars"}),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused.to_string().contains("us, eu"), "{refused}");
    let (status, refused) = connect_key(
        &daemon,
        &token,
        json!({"api_key": ACCOUNT_KEY, "from": "ops@acme.test", "service_id": "PSVC1", "team_id": "PT1"}),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert!(pagerduty.state.subscriptions.lock().unwrap().is_empty());

    let (status, done) = connect_key(
        &daemon,
        &token,
        json!({"api_key": ACCOUNT_KEY, "region": "us", "from": "ops@acme.test", "service_id": "PSVC1"}),
    )
    .await;
    assert_eq!(status, 201, "{done}");
    let metadata = &done["integration"]["metadata"];
    assert_eq!(metadata["key_kind"], "account", "{metadata}");
    assert_eq!(metadata["from"], "ops@acme.test");
    let (_, created, _) = pagerduty.only_subscription();
    assert_eq!(
        created["webhook_subscription"]["filter"],
        json!({"type": "service_reference", "id": "PSVC1"})
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth_reads_the_region_from_the_id_token_and_refuses_dropped_scopes() {
    let pagerduty = FakePagerDuty::start("eu").await;
    let daemon = TestDaemon::start_configured(&pagerduty.config_section("")).await;
    daemon.ready().await;
    let (_, token) = daemon.organization("Acme").await;

    // With an OAuth app configured, OAuth is the default flow.
    let started = daemon.authorize(&token, "pagerduty").await;
    assert_eq!(started["type"], "oauth2", "{started}");
    let url = url::Url::parse(started["url"].as_str().unwrap()).unwrap();
    assert_eq!(
        url.as_str().split('?').next().unwrap(),
        format!("http://{}/identity/oauth/authorize", pagerduty.addr)
    );
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["client_id"], common::fake_pagerduty::CLIENT_ID);
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["scope"], "write");
    assert_eq!(query["state"], started["state"].as_str().unwrap());
    assert!(query["redirect_uri"].ends_with("/oauth/pagerduty/callback"));

    let (status, refused) = daemon
        .call_api(
            &token,
            "/integrations/callback",
            json!({"connector_type": "pagerduty", "state": started["state"], "code": "stale-code"}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused.to_string().contains("invalid_grant"), "{refused}");

    let done = daemon
        .connect(&token, "pagerduty", json!({"code": GOOD_CODE}))
        .await;
    let integration = &done["integration"];
    assert_eq!(integration["external_id"], ACCOUNT_ID, "{integration}");
    let metadata = &integration["metadata"];
    assert_eq!(metadata["region"], "eu", "{metadata}");
    assert_eq!(metadata["flow"], "oauth2");
    assert_eq!(metadata["subdomain"], "acme");
    assert_eq!(metadata["from"], USER_EMAIL);
    let subscribed = pagerduty.calls_to("/webhook_subscriptions");
    assert!(
        subscribed[0].authorization.starts_with("Bearer pd-access-"),
        "{subscribed:?}"
    );
    assert_eq!(subscribed[0].region, "eu");

    // PagerDuty drops a scope it will not grant without saying so: the callback does.
    *pagerduty.state.granted.lock().unwrap() = "read".into();
    let (_, other) = daemon.organization("Other").await;
    let (status, refused) = daemon
        .try_connect(&other, "pagerduty", json!({"code": GOOD_CODE}))
        .await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused
            .to_string()
            .contains("did not grant the scopes write"),
        "{refused}"
    );
    daemon.stop().await;
}

/// An organization with the fake Slack installed; its integration id.
async fn install_slack(daemon: &TestDaemon, token: &str) -> String {
    let done = daemon
        .connect(token, "slack", json!({"code": fake_slack::GOOD_CODE}))
        .await;
    done["integration"]["id"].as_str().unwrap().to_string()
}

/// A `block_actions` payload: `user` of workspace `team` clicked `button`.
fn click_payload(slack: &FakeSlack, team: &str, user: &str, button: &Value) -> Value {
    json!({
        "type": "block_actions",
        "team": {"id": team, "domain": "acme"},
        "user": {"id": user, "username": "jane", "name": "jane", "team_id": team},
        "api_app_id": "A0001",
        "trigger_id": format!("trigger-{}", uuid::Uuid::new_v4()),
        "channel": {"id": "C0INC", "name": "incidents"},
        "message": {"ts": "1700000000.000200"},
        "response_url": slack.response_url(),
        "actions": [{"type": "button", "action_id": button["action_id"], "block_id": "b1",
            "value": button["value"], "text": button["text"], "action_ts": "1700000001.000100"}],
    })
}

/// A click on a switchboard button, sent as Slack sends it to the interactivity URL:
/// the status.
async fn click(
    daemon: &TestDaemon,
    slack: &FakeSlack,
    team: &str,
    user: &str,
    button: &Value,
) -> u16 {
    let payload = click_payload(slack, team, user, button);
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish();
    let now = chrono::Utc::now().timestamp();
    daemon
        .http
        .post(daemon.api_url("/webhooks/slack/interactive"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", now.to_string())
        .header(
            "x-slack-signature",
            signature::sign(
                &Secret::new(fake_slack::SIGNING_SECRET),
                now,
                body.as_bytes(),
            ),
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn buttons(message: &Value) -> Vec<Value> {
    let blocks: Value = match &message["blocks"] {
        Value::String(text) => serde_json::from_str(text).unwrap(),
        other => other.clone(),
    };
    blocks
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().unwrap().clone())
        .collect()
}

/// A daemon with the fake PagerDuty and the fake Slack (over Socket Mode or HTTP),
/// and an organization with both connected (PagerDuty with a user key in the US).
struct Incidents {
    pagerduty: FakePagerDuty,
    slack: FakeSlack,
    daemon: TestDaemon,
    org: String,
    token: String,
    pagerduty_id: String,
}

async fn with_slack(socket_mode: bool) -> Incidents {
    let pagerduty = FakePagerDuty::start("us").await;
    let slack = FakeSlack::start().await;
    let daemon = TestDaemon::start_configured(&format!(
        "{}\n{}",
        pagerduty.config_section(""),
        slack.config_section(socket_mode, "")
    ))
    .await;
    daemon.ready().await;
    let (org, token) = daemon.organization("Acme").await;
    install_slack(&daemon, &token).await;
    let pagerduty_id = connect_user_key(&daemon, &token).await;
    Incidents {
        pagerduty,
        slack,
        daemon,
        org,
        token,
        pagerduty_id,
    }
}

/// Connects the fake's user key in the US: the integration's id.
async fn connect_user_key(daemon: &TestDaemon, token: &str) -> String {
    let (status, done) =
        connect_key(daemon, token, json!({"api_key": USER_KEY, "region": "us"})).await;
    assert_eq!(status, 201, "{done}");
    done["integration"]["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn incidents_are_acknowledged_and_resolved_from_slack_and_the_message_follows() {
    let Incidents {
        pagerduty,
        slack,
        daemon,
        org,
        token,
        pagerduty_id: pd_id,
    } = with_slack(false).await;
    let (_, _, secret) = pagerduty.only_subscription();
    let (status, route) = daemon
        .call_api(
            &token,
            "/routes/create",
            json!({"connector": "pagerduty", "event_type": "incident.*", "action": "slack.post",
                   "settings": {"channel": "C0INC"}}),
        )
        .await;
    assert_eq!(status, 201, "{route}");
    let url = daemon.api_url(&format!("/webhooks/pagerduty/{pd_id}"));
    let send = |event: Value, webhook_id: &'static str| {
        let body = serde_json::to_vec(&event).unwrap();
        let signature = sign(&[&secret], &body);
        let http = daemon.http.clone();
        let url = url.clone();
        async move { deliver(&http, &url, &body, Some(signature), webhook_id).await }
    };

    // Triggered: one message, with Acknowledge and Resolve.
    pagerduty.open_incident("PINC42", 42);
    let sent = send(
        incident_event("incident.triggered", "PINC42", 42, "triggered", "Checkout"),
        "wh-t",
    )
    .await;
    assert_eq!(sent.0, 200, "{}", sent.1);
    until("the incident posted", || async {
        slack.state.posted.lock().unwrap().len() == 1
    })
    .await;
    let posted = slack.state.posted.lock().unwrap()[0].clone();
    assert_eq!(posted["channel"], "C0INC");
    assert!(
        posted["text"]
            .as_str()
            .unwrap()
            .starts_with("Incident #42 triggered"),
        "{posted}"
    );
    let offered = buttons(&posted);
    let ids: Vec<&str> = offered
        .iter()
        .map(|b| b["action_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "switchboard:pagerduty.acknowledge",
            "switchboard:pagerduty.resolve"
        ]
    );
    let value: Value = serde_json::from_str(offered[0]["value"].as_str().unwrap()).unwrap();
    assert_eq!(value, json!({"o": org, "t": "PINC42"}));

    // Jane clicks Acknowledge. PagerDuty is slow: the click is answered before
    // PagerDuty has answered (the action runs from the durable inbox).
    slack
        .state
        .emails
        .lock()
        .unwrap()
        .insert("U0JANE".into(), USER_EMAIL.into());
    let release = Arc::new(tokio::sync::Notify::new());
    *pagerduty.state.hold_writes.lock().unwrap() = Some(Arc::clone(&release));
    assert_eq!(
        click(&daemon, &slack, fake_slack::TEAM, "U0JANE", &offered[0]).await,
        200
    );
    until("PagerDuty asked to acknowledge", || async {
        !pagerduty
            .calls_to("/incidents/PINC42")
            .iter()
            .all(|c| c.method == "GET")
    })
    .await;
    assert!(
        pagerduty.state.writes.lock().unwrap().is_empty(),
        "answered before PagerDuty"
    );
    release.notify_one();
    until("acknowledged", || async {
        !pagerduty.state.writes.lock().unwrap().is_empty()
    })
    .await;
    *pagerduty.state.hold_writes.lock().unwrap() = None;
    assert_eq!(
        pagerduty.state.writes.lock().unwrap()[0],
        (
            "PINC42".to_string(),
            "acknowledged".to_string(),
            USER_EMAIL.to_string()
        )
    );

    // PagerDuty's webhook comes back: the same message now says who acknowledged it.
    send(
        incident_event(
            "incident.acknowledged",
            "PINC42",
            42,
            "acknowledged",
            "Jane Doe",
        ),
        "wh-a",
    )
    .await;
    until("the message updated", || async {
        slack.state.updated.lock().unwrap().len() == 1
    })
    .await;
    let updated = slack.state.updated.lock().unwrap()[0].clone();
    assert_eq!(updated["ts"], "1700000000.000200", "{updated}");
    assert!(
        updated["text"]
            .as_str()
            .unwrap()
            .starts_with("Incident #42 acknowledged by Jane Doe"),
        "{updated}"
    );
    let left: Vec<Value> = buttons(&updated);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["action_id"], "switchboard:pagerduty.resolve");

    // Resolved in PagerDuty: the message says so and offers nothing more.
    pagerduty
        .state
        .incidents
        .lock()
        .unwrap()
        .get_mut("PINC42")
        .unwrap()
        .1 = "resolved".into();
    send(
        incident_event("incident.resolved", "PINC42", 42, "resolved", "Sam Roe"),
        "wh-r",
    )
    .await;
    until("the message updated again", || async {
        slack.state.updated.lock().unwrap().len() == 2
    })
    .await;
    let resolved = slack.state.updated.lock().unwrap()[1].clone();
    assert!(
        resolved["text"]
            .as_str()
            .unwrap()
            .contains("resolved by Sam Roe"),
        "{resolved}"
    );
    assert!(buttons(&resolved).is_empty());
    assert_eq!(
        slack.state.posted.lock().unwrap().len(),
        1,
        "one message per incident"
    );

    // A late click on the old Resolve button: told, ephemerally, and nothing written.
    assert_eq!(
        click(&daemon, &slack, fake_slack::TEAM, "U0JANE", &offered[1]).await,
        200
    );
    until("told it is resolved", || async {
        !slack.state.responses.lock().unwrap().is_empty()
    })
    .await;
    let told = slack.state.responses.lock().unwrap()[0].clone();
    assert_eq!(told["response_type"], "ephemeral");
    assert_eq!(told["text"], "Incident #42 is already resolved", "{told}");
    assert_eq!(pagerduty.state.writes.lock().unwrap().len(), 1);

    // Another organization's workspace clicks a copy of Acme's button: refused.
    pagerduty.open_incident("PINC43", 43);
    *slack.state.next_team.lock().unwrap() = Some("T0002".into());
    let (_, other) = daemon.organization("Other").await;
    install_slack(&daemon, &other).await;
    let mut copied = offered[0].clone();
    copied["value"] = json!(json!({"o": org, "t": "PINC43"}).to_string());
    assert_eq!(click(&daemon, &slack, "T0002", "U0EVE", &copied).await, 200);
    until("told it is not theirs", || async {
        slack.state.responses.lock().unwrap().len() == 2
    })
    .await;
    let told = slack.state.responses.lock().unwrap()[1].clone();
    assert!(
        told["text"]
            .as_str()
            .unwrap()
            .contains("another organization"),
        "{told}"
    );
    assert_eq!(
        pagerduty.incident_status("PINC43").as_deref(),
        Some("triggered")
    );
    assert_eq!(pagerduty.state.writes.lock().unwrap().len(), 1);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alerts_events_fold_into_one_incident_that_its_recovery_resolves() {
    let pagerduty = FakePagerDuty::start("us").await;
    let datadog = FakeDatadog::start("us1").await;
    let daemon = TestDaemon::start_configured(&format!(
        "{}\n{}",
        pagerduty.config_section(""),
        datadog.config_section("")
    ))
    .await;
    daemon.ready().await;
    let (_, token) = daemon.organization("Acme").await;
    let done = daemon
        .connect(
            &token,
            "datadog",
            json!({"credentials": {"api_key": fake_datadog::API_KEY, "application_key": fake_datadog::APPLICATION_KEY, "site": "us1"}}),
        )
        .await;
    let id = done["integration"]["id"].as_str().unwrap().to_string();
    let routing_key = "R0UTINGKEY0123456789ABCDEF012345";
    let (status, route) = daemon
        .call_api(
            &token,
            "/routes/create",
            json!({"connector": "datadog", "event_type": "monitor.*", "action": "pagerduty.trigger",
                   "settings": {"routing_key": routing_key, "severity": "critical"}}),
        )
        .await;
    assert_eq!(status, 201, "{route}");
    assert!(
        route["route"]["settings"].get("routing_key").is_none(),
        "{route}"
    );
    let webhook = datadog.webhook(&format!("switchboard-{id}")).unwrap();
    for (event_id, transition) in [
        ("1001", "Triggered"),
        ("1002", "Re-Triggered"),
        ("1003", "Recovered"),
    ] {
        let (status, answer) = fake_datadog::notify(
            &daemon.http,
            &webhook,
            &[
                ("ID", event_id),
                ("ALERT_TRANSITION", transition),
                ("ALERT_CYCLE_KEY", "cycle-7"),
                ("EVENT_TITLE", "CPU high on web-1"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }
    until("three events sent to PagerDuty", || async {
        pagerduty.state.enqueued.lock().unwrap().len() == 3
    })
    .await;
    let enqueued = pagerduty.state.enqueued.lock().unwrap().clone();
    let actions: Vec<&str> = enqueued
        .iter()
        .map(|e| e["event_action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["trigger", "trigger", "resolve"]);
    assert!(
        enqueued
            .iter()
            .all(|e| e["dedup_key"] == "datadog:alert:cycle-7" && e["routing_key"] == routing_key)
    );
    assert_eq!(enqueued[0]["payload"]["severity"], "critical");
    assert!(
        enqueued[0]["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("CPU high on web-1"),
        "{}",
        enqueued[0]
    );
    let alerts = pagerduty.state.alerts.lock().unwrap().clone();
    assert_eq!(alerts.len(), 1, "one incident: {alerts:?}");
    assert_eq!(alerts["datadog:alert:cycle-7"].1, "resolved");
    daemon.stop().await;
}

mod renewal {
    use super::*;
    use common::memory_credentials::{MemoryCredentials, spawn_actor};
    use switchboard::connectors::{CallbackRequest, Connector};
    use switchboard::store::integrations::Integration;
    use switchboard_actors::BreakerConfig;

    fn connector(pagerduty: &FakePagerDuty) -> Arc<dyn Connector> {
        let sections: std::collections::BTreeMap<String, toml::Table> =
            toml::from_str::<toml::Table>(&pagerduty.config_section("")).unwrap()["connectors"]
                .clone()
                .try_into()
                .unwrap();
        let set = switchboard::connectors::ConnectorSet::from_sections(&sections).unwrap();
        Arc::clone(set.get("pagerduty").unwrap())
    }

    fn integration() -> Integration {
        let now = switchboard::store::now();
        Integration {
            id: "int-1".into(),
            organization_id: "org-1".into(),
            user_id: None,
            connector_type: "pagerduty".into(),
            status: "active".into(),
            external_id: Some(ACCOUNT_ID.into()),
            metadata: json!({"region": "eu"}).to_string(),
            created_at: now,
            updated_at: now,
            last_used_at: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn oauth_tokens_are_refreshed_before_expiry_and_replaced_together() {
        switchboard::install_crypto_provider();
        let pagerduty = FakePagerDuty::start("eu").await;
        let connector = connector(&pagerduty);
        let authorized = connector
            .complete(&CallbackRequest {
                organization_id: "org-1".into(),
                integration_id: "int-1".into(),
                public_url: "http://127.0.0.1:1".into(),
                code: Some(Secret::new(GOOD_CODE)),
                redirect_url: "http://127.0.0.1:1/oauth/pagerduty/callback".into(),
                ..CallbackRequest::default()
            })
            .await
            .expect("connects");
        let store = Arc::new(MemoryCredentials::default());
        *store.values.lock().unwrap() = authorized.credentials;
        let value = |store: &MemoryCredentials, kind: &str| {
            store
                .values
                .lock()
                .unwrap()
                .iter()
                .find(|v| v.credential_type == kind)
                .map(|v| v.secret.expose().clone())
        };
        let (first_access, first_refresh) = (
            value(&store, "access_token"),
            value(&store, "refresh_token"),
        );
        let _actor = spawn_actor(
            connector,
            Arc::clone(&store),
            integration(),
            BreakerConfig::default(),
            Duration::from_secs(5 * 60),
        )
        .await;
        // An hour's token and a 5-minute margin: refreshed at about 55 minutes.
        tokio::time::sleep(Duration::from_secs(54 * 60)).await;
        assert_eq!(pagerduty.state.refreshed.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_secs(2 * 60)).await;
        assert_eq!(pagerduty.state.refreshed.load(Ordering::SeqCst), 1);
        assert_ne!(value(&store, "access_token"), first_access);
        assert_ne!(value(&store, "refresh_token"), first_refresh);
        assert!(
            value(&store, "webhook_secret").is_some(),
            "the subscription's secret is kept"
        );
        // The spent refresh token no longer works at PagerDuty: the next refresh
        // succeeds only with the new one.
        tokio::time::sleep(Duration::from_secs(56 * 60)).await;
        assert_eq!(pagerduty.state.refreshed.load(Ordering::SeqCst), 2);
        assert!(store.statuses.lock().unwrap().iter().all(|s| s != "error"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_holds_the_integration_for_ratelimit_reset_or_a_backoff_without_it() {
    let pagerduty = FakePagerDuty::start("us").await;
    let daemon = TestDaemon::start_configured(&pagerduty.config_section("")).await;
    daemon.ready().await;
    let (_, token) = daemon.organization("Acme").await;
    let id = connect_user_key(&daemon, &token).await;
    let (_, _, secret) = pagerduty.only_subscription();
    let (status, route) = daemon
        .call_api(
            &token,
            "/routes/create",
            json!({"connector": "pagerduty", "event_type": "incident.triggered", "action": "pagerduty.note",
                   "settings": {"content": "seen by switchboard"}}),
        )
        .await;
    assert_eq!(status, 201, "{route}");
    let url = daemon.api_url(&format!("/webhooks/pagerduty/{id}"));
    let note_times = || {
        pagerduty
            .state
            .request_times
            .lock()
            .unwrap()
            .iter()
            .filter(|(path, _)| path.ends_with("/notes"))
            .map(|(_, at)| *at)
            .collect::<Vec<_>>()
    };
    // With `ratelimit-reset: 1`, then with no header at all (a 1 s backoff).
    for (round, reset) in [Some(1), None].into_iter().enumerate() {
        *pagerduty.state.rate_limit_next.lock().unwrap() = Some((1, reset));
        let incident = format!("PINC{round}");
        let body = serde_json::to_vec(&incident_event(
            "incident.triggered",
            &incident,
            7,
            "triggered",
            "Checkout",
        ))
        .unwrap();
        let (status, answer) = deliver(
            &daemon.http,
            &url,
            &body,
            Some(sign(&[&secret], &body)),
            &format!("wh-{round}"),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        until("the note written", || async {
            pagerduty
                .state
                .writes
                .lock()
                .unwrap()
                .iter()
                .any(|(id, _, _)| *id == incident)
        })
        .await;
        let times = note_times();
        let (limited, sent) = (times[times.len() - 2], times[times.len() - 1]);
        assert!(
            sent - limited >= Duration::from_millis(950),
            "round {round}: sent again after {:?}",
            sent - limited
        );
    }
    let writes = pagerduty.state.writes.lock().unwrap().clone();
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert_eq!(writes[0].1, "note: seen by switchboard");
    assert_eq!(writes[0].2, USER_EMAIL, "From is the integration's");
    let events = stored(&daemon, &id).await;
    assert!(
        events
            .iter()
            .all(|e| e["status"] == "done" && e["attempts"] == 0),
        "{events:?}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_click_over_socket_mode_is_acknowledged_before_pagerduty_answers() {
    let Incidents {
        pagerduty,
        slack,
        daemon,
        org,
        ..
    } = with_slack(true).await;
    assert_eq!(slack.wait_open(&[0], Duration::from_secs(10)).await, [0]);
    slack
        .state
        .emails
        .lock()
        .unwrap()
        .insert("U0JANE".into(), USER_EMAIL.into());
    pagerduty.open_incident("PINC77", 77);
    let release = Arc::new(tokio::sync::Notify::new());
    *pagerduty.state.hold_writes.lock().unwrap() = Some(Arc::clone(&release));
    let button = json!({"action_id": "switchboard:pagerduty.acknowledge",
        "value": json!({"o": org, "t": "PINC77"}).to_string(),
        "text": {"type": "plain_text", "text": "Acknowledge"}});
    let envelope = slack.send_envelope(
        0,
        "interactive",
        click_payload(&slack, fake_slack::TEAM, "U0JANE", &button),
        false,
    );
    // Acknowledged once stored, while PagerDuty still holds the write.
    assert!(
        slack
            .wait_ack(&envelope, Duration::from_secs(3))
            .await
            .is_some(),
        "acknowledged within Slack's 3 seconds"
    );
    assert!(pagerduty.state.writes.lock().unwrap().is_empty());
    release.notify_one();
    until("acknowledged in PagerDuty", || async {
        !pagerduty.state.writes.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        pagerduty.state.writes.lock().unwrap()[0],
        (
            "PINC77".to_string(),
            "acknowledged".to_string(),
            USER_EMAIL.to_string()
        )
    );
    daemon.stop().await;
}
