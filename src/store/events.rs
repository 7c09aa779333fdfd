//! The durable inbox: every event a provider sends is a row here before it is
//! acknowledged. Rows are de-duplicated on (connector, delivery scope, delivery id)
//! (see [`DeliveryScope`]), processed in
//! arrival order per integration (ids are time-ordered UUIDv7), retried, and end
//! `done` or `dead`.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;

use super::group_commit::{PgGroupCommit, SqliteInsert, sqlite_timestamp};
use super::schema::events;
use super::{Store, StoreError, new_ordered_id, now};
use crate::{with_conn, write_tx};
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::Pool;
use futures::FutureExt;
use futures::future::BoxFuture;

pub const PENDING: &str = "pending";
pub const DONE: &str = "done";
pub const DEAD: &str = "dead";

/// `status = '<status>'` as a literal rather than a bound parameter, so that both
/// planners can use the partial indexes (`events_pending`, `events_dead`). A status
/// that is none of ours matches nothing.
fn status_is(status: &str) -> diesel::expression::SqlLiteral<diesel::sql_types::Bool> {
    match [PENDING, DONE, DEAD]
        .into_iter()
        .find(|known| *known == status)
    {
        Some(known) => diesel::dsl::sql(&format!("events.status = '{known}'")),
        None => diesel::dsl::sql("1 = 0"),
    }
}

#[derive(Debug, Clone, PartialEq, Queryable, Insertable, Serialize)]
#[diesel(table_name = events, treat_none_as_default_value = false)]
pub struct Event {
    pub id: String,
    pub organization_id: Option<String>,
    pub integration_id: Option<String>,
    pub connector_type: String,
    pub event_type: String,
    pub delivery_id: String,
    /// The provider's raw payload, as received.
    pub payload: String,
    pub received_at: NaiveDateTime,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<NaiveDateTime>,
    pub last_error: Option<String>,
    pub processed_at: Option<NaiveDateTime>,
    /// When the provider says it happened.
    pub occurred_at: Option<NaiveDateTime>,
    /// Where `delivery_id` is unique: `''` across the connector, or an integration's id
    /// (see [`DeliveryScope`]).
    pub delivery_scope: String,
}

/// Who chose an event's delivery id, and so where it must be unique. De-duplication
/// never spans tenants: otherwise one tenant could suppress another's events by
/// sending their ids first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryScope {
    /// The provider, for all its tenants (GitHub's `X-GitHub-Delivery`, Slack's
    /// `event_id`): unique per connector, so a redelivery is recognised even when the
    /// integration it was routed to changed meanwhile (bound, revoked, re-authorized).
    Provider,
    /// The tenant's own sender (a generic webhook-id): unique per integration.
    Integration,
}

/// An event as ingress hands it over.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub organization_id: Option<String>,
    pub integration_id: Option<String>,
    pub connector_type: String,
    pub event_type: String,
    pub delivery_id: String,
    /// Who chose `delivery_id`.
    pub delivery_scope: DeliveryScope,
    pub payload: String,
    pub occurred_at: Option<NaiveDateTime>,
    /// Why nobody can process it (no integration is bound to the account it names):
    /// stored `dead` with this reason in the same write, replayable once bound.
    pub dead_reason: Option<String>,
}

impl NewEvent {
    /// The `delivery_scope` column's value: `''` or the integration's id.
    fn scope_key(&self) -> String {
        match self.delivery_scope {
            DeliveryScope::Provider => String::new(),
            DeliveryScope::Integration => self.integration_id.clone().unwrap_or_default(),
        }
    }
}

/// What became of one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: String,
    /// Already in the inbox (a redelivery): not stored again.
    pub duplicate: bool,
}

/// The id under which an event with the same connector, scope and delivery id is
/// stored: where a redelivery finds the event it repeats, on either backend.
#[diesel::dsl::auto_type(no_type_alias)]
fn existing_id<'a>(row: &'a Event) -> _ {
    let connector_type: &'a str = &row.connector_type;
    let delivery_scope: &'a str = &row.delivery_scope;
    let delivery_id: &'a str = &row.delivery_id;
    events::table
        .filter(events::connector_type.eq(connector_type))
        .filter(events::delivery_scope.eq(delivery_scope))
        .filter(events::delivery_id.eq(delivery_id))
        .select(events::id)
}

/// Most ids in one `UPDATE ... WHERE id IN (...)` (SQLite binds at most 32,766).
const DONE_CHUNK: usize = 1000;

