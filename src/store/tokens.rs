//! Organization API tokens. Only a token's SHA-256 hash is stored; the plaintext is
//! shown once, when the token is created.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::schema::{api_tokens, organizations};
use super::{Store, StoreError, new_id, now};
use crate::secret::Secret;
use crate::{with_conn, write_tx};

/// Every token starts with this, so that a leaked one is easy to recognise and scan for.
pub const TOKEN_PREFIX: &str = "sbt_";

#[derive(Debug, Clone, PartialEq, Queryable, Insertable, Serialize)]
#[diesel(table_name = api_tokens)]
pub struct ApiToken {
    pub id: String,
    pub organization_id: String,
    #[serde(skip)]
    pub token_hash: String,
    pub created_at: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates a token for `organization_id`; the plaintext is returned once and never stored.
pub async fn create(
    store: &Store,
    organization_id: &str,
) -> Result<(ApiToken, Secret), StoreError> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let plaintext = Secret::new(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)));
    let token = ApiToken {
        id: new_id(),
        organization_id: organization_id.to_string(),
        token_hash: hash_token(plaintext.expose()),
        created_at: now(),
        last_used_at: None,
        revoked_at: None,
    };
    let row = token.clone();
    write_tx!(store, |conn| {
        let exists = organizations::table
            .find(&row.organization_id)
            .count()
            .get_result::<i64>(conn)
            .await?;
        if exists == 0 {
            return Err(StoreError::NotFound);
        }
        diesel::insert_into(api_tokens::table)
            .values(&row)
            .execute(conn)
            .await?;
        Ok(())
    })?;
    Ok((token, plaintext))
}

/// Revokes a token; `NotFound` when there is no such live token.
pub async fn revoke(store: &Store, token_id: &str) -> Result<(), StoreError> {
    let revoked = with_conn!(store, |conn| {
        diesel::update(
            api_tokens::table
                .filter(api_tokens::id.eq(token_id))
                .filter(api_tokens::revoked_at.is_null()),
        )
        .set(api_tokens::revoked_at.eq(now()))
        .execute(conn)
        .await
    })?;
    if revoked == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// The organization a live token belongs to, if the token is one of ours.
pub async fn authenticate(store: &Store, token: &str) -> Result<Option<String>, StoreError> {
    let hash = hash_token(token);
    let organization = with_conn!(store, |conn| {
        diesel::update(
            api_tokens::table
                .filter(api_tokens::token_hash.eq(&hash))
                .filter(api_tokens::revoked_at.is_null()),
        )
        .set(api_tokens::last_used_at.eq(now()))
        .returning(api_tokens::organization_id)
        .get_result::<String>(conn)
        .await
        .optional()
    })?;
    Ok(organization)
}

pub async fn list(store: &Store, organization_id: &str) -> Result<Vec<ApiToken>, StoreError> {
    let tokens = with_conn!(store, |conn| {
        api_tokens::table
            .filter(api_tokens::organization_id.eq(organization_id))
            .order(api_tokens::created_at)
            .load::<ApiToken>(conn)
            .await
    })?;
    Ok(tokens)
}
