//! Integrations and their encrypted credentials.
//!
//! Every tenant query is scoped by organization in the query itself; an integration
//! and its credentials are stored, replaced and deleted in one transaction. The
//! credentials are opaque ciphertexts here: only the vault can read them.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;

use super::schema::{integration_credentials, integrations};
use super::{Store, StoreError, new_id, now};
use crate::{with_conn, write_tx};

/// Counts changes to which integration receives an account's events (activations,
/// status changes, revocations, deletions) made by this process: caches of resolved
/// integrations (the webhook ingress's) compare it to know when to ask again. Shared by
/// every store of the process, so a change anywhere only costs a cache refill.
static CHANGES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The number of changes so far (see [`CHANGES`]).
pub fn changes() -> u64 {
    std::sync::atomic::AtomicU64::load(&CHANGES, std::sync::atomic::Ordering::Acquire)
}

fn changed() {
    CHANGES.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
}

pub const STATUS_REVOKED: &str = "revoked";

type Owned<'a> = diesel::dsl::Filter<
    diesel::dsl::Filter<
        integrations::table,
        diesel::dsl::Eq<integrations::organization_id, &'a str>,
    >,
    diesel::dsl::Eq<integrations::id, &'a str>,
>;
type OwnedCredentials<'a> = diesel::dsl::Filter<
    diesel::dsl::Filter<
        integration_credentials::table,
        diesel::dsl::Eq<integration_credentials::organization_id, &'a str>,
    >,
    diesel::dsl::Eq<integration_credentials::integration_id, &'a str>,
>;

/// One integration, only if it belongs to the organization: every tenant query on
/// an integration starts here, so that the scoping is in the query itself.
fn owned<'a>(organization_id: &'a str, id: &'a str) -> Owned<'a> {
    integrations::table
        .filter(integrations::organization_id.eq(organization_id))
        .filter(integrations::id.eq(id))
}

/// An integration's credentials, only if they belong to the organization.
fn owned_credentials<'a>(organization_id: &'a str, id: &'a str) -> OwnedCredentials<'a> {
    integration_credentials::table
        .filter(integration_credentials::organization_id.eq(organization_id))
        .filter(integration_credentials::integration_id.eq(id))
}

#[derive(Debug, Clone, PartialEq, Queryable, Insertable, Serialize)]
#[diesel(table_name = integrations)]
pub struct Integration {
    pub id: String,
    pub organization_id: String,
    pub user_id: Option<String>,
    pub connector_type: String,
    pub status: String,
    pub external_id: Option<String>,
    /// JSON object, as text.
    pub metadata: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
}

/// What a new integration is made of; ids and timestamps are assigned on insert.
#[derive(Debug, Clone)]
pub struct NewIntegration {
    pub organization_id: String,
    pub user_id: Option<String>,
    pub connector_type: String,
    pub status: String,
    pub external_id: Option<String>,
    pub metadata: serde_json::Value,
}

/// A credential already encrypted by the vault.
#[derive(Debug, Clone)]
pub struct NewCredential {
    pub credential_type: String,
    pub ciphertext: Vec<u8>,
    pub encryption_key_id: String,
    pub expires_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, PartialEq, Queryable, Insertable)]
#[diesel(table_name = integration_credentials)]
pub struct StoredCredential {
    pub id: String,
    pub integration_id: String,
    pub organization_id: String,
    pub credential_type: String,
    pub ciphertext: Vec<u8>,
    pub encryption_key_id: String,
    pub expires_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

pub(crate) fn credential_rows(
    organization_id: &str,
    integration_id: &str,
    credentials: Vec<NewCredential>,
) -> Vec<StoredCredential> {
    let at = now();
    credentials
        .into_iter()
        .map(|c| StoredCredential {
            id: new_id(),
            integration_id: integration_id.to_string(),
            organization_id: organization_id.to_string(),
            credential_type: c.credential_type,
            ciphertext: c.ciphertext,
            encryption_key_id: c.encryption_key_id,
            expires_at: c.expires_at,
            created_at: at,
            updated_at: at,
        })
        .collect()
}

/// Stores an integration and its credentials together. A second live integration of
/// the same connector for the organization is a `Conflict`.
pub async fn create(
    store: &Store,
    new: NewIntegration,
    credentials: Vec<NewCredential>,
) -> Result<Integration, StoreError> {
    let at = now();
    let integration = Integration {
        id: new_id(),
        organization_id: new.organization_id,
        user_id: new.user_id,
        connector_type: new.connector_type,
        status: new.status,
        external_id: new.external_id,
        metadata: new.metadata.to_string(),
        created_at: at,
        updated_at: at,
        last_used_at: None,
    };
    let rows = credential_rows(&integration.organization_id, &integration.id, credentials);
    let row = integration.clone();
    write_tx!(store, |conn| {
        diesel::insert_into(integrations::table)
            .values(&row)
            .execute(conn)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Duplicate { .. } => StoreError::Conflict(format!(
                    "the organization already has a {} integration",
                    row.connector_type
                )),
                other => other,
            })?;
        // One statement per row: SQLite cannot batch rows with optional columns.
        for row in &rows {
            diesel::insert_into(integration_credentials::table)
                .values(row)
                .execute(conn)
                .await?;
        }
        Ok(())
    })?;
    Ok(integration)
}