/// One group commit of the inbox: stores `batch` (duplicates of stored events, same
/// connector and delivery id, are skipped and reported as such) and marks `done` the
/// events processed meanwhile, in a single transaction. The events `settled` marks
/// (one flag per event; missing flags are `false`) have nothing to process them: they
/// are stored `done` at once.
///
/// `acknowledge` is told the outcome once the batch is durable, or the error that
/// stopped it. The returned future resolves when the store is ready for the next
/// batch: on PostgreSQL once this one has committed (and been acknowledged); on SQLite
/// as soon as its transaction is over, so that the next batch is committed while this
/// one's WAL is being synced (see [`super::sqlite_writer`]). Batches written one after
/// the other in this way commit in that order.
pub fn write_batch(
    store: &Store,
    batch: Vec<NewEvent>,
    settled: &[bool],
    done: Vec<String>,
    acknowledge: impl FnOnce(Result<Vec<Stored>, StoreError>) + Send + 'static,
) -> BoxFuture<'static, ()> {
    let at = now();
    let rows: Vec<Event> = batch
        .into_iter()
        .enumerate()
        .map(|(n, new)| {
            let settled = settled.get(n).copied().unwrap_or(false);
            let delivery_scope = new.scope_key();
            let status = match (&new.dead_reason, settled) {
                (Some(_), _) => DEAD,
                (None, true) => DONE,
                (None, false) => PENDING,
            };
            Event {
                id: new_ordered_id(),
                organization_id: new.organization_id,
                integration_id: new.integration_id,
                connector_type: new.connector_type,
                event_type: new.event_type,
                delivery_id: new.delivery_id,
                payload: new.payload,
                received_at: at,
                status: status.to_string(),
                attempts: 0,
                next_attempt_at: None,
                processed_at: (status == DONE).then_some(at),
                last_error: new.dead_reason,
                occurred_at: new.occurred_at,
                delivery_scope,
            }
        })
        .collect();
    let writer = match store {
        Store::Postgres { pool, .. } => {
            let pool = pool.clone();
            return async move { acknowledge(write_batch_postgres(pool, rows, done, at).await) }
                .boxed();
        }
        Store::Sqlite { writer, .. } => writer,
    };
    // SQLite: the whole batch in one transaction on the writer's connection, with
    // diesel's synchronous API (one hop to its thread instead of one per statement).
    let write = move |conn: &mut SqliteConnection| {
        use diesel::RunQueryDsl as Sync;
        let mut stored = Vec::with_capacity(rows.len());
        let received_at = sqlite_timestamp(&at);
        for row in &rows {
            let inserted = Sync::execute(SqliteInsert::new(row, &received_at), conn)?;
            let id = if inserted == 1 {
                row.id.clone()
            } else {
                Sync::first::<String>(existing_id(row), conn)?
            };
            stored.push(Stored {
                duplicate: inserted != 1,
                id,
            });
        }
        // On PostgreSQL the group commit's own statement does this.
        for ids in done.chunks(DONE_CHUNK) {
            let processed =
                diesel::update(events::table.filter(events::id.eq_any(ids))).set(done_changes(at));
            Sync::execute(processed, conn)?;
        }
        Ok(stored)
    };
    writer.write(write, acknowledge).boxed()
}

/// [`write_batch`], answering once the batch is durable.
pub async fn write_batch_durably(
    store: &Store,
    batch: Vec<NewEvent>,
    settled: &[bool],
    done: Vec<String>,
) -> Result<Vec<Stored>, StoreError> {
    let (reply, written) = tokio::sync::oneshot::channel();
    write_batch(store, batch, settled, done, move |outcome| {
        let _ = reply.send(outcome);
    })
    .await;
    written
        .await
        .map_err(|_| StoreError::Write("the batch was never acknowledged".to_string()))?
}

