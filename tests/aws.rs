//! The AWS connector against a fake AWS on loopback that checks every SigV4
//! signature: a cross-account role assumed with the integration's external id and
//! assumed again before its session ends, access keys, CloudWatch alarm history
//! polled page by page in two regions, and alarms pushed through signed SNS
//! messages, a change that arrives both ways stored once.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use common::db::{Db, TestDb};
use common::fake_aws::{
    ACCOUNT, FakeAws, OTHER_TOPIC, OWN_SECRET, PRINCIPAL, ROLE_ARN, SnsDelivery, TENANT_KEY_ID,
    TENANT_SECRET, TOPIC, alarm_message, change,
};
use common::{TestDaemon, until};
use rstest::rstest;
use serde_json::{Value, json};
use switchboard::store::{events, organizations, poll_cursors, tokens};

/// Starts an authorization: its answer.
async fn authorize(daemon: &TestDaemon, token: &str, flow: Option<&str>) -> Value {
    let mut body = json!({"connector_type": "aws"});
    if let Some(flow) = flow {
        body["flow"] = json!(flow);
    }
    let (status, started) = daemon
        .call_api(token, "/integrations/authorize", body)
        .await;
    assert_eq!(status, 200, "{started}");
    started
}

/// Completes `started` with `credentials`: (status, answer).
async fn callback(
    daemon: &TestDaemon,
    token: &str,
    started: &Value,
    credentials: Value,
) -> (u16, Value) {
    daemon
        .call_api(
            token,
            "/integrations/callback",
            json!({"connector_type": "aws", "state": started["state"], "credentials": credentials}),
        )
        .await
}

fn tenant_key(extra: Value) -> Value {
    let mut credentials =
        json!({"access_key_id": TENANT_KEY_ID, "secret_access_key": TENANT_SECRET});
    credentials
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    credentials
}

