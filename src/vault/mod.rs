//! The credential vault: the only code that touches key material.
//!
//! One actor, [`CredentialVault`], serializes every encryption, decryption and
//! re-encryption. It holds the unwrapped data keys ([`keyring`]); the rest of the
//! daemon holds a [`Vault`] handle and gets plaintext only as [`Secret`] values that
//! zeroize on drop and print `[redacted]`.
//!
//! Keys fail closed: an unknown data key id, a data key wrapped by another master key,
//! or credentials whose keys are gone are errors that name the key, never a silent new
//! key over existing data.

pub mod cipher;
pub mod keyring;
pub mod rotation;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use switchboard_actors::{Backoff, HealthReport, Registry, Status};
use tokio::sync::watch;
use tracing::{error, info, warn};
use zeroize::Zeroizing;

pub use cipher::Binding;
pub use keyring::MasterKey;

use crate::config::VaultConfig;
use crate::secret::Secret;
use crate::store::{self, Store, StoreError, integrations, vault_keys};
use keyring::Keyring;

/// The vault's name in the actor tree and registry.
pub const VAULT: &str = "vault";

/// How often, at most, the vault asks the store which data key is active before it
/// encrypts: a rotation made by another process (`switchboard keys rotate` with no
/// daemon to ask, another node) is followed within this long.
pub const ACTIVE_KEY_CHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error("invalid master key: {0}")]
    InvalidMasterKey(String),
    #[error(
        "data key '{key_id}' is wrapped by master key {wrapped_by}, but the configured master key is \
         {configured}: configure the right [vault] master_key, or name the old one in previous_master_keys"
    )]
    WrongMasterKey {
        key_id: String,
        wrapped_by: String,
        configured: String,
    },
    #[error("data key '{0}' does not unwrap under its master key: the key row is corrupt")]
    CorruptDataKey(String),
    #[error("credential encrypted with data key '{0}', which the vault does not have")]
    UnknownKey(String),
    #[error(
        "{credentials} credential(s) exist but no data key does ({key_ids}): refusing to create a \
         new key over existing data"
    )]
    KeysMissing { credentials: i64, key_ids: String },
    #[error(
        "credential does not decrypt under its binding (organization, integration, type): wrong row or tampered"
    )]
    Unauthentic,
    #[error("vault is not ready: {0}")]
    NotReady(String),
    #[error("vault is sealed: {0}")]
    Sealed(String),
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    #[error("store error: {0}")]
    Store(String),
    #[error("cannot keep the master key file: {0}")]
    KeyFile(String),
}

impl From<StoreError> for VaultError {
    fn from(error: StoreError) -> Self {
        if error.is_transient() {
            VaultError::StoreUnavailable(error.to_string())
        } else {
            VaultError::Store(error.to_string())
        }
    }
}

impl VaultError {
    /// Whether waiting helps: the vault is still loading, or the store is away.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            VaultError::StoreUnavailable(_) | VaultError::NotReady(_)
        )
    }
}

/// An encrypted credential and the id of the data key that encrypted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub ciphertext: Vec<u8>,
}

impl Sealed {
    /// A stored credential as the vault reads it: where it belongs and its ciphertext.
    pub fn from_row(row: &integrations::StoredCredential) -> (Binding, Sealed) {
        (
            Binding::new(
                &row.organization_id,
                &row.integration_id,
                &row.credential_type,
            ),
            Sealed {
                key_id: row.encryption_key_id.clone(),
                ciphertext: row.ciphertext.clone(),
            },
        )
    }
}

/// Plaintext going in or out of the vault.
pub type Plaintext = Secret<Vec<u8>>;

#[derive(Debug, Clone, Serialize)]
pub struct VaultStatus {
    pub state: &'static str,
    pub master_key: String,
    pub active_key: Option<String>,
    pub keys: Vec<String>,
    pub last_error: Option<String>,
}

