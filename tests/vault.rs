//! The credential vault against a real store, on SQLite and on PostgreSQL.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::db::{Db, TestDb};
use ractor::ActorRef;
use rstest::rstest;
use switchboard::secret::Secret;
use switchboard::store::integrations::{self, NewCredential, NewIntegration};
use switchboard::store::{Store, organizations};
use switchboard::vault::{
    Binding, MasterKey, Sealed, Vault, VaultArgs, VaultError, VaultMsg, rotation,
};
use switchboard_actors::Backoff;

macro_rules! store_or_skip {
    ($backend:expr) => {
        match TestDb::new($backend).await {
            Some(db) => db,
            None => return,
        }
    };
}

fn master(seed: u8) -> MasterKey {
    MasterKey::from_bytes(&[seed; 32])
}

async fn start_vault(
    store: &Store,
    master: MasterKey,
    previous: Vec<MasterKey>,
) -> (Vault, ActorRef<VaultMsg>) {
    let (_, store_ready) = tokio::sync::watch::channel(true);
    Vault::spawn(VaultArgs {
        store: store.clone(),
        master: Arc::new(master),
        previous: Arc::new(previous),
        store_ready,
        backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(100)),
        resume_rotation: true,
        rotation_batch: 7,
        active_key_check: switchboard::vault::ACTIVE_KEY_CHECK,
    })
    .await
    .expect("vault spawns")
}

async fn stop(actor: ActorRef<VaultMsg>) {
    actor
        .stop_and_wait(None, Some(Duration::from_secs(5)))
        .await
        .expect("vault stops");
}

fn plaintext(text: &str) -> Secret<Vec<u8>> {
    Secret::wrap(text.as_bytes().to_vec())
}

/// Stores `count` integrations (one per organization) with an encrypted bot token each.
async fn store_credentials(store: &Store, vault: &Vault, count: usize) -> Vec<(Binding, String)> {
    let mut stored = Vec::new();
    for i in 0..count {
        let org = organizations::create(store, &format!("org-{i}"))
            .await
            .unwrap();
        let integration = integrations::create(
            store,
            NewIntegration {
                organization_id: org.id.clone(),
                user_id: None,
                connector_type: "slack".into(),
                status: "active".into(),
                external_id: Some(format!("T{i}")),
                metadata: serde_json::json!({}),
            },
            vec![],
        )
        .await
        .unwrap();
        let binding = Binding::new(&org.id, &integration.id, "bot_token");
        let secret = format!("xoxb-{i}-secret");
        let sealed = vault
            .encrypt(binding.clone(), plaintext(&secret))
            .await
            .unwrap();
        integrations::replace_credentials(
            store,
            &org.id,
            &integration.id,
            vec![NewCredential {
                credential_type: "bot_token".into(),
                ciphertext: sealed.ciphertext,
                encryption_key_id: sealed.key_id,
                expires_at: None,
            }],
        )
        .await
        .unwrap();
        stored.push((binding, secret));
    }
    stored
}

