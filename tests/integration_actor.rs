//! The integration actor's credential lifecycle under paused time.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::memory_credentials::{MemoryCredentials, spawn_actor};
use common::test_connector::TestConnector;
use switchboard::connectors::{Connector, CredentialValue};
use switchboard::integration::IntegrationMsg;
use switchboard::secret::Secret;
use switchboard::store::integrations::Integration;
use switchboard_actors::{BreakerConfig, HealthReport};

fn integration() -> Integration {
    let now = switchboard::store::now();
    Integration {
        id: "int-1".into(),
        organization_id: "org-1".into(),
        user_id: None,
        connector_type: "acme".into(),
        status: "active".into(),
        external_id: None,
        metadata: "{}".into(),
        created_at: now,
        updated_at: now,
        last_used_at: None,
    }
}

async fn start(
    connector: Arc<TestConnector>,
    store: Arc<MemoryCredentials>,
    expires_in: Duration,
) -> ractor::ActorRef<IntegrationMsg> {
    let expires_at = switchboard::store::now() + chrono::Duration::from_std(expires_in).unwrap();
    *store.values.lock().unwrap() = vec![
        CredentialValue {
            credential_type: "access_token".into(),
            secret: Secret::new("acme-access-initial"),
            expires_at: Some(expires_at),
        },
        CredentialValue {
            credential_type: "refresh_token".into(),
            secret: Secret::new("acme-refresh"),
            expires_at: None,
        },
    ];
    let breaker = BreakerConfig {
        sliding_window_size: 4,
        minimum_calls: 4,
        ..BreakerConfig::default()
    };
    spawn_actor(
        connector as Arc<dyn Connector>,
        store,
        integration(),
        breaker,
        Duration::from_secs(15 * 60),
    )
    .await
}

async fn report(actor: &ractor::ActorRef<IntegrationMsg>) -> HealthReport {
    match actor
        .call(IntegrationMsg::Observe, Some(Duration::from_secs(1)))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(report)) => report,
        _ => panic!("no report"),
    }
}

#[tokio::test(start_paused = true)]
async fn credentials_are_refreshed_a_margin_before_they_expire() {
    let connector = Arc::new(TestConnector::with_token_lifetime(Duration::from_secs(
        3600,
    )));
    let store = Arc::new(MemoryCredentials::default());
    let actor = start(
        Arc::clone(&connector),
        Arc::clone(&store),
        Duration::from_secs(3600),
    )
    .await;

    // Due at 45 minutes (an hour's token, a 15-minute margin): not before.
    tokio::time::sleep(Duration::from_secs(44 * 60)).await;
    assert_eq!(connector.refreshes.load(Ordering::SeqCst), 0);
    assert!(
        connector.validations.load(Ordering::SeqCst) >= 1,
        "validated at start"
    );
    tokio::time::sleep(Duration::from_secs(2 * 60)).await;
    assert_eq!(connector.refreshes.load(Ordering::SeqCst), 1);
    let access = store.values.lock().unwrap()[0].secret.expose().clone();
    assert_ne!(
        access, "acme-access-initial",
        "the refreshed token was saved"
    );

    // The new token lives an hour too: the next refresh comes 45 minutes later.
    tokio::time::sleep(Duration::from_secs(43 * 60)).await;
    assert_eq!(connector.refreshes.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_secs(3 * 60)).await;
    assert_eq!(connector.refreshes.load(Ordering::SeqCst), 2);
    let health = report(&actor).await;
    assert!(
        health.details["last_refreshed_at"].is_string(),
        "{health:?}"
    );
    assert_eq!(health.details["refresh_failures"], 0);
    assert!(
        store
            .audits
            .lock()
            .unwrap()
            .iter()
            .all(|a| !a.contains("acme-access"))
    );
    actor.stop(None);
}

#[tokio::test(start_paused = true)]
async fn failed_refreshes_back_off_then_mark_the_integration_in_error() {
    let connector = Arc::new(TestConnector::with_token_lifetime(Duration::from_secs(
        3600,
    )));
    connector.fail_refresh.store(true, Ordering::SeqCst);
    let store = Arc::new(MemoryCredentials::default());
    // Already inside the margin: the first refresh is due at once.
    let actor = start(
        Arc::clone(&connector),
        Arc::clone(&store),
        Duration::from_secs(60),
    )
    .await;

    tokio::time::sleep(Duration::from_secs(60)).await;
    // Retried with backoff (full jitter up to 1s, 2s, 4s, ... capped at 10s): in a minute
    // at least the three attempts after which the integration is in error.
    let attempts = connector.refreshes.load(Ordering::SeqCst);
    assert!((3..=60).contains(&attempts), "{attempts} attempts");
    assert_eq!(
        *store.statuses.lock().unwrap(),
        vec!["error".to_string()],
        "error after refresh_attempts"
    );
    let health = report(&actor).await;
    assert!(
        health
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("refresh failed")
    );
    assert_eq!(health.details["integration_status"], "error");

    // The provider recovers: the next retry succeeds and the integration is active again.
    connector.fail_refresh.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let health = report(&actor).await;
    assert_eq!(health.details["integration_status"], "active", "{health:?}");
    assert_eq!(health.last_error, None);
    assert_eq!(
        store.statuses.lock().unwrap().last().map(String::as_str),
        Some("active")
    );
    actor.stop(None);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_from_the_provider_holds_the_next_call_back() {
    let connector = Arc::new(TestConnector::with_token_lifetime(Duration::from_secs(
        3600,
    )));
    *connector.rate_limit_next_validation.lock().unwrap() = Some(Duration::from_secs(30));
    let store = Arc::new(MemoryCredentials::default());
    let actor = start(
        Arc::clone(&connector),
        Arc::clone(&store),
        Duration::from_secs(3600),
    )
    .await;

    // Validation at start was answered "429, retry after 30 s".
    tokio::time::sleep(Duration::from_millis(10)).await;
    let health = report(&actor).await;
    let blocked = health.details["limiter"]["blocked_for_ms"]
        .as_u64()
        .expect("blocked");
    assert!((29_000..=30_000).contains(&blocked), "{blocked}");

    // The next call waits the provider's delay out before it is made.
    let asked = tokio::time::Instant::now();
    let outcome = actor
        .call(
            |reply| IntegrationMsg::Validate(Some(reply)),
            Some(Duration::from_secs(120)),
        )
        .await
        .expect("answers");
    assert!(matches!(outcome, ractor::rpc::CallResult::Success(Ok(()))));
    assert!(
        asked.elapsed() >= Duration::from_secs(29),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(connector.validations.load(Ordering::SeqCst), 2);
    actor.stop(None);
}