pub enum VaultMsg {
    /// Load (or retry loading) the keyring from the store.
    Load,
    Encrypt(Binding, Plaintext, RpcReplyPort<Result<Sealed, VaultError>>),
    Decrypt(Binding, Sealed, RpcReplyPort<Result<Plaintext, VaultError>>),
    EncryptBatch(
        Vec<(Binding, Plaintext)>,
        RpcReplyPort<Result<Vec<Sealed>, VaultError>>,
    ),
    DecryptBatch(
        Vec<(Binding, Sealed)>,
        RpcReplyPort<Vec<Result<Plaintext, VaultError>>>,
    ),
    /// Decrypts each item and encrypts it again under the active key (rotation).
    Reencrypt(
        Vec<(Binding, Sealed)>,
        RpcReplyPort<Result<Vec<Result<Sealed, VaultError>>, VaultError>>,
    ),
    /// Creates a data key, stores it wrapped, and makes it the active one.
    AddDataKey(RpcReplyPort<Result<String, VaultError>>),
    Status(RpcReplyPort<VaultStatus>),
    Observe(RpcReplyPort<HealthReport>),
}

switchboard_actors::observable!(VaultMsg::Observe);

/// What the vault starts from; shared by its restarts.
#[derive(Clone)]
pub struct VaultArgs {
    pub store: Store,
    pub master: Arc<MasterKey>,
    pub previous: Arc<Vec<MasterKey>>,
    /// The vault loads once the store reports its migrations applied.
    pub store_ready: watch::Receiver<bool>,
    pub backoff: Backoff,
    /// Re-encrypt credentials left under an old key once loaded (a resumed rotation).
    pub resume_rotation: bool,
    pub rotation_batch: usize,
    /// How long an answer to "which data key is active?" is trusted before the next
    /// encryption asks the store again ([`ACTIVE_KEY_CHECK`]; zero in cluster mode).
    pub active_key_check: Duration,
}

pub struct CredentialVault;

enum Phase {
    Loading { last_error: Option<String> },
    Ready(Keyring),
    Sealed(VaultError),
}

pub struct VaultState {
    args: VaultArgs,
    phase: Phase,
    attempts: u32,
    /// When the active key was last compared with the store's.
    active_checked_at: Option<tokio::time::Instant>,
    /// A task waits for the store to be ready, then asks for a `Load`.
    waiting_for_store: bool,
}

impl VaultState {
    fn keyring(&self) -> Result<&Keyring, VaultError> {
        match &self.phase {
            Phase::Ready(keyring) => Ok(keyring),
            Phase::Loading { last_error } => Err(VaultError::NotReady(
                last_error
                    .clone()
                    .unwrap_or_else(|| "loading keys".to_string()),
            )),
            Phase::Sealed(error) => Err(VaultError::Sealed(error.to_string())),
        }
    }

    fn encrypt(&self, binding: &Binding, plaintext: &Plaintext) -> Result<Sealed, VaultError> {
        let keyring = self.keyring()?;
        let cipher = keyring
            .active()
            .ok_or_else(|| VaultError::UnknownKey(keyring.active_id().to_string()))?;
        Ok(Sealed {
            key_id: keyring.active_id().to_string(),
            ciphertext: cipher.seal(&binding.associated_data(), plaintext.expose()),
        })
    }

    fn decrypt(&self, binding: &Binding, sealed: &Sealed) -> Result<Plaintext, VaultError> {
        let cipher = self
            .keyring()?
            .get(&sealed.key_id)
            .ok_or_else(|| VaultError::UnknownKey(sealed.key_id.clone()))?;
        let plain = cipher
            .open(&binding.associated_data(), &sealed.ciphertext)
            .map_err(|_| VaultError::Unauthentic)?;
        Ok(Secret::wrap(plain.to_vec()))
    }

    fn knows(&self, key_id: &str) -> bool {
        matches!(&self.phase, Phase::Ready(keyring) if keyring.get(key_id).is_some())
    }

