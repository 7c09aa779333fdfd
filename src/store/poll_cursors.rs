//! Where each integration's polling stands (see the integration actor's polling): the
//! provider's cursor, saved only once the events it led to are durable, and when the
//! integration polled last and polls next.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::poll_cursors;
use super::{Store, StoreError};
use crate::{with_conn, write_tx};

#[derive(Debug, Clone, PartialEq, Queryable, Insertable)]
#[diesel(table_name = poll_cursors)]
pub struct PollCursor {
    pub integration_id: String,
    /// Which of the integration's feeds (`''` for the only one).
    pub stream: String,
    pub cursor: Option<String>,
    pub last_polled_at: Option<NaiveDateTime>,
    pub next_poll_at: Option<NaiveDateTime>,
    /// Why the last poll failed, if it did.
    pub last_error: Option<String>,
}

pub async fn get(
    store: &Store,
    integration_id: &str,
    stream: &str,
) -> Result<Option<PollCursor>, StoreError> {
    let found = with_conn!(store, |conn| {
        poll_cursors::table
            .find((integration_id, stream))
            .first::<PollCursor>(conn)
            .await
            .optional()
    })?;
    Ok(found)
}

/// Writes the whole row (a poll's outcome): insert or replace.
pub async fn save(store: &Store, row: &PollCursor) -> Result<(), StoreError> {
    write_tx!(store, |conn| {
        diesel::delete(poll_cursors::table.find((&row.integration_id, &row.stream)))
            .execute(conn)
            .await?;
        diesel::insert_into(poll_cursors::table)
            .values(row)
            .execute(conn)
            .await?;
        Ok(())
    })
}
