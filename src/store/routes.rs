//! Tenant routes: created through the tenant API, effective at once. Every query is
//! scoped by organization, except [`all`], which the daemon loads its routes with.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::routes;
use super::{Store, StoreError};
use crate::with_conn;

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
