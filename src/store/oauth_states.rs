//! Authorization states: random, single-use, expiring, bound to the organization and
//! connector that started the flow. Only the state's SHA-256 is stored.

use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use rand::RngCore;

use super::schema::oauth_states;
use super::tokens::hash_token;
use super::{Store, StoreError, now};
use crate::secret::Secret;
use crate::{with_conn, write_tx};

#[derive(Debug, Clone, PartialEq, Queryable, Insertable)]
#[diesel(table_name = oauth_states)]
pub struct OauthState {
    pub state_hash: String,
    pub organization_id: String,
    pub connector_type: String,
    pub user_id: Option<String>,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub consumed_at: Option<NaiveDateTime>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("unknown authorization state")]
    Unknown,
    #[error("authorization state already used")]
    Replayed,
    #[error("authorization state expired")]
    Expired,
    #[error("authorization state belongs to another organization or connector")]
    Foreign,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for StateError {
    fn from(error: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        StateError::Store(error.into())
    }
}

/// Starts a flow: returns the state to hand to the provider, and when it expires.
pub async fn create(
    store: &Store,
    organization_id: &str,
    connector_type: &str,
    user_id: Option<&str>,
    ttl: Duration,
) -> Result<(Secret, NaiveDateTime), StoreError> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let state = Secret::new(hex::encode(bytes));
    let created_at = now();
    let expires_at =
        created_at + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(10));
    let row = OauthState {
        state_hash: hash_token(state.expose()),
        organization_id: organization_id.to_string(),
        connector_type: connector_type.to_string(),
        user_id: user_id.map(str::to_string),
        created_at,
        expires_at,
        consumed_at: None,
    };
    with_conn!(store, |conn| {
        diesel::insert_into(oauth_states::table)
            .values(&row)
            .execute(conn)
            .await
    })?;
    Ok((state, expires_at))
}

/// Uses a state once. `organization_id` is `None` when the caller is a browser
/// redirect, which proves no organization: the state itself names it.
pub async fn consume(
    store: &Store,
    state: &str,
    organization_id: Option<&str>,
    connector_type: &str,
) -> Result<OauthState, StateError> {
    let hash = hash_token(state);
    let outcome: Result<Result<OauthState, StateError>, StoreError> = write_tx!(store, |conn| {
        let Some(mut row) = oauth_states::table
            .find(&hash)
            .first::<OauthState>(conn)
            .await
            .optional()?
        else {
            return Ok(Err(StateError::Unknown));
        };
        if organization_id.is_some_and(|org| org != row.organization_id)
            || row.connector_type != connector_type
        {
            return Ok(Err(StateError::Foreign));
        }
        if row.consumed_at.is_some() {
            return Ok(Err(StateError::Replayed));
        }
        let at = now();
        if row.expires_at <= at {
            return Ok(Err(StateError::Expired));
        }
        diesel::update(oauth_states::table.find(&hash))
            .set(oauth_states::consumed_at.eq(at))
            .execute(conn)
            .await?;
        row.consumed_at = Some(at);
        Ok(Ok(row))
    });
    outcome?
}

/// Deletes states that expired before `before` (housekeeping).
pub async fn purge_expired(store: &Store, before: NaiveDateTime) -> Result<usize, StoreError> {
    let purged = with_conn!(store, |conn| {
        diesel::delete(oauth_states::table.filter(oauth_states::expires_at.lt(before)))
            .execute(conn)
            .await
    })?;
    Ok(purged)
}
