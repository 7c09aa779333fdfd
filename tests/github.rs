//! The GitHub connector against a fake GitHub on loopback: the installation flow,
//! installation tokens, webhooks and GitHub's rate limits.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::fake_github::{
    FakeGithub, WEBHOOK_SECRET, connect, deliver, pull_request, setup_callback, start_installation,
};
use common::{TestDaemon, until};
use serde_json::{Value, json};
use switchboard::connectors::github::signature;
use switchboard::secret::Secret;

async fn daemon(github: &FakeGithub) -> TestDaemon {
    let daemon = TestDaemon::start_configured(&github.config_section()).await;
    daemon.ready().await;
    daemon
}

async fn integrations(daemon: &TestDaemon, token: &str) -> Vec<Value> {
    let (status, listed) = daemon
        .call_api(token, "/integrations/list", json!({}))
        .await;
    assert_eq!(status, 200, "{listed}");
    listed["integrations"].as_array().unwrap().clone()
}

async fn events(daemon: &TestDaemon, query: &str) -> Vec<Value> {
    let (status, found) = daemon.get_json(&format!("/admin/events?{query}")).await;
    assert_eq!(status, 200, "{found}");
    found["events"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_installation_is_confirmed_with_github_and_bound_to_the_states_organization() {
    let github = FakeGithub::start().await;
    github.install(42, "acme", 250);
    let daemon = daemon(&github).await;
    let (org, token) = daemon.organization("Acme").await;

    let started = start_installation(&daemon, &token).await;
    assert_eq!(started["type"], "installation");
    let url = started["url"].as_str().unwrap();
    let state = started["state"].as_str().unwrap();
    assert!(
        url.starts_with(&format!(
            "{}/apps/switchboard-test/installations/new?state=",
            github.url()
        )),
        "{url}"
    );
    assert!(url.ends_with(state), "{url}");

    github.installer("code-of-acmes-admin", &[42]);
    let (status, page) = setup_callback(&daemon, state, "42", Some("code-of-acmes-admin")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("acme") || page.contains("42"), "{page}");
    assert!(!page.contains("ghs_"), "no token on the page");

    let listed = integrations(&daemon, &token).await;
    let integration = &listed[0];
    assert_eq!(integration["status"], "active");
    assert_eq!(integration["organization_id"], org);
    assert_eq!(integration["external_id"], "42");
    // 250 repositories: three pages of 100, followed through the Link header.
    let repositories = integration["metadata"]["repositories"].as_array().unwrap();
    assert_eq!(repositories.len(), 250);
    assert_eq!(repositories[249], "acme/repo-250");
    assert_eq!(integration["metadata"]["account"], "acme");

    // The app JWT GitHub saw: the app id as issuer, 9 minutes, backdated a minute.
    let claims = github.state.claims.lock().unwrap().clone();
    assert!(!claims.is_empty());
    let now = chrono::Utc::now().timestamp() as u64;
    for seen in claims {
        assert_eq!(seen.iss, common::fake_github::APP_ID);
        assert_eq!(seen.exp - seen.iat, 540);
        assert!(seen.iat <= now - 59 && seen.iat >= now - 65, "{seen:?}");
    }
    assert_eq!(github.state.minted.load(Ordering::SeqCst), 1);

    // The token is stored encrypted: not in the SQLite file.
    let token_value = github
        .state
        .tokens
        .lock()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let db = std::fs::read(daemon.data_dir.path().join("switchboard.db")).unwrap_or_default();
    let wal = std::fs::read(daemon.data_dir.path().join("switchboard.db-wal")).unwrap_or_default();
    let needle = token_value.as_bytes();
    assert!(!db.windows(needle.len()).any(|w| w == needle));
    assert!(!wal.windows(needle.len()).any(|w| w == needle));

    // Revoking uninstalls the app at GitHub.
    let (status, revoked) = daemon
        .call_api(
            &token,
            "/integrations/revoke",
            json!({"integration_id": integration["id"]}),
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["at_provider"], "revoked");
    assert_eq!(*github.state.deleted.lock().unwrap(), vec![42]);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_from_githubs_settings_binds_nothing() {
    let github = FakeGithub::start().await;
    github.install(42, "acme", 1);
    let daemon = daemon(&github).await;
    let (_, token) = daemon.organization("Acme").await;
    // GitHub sends the browser back without a state after a settings change.
    let page = daemon
        .http
        .get(daemon.api_url("/oauth/github/callback?installation_id=42&setup_action=update"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("was updated"));
    assert!(integrations(&daemon, &token).await.is_empty());
    assert!(
        github.state.claims.lock().unwrap().is_empty(),
        "GitHub not even asked"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spoofed_installation_id_binds_nothing() {
    let github = FakeGithub::start().await;
    github.install(42, "acme", 1);
    let daemon = daemon(&github).await;
    let (_, token) = daemon.organization("Mallory").await;

    let started = start_installation(&daemon, &token).await;
    github.installer("code-of-mallory", &[]);
    // An installation this app does not have: GitHub says 404 under the app JWT.
    let (status, done) = daemon
        .call_api(
            &token,
            "/integrations/callback",
            json!({"connector_type": "github", "state": started["state"], "installation_id": "31337", "code": "code-of-mallory"}),
        )
        .await;
    assert_eq!(status, 422, "{done}");
    assert_eq!(done["error"]["code"], "invalid_authorization");
    assert!(
        done["error"]["message"]
            .as_str()
            .unwrap()
            .contains("31337 does not exist"),
        "{done}"
    );
    assert_eq!(
        github.state.minted.load(Ordering::SeqCst),
        0,
        "no token minted"
    );
    let listed = integrations(&daemon, &token).await;
    assert!(
        listed.iter().all(|i| i["status"] == "pending"),
        "{listed:?}"
    );
    daemon.stop().await;
}

/// An installation is bound only for someone who can access it: the code GitHub sent
/// to the setup URL is exchanged, and `GET /user/installations` must list it. Another
/// tenant with a state of its own and someone else's installation id binds nothing,
/// and without a code nothing is bound unless the operator chose the unverified mode.
#[tokio::test(flavor = "multi_thread")]
async fn only_someone_who_can_access_an_installation_binds_it() {
    let github = FakeGithub::start().await;
    github.install(42, "acme", 1);
    github.install(43, "globex", 1);
    let daemon = daemon(&github).await;
    let (_, acme) = daemon.organization("Acme").await;
    let (_, globex) = daemon.organization("Globex").await;

    // Globex's admin, who can access installation 43 only, names Acme's 42.
    let started = start_installation(&daemon, &globex).await;
    github.installer("code-of-globexs-admin", &[43]);
    let (status, page) = setup_callback(
        &daemon,
        started["state"].as_str().unwrap(),
        "42",
        Some("code-of-globexs-admin"),
    )
    .await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("cannot access installation 42"), "{page}");
    // Without a code, or with one GitHub does not know, nothing is bound either.
    let started = start_installation(&daemon, &globex).await;
    let (status, page) =
        setup_callback(&daemon, started["state"].as_str().unwrap(), "42", None).await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("Request user authorization"), "{page}");
    let started = start_installation(&daemon, &globex).await;
    let (status, page) = setup_callback(
        &daemon,
        started["state"].as_str().unwrap(),
        "42",
        Some("made-up"),
    )
    .await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("incorrect or expired"), "{page}");
    assert_eq!(
        github.state.minted.load(Ordering::SeqCst),
        0,
        "no token minted"
    );
    assert!(
        integrations(&daemon, &globex)
            .await
            .iter()
            .all(|i| i["status"] != "active")
    );

    // The owner binds it.
    let bound = connect(&github, &daemon, &acme, 42).await;
    assert_eq!(bound["status"], "active");
    daemon.stop().await;

    // The operator's explicit choice: bound on the caller's word.
    let daemon = TestDaemon::start_configured(&format!(
        "{}unverified_installations = true\n",
        github.config_section()
    ))
    .await;
    daemon.ready().await;
    let (_, globex) = daemon.organization("Globex").await;
    let started = start_installation(&daemon, &globex).await;
    let (status, page) =
        setup_callback(&daemon, started["state"].as_str().unwrap(), "43", None).await;
    assert_eq!(status, 200, "{page}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_installation_bound_to_another_organization_is_refused() {
    let github = FakeGithub::start().await;
    github.install(42, "acme", 1);
    let daemon = daemon(&github).await;
    let (_, acme) = daemon.organization("Acme").await;
    let (_, other) = daemon.organization("Other").await;
    connect(&github, &daemon, &acme, 42).await;

    let started = start_installation(&daemon, &other).await;
    // Someone who can access the installation (a member of both organizations).
    github.installer("code-of-a-member-of-both", &[42]);
    let (status, page) = setup_callback(
        &daemon,
        started["state"].as_str().unwrap(),
        "42",
        Some("code-of-a-member-of-both"),
    )
    .await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("another organization"), "{page}");
    let listed = integrations(&daemon, &other).await;
    assert!(
        listed.iter().all(|i| i["status"] == "pending"),
        "{listed:?}"
    );
    // Still Acme's, untouched.
    assert_eq!(integrations(&daemon, &acme).await[0]["status"], "active");
    daemon.stop().await;
}

/// GitHub's quota (5,000 requests an hour per installation) is spent on requests, not
/// on events: handling a push makes none, so a busy installation's backlog is processed
/// at once instead of 1.4 events a second after the first 5,000.
#[tokio::test(flavor = "multi_thread")]
async fn a_busy_installations_events_are_not_held_to_the_api_quota() {
    use switchboard::store::events::{self, DeliveryScope, NewEvent};
    const EVENTS: usize = 20_000;
    let github = FakeGithub::start().await;
    github.install(42, "acme", 1);
    // Validation at start is spread over an hour: it must not fall in this test's
    // window, which counts every request made to GitHub.
    let daemon = TestDaemon::start_configured(&format!(
        "[integrations]\nvalidation_spread = \"1h\"\n{}",
        github.config_section()
    ))
    .await;
    daemon.ready().await;
    let (organization, token) = daemon.organization("Acme").await;
    let integration = connect(&github, &daemon, &token, 42).await;
    let id = integration["id"].as_str().unwrap().to_string();
    let requests_before = github.state.requests.load(Ordering::SeqCst);

    // A backlog, as ingress stores pushes (written straight to the inbox's table here,
    // so that the test measures processing, not 20,000 HTTP requests).
    let push = serde_json::to_string(&json!({
        "ref": "refs/heads/main", "repository": {"full_name": "acme/repo-001"},
        "installation": {"id": 42}, "commits": []
    }))
    .unwrap();
    for chunk in 0..EVENTS / 1000 {
        let batch = (0..1000)
            .map(|n| NewEvent {
                organization_id: Some(organization.clone()),
                integration_id: Some(id.clone()),
                connector_type: "github".into(),
                event_type: "push".into(),
                delivery_id: format!("push-{chunk}-{n}"),
                delivery_scope: DeliveryScope::Provider,
                payload: push.clone(),
                occurred_at: None,
                dead_reason: None,
            })
            .collect();
        events::write_batch_durably(&daemon.store, batch, &[], Vec::new())
            .await
            .unwrap();
    }
    // The integration's actor drains what arrived while it was down as it starts.
    let (status, _) = daemon
        .post_json(&format!("/admin/integrations/{id}/restart"))
        .await;
    assert_eq!(status, 200);
    let mut left = EVENTS;
    for _ in 0..600 {
        left = events::pending(&daemon.store, &id, EVENTS as i64)
            .await
            .unwrap()
            .len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "events still pending after a minute");
    let done = events::list(
        &daemon.store,
        Some(events::DONE),
        Some(&id),
        EVENTS as i64 + 1,
    )
    .await
    .unwrap();
    assert_eq!(done.len(), EVENTS);
    assert_eq!(
        github.state.requests.load(Ordering::SeqCst) - requests_before,
        0,
        "handling pushes asked GitHub nothing"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_verified_stored_once_and_routed_by_installation() {
    let github = FakeGithub::start().await;
    github.install(42, "acme", 1);
    let daemon = daemon(&github).await;
    let (_, token) = daemon.organization("Acme").await;
    let integration = connect(&github, &daemon, &token, 42).await;
    let id = integration["id"].as_str().unwrap().to_string();

    // Signature cases: wrong secret, tampered body, SHA-1 only, none.
    let body = pull_request(42, 1);
    assert_eq!(
        deliver(&daemon, "pull_request", "d-wrong", &body, "not-the-secret")
            .await
            .0,
        401
    );
    let raw = serde_json::to_vec(&body).unwrap();
    let signed = signature::sign(&Secret::new(WEBHOOK_SECRET), &raw);
    let mut tampered = raw.clone();
    tampered[10] ^= 1;
    let post = |body: Vec<u8>, headers: Vec<(&'static str, String)>| {
        let mut request = daemon
            .http
            .post(daemon.api_url("/webhooks/github"))
            .header("x-github-event", "pull_request")
            .header("x-github-delivery", "d-cases")
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    let tampered_status = post(tampered, vec![("x-hub-signature-256", signed.clone())])
        .await
        .unwrap()
        .status();
    assert_eq!(tampered_status, 401);
    let sha1_only = post(
        raw.clone(),
        vec![("x-hub-signature", "sha1=0000".to_string())],
    )
    .await
    .unwrap();
    assert_eq!(sha1_only.status(), 401);
    assert!(
        sha1_only
            .text()
            .await
            .unwrap()
            .contains("SHA-256 is required")
    );
    assert_eq!(post(raw.clone(), vec![]).await.unwrap().status(), 401);
    assert!(events(&daemon, "status=pending&limit=100").await.is_empty());

    // ping is answered and not stored.
    let (status, pong) = deliver(
        &daemon,
        "ping",
        "d-ping",
        &json!({"zen": "Keep it logically awesome.", "hook_id": 1}),
        WEBHOOK_SECRET,
    )
    .await;
    assert_eq!((status, pong["ok"].clone()), (200, json!(true)));

    // A delivery and its redelivery: stored once, processed by the installation's integration.
    let (status, first) = deliver(&daemon, "pull_request", "d-1", &body, WEBHOOK_SECRET).await;
    assert_eq!(
        (status, first["duplicate"].clone()),
        (200, json!(false)),
        "{first}"
    );
    let (status, again) = deliver(&daemon, "pull_request", "d-1", &body, WEBHOOK_SECRET).await;
    assert_eq!(
        (status, again["duplicate"].clone(), again["id"].clone()),
        (200, json!(true), first["id"].clone())
    );
    until("the pull request is processed", || async {
        let done = events(&daemon, &format!("status=done&integration_id={id}")).await;
        done.len() == 1 && done[0]["event_type"] == "pull_request.opened"
    })
    .await;

    // An installation bound to nobody: kept, dead with the reason.
    let (status, _) = deliver(
        &daemon,
        "pull_request",
        "d-stray",
        &pull_request(7, 1),
        WEBHOOK_SECRET,
    )
    .await;
    assert_eq!(status, 200);
    let dead = events(&daemon, "status=dead").await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("installation 7"),
        "{dead:?}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn installation_events_update_suspend_and_revoke_the_integration() {
    let github = FakeGithub::start().await;
    github.install(42, "acme", 2);
    let daemon = daemon(&github).await;
    let (_, token) = daemon.organization("Acme").await;
    let integration = connect(&github, &daemon, &token, 42).await;
    let id = integration["id"].as_str().unwrap().to_string();
    let status_of = || async {
        integrations(&daemon, &token)
            .await
            .into_iter()
            .find(|i| i["id"] == id)
            .unwrap()
    };

    let added = json!({
        "action": "added",
        "installation": {"id": 42},
        "repository_selection": "selected",
        "repositories_added": [{"full_name": "acme/new-repo"}],
        "repositories_removed": [{"full_name": "acme/repo-001"}]
    });
    assert_eq!(
        deliver(
            &daemon,
            "installation_repositories",
            "d-repos",
            &added,
            WEBHOOK_SECRET
        )
        .await
        .0,
        200
    );
    until("the repositories are updated", || async {
        status_of().await["metadata"]["repositories"] == json!(["acme/new-repo", "acme/repo-002"])
    })
    .await;

    let suspend = json!({"action": "suspend", "installation": {"id": 42, "suspended_at": "2026-11-23T00:00:00Z"}});
    deliver(
        &daemon,
        "installation",
        "d-suspend",
        &suspend,
        WEBHOOK_SECRET,
    )
    .await;
    until("suspended", || async {
        status_of().await["status"] == "suspended"
    })
    .await;
    let unsuspend = json!({"action": "unsuspend", "installation": {"id": 42}});
    deliver(
        &daemon,
        "installation",
        "d-unsuspend",
        &unsuspend,
        WEBHOOK_SECRET,
    )
    .await;
    until("active again", || async {
        status_of().await["status"] == "active"
    })
    .await;

    let deleted =
        json!({"action": "deleted", "installation": {"id": 42, "account": {"login": "acme"}}});
    deliver(
        &daemon,
        "installation",
        "d-deleted",
        &deleted,
        WEBHOOK_SECRET,
    )
    .await;
    until("revoked", || async {
        status_of().await["status"] == "revoked"
    })
    .await;
    // Its actor left the tree, and the next event for the installation is not routed to it.
    until("the actor is gone", || async {
        let (_, node) = daemon.get_json("/admin/connectors/github").await;
        node["children"].as_array().is_none_or(|c| c.is_empty())
    })
    .await;
    deliver(
        &daemon,
        "pull_request",
        "d-after",
        &pull_request(42, 2),
        WEBHOOK_SECRET,
    )
    .await;
    let dead = events(&daemon, "status=dead").await;
    assert!(
        dead.iter().any(|e| e["delivery_id"] == "d-after"),
        "{dead:?}"
    );
    daemon.stop().await;
}

mod connector {
    //! The connector alone, with the fake: tokens, refresh and rate limits.
    use super::*;
    use common::memory_credentials::{MemoryCredentials, spawn_actor};
    use switchboard::connectors::github::{GithubConfig, GithubConnector, INSTALLATION_TOKEN};
    use switchboard::connectors::{Connector, ConnectorError, Credentials};
    use switchboard::integration::IntegrationMsg;
    use switchboard::store::integrations::Integration;
    use switchboard_actors::BreakerConfig;

    fn connector(github: &FakeGithub) -> GithubConnector {
        let text = github.config_section();
        let section: toml::Table = toml::from_str(&text).unwrap();
        let mut github_section = section["connectors"]["github"].as_table().unwrap().clone();
        let key =
            std::fs::read_to_string(github_section["private_key_file"].as_str().unwrap()).unwrap();
        github_section.remove("private_key_file");
        github_section.insert("private_key".into(), key.into());
        let config: GithubConfig = github_section.try_into().unwrap();
        GithubConnector::build(&config).unwrap()
    }

    fn credentials(installation: &str) -> Credentials {
        Credentials {
            organization_id: "org-1".into(),
            integration_id: "int-1".into(),
            external_id: Some(installation.into()),
            metadata: json!({}),
            values: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_refused_jwt_is_minted_once_more() {
        switchboard::install_crypto_provider();
        let github = FakeGithub::start().await;
        github.install(42, "acme", 1);
        let connector = connector(&github);
        github.state.refuse_jwt.store(1, Ordering::SeqCst);
        let values = connector
            .refresh(&credentials("42"))
            .await
            .expect("second try works");
        assert_eq!(values[0].credential_type, INSTALLATION_TOKEN);
        assert!(values[0].secret.expose().starts_with("ghs_"));
        github.state.refuse_jwt.store(2, Ordering::SeqCst);
        let error = connector.refresh(&credentials("42")).await.unwrap_err();
        assert!(
            matches!(error, ConnectorError::Unauthorized(_)),
            "{error:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_secondary_rate_limit_holds_calls_back() {
        switchboard::install_crypto_provider();
        let github = FakeGithub::start().await;
        github.install(42, "acme", 1);
        let connector = connector(&github);

        *github.state.secondary_limit.lock().unwrap() = Some(Some(30));
        let error = connector.validate(&credentials("42")).await.unwrap_err();
        assert_eq!(
            error,
            ConnectorError::RateLimited {
                retry_after: Duration::from_secs(30)
            }
        );
        // Honoured: nothing is sent to GitHub before the 30 s are over.
        let sent = github.state.requests.load(Ordering::SeqCst);
        assert!(matches!(
            connector.validate(&credentials("42")).await,
            Err(ConnectorError::RateLimited { .. })
        ));
        assert_eq!(github.state.requests.load(Ordering::SeqCst), sent);
        tokio::time::sleep(Duration::from_secs(31)).await;
        connector
            .validate(&credentials("42"))
            .await
            .expect("allowed again");

        // Without retry-after: at least a minute.
        *github.state.secondary_limit.lock().unwrap() = Some(None);
        let error = connector.validate(&credentials("42")).await.unwrap_err();
        assert_eq!(
            error,
            ConnectorError::RateLimited {
                retry_after: Duration::from_secs(60)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_request_of_the_hour_waits_for_the_reset() {
        switchboard::install_crypto_provider();
        let github = FakeGithub::start().await;
        github.install(42, "acme", 1);
        let connector = connector(&github);
        *github.state.exhausted_for.lock().unwrap() = Some(120);
        connector
            .validate(&credentials("42"))
            .await
            .expect("the last one is answered");
        let sent = github.state.requests.load(Ordering::SeqCst);
        match connector.validate(&credentials("42")).await {
            Err(ConnectorError::RateLimited { retry_after }) => {
                assert!(
                    retry_after > Duration::from_secs(100)
                        && retry_after <= Duration::from_secs(121),
                    "{retry_after:?}"
                )
            }
            other => panic!("expected a wait for the reset, got {other:?}"),
        }
        assert_eq!(
            github.state.requests.load(Ordering::SeqCst),
            sent,
            "not sent"
        );
    }

    #[tokio::test]
    async fn accepted_permissions_reach_the_metadata() {
        switchboard::install_crypto_provider();
        let github = FakeGithub::start().await;
        let connector = connector(&github);
        let mut integration = credentials("42");
        integration.metadata = json!({"account": "acme", "permissions": {"contents": "read"}});
        let payload = json!({
            "action": "new_permissions_accepted",
            "installation": {"id": 42, "permissions": {"contents": "write", "issues": "write"}}
        });
        let event = switchboard::pipeline::Envelope {
            id: "e1".into(),
            organization_id: Some("org-1".into()),
            integration_id: Some("int-1".into()),
            connector: "github".into(),
            event_type: "installation.new_permissions_accepted".into(),
            delivery_id: "d1".into(),
            occurred_at: None,
            received_at: "2026-11-23T00:00:00Z".into(),
            payload,
        };
        let provider = switchboard::connectors::ProviderGate::new(Default::default(), None);
        let effect = connector
            .handle_event(&integration, &event, &provider)
            .await
            .unwrap();
        assert_eq!(
            effect,
            switchboard::connectors::EventEffect::Metadata(json!({
                "account": "acme",
                "permissions": {"contents": "write", "issues": "write"}
            }))
        );
    }

    fn integration(installation: &str) -> Integration {
        let now = switchboard::store::now();
        Integration {
            id: "int-1".into(),
            organization_id: "org-1".into(),
            user_id: None,
            connector_type: "github".into(),
            status: "active".into(),
            external_id: Some(installation.into()),
            metadata: "{}".into(),
            created_at: now,
            updated_at: now,
            last_used_at: None,
        }
    }

    async fn actor(
        connector: GithubConnector,
        store: Arc<MemoryCredentials>,
    ) -> ractor::ActorRef<IntegrationMsg> {
        *store.values.lock().unwrap() = connector.refresh(&credentials("42")).await.unwrap();
        spawn_actor(
            Arc::new(connector),
            store,
            integration("42"),
            BreakerConfig::default(),
            Duration::from_secs(5 * 60),
        )
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn installation_tokens_are_refreshed_before_their_hour_is_up() {
        switchboard::install_crypto_provider();
        let github = FakeGithub::start().await;
        github.install(42, "acme", 1);
        let store = Arc::new(MemoryCredentials::default());
        let actor = actor(connector(&github), Arc::clone(&store)).await;
        let first = store.values.lock().unwrap()[0].secret.expose().clone();

        // An hour's token, a 5-minute margin: renewed at 55 minutes, not before.
        tokio::time::sleep(Duration::from_secs(54 * 60)).await;
        assert_eq!(github.state.minted.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(2 * 60)).await;
        assert_eq!(github.state.minted.load(Ordering::SeqCst), 2);
        let second = store.values.lock().unwrap()[0].secret.expose().clone();
        assert_ne!(first, second);
        assert!(store.statuses.lock().unwrap().is_empty());
        actor.stop(None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_jwt_refused_twice_puts_the_integration_in_error() {
        switchboard::install_crypto_provider();
        let github = FakeGithub::start().await;
        github.install(42, "acme", 1);
        let store = Arc::new(MemoryCredentials::default());
        let actor = actor(connector(&github), Arc::clone(&store)).await;
        // The validation at start goes through; then GitHub refuses every JWT.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(store.statuses.lock().unwrap().is_empty());
        github.state.refuse_jwt.store(u32::MAX, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(56 * 60)).await;
        assert_eq!(
            store.statuses.lock().unwrap().first().map(String::as_str),
            Some("error")
        );
        let audits = store.audits.lock().unwrap().clone();
        assert!(
            audits
                .iter()
                .any(|a| a.starts_with("credentials.refresh") && a.contains("failed")),
            "{audits:?}"
        );
        actor.stop(None);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connector_owned_listener_takes_githubs_webhooks() {
    let github = FakeGithub::start().await;
    github.install(42, "acme", 1);
    let section = format!(
        "{}webhook_listen = \"127.0.0.1:0\"\n",
        github.config_section()
    );
    let daemon = TestDaemon::start_configured(&section).await;
    daemon.ready().await;
    let (_, token) = daemon.organization("Acme").await;
    let integration = connect(&github, &daemon, &token, 42).await;
    let addr = daemon.github_webhooks.expect("its own listener");

    let body = serde_json::to_vec(&pull_request(42, 3)).unwrap();
    let response = daemon
        .http
        .post(format!("http://{addr}/webhooks/github"))
        .header("x-github-event", "pull_request")
        .header("x-github-delivery", "d-own-listener")
        .header(
            "x-hub-signature-256",
            signature::sign(&Secret::new(WEBHOOK_SECRET), &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = integration["id"].as_str().unwrap().to_string();
    until("processed", || async {
        events(&daemon, &format!("status=done&integration_id={id}"))
            .await
            .len()
            == 1
    })
    .await;
    // Only GitHub's route is served there.
    let other = daemon
        .http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    daemon.stop().await;
}