fn assert_not_in_database(daemon: &TestDaemon, secrets: &[&str]) {
    let database = std::fs::read(daemon.data_dir.path().join("switchboard.db")).unwrap();
    for plain in secrets {
        assert!(
            !database.windows(plain.len()).any(|w| w == plain.as_bytes()),
            "{plain} is in the database in plaintext"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_role_flow_shows_its_trust_policy_and_assumes_the_role_only_with_its_external_id() {
    let aws = FakeAws::start().await;
    let daemon = TestDaemon::start_configured(&format!(
        "[integrations]\nvalidation_spread = \"0s\"\n{}",
        aws.config_section("")
    ))
    .await;
    daemon.ready().await;
    let (_, token) = daemon.organization("Acme").await;

    // What the tenant is shown: the external id, switchboard's principal, the trust
    // policy to paste, and where SNS should deliver.
    let started = authorize(&daemon, &token, None).await;
    assert_eq!(started["type"], "api_key", "{started}");
    assert_eq!(
        started["fields"],
        json!(["role_arn", "regions", "topics", "poll"])
    );
    let instructions = &started["instructions"];
    let external_id = instructions["external_id"].as_str().unwrap().to_string();
    assert!(external_id.len() >= 32, "{instructions}");
    assert_eq!(instructions["principal"], PRINCIPAL);
    let statement = &instructions["trust_policy"]["Statement"][0];
    assert_eq!(statement["Principal"]["AWS"], PRINCIPAL);
    assert_eq!(statement["Action"], "sts:AssumeRole");
    assert_eq!(
        statement["Condition"]["StringEquals"]["sts:ExternalId"],
        external_id.as_str()
    );
    assert!(
        instructions["sns_endpoint"]
            .as_str()
            .unwrap()
            .contains("/webhooks/aws/"),
        "{instructions}"
    );

    // The tenant creates the role with that external id.
    aws.create_role(PRINCIPAL, &external_id);
    let (status, done) = callback(
        &daemon,
        &token,
        &started,
        json!({"role_arn": ROLE_ARN, "regions": "us-east-1, eu-west-1", "topics": TOPIC, "poll": "false"}),
    )
    .await;
    assert_eq!(status, 201, "{done}");
    let integration = &done["integration"];
    let id = integration["id"].as_str().unwrap().to_string();
    let metadata = &integration["metadata"];
    assert_eq!(metadata["flow"], "role");
    assert_eq!(metadata["account"], ACCOUNT);
    assert_eq!(metadata["role_arn"], ROLE_ARN);
    assert_eq!(metadata["external_id"], external_id.as_str());
    assert_eq!(metadata["regions"], json!(["us-east-1", "eu-west-1"]));
    assert_eq!(metadata["topics"], json!([TOPIC]));
    assert_eq!(integration["external_id"], ACCOUNT);
    let assumed = aws.state.assumed.lock().unwrap().clone();
    assert_eq!(
        assumed,
        [(
            ROLE_ARN.to_string(),
            external_id.clone(),
            format!("switchboard-{id}")
        )]
    );
    // Confirmed under the session: GetCallerIdentity at the callback, and again as
    // the integration's actor validates it.
    until("validated by its actor", || async {
        aws.state
            .signed_ok
            .lock()
            .unwrap()
            .iter()
            .filter(|a| *a == "GetCallerIdentity")
            .count()
            >= 2
    })
    .await;

    // Another tenant names this tenant's role (the confused deputy): its own
    // external id is not the one the role trusts, and AWS's refusal says so.
    let (_, intruder) = daemon.organization("Intruder").await;
    let other = authorize(&daemon, &intruder, Some("role")).await;
    let other_id = other["instructions"]["external_id"].as_str().unwrap();
    assert_ne!(other_id, external_id);
    let (status, refused) =
        callback(&daemon, &intruder, &other, json!({"role_arn": ROLE_ARN})).await;
    assert_eq!(status, 422, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("AccessDenied") && message.contains(other_id),
        "{message}"
    );
    assert_eq!(aws.assumed(), 1);

    // Not a role ARN, and both ways at once: refused before AWS is asked.
    let bad = authorize(&daemon, &intruder, None).await;
    let (status, refused) = callback(
        &daemon,
        &intruder,
        &bad,
        json!({"role_arn": "arn:aws:iam::111122223333:user/x"}),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    let (status, refused) = daemon
        .call_api(
            &intruder,
            "/integrations/authorize",
            json!({"connector_type": "aws", "flow": "telepathy"}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");

    // The session's secret and token, and switchboard's own key, never in plaintext.
    let mut secrets = aws.session_secrets();
    secrets.push(OWN_SECRET.to_string());
    assert_not_in_database(
        &daemon,
        &secrets.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_access_key_is_checked_with_get_caller_identity_and_a_wrong_secret_refused() {
    let aws = FakeAws::start().await;
    let daemon = TestDaemon::start_configured(&aws.config_section("")).await;
    daemon.ready().await;
    let (_, token) = daemon.organization("Acme").await;

    let started = authorize(&daemon, &token, Some("access_key")).await;
    assert_eq!(
        started["fields"],
        json!([
            "access_key_id",
            "secret_access_key",
            "session_token",
            "regions",
            "topics",
            "poll"
        ])
    );
    let (status, refused) = callback(
        &daemon,
        &token,
        &started,
        json!({"access_key_id": TENANT_KEY_ID, "secret_access_key": "not-the-secret"}),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("SignatureDoesNotMatch: "),
        "{refused}"
    );
    let started = authorize(&daemon, &token, Some("access_key")).await;
    let (status, refused) = callback(
        &daemon,
        &token,
        &started,
        tenant_key(json!({"regions": "mars-north-1x"})),
    )
    .await;
    assert_eq!(status, 422, "{refused}");

    let started = authorize(&daemon, &token, Some("access_key")).await;
    let (status, done) = callback(&daemon, &token, &started, tenant_key(json!({}))).await;
    assert_eq!(status, 201, "{done}");
    let metadata = &done["integration"]["metadata"];
    assert_eq!(metadata["flow"], "access_key");
    assert_eq!(metadata["account"], ACCOUNT);
    assert_eq!(
        metadata["arn"],
        "arn:aws:iam::111122223333:user/alarms-reader"
    );
    assert_eq!(metadata["regions"], json!(["us-east-1"]), "the default");
    assert_not_in_database(&daemon, &[TENANT_SECRET]);
    daemon.stop().await;
}

/// Connects with the tenant's access key: the integration's id.
async fn connect_key(daemon: &TestDaemon, token: &str, extra: Value) -> String {
    let started = authorize(daemon, token, Some("access_key")).await;
    let (status, done) = callback(daemon, token, &started, tenant_key(extra)).await;
    assert_eq!(status, 201, "{done}");
    done["integration"]["id"].as_str().unwrap().to_string()
}

/// The integration's events: (delivery id, event type, payload).
async fn stored(store: &switchboard::store::Store, id: &str) -> Vec<(String, String, Value)> {
    let mut found: Vec<(String, String, Value)> = events::list(store, None, Some(id), 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.delivery_id,
                e.event_type,
                serde_json::from_str(&e.payload).unwrap(),
            )
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn sns_messages_are_taken_only_signed_by_sns_and_from_allowed_topics() {
    let aws = FakeAws::start().await;
    let daemon = TestDaemon::start_configured(&aws.config_section("")).await;
    daemon.ready().await;
    let (_, token) = daemon.organization("Acme").await;
    let id = connect_key(&daemon, &token, json!({"topics": TOPIC, "poll": "false"})).await;
    let url = daemon.api_url(&format!("/webhooks/aws/{id}"));

    // A subscription to an allowed topic is confirmed at its SubscribeURL.
    let confirmation = aws.subscription_confirmation(TOPIC);
    let (status, answer) = confirmation.deliver(&daemon.http, &url).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        *aws.state.confirmed.lock().unwrap(),
        [confirmation.fields["Token"].as_str().unwrap()]
    );
    // One to any other topic is not, and is kept dead with the reason.
    let (status, answer) = aws
        .subscription_confirmation(OTHER_TOPIC)
        .deliver(&daemon.http, &url)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(aws.state.confirmed.lock().unwrap().len(), 1);
    let refused = events::list(&daemon.store, Some("dead"), None, 100)
        .await
        .unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].event_type, "sns.subscription_refused");
    assert!(
        refused[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains(OTHER_TOPIC),
        "{:?}",
        refused[0].last_error
    );

    // Alarms signed with SignatureVersion 1 (SHA-1) and 2 (SHA-256).
    let now = Utc::now();
    let triggered = change("HighCPU", now - chrono::Duration::minutes(3), "OK", "ALARM");
    let recovered = change("HighCPU", now - chrono::Duration::minutes(1), "ALARM", "OK");
    let v1 = aws.notification(TOPIC, &alarm_message("us-east-1", &triggered), 1);
    let (status, answer) = v1.deliver(&daemon.http, &url).await;
    assert_eq!(status, 200, "{answer}");
    let v2 = aws.notification(TOPIC, &alarm_message("us-east-1", &recovered), 2);
    let (status, answer) = v2.deliver(&daemon.http, &url).await;
    assert_eq!(status, 200, "{answer}");
    // SNS retries with the same message: acknowledged, stored once.
    let (status, answer) = v1.deliver(&daemon.http, &url).await;
    assert_eq!(
        (status, &answer["duplicate"]),
        (200, &json!(true)),
        "{answer}"
    );
    let events = stored(&daemon.store, &id).await;
    let types: Vec<&str> = events.iter().map(|(_, t, _)| t.as_str()).collect();
    assert_eq!(types, ["cloudwatch.alarm.alarm", "cloudwatch.alarm.ok"]);
    let payload = &events[0].2;
    assert_eq!(payload["alarm_name"], "HighCPU");
    assert_eq!(payload["region"], "us-east-1");
    assert_eq!(payload["old_state"], "OK");
    assert_eq!(payload["account"], ACCOUNT);
    assert_eq!(payload["via"], "sns");

    // Refused, and nothing stored: a key that is not the certificate's, a message
    // changed after signing, a certificate off the SNS host or not over https, and a
    // topic the integration does not allow.
    let message = alarm_message("us-east-1", &change("Disk", now, "OK", "ALARM"));
    let wrong_key = SnsDelivery::signed(
        aws.notification(TOPIC, &message, 2).fields,
        include_str!("fixtures/github-app-test-key.pem"),
    );
    let mut tampered = aws.notification(TOPIC, &message, 1);
    tampered.fields["Message"] = json!(message.replace("ALARM", "OK"));
    let off_host = |cert_url: String| {
        let mut fields = aws.notification(TOPIC, &message, 1).fields;
        fields["SigningCertURL"] = json!(cert_url);
        SnsDelivery::signed(fields, common::fake_aws::SNS_SIGNING_KEY)
    };
    let cases = [
        ("wrong key", wrong_key, "invalid_signature"),
        ("tampered", tampered, "invalid_signature"),
        (
            "off host",
            off_host(aws.cert_url().replace("127.0.0.1", "localhost")),
            "invalid_signature",
        ),
        (
            "not https",
            off_host(aws.cert_url().replace("https://", "http://")),
            "invalid_signature",
        ),
        (
            "other topic",
            aws.notification(OTHER_TOPIC, &message, 1),
            "topic_not_allowed",
        ),
    ];
    for (case, delivery, code) in cases {
        let (status, answer) = delivery.deliver(&daemon.http, &url).await;
        assert_eq!(status, 403, "{case}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{case}: {answer}");
    }
    assert_eq!(stored(&daemon.store, &id).await.len(), 2);
    daemon.stop().await;
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn alarm_history_is_polled_in_pages_per_region_survives_a_restart_and_meets_sns_once(
    #[case] backend: Db,
) {
    let db = TestDb::new(backend).await.expect("database");
    let org = organizations::create(&db.store, "Acme").await.unwrap();
    let (_, token) = tokens::create(&db.store, &org.id).await.unwrap();
    let token = token.expose().clone();
    let aws = FakeAws::start().await;
    let now = Utc::now();
    let at = |minutes_ago: i64| now - chrono::Duration::minutes(minutes_ago);
    let history = [
        change("HighCPU", at(20), "OK", "ALARM"),
        change("HighCPU", at(18), "ALARM", "OK"),
        change("Disk", at(16), "OK", "INSUFFICIENT_DATA"),
        change("Disk", at(14), "INSUFFICIENT_DATA", "ALARM"),
        change("HighCPU", at(12), "OK", "ALARM"),
    ];
    for item in &history {
        aws.record("us-east-1", item.clone());
    }
    aws.record("eu-west-1", change("Latency", at(10), "OK", "ALARM"));
    let url = db.config.url.expose().clone();
    let config = format!(
        "[supervision]\nbackoff_base = \"10ms\"\nbackoff_cap = \"50ms\"\n\
         [integrations]\nvalidation_spread = \"0s\"\n{}",
        aws.config_section("poll_interval = \"200ms\"\npoll_page_size = 2")
    );
    let daemon = TestDaemon::start_on(&url, &config).await;
    daemon.ready().await;
    let id = connect_key(
        &daemon,
        &token,
        json!({"regions": "us-east-1,eu-west-1", "topics": TOPIC}),
    )
    .await;
    // The first change also comes pushed through SNS: whichever way is first, it
    // is stored once.
    let (status, answer) = aws
        .notification(TOPIC, &alarm_message("us-east-1", &history[0]), 1)
        .deliver(
            &daemon.http,
            &daemon.api_url(&format!("/webhooks/aws/{id}")),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    until("both regions' history is stored", || async {
        stored(&db.store, &id).await.len() >= 6
    })
    .await;
    let events = stored(&db.store, &id).await;
    assert_eq!(events.len(), 6, "{events:?}");
    let mut types: Vec<&str> = events.iter().map(|(_, t, _)| t.as_str()).collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            "cloudwatch.alarm.alarm",
            "cloudwatch.alarm.alarm",
            "cloudwatch.alarm.alarm",
            "cloudwatch.alarm.alarm",
            "cloudwatch.alarm.insufficient_data",
            "cloudwatch.alarm.ok"
        ]
    );
    let latency = events
        .iter()
        .find(|(_, _, p)| p["alarm_name"] == "Latency")
        .unwrap();
    assert_eq!(latency.2["region"], "eu-west-1");
    assert_eq!(latency.2["via"], "poll");
    let queries = aws.state.history_queries.lock().unwrap().clone();
    let (region, first) = &queries[0];
    assert_eq!(region, "us-east-1");
    assert_eq!(first["HistoryItemType"], "StateUpdate");
    assert_eq!(first["ScanBy"], "TimestampAscending");
    assert_eq!(first["MaxRecords"], "2");
    assert!(
        queries
            .iter()
            .any(|(r, q)| r == "us-east-1" && q.get("NextToken").is_some()),
        "three pages of two: {queries:?}"
    );
    assert!(queries.iter().any(|(r, _)| r == "eu-west-1"));

    // A crash after page two's events were stored but before its cursor was saved:
    // the cursor still points at page two. A new change comes meanwhile.
    daemon.stop().await;
    let start = first["StartDate"].clone();
    aws.record("us-east-1", change("Disk", at(1), "ALARM", "OK"));
    let mut row = poll_cursors::get(&db.store, &id, "")
        .await
        .unwrap()
        .unwrap();
    row.cursor = Some(
        json!({"regions": {"us-east-1": {"since": start, "end": Utc::now().to_rfc3339(), "next": "page-token:2"}}, "turn": 0})
            .to_string(),
    );
    row.next_poll_at = None;
    poll_cursors::save(&db.store, &row).await.unwrap();
    let asked = aws.state.history_queries.lock().unwrap().len();
    let daemon = TestDaemon::start_on(&url, &config).await;
    daemon.ready().await;
    until("the new change is stored", || async {
        stored(&db.store, &id).await.len() >= 7
    })
    .await;
    let resumed = aws.state.history_queries.lock().unwrap()[asked].clone();
    assert_eq!(
        resumed.1.get("NextToken").map(String::as_str),
        Some("page-token:2"),
        "{resumed:?}"
    );
    // Page two read again: nothing twice.
    until("a full round after the restart", || async {
        aws.state.history_queries.lock().unwrap().len() >= asked + 4
    })
    .await;
    assert_eq!(stored(&db.store, &id).await.len(), 7);
    daemon.stop().await;
}

mod renewal {
    use super::*;
    use common::memory_credentials::{MemoryCredentials, spawn_actor};
    use switchboard::connectors::{CallbackRequest, Connector, ConnectorError};
    use switchboard::store::integrations::Integration;
    use switchboard_actors::BreakerConfig;

    fn connector(aws: &FakeAws) -> Arc<dyn Connector> {
        let sections: std::collections::BTreeMap<String, toml::Table> =
            toml::from_str::<toml::Table>(&aws.config_section("session_duration = \"1h\""))
                .unwrap()["connectors"]
                .clone()
                .try_into()
                .unwrap();
        let set = switchboard::connectors::ConnectorSet::from_sections(&sections).unwrap();
        Arc::clone(set.get("aws").unwrap())
    }

    fn access_key_id(store: &MemoryCredentials) -> String {
        store
            .values
            .lock()
            .unwrap()
            .iter()
            .find(|v| v.credential_type == "access_key_id")
            .map(|v| v.secret.expose().clone())
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_role_is_assumed_again_before_expiry_and_a_deleted_role_puts_it_in_error() {
        switchboard::install_crypto_provider();
        let aws = FakeAws::start().await;
        let connector = connector(&aws);
        aws.create_role(PRINCIPAL, "int-1");
        let mut fields = std::collections::BTreeMap::new();
        fields.insert(
            "role_arn".to_string(),
            switchboard::secret::Secret::new(ROLE_ARN),
        );
        fields.insert(
            "poll".to_string(),
            switchboard::secret::Secret::new("false"),
        );
        let authorized = connector
            .complete(&CallbackRequest {
                organization_id: "org-1".into(),
                integration_id: "int-1".into(),
                public_url: "http://127.0.0.1:1".into(),
                credentials: fields,
                ..CallbackRequest::default()
            })
            .await
            .expect("connects");
        assert_eq!(aws.assumed(), 1);
        let store = Arc::new(MemoryCredentials::default());
        *store.values.lock().unwrap() = authorized.credentials;
        let now = switchboard::store::now();
        let integration = Integration {
            id: "int-1".into(),
            organization_id: "org-1".into(),
            user_id: None,
            connector_type: "aws".into(),
            status: "active".into(),
            external_id: Some(ACCOUNT.into()),
            metadata: authorized.metadata.to_string(),
            created_at: now,
            updated_at: now,
            last_used_at: None,
        };
        let first_key = access_key_id(&store);
        let _actor = spawn_actor(
            Arc::clone(&connector),
            Arc::clone(&store),
            integration.clone(),
            BreakerConfig::default(),
            Duration::from_secs(5 * 60),
        )
        .await;
        // An hour's session and a 5-minute margin: assumed again at about 55 minutes.
        tokio::time::sleep(Duration::from_secs(54 * 60)).await;
        assert_eq!(aws.assumed(), 1);
        tokio::time::sleep(Duration::from_secs(2 * 60)).await;
        assert_eq!(aws.assumed(), 2);
        assert_ne!(
            access_key_id(&store),
            first_key,
            "the new session is stored"
        );

        // AWS says the session expired early: assumed again once, and the request
        // made again with the new session, which later requests use too.
        aws.expire_sessions();
        let credentials = store_credentials(&store, &integration);
        connector
            .validate(&credentials)
            .await
            .expect("valid after re-assuming");
        assert_eq!(aws.assumed(), 3);
        connector.validate(&credentials).await.expect("still valid");
        assert_eq!(aws.assumed(), 3);

        // The tenant deletes the role: AWS's code and message, and `error`.
        aws.delete_role();
        let refused = connector.refresh(&credentials).await.unwrap_err();
        assert!(
            matches!(&refused, ConnectorError::Unauthorized(m)
                if m.starts_with("AccessDenied: User: arn:aws:iam::999988887777:user/switchboard is not authorized to perform: sts:AssumeRole")),
            "{refused:?}"
        );
        tokio::time::sleep(Duration::from_secs(60 * 60)).await;
        assert!(
            store.statuses.lock().unwrap().iter().any(|s| s == "error"),
            "{:?}",
            store.statuses.lock().unwrap()
        );
    }

    fn store_credentials(
        store: &MemoryCredentials,
        integration: &Integration,
    ) -> switchboard::connectors::Credentials {
        switchboard::connectors::Credentials {
            organization_id: integration.organization_id.clone(),
            integration_id: integration.id.clone(),
            external_id: integration.external_id.clone(),
            metadata: serde_json::from_str(&integration.metadata).unwrap(),
            values: store.values.lock().unwrap().clone(),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn throttling_holds_the_integration_back_and_is_rate_limited() {
        let aws = FakeAws::start().await;
        let connector = connector(&aws);
        let mut fields = std::collections::BTreeMap::new();
        for (name, value) in [
            ("access_key_id", TENANT_KEY_ID),
            ("secret_access_key", TENANT_SECRET),
        ] {
            fields.insert(name.to_string(), switchboard::secret::Secret::new(value));
        }
        let authorized = connector
            .complete(&CallbackRequest {
                organization_id: "org-1".into(),
                integration_id: "int-2".into(),
                public_url: "http://127.0.0.1:1".into(),
                credentials: fields,
                ..CallbackRequest::default()
            })
            .await
            .expect("connects");
        let credentials = switchboard::connectors::Credentials {
            organization_id: "org-1".into(),
            integration_id: "int-2".into(),
            external_id: Some(ACCOUNT.into()),
            metadata: authorized.metadata,
            values: authorized.credentials,
        };
        aws.state.throttle_next.store(1, Ordering::SeqCst);
        let throttled = connector.poll(&credentials, None).await.unwrap_err();
        assert_eq!(
            throttled,
            ConnectorError::RateLimited {
                retry_after: Duration::from_secs(1)
            }
        );
        // Held back: the next poll does not reach AWS until the hold ends.
        let asked = aws.state.history_queries.lock().unwrap().len();
        assert!(matches!(
            connector.poll(&credentials, None).await,
            Err(ConnectorError::RateLimited { .. })
        ));
        assert_eq!(aws.state.history_queries.lock().unwrap().len(), asked);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        connector
            .poll(&credentials, None)
            .await
            .expect("polls again");
    }
}