    /// Before encrypting: follows a data key made active by another process (at most
    /// one query per [`ACTIVE_KEY_CHECK`]). The credentials that process did not move
    /// (those written here meanwhile) are then moved by a resumed rotation.
    async fn follow_active_key(&mut self, myself: &ActorRef<VaultMsg>) {
        let Phase::Ready(keyring) = &self.phase else {
            return;
        };
        if self
            .active_checked_at
            .is_some_and(|at| at.elapsed() < self.args.active_key_check)
        {
            return;
        }
        self.active_checked_at = Some(tokio::time::Instant::now());
        match vault_keys::active_id(&self.args.store).await {
            Ok(Some(active)) if active != keyring.active_id() => {
                match load_keyring(&self.args).await {
                    Ok(keyring) => {
                        info!(active_key = %keyring.active_id(), "following a data key rotated elsewhere");
                        self.phase = Phase::Ready(keyring);
                        let vault = Vault::direct(myself.clone());
                        let (store, batch) = (self.args.store.clone(), self.args.rotation_batch);
                        tokio::spawn(async move {
                            rotation::resume_if_needed(&store, &vault, batch).await
                        });
                    }
                    Err(error) => warn!(error = %error, "reloading the keyring failed"),
                }
            }
            Ok(_) => {}
            Err(error) => warn!(error = %error, "could not check the active data key"),
        }
    }

    /// A key id we do not know may have been created by another process (a
    /// `switchboard keys rotate` next to the daemon): look again before failing closed.
    async fn learn_keys(&mut self, key_ids: &[&str]) {
        let unknown = key_ids.iter().any(|id| !self.knows(id));
        if !unknown || !matches!(self.phase, Phase::Ready(_)) {
            return;
        }
        match load_keyring(&self.args).await {
            Ok(keyring) => self.phase = Phase::Ready(keyring),
            Err(error) => warn!(error = %error, "reloading the keyring failed"),
        }
    }

    fn status(&self) -> VaultStatus {
        let (state, active_key, keys, last_error) = match &self.phase {
            Phase::Loading { last_error } => ("loading", None, Vec::new(), last_error.clone()),
            Phase::Ready(keyring) => {
                let mut keys: Vec<String> = keyring.ids().cloned().collect();
                keys.sort();
                ("ready", Some(keyring.active_id().to_string()), keys, None)
            }
            Phase::Sealed(error) => ("sealed", None, Vec::new(), Some(error.to_string())),
        };
        VaultStatus {
            state,
            master_key: self.args.master.fingerprint().to_string(),
            active_key,
            keys,
            last_error,
        }
    }
}

fn new_key_row(master: &MasterKey) -> (vault_keys::VaultKeyRow, Zeroizing<[u8; 32]>) {
    let id = format!("dk_{}", store::new_ordered_id());
    let key = cipher::random_key();
    let row = vault_keys::VaultKeyRow {
        wrapped_key: master.wrap(&id, &key),
        id,
        master_fingerprint: master.fingerprint().to_string(),
        active: true,
        created_at: store::now(),
    };
    (row, key)
}

/// Reads the data keys, unwraps them (re-wrapping any under a previous master key), and
/// creates the first one on an empty store.
async fn load_keyring(args: &VaultArgs) -> Result<Keyring, VaultError> {
    let store = &args.store;
    let master = &args.master;
    let mut rows = vault_keys::list(store).await?;
    if rows.is_empty() {
        let counts = integrations::count_by_key(store).await?;
        let credentials: i64 = counts.iter().map(|(_, n)| n).sum();
        if credentials > 0 {
            let key_ids = counts
                .into_iter()
                .map(|(id, _)| id)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(VaultError::KeysMissing {
                credentials,
                key_ids,
            });
        }
        let (row, _) = new_key_row(master);
        vault_keys::insert_active(store, &row).await?;
        info!(key_id = %row.id, master_key = %master.fingerprint(), "created the first data key");
        rows.push(row);
    }

    let mut keyring = Keyring::new(String::new());
    let mut rewrapped = Vec::new();
    for row in &rows {
        let key = if row.master_fingerprint == master.fingerprint() {
            master.unwrap(&row.id, &row.wrapped_key)?
        } else if let Some(old) = args
            .previous
            .iter()
            .find(|old| old.fingerprint() == row.master_fingerprint)
        {
            let key = old.unwrap(&row.id, &row.wrapped_key)?;
            rewrapped.push((
                row.id.clone(),
                master.wrap(&row.id, &key),
                master.fingerprint().to_string(),
            ));
            key
        } else {
            return Err(VaultError::WrongMasterKey {
                key_id: row.id.clone(),
                wrapped_by: row.master_fingerprint.clone(),
                configured: master.fingerprint().to_string(),
            });
        };
        keyring.insert(row.id.clone(), &key);
        if row.active {
            keyring.set_active(row.id.clone());
        }
    }
    if !rewrapped.is_empty() {
        vault_keys::rewrap(store, &rewrapped).await?;
        info!(keys = rewrapped.len(), master_key = %master.fingerprint(), "re-wrapped data keys under the new master key");
    }
    if keyring.active().is_none() {
        let (row, key) = new_key_row(master);
        vault_keys::insert_active(store, &row).await?;
        keyring.insert(row.id.clone(), &key);
        keyring.set_active(row.id);
    }
    Ok(keyring)
}