pub async fn get(
    store: &Store,
    organization_id: &str,
    id: &str,
) -> Result<Option<Integration>, StoreError> {
    let found = with_conn!(store, |conn| {
        owned(organization_id, id)
            .first::<Integration>(conn)
            .await
            .optional()
    })?;
    Ok(found)
}

pub async fn list(
    store: &Store,
    organization_id: &str,
    connector_type: Option<&str>,
) -> Result<Vec<Integration>, StoreError> {
    let found = with_conn!(store, |conn| {
        let mut query = integrations::table
            .filter(integrations::organization_id.eq(organization_id))
            .into_boxed();
        if let Some(connector_type) = connector_type {
            query = query.filter(integrations::connector_type.eq(connector_type));
        }
        query
            .order((integrations::created_at, integrations::id))
            .load::<Integration>(conn)
            .await
    })?;
    Ok(found)
}

/// Every live integration of a connector, across organizations: what its connector
/// supervisor runs an actor for. A system query, never answered to a tenant.
pub async fn live_for_connector(
    store: &Store,
    connector_type: &str,
) -> Result<Vec<Integration>, StoreError> {
    let found = with_conn!(store, |conn| {
        integrations::table
            .filter(integrations::connector_type.eq(connector_type))
            .filter(integrations::status.ne(STATUS_REVOKED))
            .order(integrations::created_at)
            .load::<Integration>(conn)
            .await
    })?;
    Ok(found)
}

