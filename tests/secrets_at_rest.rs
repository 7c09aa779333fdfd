//! No secret in the database in plaintext, nor in the logs.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::db::{Db, TestDb};
use switchboard::secret::Secret;
use switchboard::store::integrations::{self, NewCredential, NewIntegration};
use switchboard::store::{organizations, tokens};
use switchboard::vault::{Binding, MasterKey, Vault, VaultArgs};
use switchboard_actors::Backoff;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[tokio::test]
async fn stored_tokens_and_credentials_appear_nowhere_in_plaintext() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let db = TestDb::new(Db::Sqlite).await.expect("sqlite");
    let (_, store_ready) = tokio::sync::watch::channel(true);
    let (vault, actor) = Vault::spawn(VaultArgs {
        store: db.store.clone(),
        master: Arc::new(MasterKey::from_bytes(&[7; 32])),
        previous: Arc::new(vec![]),
        store_ready,
        backoff: Backoff::default(),
        resume_rotation: false,
        rotation_batch: 100,
        active_key_check: switchboard::vault::ACTIVE_KEY_CHECK,
    })
    .await
    .unwrap();
    vault.ready(Duration::from_secs(10)).await.unwrap();

    let org = organizations::create(&db.store, "Acme").await.unwrap();
    let (_, api_token) = tokens::create(&db.store, &org.id).await.unwrap();
    let canary = "xoxb-CANARY-7d1e0c55f3a2-never-in-plaintext";
    let integration = integrations::create(
        &db.store,
        NewIntegration {
            organization_id: org.id.clone(),
            user_id: None,
            connector_type: "slack".into(),
            status: "active".into(),
            external_id: None,
            metadata: serde_json::json!({}),
        },
        vec![],
    )
    .await
    .unwrap();
    let binding = Binding::new(&org.id, &integration.id, "bot_token");
    let sealed = vault
        .encrypt(binding.clone(), Secret::wrap(canary.as_bytes().to_vec()))
        .await
        .unwrap();
    integrations::replace_credentials(
        &db.store,
        &org.id,
        &integration.id,
        vec![NewCredential {
            credential_type: "bot_token".into(),
            ciphertext: sealed.ciphertext.clone(),
            encryption_key_id: sealed.key_id.clone(),
            expires_at: None,
        }],
    )
    .await
    .unwrap();
    let plain = vault.decrypt(binding, sealed).await.unwrap();
    assert_eq!(plain.expose(), canary.as_bytes());
    tracing::info!(credential = ?plain, token = %api_token, "handled secrets");
    actor
        .stop_and_wait(None, Some(Duration::from_secs(5)))
        .await
        .unwrap();

    let path = db.sqlite_path.clone().unwrap();
    let mut files = vec![std::fs::read(&path).unwrap()];
    for suffix in ["db-wal", "db-shm"] {
        if let Ok(bytes) = std::fs::read(path.with_extension(suffix)) {
            files.push(bytes);
        }
    }
    let database: Vec<u8> = files.concat();
    assert!(database.len() > 4096, "the database holds data");
    let log = logs.0.lock().unwrap().clone();
    assert!(contains(&log, b"handled secrets"), "logs were captured");
    for secret in [canary, api_token.expose().as_str()] {
        assert!(
            !contains(&database, secret.as_bytes()),
            "{secret} found in the database file"
        );
        assert!(
            !contains(&log, secret.as_bytes()),
            "{secret} found in the logs"
        );
    }
    // The token's hash is what is stored.
    assert!(contains(
        &database,
        tokens::hash_token(api_token.expose()).as_bytes()
    ));
}

/// The SQLite store holds tenants' payloads: its directory is private (0700) and its
/// file, WAL and shared memory are readable by the daemon's user alone (0600).
#[tokio::test(flavor = "multi_thread")]
async fn the_sqlite_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let store = switchboard::store::Store::connect(&switchboard::config::DatabaseConfig {
        url: Secret::new(format!("sqlite://{}/switchboard.db", dir.display())),
        ..switchboard::config::DatabaseConfig::default()
    })
    .unwrap();
    store.migrate().await.unwrap();
    organizations::create(&store, "Acme").await.unwrap();
    let mode = |path: std::path::PathBuf| {
        std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(dir.clone()), 0o700);
    for file in ["switchboard.db", "switchboard.db-wal", "switchboard.db-shm"] {
        assert_eq!(mode(dir.join(file)), 0o600, "{file}");
    }
}
