//! The store's repositories, every case on SQLite and on PostgreSQL.

mod common;

use std::time::Duration;

use common::db::{Db, TestDb};
use rstest::rstest;
use switchboard::store::integrations::{self, NewCredential, NewIntegration};
use switchboard::store::oauth_states::{self, StateError};
use switchboard::store::{StoreError, audit, organizations, tokens};

macro_rules! store_or_skip {
    ($backend:expr) => {
        match TestDb::new($backend).await {
            Some(db) => db,
            None => return,
        }
    };
}

fn new_integration(org: &str, connector: &str) -> NewIntegration {
    NewIntegration {
        organization_id: org.to_string(),
        user_id: Some("user-1".to_string()),
        connector_type: connector.to_string(),
        status: "active".to_string(),
        external_id: Some("T0001".to_string()),
        metadata: serde_json::json!({"team": "Acme"}),
    }
}

fn credential(kind: &str, bytes: &[u8]) -> NewCredential {
    NewCredential {
        credential_type: kind.to_string(),
        ciphertext: bytes.to_vec(),
        encryption_key_id: "dk_test".to_string(),
        expires_at: None,
    }
}

/// Credentials reference a data key; tests that bypass the vault insert a stand-in.
async fn with_test_key(db: &TestDb) {
    use switchboard::store::vault_keys::{VaultKeyRow, insert_active};
    insert_active(
        &db.store,
        &VaultKeyRow {
            id: "dk_test".to_string(),
            wrapped_key: vec![0; 60],
            master_fingerprint: "mk_test".to_string(),
            active: true,
            created_at: switchboard::store::now(),
        },
    )
    .await
    .expect("test key");
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn migrations_apply_revert_and_apply_again(#[case] backend: Db) {
    let Some(db) = TestDb::unmigrated(backend).await else {
        return;
    };
    // One folder per migration, the same list for both backends.
    let count = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .expect("migrations")
        .count();
    assert_eq!(db.store.migrate().await.expect("apply"), count);
    assert_eq!(db.store.migrate().await.expect("nothing pending"), 0);
    organizations::create(&db.store, "before")
        .await
        .expect("tables exist");

    assert_eq!(db.store.revert_all().await.expect("revert"), count);
    let gone = organizations::list(&db.store).await;
    assert!(
        matches!(gone, Err(StoreError::Query(_))),
        "tables dropped: {gone:?}"
    );

    assert_eq!(db.store.migrate().await.expect("re-apply"), count);
    assert!(
        organizations::list(&db.store)
            .await
            .expect("empty again")
            .is_empty()
    );
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn tokens_authenticate_until_revoked(#[case] backend: Db) {
    let db = store_or_skip!(backend);
    let org = organizations::create(&db.store, "Acme").await.unwrap();
    let (token, plaintext) = tokens::create(&db.store, &org.id).await.unwrap();
    assert!(plaintext.expose().starts_with(tokens::TOKEN_PREFIX));
    assert_ne!(token.token_hash, *plaintext.expose());

    let found = tokens::authenticate(&db.store, plaintext.expose())
        .await
        .unwrap();
    assert_eq!(found.as_deref(), Some(org.id.as_str()));
    assert_eq!(
        tokens::authenticate(&db.store, "sbt_wrong").await.unwrap(),
        None
    );

    tokens::revoke(&db.store, &token.id).await.unwrap();
    assert_eq!(
        tokens::authenticate(&db.store, plaintext.expose())
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        tokens::revoke(&db.store, &token.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        tokens::create(&db.store, "no-such-org").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(organizations::list(&db.store).await.unwrap(), vec![org]);
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn an_integration_and_its_credentials_are_stored_together(#[case] backend: Db) {
    let db = store_or_skip!(backend);
    with_test_key(&db).await;
    let org = organizations::create(&db.store, "Acme").await.unwrap();
    let slack = integrations::create(
        &db.store,
        new_integration(&org.id, "slack"),
        vec![
            credential("bot_token", b"c1"),
            credential("refresh_token", b"c2"),
        ],
    )
    .await
    .unwrap();
    let stored = integrations::credentials(&db.store, &org.id, &slack.id)
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].ciphertext, b"c1");

    // A second live integration of the same connector is refused, and leaves nothing.
    let second = integrations::create(
        &db.store,
        new_integration(&org.id, "slack"),
        vec![credential("bot_token", b"c3")],
    )
    .await;
    assert!(
        matches!(second, Err(StoreError::Conflict(ref m)) if m.contains("slack")),
        "{second:?}"
    );
    assert_eq!(
        integrations::list(&db.store, &org.id, None)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        integrations::count_by_key(&db.store).await.unwrap(),
        vec![("dk_test".to_string(), 2)]
    );

    // Once revoked, a new one may be authorized.
    integrations::set_status(&db.store, &org.id, &slack.id, "revoked")
        .await
        .unwrap();
    integrations::create(&db.store, new_integration(&org.id, "slack"), vec![])
        .await
        .unwrap();
    assert_eq!(
        integrations::live_for_connector(&db.store, "slack")
            .await
            .unwrap()
            .len(),
        1
    );
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn replacing_credentials_is_all_or_nothing(#[case] backend: Db) {
    let db = store_or_skip!(backend);
    with_test_key(&db).await;
    let org = organizations::create(&db.store, "Acme").await.unwrap();
    let github = integrations::create(
        &db.store,
        new_integration(&org.id, "github"),
        vec![credential("installation_token", b"old")],
    )
    .await
    .unwrap();

    // The duplicate type violates the unique constraint half way: nothing changes.
    let failed = integrations::replace_credentials(
        &db.store,
        &org.id,
        &github.id,
        vec![
            credential("installation_token", b"new"),
            credential("installation_token", b"dup"),
        ],
    )
    .await;
    assert!(failed.is_err());
    let stored = integrations::credentials(&db.store, &org.id, &github.id)
        .await
        .unwrap();
    assert_eq!(
        stored
            .iter()
            .map(|c| c.ciphertext.clone())
            .collect::<Vec<_>>(),
        vec![b"old".to_vec()]
    );

    integrations::replace_credentials(
        &db.store,
        &org.id,
        &github.id,
        vec![credential("installation_token", b"new")],
    )
    .await
    .unwrap();
    let stored = integrations::credentials(&db.store, &org.id, &github.id)
        .await
        .unwrap();
    assert_eq!(stored[0].ciphertext, b"new");

    integrations::delete(&db.store, &org.id, &github.id)
        .await
        .unwrap();
    assert!(
        integrations::credentials(&db.store, &org.id, &github.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        integrations::count_by_key(&db.store)
            .await
            .unwrap()
            .is_empty()
    );
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn one_organization_cannot_read_change_or_delete_anothers_rows(#[case] backend: Db) {
    let db = store_or_skip!(backend);
    with_test_key(&db).await;
    let a = organizations::create(&db.store, "A").await.unwrap();
    let b = organizations::create(&db.store, "B").await.unwrap();
    let theirs = integrations::create(
        &db.store,
        new_integration(&a.id, "github"),
        vec![credential("installation_token", b"a-secret")],
    )
    .await
    .unwrap();
    audit::record(
        &db.store,
        Some(&a.id),
        "test",
        "integration.authorize",
        Some(&theirs.id),
        serde_json::json!({}),
    )
    .await
    .unwrap();

    assert_eq!(
        integrations::get(&db.store, &b.id, &theirs.id)
            .await
            .unwrap(),
        None
    );
    assert!(
        integrations::list(&db.store, &b.id, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        integrations::credentials(&db.store, &b.id, &theirs.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(audit::list(&db.store, &b.id, 10).await.unwrap().is_empty());
    assert!(matches!(
        integrations::set_status(&db.store, &b.id, &theirs.id, "revoked").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        integrations::replace_credentials(
            &db.store,
            &b.id,
            &theirs.id,
            vec![credential("installation_token", b"b")]
        )
        .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        integrations::delete(&db.store, &b.id, &theirs.id).await,
        Err(StoreError::NotFound)
    ));

    // A's rows are untouched.
    let kept = integrations::get(&db.store, &a.id, &theirs.id)
        .await
        .unwrap()
        .expect("still there");
    assert_eq!(kept.status, "active");
    let stored = integrations::credentials(&db.store, &a.id, &theirs.id)
        .await
        .unwrap();
    assert_eq!(stored[0].ciphertext, b"a-secret");
    assert_eq!(audit::list(&db.store, &a.id, 10).await.unwrap().len(), 1);
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn authorization_states_are_single_use_expiring_and_bound(#[case] backend: Db) {
    let db = store_or_skip!(backend);
    let a = organizations::create(&db.store, "A").await.unwrap();
    let b = organizations::create(&db.store, "B").await.unwrap();
    let ten_minutes = Duration::from_secs(600);

    let (state, _) = oauth_states::create(&db.store, &a.id, "slack", None, ten_minutes)
        .await
        .unwrap();
    assert!(matches!(
        oauth_states::consume(&db.store, state.expose(), Some(&b.id), "slack").await,
        Err(StateError::Foreign)
    ));
    assert!(matches!(
        oauth_states::consume(&db.store, state.expose(), Some(&a.id), "github").await,
        Err(StateError::Foreign)
    ));
    let used = oauth_states::consume(&db.store, state.expose(), Some(&a.id), "slack")
        .await
        .unwrap();
    assert_eq!(used.organization_id, a.id);
    assert!(matches!(
        oauth_states::consume(&db.store, state.expose(), Some(&a.id), "slack").await,
        Err(StateError::Replayed)
    ));

    let (expired, _) = oauth_states::create(&db.store, &a.id, "slack", None, Duration::ZERO)
        .await
        .unwrap();
    assert!(matches!(
        oauth_states::consume(&db.store, expired.expose(), None, "slack").await,
        Err(StateError::Expired)
    ));
    assert!(matches!(
        oauth_states::consume(&db.store, "made-up", None, "slack").await,
        Err(StateError::Unknown)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_database_scheme_is_a_clear_error() {
    let config = switchboard::config::DatabaseConfig {
        url: switchboard::secret::Secret::new("mysql://root:pw@localhost/sb"),
        ..Default::default()
    };
    let error = switchboard::store::Store::connect(&config).expect_err("refused");
    let text = error.to_string();
    assert!(text.contains("unsupported database URL"), "{text}");
    assert!(!text.contains("pw@"), "password shown: {text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_gets_wal_and_foreign_keys() {
    let db = TestDb::new(Db::Sqlite).await.expect("sqlite always runs");
    let org = organizations::create(&db.store, "A").await.unwrap();
    // Foreign keys on: a credential for a missing integration is refused.
    with_test_key(&db).await;
    let orphan = integrations::replace_credentials(
        &db.store,
        &org.id,
        "missing",
        vec![credential("x", b"x")],
    )
    .await;
    assert!(matches!(orphan, Err(StoreError::NotFound)));
    let wal = db.sqlite_path.as_ref().unwrap().with_extension("db-wal");
    assert!(wal.exists(), "WAL journal at {}", wal.display());
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn an_event_stored_after_its_integration_was_revoked_is_swept_to_dead(#[case] backend: Db) {
    use switchboard::store::events::{self, NewEvent};
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let org = organizations::create(&db.store, "Acme").await.unwrap();
    let live = integrations::create(&db.store, new_integration(&org.id, "github"), vec![])
        .await
        .unwrap();
    let gone = integrations::create(&db.store, new_integration(&org.id, "slack"), vec![])
        .await
        .unwrap();
    integrations::revoke(&db.store, &org.id, &gone.id)
        .await
        .unwrap();
    // Ingress looked the integration up just before it was revoked.
    let event = |integration: &str, delivery: &str| NewEvent {
        organization_id: Some(org.id.clone()),
        integration_id: Some(integration.to_string()),
        connector_type: "github".into(),
        event_type: "push".into(),
        delivery_id: delivery.into(),
        delivery_scope: events::DeliveryScope::Provider,
        payload: "{}".into(),
        occurred_at: None,
        dead_reason: None,
    };
    events::write_batch_durably(
        &db.store,
        vec![event(&live.id, "d-live"), event(&gone.id, "d-gone")],
        &[],
        Vec::new(),
    )
    .await
    .unwrap();
    // The inbox's sweep.
    assert_eq!(events::bury_revoked(&db.store).await.unwrap(), 1);
    let pending = events::list(&db.store, Some(events::PENDING), None, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].delivery_id, "d-live");
    let dead = events::list(&db.store, Some(events::DEAD), None, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].delivery_id, "d-gone");
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("the integration was revoked")
    );
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn a_group_commit_stores_each_delivery_once_and_records_processed_events_done(
    #[case] backend: Db,
) {
    use switchboard::store::events::{self, NewEvent};
    let db = store_or_skip!(backend);
    let org = organizations::create(&db.store, "Acme").await.unwrap();
    let integration = integrations::create(&db.store, new_integration(&org.id, "github"), vec![])
        .await
        .unwrap();
    let occurred = chrono::NaiveDate::from_ymd_opt(2026, 12, 2)
        .and_then(|d| d.and_hms_micro_opt(10, 11, 12, 345_678))
        .unwrap();
    let event = |delivery: &str, payload: &str| NewEvent {
        organization_id: Some(org.id.clone()),
        integration_id: Some(integration.id.clone()),
        connector_type: "github".into(),
        event_type: "push".into(),
        delivery_id: delivery.into(),
        delivery_scope: events::DeliveryScope::Provider,
        payload: payload.into(),
        occurred_at: Some(occurred),
        dead_reason: None,
    };
    // Stored byte for byte, whatever it holds.
    let raw = r#"{"text":"h\u00e9llo \"quoted\" \\ é 😀"}
"#;

    // A redelivery inside the batch is stored once, under the first one's id.
    let first = events::write_batch_durably(
        &db.store,
        vec![
            event("d-1", raw),
            event("d-2", "{}"),
            event("d-1", "{\"again\":1}"),
        ],
        &[],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        first.iter().map(|s| s.duplicate).collect::<Vec<_>>(),
        [false, false, true]
    );
    assert_eq!(first[2].id, first[0].id);

    // The next batch: a redelivery of a stored event, a new one, one with nothing to
    // process it (stored done), and the first event recorded processed.
    let second = events::write_batch_durably(
        &db.store,
        vec![event("d-2", "{}"), event("d-3", "{}"), event("d-4", "{}")],
        &[false, false, true],
        vec![first[0].id.clone()],
    )
    .await
    .unwrap();
    assert_eq!(
        second.iter().map(|s| s.duplicate).collect::<Vec<_>>(),
        [true, false, false]
    );
    assert_eq!(second[0].id, first[1].id);

    let all = events::list(&db.store, None, Some(&integration.id), 10)
        .await
        .unwrap();
    let deliveries: Vec<(&str, &str)> = all
        .iter()
        .map(|e| (e.delivery_id.as_str(), e.status.as_str()))
        .collect();
    assert_eq!(
        deliveries,
        [
            ("d-1", events::DONE),
            ("d-2", events::PENDING),
            ("d-3", events::PENDING),
            ("d-4", events::DONE),
        ]
    );
    assert_eq!(
        all[0].payload, raw,
        "the redelivery did not replace the event"
    );
    assert!(all[0].processed_at.is_some() && all[3].processed_at.is_some());
    assert!(all[1].processed_at.is_none() && all[2].processed_at.is_none());
    assert!(
        all.iter()
            .all(|e| e.occurred_at == Some(occurred) && e.attempts == 0)
    );
    let pending = events::pending(&db.store, &integration.id, 10)
        .await
        .unwrap();
    assert_eq!(
        pending.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        [first[1].id.as_str(), second[1].id.as_str()]
    );

    // A commit of processed events alone (no new event), as when the inbox is down.
    events::mark_done_all(&db.store, std::slice::from_ref(&first[1].id))
        .await
        .unwrap();
    let pending = events::pending(&db.store, &integration.id, 10)
        .await
        .unwrap();
    assert_eq!(
        pending.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        [second[1].id.as_str()]
    );

    // A batch without a redelivery, with an event recorded processed in the same commit
    // (on PostgreSQL the plain insert, where the batches above fell back on skipping).
    let third = events::write_batch_durably(
        &db.store,
        vec![event("d-5", "{}"), event("d-6", "{}")],
        &[],
        vec![second[1].id.clone()],
    )
    .await
    .unwrap();
    assert!(third.iter().all(|s| !s.duplicate));
    let pending = events::pending(&db.store, &integration.id, 10)
        .await
        .unwrap();
    assert_eq!(
        pending.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        [third[0].id.as_str(), third[1].id.as_str()]
    );
    let done = events::list(&db.store, Some(events::DONE), Some(&integration.id), 10)
        .await
        .unwrap();
    assert!(
        done.iter()
            .any(|e| e.id == second[1].id && e.processed_at.is_some())
    );
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn a_subjects_chat_message_is_found_replaced_and_forgotten(#[case] backend: Db) {
    use switchboard::store::chat_messages::{self, MessageKey};
    let db = store_or_skip!(backend);
    let org = organizations::create(&db.store, "Acme").await.unwrap();
    let key = MessageKey {
        organization_id: &org.id,
        connector: "chat",
        channel: "C1",
        subject: "acme:incident:42",
    };
    assert_eq!(chat_messages::find(&db.store, key).await.unwrap(), None);
    chat_messages::save(&db.store, key, r#"{"ts":"1"}"#)
        .await
        .unwrap();
    chat_messages::save(&db.store, key, r#"{"ts":"2"}"#)
        .await
        .unwrap();
    let other_channel = MessageKey {
        channel: "C2",
        ..key
    };
    assert_eq!(
        chat_messages::find(&db.store, other_channel).await.unwrap(),
        None
    );
    let found = chat_messages::find(&db.store, key).await.unwrap().unwrap();
    assert_eq!(
        found.message_ref, r#"{"ts":"2"}"#,
        "the newer post replaces"
    );
    chat_messages::touch(&db.store, key).await.unwrap();
    let touched = chat_messages::find(&db.store, key).await.unwrap().unwrap();
    assert!(touched.updated_at >= found.updated_at);
    chat_messages::forget(&db.store, key).await.unwrap();
    assert_eq!(chat_messages::find(&db.store, key).await.unwrap(), None);
}