pub async fn set_status(
    store: &Store,
    organization_id: &str,
    id: &str,
    status: &str,
) -> Result<(), StoreError> {
    let updated = with_conn!(store, |conn| {
        diesel::update(owned(organization_id, id))
            .set((
                integrations::status.eq(status),
                integrations::updated_at.eq(now()),
            ))
            .execute(conn)
            .await
    })?;
    changed();
    if updated == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Replaces all of an integration's credentials at once (a refresh that rotates both
/// access and refresh tokens never leaves a mix of old and new).
pub async fn replace_credentials(
    store: &Store,
    organization_id: &str,
    id: &str,
    credentials: Vec<NewCredential>,
) -> Result<(), StoreError> {
    let rows = credential_rows(organization_id, id, credentials);
    write_tx!(store, |conn| {
        let touched = diesel::update(owned(organization_id, id))
            .set(integrations::updated_at.eq(now()))
            .execute(conn)
            .await?;
        if touched == 0 {
            return Err(StoreError::NotFound);
        }
        diesel::delete(owned_credentials(organization_id, id))
            .execute(conn)
            .await?;
        // One statement per row: SQLite cannot batch rows with optional columns.
        for row in &rows {
            diesel::insert_into(integration_credentials::table)
                .values(row)
                .execute(conn)
                .await?;
        }
        Ok(())
    })
}

pub async fn credentials(
    store: &Store,
    organization_id: &str,
    id: &str,
) -> Result<Vec<StoredCredential>, StoreError> {
    let found = with_conn!(store, |conn| {
        owned_credentials(organization_id, id)
            .order(integration_credentials::credential_type)
            .load::<StoredCredential>(conn)
            .await
    })?;
    Ok(found)
}

/// Deletes an integration and its credentials together.
pub async fn delete(store: &Store, organization_id: &str, id: &str) -> Result<(), StoreError> {
    write_tx!(store, |conn| {
        diesel::delete(owned_credentials(organization_id, id))
            .execute(conn)
            .await?;
        let deleted = diesel::delete(owned(organization_id, id))
            .execute(conn)
            .await?;
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    })
    .inspect(|_| changed())
}

/// Credentials not under `key_id`, in id order after `after`: the rotation's work list.
pub async fn credentials_not_under_key(
    store: &Store,
    key_id: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<StoredCredential>, StoreError> {
    let found = with_conn!(store, |conn| {
        let mut query = integration_credentials::table
            .filter(integration_credentials::encryption_key_id.ne(key_id))
            .into_boxed();
        if let Some(after) = after {
            query = query.filter(integration_credentials::id.gt(after));
        }
        query
            .order(integration_credentials::id)
            .limit(limit)
            .load::<StoredCredential>(conn)
            .await
    })?;
    Ok(found)
}

/// One credential re-encrypted under another key.
#[derive(Debug, Clone)]
pub struct Reencrypted {
    pub id: String,
    pub old_key_id: String,
    pub ciphertext: Vec<u8>,
    pub new_key_id: String,
}

/// Swaps in re-encrypted ciphertexts in one transaction. A row changed meanwhile (no
/// longer under its old key) is left alone; returns how many rows were swapped.
pub async fn swap_ciphertexts(store: &Store, batch: &[Reencrypted]) -> Result<usize, StoreError> {
    write_tx!(store, |conn| {
        let mut swapped = 0;
        for item in batch {
            swapped += diesel::update(
                integration_credentials::table
                    .filter(integration_credentials::id.eq(&item.id))
                    .filter(integration_credentials::encryption_key_id.eq(&item.old_key_id)),
            )
            .set((
                integration_credentials::ciphertext.eq(&item.ciphertext),
                integration_credentials::encryption_key_id.eq(&item.new_key_id),
            ))
            .execute(conn)
            .await?;
        }
        Ok(swapped)
    })
}

/// How many credentials each data key protects.
pub async fn count_by_key(store: &Store) -> Result<Vec<(String, i64)>, StoreError> {
    use diesel::dsl::count_star;
    let counts = with_conn!(store, |conn| {
        integration_credentials::table
            .group_by(integration_credentials::encryption_key_id)
            .select((integration_credentials::encryption_key_id, count_star()))
            .load::<(String, i64)>(conn)
            .await
    })?;
    Ok(counts)
}

pub const STATUS_PENDING: &str = "pending";
pub const STATUS_ACTIVE: &str = "active";
pub const STATUS_ERROR: &str = "error";
/// The provider suspended the account (a GitHub installation): kept, but not called.
pub const STATUS_SUSPENDED: &str = "suspended";

/// Starts an authorization: a `pending` integration for (organization, connector),
/// replacing a pending one; a live one that is not pending is a `Conflict`.
pub async fn create_pending(
    store: &Store,
    organization_id: &str,
    connector_type: &str,
    user_id: Option<&str>,
) -> Result<Integration, StoreError> {
    // Authorizations of one organization are serialized by a row lock (see below); a
    // unique violation can still come from a race with an activation, and is tried
    // again: each authorization gets a state, and the last pending one wins.
    let mut attempts = 0;
    loop {
        match try_create_pending(store, organization_id, connector_type, user_id).await {
            Err(StoreError::Duplicate { .. }) if attempts < 10 => attempts += 1,
            outcome => return outcome,
        }
    }
}

async fn try_create_pending(
    store: &Store,
    organization_id: &str,
    connector_type: &str,
    user_id: Option<&str>,
) -> Result<Integration, StoreError> {
    let at = now();
    let row = Integration {
        id: new_id(),
        organization_id: organization_id.to_string(),
        user_id: user_id.map(str::to_string),
        connector_type: connector_type.to_string(),
        status: STATUS_PENDING.to_string(),
        external_id: None,
        metadata: "{}".to_string(),
        created_at: at,
        updated_at: at,
        last_used_at: None,
    };
    let inserted = row.clone();
    write_tx!(store, |conn| {
        // Authorizations of one organization take their turns: the organization's row
        // is locked (a no-op update) until this one commits, so the next one sees its
        // pending integration and replaces it.
        diesel::update(
            super::schema::organizations::table
                .filter(super::schema::organizations::id.eq(organization_id)),
        )
        .set(super::schema::organizations::id.eq(super::schema::organizations::id))
        .execute(conn)
        .await?;
        let live = integrations::table
            .filter(integrations::organization_id.eq(organization_id))
            .filter(integrations::connector_type.eq(connector_type))
            .filter(integrations::status.ne(STATUS_REVOKED))
            .load::<Integration>(conn)
            .await?;
        for existing in live {
            if existing.status != STATUS_PENDING {
                return Err(StoreError::Conflict(format!(
                    "the organization already has a {} integration ({}, {}): revoke it first",
                    connector_type, existing.id, existing.status
                )));
            }
            diesel::delete(integrations::table.find(&existing.id))
                .execute(conn)
                .await?;
        }
        diesel::insert_into(integrations::table)
            .values(&inserted)
            .execute(conn)
            .await?;
        Ok(())
    })?;
    Ok(row)
}

/// The organization's pending integration for a connector, if any.
pub async fn pending_for(
    store: &Store,
    organization_id: &str,
    connector_type: &str,
) -> Result<Option<Integration>, StoreError> {
    let found = with_conn!(store, |conn| {
        integrations::table
            .filter(integrations::organization_id.eq(organization_id))
            .filter(integrations::connector_type.eq(connector_type))
            .filter(integrations::status.eq(STATUS_PENDING))
            .first::<Integration>(conn)
            .await
            .optional()
    })?;
    Ok(found)
}

/// Completes a pending integration: active, with its account, metadata and
/// credentials, all in one transaction.
pub async fn activate(
    store: &Store,
    organization_id: &str,
    id: &str,
    external_id: Option<String>,
    metadata: &serde_json::Value,
    credentials: Vec<NewCredential>,
) -> Result<Integration, StoreError> {
    let rows = credential_rows(organization_id, id, credentials);
    let metadata = metadata.to_string();
    write_tx!(store, |conn| {
        if let Some(account) = &external_id {
            // In the same transaction as the activation: no second binding can slip in.
            let connector_type = owned(organization_id, id)
                .select(integrations::connector_type)
                .first::<String>(conn)
                .await?;
            let bound = integrations::table
                .filter(integrations::connector_type.eq(&connector_type))
                .filter(integrations::external_id.eq(account))
                .filter(integrations::status.ne_all([STATUS_PENDING, STATUS_REVOKED]))
                .select((integrations::id, integrations::organization_id))
                .first::<(String, String)>(conn)
                .await
                .optional()?;
            match bound {
                Some((_, owner)) if owner != organization_id => {
                    return Err(StoreError::Conflict(
                        "this account is already connected to another organization".to_string(),
                    ));
                }
                Some((existing, _)) => {
                    return Err(StoreError::Conflict(format!(
                        "this account is already connected as integration {existing}: revoke it first"
                    )));
                }
                None => {}
            }
        }
        let updated = diesel::update(
            owned(organization_id, id).filter(integrations::status.eq(STATUS_PENDING)),
        )
        .set((
            integrations::status.eq(STATUS_ACTIVE),
            integrations::external_id.eq(&external_id),
            integrations::metadata.eq(&metadata),
            integrations::updated_at.eq(now()),
        ))
        .execute(conn)
        .await?;
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        diesel::delete(
            integration_credentials::table.filter(integration_credentials::integration_id.eq(id)),
        )
        .execute(conn)
        .await?;
        for row in &rows {
            diesel::insert_into(integration_credentials::table)
                .values(row)
                .execute(conn)
                .await?;
        }
        let row = integrations::table
            .find(id)
            .first::<Integration>(conn)
            .await?;
        Ok(row)
    })
    .inspect(|_| changed())
}

/// Revokes a live integration: its credentials are deleted and its status becomes
/// `revoked`, together. `NotFound` for an unknown, foreign or already revoked id.
pub async fn revoke(
    store: &Store,
    organization_id: &str,
    id: &str,
) -> Result<Integration, StoreError> {
    write_tx!(store, |conn| {
        let updated = diesel::update(
            owned(organization_id, id).filter(integrations::status.ne(STATUS_REVOKED)),
        )
        .set((
            integrations::status.eq(STATUS_REVOKED),
            integrations::updated_at.eq(now()),
        ))
        .execute(conn)
        .await?;
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        diesel::delete(owned_credentials(organization_id, id))
            .execute(conn)
            .await?;
        let row = integrations::table
            .find(id)
            .first::<Integration>(conn)
            .await?;
        Ok(row)
    })
    .inspect(|_| changed())
}

/// Every live, non-pending integration of a connector with the earliest expiry of its
/// credentials: what the connector supervisor starts an actor for (two queries in all).
pub async fn live_with_expiry(
    store: &Store,
    connector_type: &str,
) -> Result<Vec<(Integration, Option<NaiveDateTime>)>, StoreError> {
    use diesel::dsl::min;
    let live = live_for_connector(store, connector_type).await?;
    let expiries: Vec<(String, Option<NaiveDateTime>)> = with_conn!(store, |conn| {
        integration_credentials::table
            .inner_join(integrations::table)
            .filter(integrations::connector_type.eq(connector_type))
            .filter(integration_credentials::expires_at.is_not_null())
            .group_by(integration_credentials::integration_id)
            .select((
                integration_credentials::integration_id,
                min(integration_credentials::expires_at),
            ))
            .load::<(String, Option<NaiveDateTime>)>(conn)
            .await
    })?;
    let expiries: std::collections::HashMap<String, Option<NaiveDateTime>> =
        expiries.into_iter().collect();
    Ok(live
        .into_iter()
        .filter(|i| i.status != STATUS_PENDING)
        .map(|i| {
            let expiry = expiries.get(&i.id).copied().flatten();
            (i, expiry)
        })
        .collect())
}

/// When an integration's credentials expire first, if any do (what its actor's
/// refresh timer is set by).
pub async fn credentials_expiry(
    store: &Store,
    integration_id: &str,
) -> Result<Option<NaiveDateTime>, StoreError> {
    use diesel::dsl::min;
    let expiry = with_conn!(store, |conn| {
        integration_credentials::table
            .filter(integration_credentials::integration_id.eq(integration_id))
            .select(min(integration_credentials::expires_at))
            .first::<Option<NaiveDateTime>>(conn)
            .await
    })?;
    Ok(expiry)
}

/// Replaces an integration's metadata (what the provider told of the account).
pub async fn set_metadata(
    store: &Store,
    organization_id: &str,
    id: &str,
    metadata: &serde_json::Value,
) -> Result<(), StoreError> {
    let metadata = metadata.to_string();
    let updated = with_conn!(store, |conn| {
        diesel::update(owned(organization_id, id))
            .set((
                integrations::metadata.eq(&metadata),
                integrations::updated_at.eq(now()),
            ))
            .execute(conn)
            .await
    })?;
    if updated == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Whether an integration with this id was ever created, in any status (a system
/// query, for the admin endpoint's filters).
pub async fn exists(store: &Store, id: &str) -> Result<bool, StoreError> {
    let found = with_conn!(store, |conn| {
        integrations::table
            .find(id)
            .select(integrations::id)
            .first::<String>(conn)
            .await
            .optional()
    })?;
    Ok(found.is_some())
}

/// Live integrations whose id, organization (id or name) or provider account contains
/// `text`, of one connector when given, oldest first: the admin page's search. A
/// system query; `%` and `_` in `text` match themselves.
pub async fn search(
    store: &Store,
    text: &str,
    connector_type: Option<&str>,
    limit: i64,
) -> Result<Vec<Integration>, StoreError> {
    use super::schema::organizations;
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    let pattern = format!("%{escaped}%");
    let found = with_conn!(store, |conn| {
        let named = organizations::table
            .filter(organizations::name.like(&pattern).escape('\\'))
            .select(organizations::id);
        let mut query = integrations::table
            .filter(integrations::status.ne_all([STATUS_PENDING, STATUS_REVOKED]))
            .filter(
                integrations::id
                    .like(&pattern)
                    .escape('\\')
                    .or(integrations::organization_id.like(&pattern).escape('\\'))
                    .or(integrations::external_id.like(&pattern).escape('\\'))
                    .or(integrations::organization_id.eq_any(named)),
            )
            .into_boxed();
        if let Some(connector_type) = connector_type {
            query = query.filter(integrations::connector_type.eq(connector_type));
        }
        query
            .order(integrations::created_at.asc())
            .limit(limit)
            .load::<Integration>(conn)
            .await
    })?;
    Ok(found)
}

/// The live integration bound to a provider account (a GitHub installation, a Slack
/// team): where that account's events go. A system query, for ingress.
pub async fn find_by_account(
    store: &Store,
    connector_type: &str,
    external_id: &str,
) -> Result<Option<Integration>, StoreError> {
    let found = with_conn!(store, |conn| {
        integrations::table
            .filter(integrations::connector_type.eq(connector_type))
            .filter(integrations::external_id.eq(external_id))
            .filter(integrations::status.ne_all([STATUS_PENDING, STATUS_REVOKED]))
            .first::<Integration>(conn)
            .await
            .optional()
    })?;
    Ok(found)
}

/// A live integration by id alone: for webhook ingress, where the URL names the
/// integration and the signature, not a token, proves who is calling.
pub async fn find_live(store: &Store, id: &str) -> Result<Option<Integration>, StoreError> {
    let found = with_conn!(store, |conn| {
        integrations::table
            .filter(integrations::id.eq(id))
            .filter(integrations::status.ne(STATUS_REVOKED))
            .first::<Integration>(conn)
            .await
            .optional()
    })?;
    Ok(found)
}
