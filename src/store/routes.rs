//! Tenant routes: created through the tenant API, effective at once. Every query is
//! scoped by organization, except [`all`], which the daemon loads its routes with.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::routes;
use super::{Store, StoreError};
use crate::with_conn;

/// What a route's sealed settings are bound to, besides its organization and id.
pub const SEALED_SETTINGS: &str = "route.settings";

#[derive(Debug, Clone, PartialEq, Queryable, Insertable)]
#[diesel(table_name = routes)]
pub struct StoredRoute {
    pub id: String,
    pub organization_id: String,
    pub connector: String,
    pub event_type: String,
    pub action: String,
    /// The action's settings that are not secrets, as JSON.
    pub settings: String,
    /// The secret settings, as a JSON object sealed by the vault (bound to the route).
    pub secrets: Option<Vec<u8>>,
    pub encryption_key_id: Option<String>,
    pub created_at: NaiveDateTime,
}

pub async fn create(store: &Store, route: &StoredRoute) -> Result<(), StoreError> {
    with_conn!(store, |conn| {
        diesel::insert_into(routes::table)
            .values(route)
            .execute(conn)
            .await
    })?;
    Ok(())
}

/// An organization's routes, oldest first.
pub async fn list(store: &Store, organization_id: &str) -> Result<Vec<StoredRoute>, StoreError> {
    let found = with_conn!(store, |conn| {
        routes::table
            .filter(routes::organization_id.eq(organization_id))
            .order((routes::created_at, routes::id))
            .load::<StoredRoute>(conn)
            .await
    })?;
    Ok(found)
}

/// Every tenant route, oldest first: what the daemon runs.
pub async fn all(store: &Store) -> Result<Vec<StoredRoute>, StoreError> {
    let found = with_conn!(store, |conn| {
        routes::table
            .order((routes::created_at, routes::id))
            .load::<StoredRoute>(conn)
            .await
    })?;
    Ok(found)
}

/// Deletes one of an organization's routes; `NotFound` for an unknown or foreign id.
pub async fn delete(store: &Store, organization_id: &str, id: &str) -> Result<(), StoreError> {
    let deleted = with_conn!(store, |conn| {
        diesel::delete(
            routes::table
                .filter(routes::organization_id.eq(organization_id))
                .filter(routes::id.eq(id)),
        )
        .execute(conn)
        .await
    })?;
    if deleted == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Routes whose secret settings are sealed under another key than `key_id`, by id
/// after `after`: what a key rotation moves.
pub async fn secrets_not_under_key(
    store: &Store,
    key_id: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<StoredRoute>, StoreError> {
    let found = with_conn!(store, |conn| {
        let mut query = routes::table
            .filter(routes::secrets.is_not_null())
            .filter(routes::encryption_key_id.ne(key_id))
            .into_boxed();
        if let Some(after) = after {
            query = query.filter(routes::id.gt(after));
        }
        query
            .order(routes::id)
            .limit(limit)
            .load::<StoredRoute>(conn)
            .await
    })?;
    Ok(found)
}

/// Replaces re-encrypted secret settings, each only if still under the key it was read
/// under (a route deleted or changed meanwhile is left alone): how many were swapped.
pub async fn swap_secrets(
    store: &Store,
    batch: &[crate::store::integrations::Reencrypted],
) -> Result<usize, StoreError> {
    crate::write_tx!(store, |conn| {
        let mut swapped = 0;
        for item in batch {
            swapped += diesel::update(
                routes::table
                    .filter(routes::id.eq(&item.id))
                    .filter(routes::encryption_key_id.eq(&item.old_key_id)),
            )
            .set((
                routes::secrets.eq(Some(&item.ciphertext)),
                routes::encryption_key_id.eq(Some(&item.new_key_id)),
            ))
            .execute(conn)
            .await?;
        }
        Ok(swapped)
    })
}

/// How many routes' secret settings each data key protects.
pub async fn count_by_key(store: &Store) -> Result<Vec<(String, i64)>, StoreError> {
    use diesel::dsl::count_star;
    let counts = with_conn!(store, |conn| {
        routes::table
            .filter(routes::encryption_key_id.is_not_null())
            .group_by(routes::encryption_key_id)
            .select((routes::encryption_key_id.assume_not_null(), count_star()))
            .load::<(String, i64)>(conn)
            .await
    })?;
    Ok(counts)
}
