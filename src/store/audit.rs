//! The audit log: who did what to which integration or credential, and when. Entries
//! carry no secrets: ids, actions and non-secret details only.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;

use super::schema::audit_log;
use super::{Store, StoreError, new_ordered_id, now};
use crate::with_conn;

#[derive(Debug, Clone, PartialEq, Queryable, Insertable, Serialize)]
#[diesel(table_name = audit_log)]
pub struct AuditEntry {
    pub id: String,
    pub organization_id: Option<String>,
    /// Who: `org-token:<id>`, `admin`, `cli`, `system`.
    pub actor: String,
    /// What: `integration.authorize`, `credentials.refresh`, `vault.rotate`, ...
    pub action: String,
    pub integration_id: Option<String>,
    /// JSON object, as text.
    pub details: String,
    pub created_at: NaiveDateTime,
}

pub async fn record(
    store: &Store,
    organization_id: Option<&str>,
    actor: &str,
    action: &str,
    integration_id: Option<&str>,
    details: serde_json::Value,
) -> Result<AuditEntry, StoreError> {
    let entry = AuditEntry {
        id: new_ordered_id(),
        organization_id: organization_id.map(str::to_string),
        actor: actor.to_string(),
        action: action.to_string(),
        integration_id: integration_id.map(str::to_string),
        details: details.to_string(),
        created_at: now(),
    };
    with_conn!(store, |conn| {
        diesel::insert_into(audit_log::table)
            .values(&entry)
            .execute(conn)
            .await
    })?;
    Ok(entry)
}

/// The latest entries of one organization, newest first.
pub async fn list(
    store: &Store,
    organization_id: &str,
    limit: i64,
) -> Result<Vec<AuditEntry>, StoreError> {
    let entries = with_conn!(store, |conn| {
        audit_log::table
            .filter(audit_log::organization_id.eq(organization_id))
            .order((audit_log::created_at.desc(), audit_log::id.desc()))
            .limit(limit)
            .load::<AuditEntry>(conn)
            .await
    })?;
    Ok(entries)
}
