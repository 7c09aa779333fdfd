//! Organizations: the tenants.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;

use super::schema::organizations;
use super::{Store, StoreError, new_id, now};
use crate::with_conn;

#[derive(Debug, Clone, PartialEq, Queryable, Insertable, Serialize)]
#[diesel(table_name = organizations)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub created_at: NaiveDateTime,
}

pub async fn create(store: &Store, name: &str) -> Result<Organization, StoreError> {
    let organization = Organization {
        id: new_id(),
        name: name.to_string(),
        created_at: now(),
    };
    with_conn!(store, |conn| {
        diesel::insert_into(organizations::table)
            .values(&organization)
            .execute(conn)
            .await
    })?;
    Ok(organization)
}

pub async fn get(store: &Store, id: &str) -> Result<Option<Organization>, StoreError> {
    let found = with_conn!(store, |conn| {
        organizations::table
            .find(id)
            .first::<Organization>(conn)
            .await
            .optional()
    })?;
    Ok(found)
}

pub async fn list(store: &Store) -> Result<Vec<Organization>, StoreError> {
    let all = with_conn!(store, |conn| {
        organizations::table
            .order((organizations::created_at, organizations::id))
            .load::<Organization>(conn)
            .await
    })?;
    Ok(all)
}
