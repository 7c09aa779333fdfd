//! Chat messages posted about a subject (see `pipeline::actions::Subject`): where each
//! is, so that the subject's later events update it in place. Kept per organization,
//! chat connector and channel; forgotten when the subject ends.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::chat_messages;
use super::{Store, StoreError, now};
use crate::{with_conn, write_tx};

#[derive(Debug, Clone, PartialEq, Queryable, Insertable)]
#[diesel(table_name = chat_messages)]
pub struct ChatMessage {
    pub organization_id: String,
    pub connector: String,
    pub channel: String,
    pub subject: String,
    /// Where the message is, in the connector's terms (JSON).
    pub message_ref: String,
    pub posted_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// Which message: the organization, the chat connector, the channel a route names,
/// and the subject's key.
#[derive(Debug, Clone, Copy)]
pub struct MessageKey<'a> {
    pub organization_id: &'a str,
    pub connector: &'a str,
    pub channel: &'a str,
    pub subject: &'a str,
}

impl MessageKey<'_> {
    /// The row's primary key.
    fn id(&self) -> (&str, &str, &str, &str) {
        (
            self.organization_id,
            self.connector,
            self.channel,
            self.subject,
        )
    }
}

pub async fn find(store: &Store, key: MessageKey<'_>) -> Result<Option<ChatMessage>, StoreError> {
    let found = with_conn!(store, |conn| {
        chat_messages::table
            .find(key.id())
            .first::<ChatMessage>(conn)
            .await
            .optional()
    })?;
    Ok(found)
}

/// Records where the subject's message is (a new post), replacing an older one.
pub async fn save(store: &Store, key: MessageKey<'_>, message_ref: &str) -> Result<(), StoreError> {
    let at = now();
    let row = ChatMessage {
        organization_id: key.organization_id.to_string(),
        connector: key.connector.to_string(),
        channel: key.channel.to_string(),
        subject: key.subject.to_string(),
        message_ref: message_ref.to_string(),
        posted_at: at,
        updated_at: at,
    };
    write_tx!(store, |conn| {
        diesel::delete(chat_messages::table.find(key.id()))
            .execute(conn)
            .await?;
        diesel::insert_into(chat_messages::table)
            .values(&row)
            .execute(conn)
            .await?;
        Ok(())
    })
}

/// Notes that the message was updated.
pub async fn touch(store: &Store, key: MessageKey<'_>) -> Result<(), StoreError> {
    write_tx!(store, |conn| {
        diesel::update(chat_messages::table.find(key.id()))
            .set(chat_messages::updated_at.eq(now()))
            .execute(conn)
            .await?;
        Ok(())
    })
}

/// Forgets the subject's message (the subject ended).
pub async fn forget(store: &Store, key: MessageKey<'_>) -> Result<(), StoreError> {
    write_tx!(store, |conn| {
        diesel::delete(chat_messages::table.find(key.id()))
            .execute(conn)
            .await?;
        Ok(())
    })
}