impl CredentialVault {
    async fn load(&self, myself: &ActorRef<VaultMsg>, state: &mut VaultState) {
        if !*state.args.store_ready.borrow() {
            state.phase = Phase::Loading {
                last_error: Some("waiting for the store".to_string()),
            };
            // Loads the moment the store is ready, not after a backoff (readiness
            // follows the store at once).
            if !state.waiting_for_store {
                state.waiting_for_store = true;
                let (mut ready, vault) = (state.args.store_ready.clone(), myself.clone());
                tokio::spawn(async move {
                    if ready.wait_for(|ready| *ready).await.is_ok() {
                        let _ = vault.send_message(VaultMsg::Load);
                    }
                });
            }
            return;
        }
        state.waiting_for_store = false;
        match load_keyring(&state.args).await {
            Ok(keyring) => {
                info!(active_key = %keyring.active_id(), keys = keyring.len(), master_key = %state.args.master.fingerprint(), "vault ready");
                state.phase = Phase::Ready(keyring);
                state.attempts = 0;
                if state.args.resume_rotation {
                    let vault = Vault::direct(myself.clone());
                    let (store, batch) = (state.args.store.clone(), state.args.rotation_batch);
                    tokio::spawn(
                        async move { rotation::resume_if_needed(&store, &vault, batch).await },
                    );
                }
            }
            Err(error) if error.is_transient() => {
                warn!(error = %error, "vault cannot load its keys yet, retrying");
                state.phase = Phase::Loading {
                    last_error: Some(error.to_string()),
                };
                self.retry_later(myself, state);
            }
            Err(error) => {
                error!(error = %error, "vault sealed: it refuses every operation until fixed and restarted");
                state.phase = Phase::Sealed(error);
            }
        }
    }

    fn retry_later(&self, myself: &ActorRef<VaultMsg>, state: &mut VaultState) {
        let delay = state.args.backoff.delay(state.attempts);
        state.attempts = state.attempts.saturating_add(1);
        myself.send_after(delay, || VaultMsg::Load);
    }
}