async fn write_batch_postgres(
    pool: Pool<AsyncPgConnection>,
    rows: Vec<Event>,
    done: Vec<String>,
    at: NaiveDateTime,
) -> Result<Vec<Stored>, StoreError> {
    use diesel::result::{DatabaseErrorKind, Error};
    let mut pooled = pool.get().await?;
    // The statement variant for this batch: with the `done` update only when there are
    // processed events to mark (see `PgGroupCommit`), run by `$run` (execute or load).
    macro_rules! group_commit {
        ($skip_duplicates:literal, $run:ident) => {
            if done.is_empty() {
                PgGroupCommit::<false, $skip_duplicates>::new(&rows, &done, at)
                    .$run(&mut pooled)
                    .await
            } else {
                PgGroupCommit::<true, $skip_duplicates>::new(&rows, &done, at)
                    .$run(&mut pooled)
                    .await
            }
        };
    }
    // Most batches hold no redelivery: a plain insert first, and the statement that
    // skips duplicates only when it fails on one (it failed whole: nothing is stored,
    // and the events of `done` are not marked yet).
    match group_commit!(false, execute) {
        Ok(_) => {
            return Ok(rows
                .iter()
                .map(|row| Stored {
                    id: row.id.clone(),
                    duplicate: false,
                })
                .collect());
        }
        Err(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {}
        Err(error) => return Err(error.into()),
    }
    let inserted: Vec<String> = group_commit!(true, load)?;
    let inserted: std::collections::HashSet<String> = inserted.into_iter().collect();
    // The rows the INSERT did not return are duplicates: committed, so read after.
    let mut stored = Vec::with_capacity(rows.len());
    for row in &rows {
        if inserted.contains(&row.id) {
            stored.push(Stored {
                id: row.id.clone(),
                duplicate: false,
            });
        } else {
            stored.push(Stored {
                id: existing_id(row).first::<String>(&mut pooled).await?,
                duplicate: true,
            });
        }
    }
    Ok(stored)
}

/// Marks a run of processed events done in one transaction (without the inbox: it
/// records them in its own group commit when it runs).
pub async fn mark_done_all(store: &Store, ids: &[String]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    write_batch_durably(store, Vec::new(), &[], ids.to_vec()).await?;
    Ok(())
}

/// The integration's pending events, oldest first, at most `limit`.
pub async fn pending(
    store: &Store,
    integration_id: &str,
    limit: i64,
) -> Result<Vec<Event>, StoreError> {
    let found = with_conn!(store, |conn| {
        events::table
            .filter(events::integration_id.eq(integration_id))
            .filter(status_is(PENDING))
            .order((events::received_at, events::id))
            .limit(limit)
            .load::<Event>(conn)
            .await
    })?;
    Ok(found)
}

/// The columns a processed event changes.
pub(crate) type DoneChanges = (
    diesel::dsl::Eq<events::status, &'static str>,
    diesel::dsl::Eq<events::processed_at, NaiveDateTime>,
    diesel::dsl::Eq<events::next_attempt_at, Option<NaiveDateTime>>,
);

/// The columns a failed attempt changes.
pub(crate) type FailedChanges<'a> = (
    diesel::dsl::Eq<events::status, &'static str>,
    diesel::dsl::Eq<events::attempts, i32>,
    diesel::dsl::Eq<events::last_error, &'a str>,
    diesel::dsl::Eq<events::next_attempt_at, Option<NaiveDateTime>>,
);

/// What marks an event processed at `at` (the inbox's group commit on SQLite and
/// cluster mode's fenced write share it).
pub(crate) fn done_changes(at: NaiveDateTime) -> DoneChanges {
    (
        events::status.eq(DONE),
        events::processed_at.eq(at),
        events::next_attempt_at.eq(None::<NaiveDateTime>),
    )
}

/// What records a failed attempt: a retry at `next_attempt_at`, or `dead` without one.
pub(crate) fn failed_changes(
    attempts: i32,
    error: &str,
    next_attempt_at: Option<NaiveDateTime>,
) -> FailedChanges<'_> {
    let status = if next_attempt_at.is_some() {
        PENDING
    } else {
        DEAD
    };
    (
        events::status.eq(status),
        events::attempts.eq(attempts),
        events::last_error.eq(error),
        events::next_attempt_at.eq(next_attempt_at),
    )
}

/// Records a failed attempt: retried at `next_attempt_at`, or `dead` when `None`.
pub async fn mark_failed(
    store: &Store,
    id: &str,
    attempts: i32,
    error: &str,
    next_attempt_at: Option<NaiveDateTime>,
) -> Result<(), StoreError> {
    with_conn!(store, |conn| {
        diesel::update(events::table.find(id))
            .set(failed_changes(attempts, error, next_attempt_at))
            .execute(conn)
            .await
    })?;
    Ok(())
}

/// Sends to `dead` the pending events of revoked integrations: events that ingress
/// routed just before a revocation and stored just after its own sweep. The inbox runs
/// this every few seconds, off the ingest path. How many it buried.
pub async fn bury_revoked(store: &Store) -> Result<usize, StoreError> {
    use super::schema::integrations;
    let revoked = integrations::table
        .filter(integrations::status.eq(super::integrations::STATUS_REVOKED))
        .select(integrations::id.nullable());
    let buried = with_conn!(store, |conn| {
        diesel::update(
            events::table
                .filter(status_is(PENDING))
                .filter(events::integration_id.eq_any(revoked)),
        )
        .set((
            events::status.eq(DEAD),
            events::last_error.eq("the integration was revoked"),
        ))
        .execute(conn)
        .await
    })?;
    Ok(buried)
}

/// Sends every pending event of an integration to `dead` with `reason` (it is gone).
pub async fn bury_pending(
    store: &Store,
    integration_id: &str,
    reason: &str,
) -> Result<usize, StoreError> {
    let buried = with_conn!(store, |conn| {
        diesel::update(
            events::table
                .filter(events::integration_id.eq(integration_id))
                .filter(status_is(PENDING)),
        )
        .set((events::status.eq(DEAD), events::last_error.eq(reason)))
        .execute(conn)
        .await
    })?;
    Ok(buried)
}

