//! Online data-key rotation: a new active key, then every credential (and every
//! tenant route's secret settings) re-encrypted under it in batches, each batch one
//! transaction, while the daemon keeps serving.
//!
//! Old keys stay in the keyring, so a crash at any point leaves every credential
//! readable under the key its row names; running the rotation again (or starting the
//! daemon) picks up the credentials still under an old key.

use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{info, warn};

use super::{Binding, Sealed, Vault, VaultError};
use crate::store::{Store, integrations, routes};

#[derive(Debug, Clone, Default, Serialize)]
pub struct RotationReport {
    pub new_key_id: Option<String>,
    pub reencrypted: usize,
    /// Credentials that could not be re-encrypted (they stay under their old key).
    pub failed: usize,
    /// Credentials changed by someone else meanwhile (already under a new key).
    pub skipped: usize,
    /// Tenant routes whose secret settings were re-encrypted.
    pub route_settings: usize,
    #[serde(with = "humantime_serde")]
    pub took: Duration,
}

/// Creates a new active data key and moves every credential under it.
pub async fn rotate(
    store: &Store,
    vault: &Vault,
    batch: usize,
) -> Result<RotationReport, VaultError> {
    let started = Instant::now();
    let new_key_id = vault.add_data_key().await?;
    let mut report = reencrypt(store, vault, batch, None).await?;
    report.new_key_id = Some(new_key_id);
    report.took = started.elapsed();
    Ok(report)
}

/// Moves credentials not under the active key onto it, `batch` at a time; stops after
/// `max_batches` when given (tests use it to stop half way, as a crash would).
pub async fn reencrypt(
    store: &Store,
    vault: &Vault,
    batch: usize,
    max_batches: Option<usize>,
) -> Result<RotationReport, VaultError> {
    let started = Instant::now();
    let active = vault
        .status()
        .await?
        .active_key
        .ok_or_else(|| VaultError::NotReady("no active data key".to_string()))?;
    let limit = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
    let mut report = RotationReport::default();
    let mut after: Option<String> = None;
    let mut batches = 0;
    while max_batches.is_none_or(|max| batches < max) {
        let rows = integrations::credentials_not_under_key(store, &active, after.as_deref(), limit)
            .await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = Some(last.id.clone());
        let items = rows.iter().map(Sealed::from_row).collect();
        let results = vault.reencrypt(items).await?;
        let mut swaps = Vec::with_capacity(rows.len());
        for (row, result) in rows.into_iter().zip(results) {
            match result {
                Ok(sealed) => swaps.push(integrations::Reencrypted {
                    id: row.id,
                    old_key_id: row.encryption_key_id,
                    ciphertext: sealed.ciphertext,
                    new_key_id: sealed.key_id,
                }),
                Err(error) => {
                    warn!(credential_id = %row.id, key_id = %row.encryption_key_id, error = %error, "credential not re-encrypted");
                    report.failed += 1;
                }
            }
        }
        let swapped = integrations::swap_ciphertexts(store, &swaps).await?;
        report.reencrypted += swapped;
        report.skipped += swaps.len() - swapped;
        batches += 1;
    }
    // Routes' secret settings: few, and sealed the same way.
    let mut after: Option<String> = None;
    while max_batches.is_none_or(|max| batches < max) {
        let rows = routes::secrets_not_under_key(store, &active, after.as_deref(), limit).await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = Some(last.id.clone());
        let mut sealed_rows = Vec::with_capacity(rows.len());
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            if let (Some(ciphertext), Some(key_id)) =
                (row.secrets.clone(), row.encryption_key_id.clone())
            {
                items.push((
                    Binding::new(&row.organization_id, &row.id, routes::SEALED_SETTINGS),
                    Sealed {
                        key_id: key_id.clone(),
                        ciphertext,
                    },
                ));
                sealed_rows.push((row.id, key_id));
            }
        }
        let results = vault.reencrypt(items).await?;
        let mut swaps = Vec::with_capacity(sealed_rows.len());
        for ((id, old_key_id), result) in sealed_rows.into_iter().zip(results) {
            match result {
                Ok(sealed) => swaps.push(integrations::Reencrypted {
                    id,
                    old_key_id,
                    ciphertext: sealed.ciphertext,
                    new_key_id: sealed.key_id,
                }),
                Err(error) => {
                    warn!(route_id = %id, key_id = %old_key_id, error = %error, "route settings not re-encrypted");
                    report.failed += 1;
                }
            }
        }
        report.route_settings += routes::swap_secrets(store, &swaps).await?;
        batches += 1;
    }
    report.took = started.elapsed();
    Ok(report)
}

/// Finishes a rotation a crash interrupted, if any credential is under an old key.
pub async fn resume_if_needed(store: &Store, vault: &Vault, batch: usize) {
    let pending = async {
        let active = vault.status().await?.active_key.unwrap_or_default();
        let mut counts = integrations::count_by_key(store).await?;
        counts.extend(routes::count_by_key(store).await?);
        Ok::<i64, VaultError>(
            counts
                .iter()
                .filter(|(id, _)| *id != active)
                .map(|(_, n)| n)
                .sum(),
        )
    };
    match pending.await {
        Ok(0) => {}
        Ok(pending) => {
            info!(pending, "resuming an interrupted key rotation");
            match reencrypt(store, vault, batch, None).await {
                Ok(report) => {
                    info!(reencrypted = report.reencrypted, failed = report.failed, took = ?report.took, "rotation resumed and finished")
                }
                Err(error) => {
                    warn!(error = %error, "resuming the rotation failed; it will be tried again at the next start")
                }
            }
        }
        Err(error) => warn!(error = %error, "could not check for an interrupted rotation"),
    }
}