impl Actor for CredentialVault {
    type Msg = VaultMsg;
    type State = VaultState;
    type Arguments = VaultArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<VaultMsg>,
        args: VaultArgs,
    ) -> Result<VaultState, ActorProcessingErr> {
        myself.send_message(VaultMsg::Load)?;
        Ok(VaultState {
            args,
            phase: Phase::Loading { last_error: None },
            attempts: 0,
            active_checked_at: None,
            waiting_for_store: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<VaultMsg>,
        message: VaultMsg,
        state: &mut VaultState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            VaultMsg::Load => {
                if !matches!(state.phase, Phase::Ready(_)) {
                    self.load(&myself, state).await;
                }
            }
            VaultMsg::Encrypt(binding, plaintext, reply) => {
                state.follow_active_key(&myself).await;
                let _ = reply.send(state.encrypt(&binding, &plaintext));
            }
            VaultMsg::Decrypt(binding, sealed, reply) => {
                state.learn_keys(&[&sealed.key_id]).await;
                let _ = reply.send(state.decrypt(&binding, &sealed));
            }
            VaultMsg::EncryptBatch(items, reply) => {
                state.follow_active_key(&myself).await;
                let sealed = items
                    .iter()
                    .map(|(binding, plaintext)| state.encrypt(binding, plaintext))
                    .collect();
                let _ = reply.send(sealed);
            }
            VaultMsg::DecryptBatch(items, reply) => {
                let ids: Vec<&str> = items.iter().map(|(_, s)| s.key_id.as_str()).collect();
                state.learn_keys(&ids).await;
                let plain = items
                    .iter()
                    .map(|(binding, sealed)| state.decrypt(binding, sealed))
                    .collect();
                let _ = reply.send(plain);
            }
            VaultMsg::Reencrypt(items, reply) => {
                state.follow_active_key(&myself).await;
                let ids: Vec<&str> = items.iter().map(|(_, s)| s.key_id.as_str()).collect();
                state.learn_keys(&ids).await;
                let result = state.keyring().map(|_| {
                    items
                        .iter()
                        .map(|(binding, sealed)| {
                            let plain = state.decrypt(binding, sealed)?;
                            state.encrypt(binding, &plain)
                        })
                        .collect()
                });
                let _ = reply.send(result);
            }
            VaultMsg::AddDataKey(reply) => {
                let result = match &mut state.phase {
                    Phase::Ready(keyring) => {
                        let (row, key) = new_key_row(&state.args.master);
                        match vault_keys::insert_active(&state.args.store, &row).await {
                            Ok(()) => {
                                keyring.insert(row.id.clone(), &key);
                                keyring.set_active(row.id.clone());
                                info!(key_id = %row.id, "new active data key");
                                Ok(row.id)
                            }
                            Err(error) => Err(VaultError::from(error)),
                        }
                    }
                    _ => state.keyring().map(|_| String::new()),
                };
                let _ = reply.send(result);
            }
            VaultMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            VaultMsg::Observe(reply) => {
                let status = state.status();
                let lifecycle = match status.state {
                    "ready" => Status::Running,
                    "sealed" => Status::Failed,
                    _ => Status::Starting,
                };
                let mut report = HealthReport::new(VAULT, "vault", lifecycle)
                    .with_detail("state", status.state)
                    .with_detail("master_key", &status.master_key)
                    .with_detail("active_key", &status.active_key)
                    .with_detail("keys", status.keys.len());
                report.last_error = status.last_error;
                let _ = reply.send(report);
            }
        }
        Ok(())
    }
}

/// A handle on the vault: finds the current vault actor by name for every call, so
/// that it keeps working across the vault's restarts.
#[derive(Clone)]
pub struct Vault {
    target: Target,
    timeout: Duration,
}

#[derive(Clone)]
enum Target {
    Registry(Registry),
    Direct(ActorRef<VaultMsg>),
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault")
    }
}

impl Vault {
    pub fn in_registry(registry: Registry) -> Self {
        Self {
            target: Target::Registry(registry),
            timeout: Duration::from_secs(30),
        }
    }

    pub fn direct(actor: ActorRef<VaultMsg>) -> Self {
        Self {
            target: Target::Direct(actor),
            timeout: Duration::from_secs(30),
        }
    }

    /// Starts a vault outside any supervisor (CLI commands, tests, benchmarks).
    pub async fn spawn(args: VaultArgs) -> Result<(Vault, ActorRef<VaultMsg>), VaultError> {
        let (actor, _) = CredentialVault::spawn(None, CredentialVault, args)
            .await
            .map_err(|e| VaultError::NotReady(e.to_string()))?;
        Ok((Vault::direct(actor.clone()), actor))
    }