/// How many events there are of each status.
pub async fn count_by_status(store: &Store) -> Result<Vec<(String, i64)>, StoreError> {
    let counts = with_conn!(store, |conn| {
        events::table
            .group_by(events::status)
            .select((events::status, diesel::dsl::count_star()))
            .load::<(String, i64)>(conn)
            .await
    })?;
    Ok(counts)
}

/// Events by status (and integration), oldest first, for the admin endpoint.
pub async fn list(
    store: &Store,
    status: Option<&str>,
    integration_id: Option<&str>,
    limit: i64,
) -> Result<Vec<Event>, StoreError> {
    let found = with_conn!(store, |conn| {
        let mut query = events::table.into_boxed();
        if let Some(status) = status {
            query = query.filter(status_is(status));
        }
        if let Some(integration_id) = integration_id {
            query = query.filter(events::integration_id.eq(integration_id));
        }
        query
            .order((events::received_at, events::id))
            .limit(limit)
            .load::<Event>(conn)
            .await
    })?;
    Ok(found)
}

/// What the admin listing filters on; every field is optional. `before` and `after`
/// are event ids (time-ordered): a page holds the events just older than `before`,
/// or just newer than `after`, newest first either way.
#[derive(Debug, Default, Clone)]
pub struct EventFilter<'a> {
    pub status: Option<&'a str>,
    pub connector_type: Option<&'a str>,
    pub integration_id: Option<&'a str>,
    pub event_type: Option<&'a str>,
    /// Received at or after.
    pub since: Option<NaiveDateTime>,
    /// Received before.
    pub until: Option<NaiveDateTime>,
    pub before: Option<&'a str>,
    pub after: Option<&'a str>,
    pub limit: i64,
}

/// A page of events, newest first, for an operator (see [`EventFilter`]).
pub async fn page(store: &Store, filter: &EventFilter<'_>) -> Result<Vec<Event>, StoreError> {
    let mut found = with_conn!(store, |conn| {
        let mut query = events::table.into_boxed();
        if let Some(status) = filter.status {
            query = query.filter(status_is(status));
        }
        if let Some(connector) = filter.connector_type {
            query = query.filter(events::connector_type.eq(connector));
        }
        if let Some(integration_id) = filter.integration_id {
            query = query.filter(events::integration_id.eq(integration_id));
        }
        if let Some(event_type) = filter.event_type {
            query = query.filter(events::event_type.eq(event_type));
        }
        if let Some(since) = filter.since {
            query = query.filter(events::received_at.ge(since));
        }
        if let Some(until) = filter.until {
            query = query.filter(events::received_at.lt(until));
        }
        if let Some(before) = filter.before {
            query = query.filter(events::id.lt(before));
        }
        query = match filter.after {
            // The page just after the cursor: read upwards from it, shown newest first.
            Some(after) => query.filter(events::id.gt(after)).order(events::id.asc()),
            None => query.order(events::id.desc()),
        };
        query.limit(filter.limit).load::<Event>(conn).await
    })?;
    if filter.after.is_some() {
        found.reverse();
    }
    Ok(found)
}

/// One event by id, whatever its status.
pub async fn get(store: &Store, id: &str) -> Result<Option<Event>, StoreError> {
    let found = with_conn!(store, |conn| {
        events::table.find(id).first::<Event>(conn).await.optional()
    })?;
    Ok(found)
}

/// Puts a dead (or done) event back to pending, with its attempts reset.
pub async fn replay(store: &Store, id: &str) -> Result<Event, StoreError> {
    write_tx!(store, |conn| {
        let updated = diesel::update(events::table.find(id))
            .set((
                events::status.eq(PENDING),
                events::attempts.eq(0),
                events::next_attempt_at.eq(None::<NaiveDateTime>),
                events::processed_at.eq(None::<NaiveDateTime>),
            ))
            .execute(conn)
            .await?;
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(events::table.find(id).first::<Event>(conn).await?)
    })
}

/// Sends to `dead` the pending events of a connector whose integration is gone
/// (revoked or deleted while the daemon was down): they are never dropped silently.
pub async fn bury_orphans(store: &Store, connector_type: &str) -> Result<usize, StoreError> {
    use super::schema::integrations;
    let live = integrations::table
        .filter(integrations::status.ne(super::integrations::STATUS_REVOKED))
        .select(integrations::id.nullable());
    let buried = with_conn!(store, |conn| {
        diesel::update(
            events::table
                .filter(events::connector_type.eq(connector_type))
                .filter(status_is(PENDING))
                .filter(diesel::dsl::not(events::integration_id.eq_any(live))),
        )
        .set((
            events::status.eq(DEAD),
            events::last_error.eq("the integration is gone"),
        ))
        .execute(conn)
        .await
    })?;
    Ok(buried)
}
