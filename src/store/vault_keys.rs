//! Data keys, stored wrapped by the master key. Only the vault reads or writes these.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::vault_keys;
use super::{Store, StoreError};
use crate::{with_conn, write_tx};

#[derive(Debug, Clone, PartialEq, Queryable, Insertable)]
#[diesel(table_name = vault_keys)]
pub struct VaultKeyRow {
    pub id: String,
    pub wrapped_key: Vec<u8>,
    /// Which master key wrapped it (a fingerprint, never the key).
    pub master_fingerprint: String,
    pub active: bool,
    pub created_at: NaiveDateTime,
}

pub async fn list(store: &Store) -> Result<Vec<VaultKeyRow>, StoreError> {
    let keys = with_conn!(store, |conn| {
        vault_keys::table
            .order((vault_keys::created_at, vault_keys::id))
            .load::<VaultKeyRow>(conn)
            .await
    })?;
    Ok(keys)
}

/// The active data key's id, if there is one: what every process encrypts under.
pub async fn active_id(store: &Store) -> Result<Option<String>, StoreError> {
    let id = with_conn!(store, |conn| {
        vault_keys::table
            .filter(vault_keys::active.eq(true))
            .select(vault_keys::id)
            .first::<String>(conn)
            .await
            .optional()
    })?;
    Ok(id)
}

/// Inserts a new data key and makes it the only active one.
pub async fn insert_active(store: &Store, key: &VaultKeyRow) -> Result<(), StoreError> {
    write_tx!(store, |conn| {
        diesel::update(vault_keys::table.filter(vault_keys::active.eq(true)))
            .set(vault_keys::active.eq(false))
            .execute(conn)
            .await?;
        diesel::insert_into(vault_keys::table)
            .values(key)
            .execute(conn)
            .await?;
        Ok(())
    })
}

/// Replaces the wrapping of data keys (master-key rotation), all at once.
pub async fn rewrap(store: &Store, keys: &[(String, Vec<u8>, String)]) -> Result<(), StoreError> {
    write_tx!(store, |conn| {
        for (id, wrapped, fingerprint) in keys {
            diesel::update(vault_keys::table.find(id))
                .set((
                    vault_keys::wrapped_key.eq(wrapped),
                    vault_keys::master_fingerprint.eq(fingerprint),
                ))
                .execute(conn)
                .await?;
        }
        Ok(())
    })
}