    /// Waits until the vault has loaded its keys; fails on a sealed vault or timeout.
    pub async fn ready(&self, within: Duration) -> Result<VaultStatus, VaultError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let status = self.status().await?;
            match status.state {
                "ready" => return Ok(status),
                "sealed" => {
                    return Err(VaultError::Sealed(status.last_error.unwrap_or_default()));
                }
                _ if tokio::time::Instant::now() >= deadline => {
                    return Err(VaultError::NotReady(
                        status
                            .last_error
                            .unwrap_or_else(|| "still loading".to_string()),
                    ));
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    pub async fn encrypt(
        &self,
        binding: Binding,
        plaintext: Plaintext,
    ) -> Result<Sealed, VaultError> {
        self.ask(|reply| VaultMsg::Encrypt(binding, plaintext, reply))
            .await?
    }

    pub async fn decrypt(&self, binding: Binding, sealed: Sealed) -> Result<Plaintext, VaultError> {
        self.ask(|reply| VaultMsg::Decrypt(binding, sealed, reply))
            .await?
    }

    pub async fn encrypt_batch(
        &self,
        items: Vec<(Binding, Plaintext)>,
    ) -> Result<Vec<Sealed>, VaultError> {
        self.ask(|reply| VaultMsg::EncryptBatch(items, reply))
            .await?
    }

    pub async fn decrypt_batch(
        &self,
        items: Vec<(Binding, Sealed)>,
    ) -> Result<Vec<Result<Plaintext, VaultError>>, VaultError> {
        self.ask(|reply| VaultMsg::DecryptBatch(items, reply)).await
    }

    pub async fn reencrypt(
        &self,
        items: Vec<(Binding, Sealed)>,
    ) -> Result<Vec<Result<Sealed, VaultError>>, VaultError> {
        self.ask(|reply| VaultMsg::Reencrypt(items, reply)).await?
    }

    pub async fn add_data_key(&self) -> Result<String, VaultError> {
        self.ask(VaultMsg::AddDataKey).await?
    }

    pub async fn status(&self) -> Result<VaultStatus, VaultError> {
        self.ask(VaultMsg::Status).await
    }

    async fn ask<T, F>(&self, message: F) -> Result<T, VaultError>
    where
        T: Send + 'static,
        F: FnOnce(RpcReplyPort<T>) -> VaultMsg,
    {
        let actor = match &self.target {
            Target::Direct(actor) => actor.clone(),
            Target::Registry(registry) => registry
                .lookup::<VaultMsg>(VAULT)
                .ok_or_else(|| VaultError::NotReady("the vault is not running".to_string()))?,
        };
        match actor.call(message, Some(self.timeout)).await {
            Ok(ractor::rpc::CallResult::Success(value)) => Ok(value),
            Ok(ractor::rpc::CallResult::Timeout) => Err(VaultError::NotReady(
                "the vault did not answer in time".to_string(),
            )),
            _ => Err(VaultError::NotReady("the vault is restarting".to_string())),
        }
    }
}

/// The master key from the configuration; without one, the key kept in
/// `<data_dir>/master.key`, generated (0600) on first use.
pub fn resolve_master_key(config: &VaultConfig, data_dir: &Path) -> Result<MasterKey, VaultError> {
    if let Some(key) = &config.master_key {
        return MasterKey::from_base64(key.expose());
    }
    let path = data_dir.join("master.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            warn!(path = %path.display(), "using the generated master key file: configure [vault] master_key (or master_key_file) from a secret store in production");
            MasterKey::from_base64(text.trim())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::create_dir_all(data_dir)
                .map_err(|e| VaultError::KeyFile(format!("{}: {e}", data_dir.display())))?;
            let (key, text) = MasterKey::generate();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| VaultError::KeyFile(format!("{}: {e}", path.display())))?;
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| VaultError::KeyFile(format!("{}: {e}", path.display())))?;
            warn!(path = %path.display(), master_key = %key.fingerprint(), "NO MASTER KEY CONFIGURED: generated one into the data directory. Losing this file loses every stored credential; back it up, or configure [vault] master_key");
            Ok(key)
        }
        Err(error) => Err(VaultError::KeyFile(format!("{}: {error}", path.display()))),
    }
}

pub fn previous_master_keys(config: &VaultConfig) -> Result<Vec<MasterKey>, VaultError> {
    config
        .previous_master_keys
        .iter()
        .map(|key| MasterKey::from_base64(key.expose()))
        .collect()
}
