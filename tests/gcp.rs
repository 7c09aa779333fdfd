//! The GCP connector against a fake Google on loopback: the service-account key's
//! checks, access tokens minted and renewed, validation with and without the
//! permission, and Pub/Sub push deliveries verified by their OIDC tokens.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::TestDaemon;
use common::fake_google::{
    CLIENT_EMAIL, FakeGoogle, KEY_ID, PROJECT, PUSH_ACCOUNT, SCOPE, SERVICE_ACCOUNT_PEM, delivery,
    incident, push, push_token, sign,
};
use serde_json::{Value, json};

/// Connects GCP for the token's organization with these callback credentials.
async fn connect(daemon: &TestDaemon, token: &str, credentials: Value) -> (u16, Value) {
    // Where to point the push subscription is known before the key is posted.
    let started = daemon.authorize(token, "gcp").await;
    let pending = started["integration_id"].as_str().unwrap();
    assert_eq!(
        started["instructions"]["push_endpoint"],
        daemon.api_url(&format!("/webhooks/gcp/{pending}")),
        "{started}"
    );
    daemon
        .call_api(
            token,
            "/integrations/callback",
            json!({"connector_type": "gcp", "state": started["state"], "credentials": credentials}),
        )
        .await
}

fn with(key: &Value, changes: Value) -> String {
    let mut key = key.clone();
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            key.as_object_mut().unwrap().remove(name);
        } else {
            key[name] = value.clone();
        }
    }
    key.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_account_key_is_checked_connects_and_validates_with_a_real_call() {
    let google = FakeGoogle::start().await;
    let daemon = TestDaemon::start_configured(&google.config_section()).await;
    daemon.ready().await;
    let (_, token) = daemon.organization("Acme").await;
    let key = google.service_account_key();
    // A fragment of the private key, which no answer may quote.
    let fragment = &SERVICE_ACCOUNT_PEM[40..80];

    let refusals = [
        (
            with(&key, json!({"type": "authorized_user"})),
            "type must be \"service_account\"",
        ),
        (
            with(&key, json!({"client_email": null})),
            "client_email is missing",
        ),
        (
            with(&key, json!({"token_uri": null})),
            "token_uri is missing",
        ),
        (
            with(
                &key,
                json!({"private_key": SERVICE_ACCOUNT_PEM.replace("MII", "AAA")}),
            ),
            "private_key is not an RSA private key in PEM",
        ),
        (
            with(&key, json!({"token_uri": "https://attacker.example/token"})),
            "token_uri is not",
        ),
        (key.to_string()[..200].to_string(), "is not JSON"),
    ];
    for (bad, named) in refusals {
        let (status, refused) = connect(&daemon, &token, json!({"service_account_key": bad})).await;
        assert_eq!(status, 422, "{refused}");
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{named}: {message}");
        assert!(!refused.to_string().contains(fragment), "{refused}");
    }
    assert_eq!(
        google.state.minted.load(Ordering::SeqCst),
        0,
        "nothing sent"
    );

    let (status, done) = connect(
        &daemon,
        &token,
        json!({"service_account_key": key.to_string()}),
    )
    .await;
    assert_eq!(status, 201, "{done}");
    let id = done["integration"]["id"].as_str().unwrap().to_string();
    let metadata = &done["integration"]["metadata"];
    assert_eq!(metadata["project_id"], PROJECT);
    assert_eq!(metadata["client_email"], CLIENT_EMAIL);
    let push_url = daemon.api_url(&format!("/webhooks/gcp/{id}"));
    assert_eq!(done["reveal"]["push_endpoint"], push_url.as_str());
    assert!(!done.to_string().contains(fragment));
    // Connected without a push service account: it takes no pushes.
    assert!(metadata["push"].is_null(), "{metadata}");
    let pushed = push(
        &daemon.http,
        &push_url,
        Some(&push_token(0, &push_url, json!({}))),
        &delivery("1", &incident("open")),
    )
    .await;
    assert_eq!(pushed.0, 403, "{}", pushed.1);
    assert_eq!(pushed.1["error"]["code"], "push_not_configured");

    // The assertion Google verified: the key's id, an hour at most, the scope.
    assert_eq!(google.state.minted.load(Ordering::SeqCst), 1);
    let (kid, claims) = google.state.assertions.lock().unwrap()[0].clone();
    assert_eq!(kid, KEY_ID);
    assert_eq!(claims["iss"], CLIENT_EMAIL);
    assert_eq!(claims["scope"], SCOPE);
    assert_eq!(claims["aud"], google.url("/token"));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );

    // Nothing of the key is in the database in the clear.
    let database = std::fs::read(daemon.data_dir.path().join("switchboard.db")).unwrap();
    assert!(
        !database
            .windows(fragment.len())
            .any(|w| w == fragment.as_bytes()),
        "the private key is stored in the clear"
    );

    // Validation: token info and projects.get. Without the permission it fails,
    // naming it, and the integration stays active (its credentials are good).
    let validate_path = format!("/admin/integrations/{id}/validate");
    let validate = || daemon.post_json(&validate_path);
    let (status, validated) = validate().await;
    assert_eq!(
        (status, &validated["valid"]),
        (200, &json!(true)),
        "{validated}"
    );
    google.state.deny_project.store(true, Ordering::SeqCst);
    let (_, validated) = validate().await;
    assert_eq!(validated["valid"], false);
    let reason = validated["reason"].as_str().unwrap();
    assert!(
        reason.contains("lacks the permission resourcemanager.projects.get on project acme-prod")
            && reason.contains("The caller does not have permission"),
        "{reason}"
    );
    let (_, status_body) = daemon
        .call_api(
            &token,
            "/integrations/status",
            json!({"integration_id": id}),
        )
        .await;
    assert_eq!(
        status_body["integration"]["status"], "active",
        "{status_body}"
    );
    let shown = status_body["health"].to_string();
    assert!(shown.contains("resourcemanager.projects.get"), "{shown}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn push_tokens_are_verified_against_googles_rotating_keys() {
    let google = FakeGoogle::start().await;
    let daemon = TestDaemon::start_configured(&google.config_section()).await;
    daemon.ready().await;
    let (_, token) = daemon.organization("Acme").await;
    let (status, done) = connect(
        &daemon,
        &token,
        json!({"service_account_key": google.service_account_key().to_string(),
               "push_service_account": PUSH_ACCOUNT}),
    )
    .await;
    assert_eq!(status, 201, "{done}");
    let id = done["integration"]["id"].as_str().unwrap().to_string();
    let url = daemon.api_url(&format!("/webhooks/gcp/{id}"));
    assert_eq!(
        done["integration"]["metadata"]["push"]["audience"],
        url.as_str()
    );
    let http = &daemon.http;
    let stored = || async {
        let (_, found) = daemon
            .get_json(&format!("/admin/events?integration_id={id}"))
            .await;
        found["events"].as_array().unwrap().clone()
    };

    // Google's keys out of reach: the push is refused as unavailable (Pub/Sub
    // retries), and again until the refetch interval has passed.
    let opened = delivery("4610221043851234", &incident("open"));
    let valid = push_token(0, &url, json!({}));
    google.state.jwks_down.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        let (status, refused) = push(http, &url, Some(&valid), &opened).await;
        assert_eq!(status, 503, "{refused}");
    }
    assert_eq!(google.state.jwks_fetches.load(Ordering::SeqCst), 1);
    google.state.jwks_down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;

    // A Cloud Monitoring incident, typed; its redelivery stored once.
    let (status, answer) = push(http, &url, Some(&valid), &opened).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicate"], false);
    let (status, again) = push(http, &url, Some(&valid), &opened).await;
    assert_eq!((status, &again["duplicate"]), (200, &json!(true)));
    let found = stored().await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["event_type"], "monitoring.incident.open");
    assert_eq!(found[0]["delivery_id"], "4610221043851234");
    assert_eq!(
        found[0]["payload"]["data"]["incident"]["policy_name"],
        "Checkout latency"
    );
    assert_eq!(
        found[0]["payload"]["attributes"]["origin"],
        "cloud-monitoring"
    );
    assert_eq!(google.state.jwks_fetches.load(Ordering::SeqCst), 2);

    // Tokens that are not Pub/Sub's for this integration store nothing.
    let other = delivery("4610221043859999", &incident("closed"));
    let now = chrono::Utc::now().timestamp();
    let refusals = [
        (
            "expired",
            Some(push_token(
                0,
                &url,
                json!({"iat": now - 7200, "exp": now - 3600}),
            )),
        ),
        (
            "wrong audience",
            Some(push_token(0, "https://elsewhere.example/push", json!({}))),
        ),
        (
            "wrong email",
            Some(push_token(
                0,
                &url,
                json!({"email": "mallory@evil.iam.gserviceaccount.com"}),
            )),
        ),
        (
            "unverified email",
            Some(push_token(0, &url, json!({"email_verified": false}))),
        ),
        (
            "wrong issuer",
            Some(push_token(0, &url, json!({"iss": "https://evil.example"}))),
        ),
        ("no token", None),
        ("not a JWT", Some("not-a-jwt".to_string())),
    ];
    for (case, bad) in refusals {
        let (status, refused) = push(http, &url, bad.as_deref(), &other).await;
        assert_eq!(status, 401, "{case}: {refused}");
    }
    assert_eq!(stored().await.len(), 1, "nothing stored");

    // Google rotates its keys. A token with the new key inside the refetch interval
    // is refused without a fetch; after it, the keys are fetched again and it passes.
    *google.state.published.lock().unwrap() = vec![0, 1];
    let rotated = push_token(1, &url, json!({}));
    let (status, _) = push(http, &url, Some(&rotated), &other).await;
    assert_eq!(status, 401);
    assert_eq!(google.state.jwks_fetches.load(Ordering::SeqCst), 2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, answer) = push(http, &url, Some(&rotated), &other).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(google.state.jwks_fetches.load(Ordering::SeqCst), 3);
    // A made-up key id costs at most one fetch per interval, however often it comes.
    let forged = sign(
        0,
        &json!({"aud": url, "iss": "https://accounts.google.com",
        "email": PUSH_ACCOUNT, "email_verified": true, "exp": now + 600}),
        "made-up-kid",
    );
    for _ in 0..5 {
        let (status, _) = push(http, &url, Some(&forged), &other).await;
        assert_eq!(status, 401);
    }
    assert_eq!(google.state.jwks_fetches.load(Ordering::SeqCst), 3);

    let found = stored().await;
    assert_eq!(found[0]["event_type"], "monitoring.incident.closed");
    // Another message takes the subscription's name as its type.
    let (status, _) = push(
        http,
        &url,
        Some(&valid),
        &delivery("4610221043850001", &json!({"build": "finished"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(stored().await[0]["event_type"], "alerts-push");

    // A service account is one organization's.
    let (_, globex) = daemon.organization("Globex").await;
    let (status, refused) = connect(
        &daemon,
        &globex,
        json!({"service_account_key": google.service_account_key().to_string()}),
    )
    .await;
    assert_eq!(status, 409, "{refused}");
    daemon.stop().await;
}

mod renewal {
    use super::*;
    use common::memory_credentials::{MemoryCredentials, spawn_actor};
    use switchboard::connectors::{CallbackRequest, Connector};
    use switchboard::secret::Secret;
    use switchboard::store::integrations::Integration;
    use switchboard_actors::BreakerConfig;

    fn connector(google: &FakeGoogle) -> Arc<dyn Connector> {
        let sections: std::collections::BTreeMap<String, toml::Table> =
            toml::from_str::<toml::Table>(&google.config_section()).unwrap()["connectors"]
                .clone()
                .try_into()
                .unwrap();
        let set = switchboard::connectors::ConnectorSet::from_sections(&sections).unwrap();
        Arc::clone(set.get("gcp").unwrap())
    }

    fn integration() -> Integration {
        let now = switchboard::store::now();
        Integration {
            id: "int-1".into(),
            organization_id: "org-1".into(),
            user_id: None,
            connector_type: "gcp".into(),
            status: "active".into(),
            external_id: Some(CLIENT_EMAIL.into()),
            metadata: json!({"project_id": PROJECT}).to_string(),
            created_at: now,
            updated_at: now,
            last_used_at: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn access_tokens_are_renewed_before_expiry_and_invalid_grant_puts_the_integration_in_error()
     {
        switchboard::install_crypto_provider();
        let google = FakeGoogle::start().await;
        let connector = connector(&google);
        let authorized = connector
            .complete(&CallbackRequest {
                organization_id: "org-1".into(),
                integration_id: "int-1".into(),
                public_url: "http://127.0.0.1:1".into(),
                credentials: [(
                    "service_account_key".to_string(),
                    Secret::new(google.service_account_key().to_string()),
                )]
                .into(),
                ..CallbackRequest::default()
            })
            .await
            .expect("connects");
        let store = Arc::new(MemoryCredentials::default());
        *store.values.lock().unwrap() = authorized.credentials;
        let actor = spawn_actor(
            connector,
            Arc::clone(&store),
            integration(),
            BreakerConfig::default(),
            Duration::from_secs(5 * 60),
        )
        .await;
        let token = |store: &MemoryCredentials| {
            store
                .values
                .lock()
                .unwrap()
                .iter()
                .find(|v| v.credential_type == "access_token")
                .map(|v| v.secret.expose().clone())
        };
        let first = token(&store);

        // A token of 3599 s, a 5-minute margin: renewed at about 55 minutes, not before.
        tokio::time::sleep(Duration::from_secs(54 * 60)).await;
        assert_eq!(google.state.minted.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(2 * 60)).await;
        assert_eq!(google.state.minted.load(Ordering::SeqCst), 2);
        assert_ne!(token(&store), first);
        assert!(
            store
                .values
                .lock()
                .unwrap()
                .iter()
                .any(|v| v.credential_type == "service_account_key"),
            "the key is kept beside the new token"
        );
        assert!(store.statuses.lock().unwrap().is_empty());

        // The key is deleted in Google: the next renewal puts the integration in error
        // with Google's description.
        google.state.invalid_grant.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(56 * 60)).await;
        assert_eq!(
            store.statuses.lock().unwrap().first().map(String::as_str),
            Some("error")
        );
        let audits = store.audits.lock().unwrap().clone();
        assert!(
            audits.iter().any(
                |a| a.starts_with("credentials.refresh") && a.contains("Invalid JWT Signature")
            ),
            "{audits:?}"
        );
        actor.stop(None);
    }
}