async fn read_back(store: &Store, vault: &Vault, binding: &Binding) -> Result<String, VaultError> {
    let rows = integrations::credentials(store, &binding.organization_id, &binding.integration_id)
        .await
        .unwrap();
    let row = rows.into_iter().next().expect("credential stored");
    let plain = vault
        .decrypt(
            binding.clone(),
            Sealed {
                key_id: row.encryption_key_id,
                ciphertext: row.ciphertext,
            },
        )
        .await?;
    Ok(String::from_utf8(plain.expose().clone()).unwrap())
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn credentials_round_trip_only_under_their_binding(#[case] backend: Db) {
    let db = store_or_skip!(backend);
    let (vault, actor) = start_vault(&db.store, master(1), vec![]).await;
    vault.ready(Duration::from_secs(10)).await.expect("ready");
    let stored = store_credentials(&db.store, &vault, 2).await;
    let (binding, secret) = &stored[0];
    assert_eq!(
        read_back(&db.store, &vault, binding).await.unwrap(),
        *secret
    );

    // The same ciphertext presented for another organization, integration or type.
    let row =
        integrations::credentials(&db.store, &binding.organization_id, &binding.integration_id)
            .await
            .unwrap()
            .remove(0);
    let sealed = Sealed {
        key_id: row.encryption_key_id.clone(),
        ciphertext: row.ciphertext.clone(),
    };
    for other in [
        Binding::new(
            &stored[1].0.organization_id,
            &binding.integration_id,
            "bot_token",
        ),
        Binding::new(
            &binding.organization_id,
            &stored[1].0.integration_id,
            "bot_token",
        ),
        Binding::new(
            &binding.organization_id,
            &binding.integration_id,
            "refresh_token",
        ),
    ] {
        assert_eq!(
            vault.decrypt(other, sealed.clone()).await.unwrap_err(),
            VaultError::Unauthentic
        );
    }

    // A ciphertext copied onto another row does not decrypt there.
    let (other_binding, _) = &stored[1];
    integrations::replace_credentials(
        &db.store,
        &other_binding.organization_id,
        &other_binding.integration_id,
        vec![NewCredential {
            credential_type: "bot_token".into(),
            ciphertext: row.ciphertext.clone(),
            encryption_key_id: row.encryption_key_id.clone(),
            expires_at: None,
        }],
    )
    .await
    .unwrap();
    assert_eq!(
        read_back(&db.store, &vault, other_binding)
            .await
            .unwrap_err(),
        VaultError::Unauthentic
    );

    // A flipped bit anywhere is caught.
    let mut tampered = sealed.clone();
    let last = tampered.ciphertext.len() - 1;
    tampered.ciphertext[last] ^= 0x01;
    assert_eq!(
        vault.decrypt(binding.clone(), tampered).await.unwrap_err(),
        VaultError::Unauthentic
    );

    // An unknown key id fails closed, naming the key.
    let unknown = vault
        .decrypt(
            binding.clone(),
            Sealed {
                key_id: "dk_gone".into(),
                ciphertext: sealed.ciphertext,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(unknown, VaultError::UnknownKey("dk_gone".into()));
    assert!(unknown.to_string().contains("dk_gone"));
    stop(actor).await;
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_master_key_seals_the_vault_and_a_previous_one_rewraps(#[case] backend: Db) {
    let db = store_or_skip!(backend);
    let (vault, actor) = start_vault(&db.store, master(1), vec![]).await;
    let key_id = vault
        .ready(Duration::from_secs(10))
        .await
        .unwrap()
        .active_key
        .unwrap();
    let stored = store_credentials(&db.store, &vault, 1).await;
    stop(actor).await;

    // Another master key: sealed, with an error naming the data key; nothing created.
    let (vault, actor) = start_vault(&db.store, master(2), vec![]).await;
    let error = vault.ready(Duration::from_secs(10)).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains(&key_id) && text.contains("wrapped by master key"),
        "{text}"
    );
    assert!(matches!(
        vault.encrypt(stored[0].0.clone(), plaintext("x")).await,
        Err(VaultError::Sealed(_))
    ));
    assert_eq!(
        switchboard::store::vault_keys::list(&db.store)
            .await
            .unwrap()
            .len(),
        1
    );
    stop(actor).await;

    // The new master key with the old one named as previous: data keys are re-wrapped.
    let (vault, actor) = start_vault(&db.store, master(2), vec![master(1)]).await;
    vault
        .ready(Duration::from_secs(10))
        .await
        .expect("re-wrapped");
    stop(actor).await;
    let (vault, actor) = start_vault(&db.store, master(2), vec![]).await;
    vault
        .ready(Duration::from_secs(10))
        .await
        .expect("the new master key alone now suffices");
    assert_eq!(
        read_back(&db.store, &vault, &stored[0].0).await.unwrap(),
        stored[0].1
    );
    stop(actor).await;
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn rotation_keeps_every_credential_readable_while_it_runs(#[case] backend: Db) {
    let db = store_or_skip!(backend);
    let (vault, actor) = start_vault(&db.store, master(1), vec![]).await;
    let old_key = vault
        .ready(Duration::from_secs(10))
        .await
        .unwrap()
        .active_key
        .unwrap();
    let stored = Arc::new(store_credentials(&db.store, &vault, 60).await);

    // Readers decrypt credentials round and round while the rotation runs.
    let stop_reading = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|reader| {
            let (store, vault, stored, stop) = (
                db.store.clone(),
                vault.clone(),
                Arc::clone(&stored),
                Arc::clone(&stop_reading),
            );
            tokio::spawn(async move {
                let mut reads = 0usize;
                let mut i = reader;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || reads < stored.len() {
                    let (binding, secret) = &stored[i % stored.len()];
                    assert_eq!(
                        read_back(&store, &vault, binding)
                            .await
                            .expect("readable mid-rotation"),
                        *secret
                    );
                    reads += 1;
                    i += 7;
                }
                reads
            })
        })
        .collect();
    let report = rotation::rotate(&db.store, &vault, 7)
        .await
        .expect("rotation");
    stop_reading.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.await.expect("reader finished") >= stored.len());
    }

    let new_key = report.new_key_id.clone().unwrap();
    assert_ne!(new_key, old_key);
    assert_eq!(report.reencrypted, 60);
    assert_eq!(
        integrations::count_by_key(&db.store).await.unwrap(),
        vec![(new_key, 60)]
    );
    for (binding, secret) in stored.iter() {
        assert_eq!(
            read_back(&db.store, &vault, binding).await.unwrap(),
            *secret
        );
    }
    stop(actor).await;
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_cut_short_leaves_everything_readable_and_resumes(#[case] backend: Db) {
    let db = store_or_skip!(backend);
    let (vault, actor) = start_vault(&db.store, master(1), vec![]).await;
    vault.ready(Duration::from_secs(10)).await.unwrap();
    let stored = store_credentials(&db.store, &vault, 30).await;
    let new_key = vault.add_data_key().await.unwrap();
    // One batch of 7, then the process "dies".
    let partial = rotation::reencrypt(&db.store, &vault, 7, Some(1))
        .await
        .unwrap();
    assert_eq!(partial.reencrypted, 7);
    actor.kill();

    // A fresh vault (the restarted daemon) reads everything and finishes the job.
    let (vault, actor) = start_vault(&db.store, master(1), vec![]).await;
    vault.ready(Duration::from_secs(10)).await.unwrap();
    for (binding, secret) in &stored {
        assert_eq!(
            read_back(&db.store, &vault, binding).await.unwrap(),
            *secret
        );
    }
    let mut counts = Vec::new();
    for _ in 0..200 {
        counts = integrations::count_by_key(&db.store).await.unwrap();
        if counts == vec![(new_key.clone(), 30)] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counts, vec![(new_key, 30)], "the rotation resumed at start");
    stop(actor).await;
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn a_vault_waits_for_the_store_instead_of_failing(#[case] backend: Db) {
    let Some(db) = TestDb::unmigrated(backend).await else {
        return;
    };
    let (ready, store_ready) = tokio::sync::watch::channel(false);
    let (vault, actor) = Vault::spawn(VaultArgs {
        store: db.store.clone(),
        master: Arc::new(master(1)),
        previous: Arc::new(vec![]),
        store_ready,
        backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(50)),
        resume_rotation: false,
        rotation_batch: 10,
        active_key_check: switchboard::vault::ACTIVE_KEY_CHECK,
    })
    .await
    .unwrap();
    let waiting = vault.ready(Duration::from_millis(200)).await.unwrap_err();
    assert!(
        waiting.to_string().contains("waiting for the store"),
        "{waiting}"
    );

    db.store.migrate().await.unwrap();
    ready.send_replace(true);
    vault
        .ready(Duration::from_secs(10))
        .await
        .expect("loads once the store is ready");
    stop(actor).await;
}

#[test]
fn without_a_configured_key_one_is_generated_private_and_reused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = switchboard::config::VaultConfig::default();
    let first = switchboard::vault::resolve_master_key(&config, dir.path()).unwrap();
    let file = dir.path().join("master.key");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = switchboard::vault::resolve_master_key(&config, dir.path()).unwrap();
    assert_eq!(first.fingerprint(), again.fingerprint());
}

/// A rotation made by another process (the CLI with no daemon to ask, another node):
/// a running vault follows it before encrypting, within `ACTIVE_KEY_CHECK`.
#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn a_running_vault_follows_a_rotation_made_elsewhere(#[case] backend: Db) {
    let db = store_or_skip!(backend);
    let (daemon, daemon_actor) = start_vault(&db.store, master(1), vec![]).await;
    let stored = store_credentials(&db.store, &daemon, 2).await;
    let old_key = daemon.status().await.unwrap().active_key.unwrap();

    let (elsewhere, elsewhere_actor) = start_vault(&db.store, master(1), vec![]).await;
    let report = rotation::rotate(&db.store, &elsewhere, 10).await.unwrap();
    let new_key = report.new_key_id.unwrap();
    stop(elsewhere_actor).await;

    tokio::time::sleep(switchboard::vault::ACTIVE_KEY_CHECK + Duration::from_millis(100)).await;
    let binding = &stored[0].0;
    let sealed = daemon
        .encrypt(binding.clone(), plaintext("written after the rotation"))
        .await
        .unwrap();
    assert_eq!(
        sealed.key_id, new_key,
        "encrypted under the key made active elsewhere"
    );
    assert_eq!(
        daemon.status().await.unwrap().active_key.as_deref(),
        Some(new_key.as_str())
    );
    assert_ne!(old_key, new_key);
    for (binding, secret) in &stored {
        assert_eq!(
            read_back(&db.store, &daemon, binding).await.unwrap(),
            *secret
        );
    }
    stop(daemon_actor).await;
}
