//! The statements of the inbox's group commit, written by hand so that their SQL
//! never changes and diesel caches them by type: prepared once per connection.
//!
//! PostgreSQL: a multi-row `INSERT … VALUES` has as many parameters as the batch has
//! fields, so diesel could not cache it: every batch cost a round trip to prepare it
//! (and the server a parse and plan of some 350 parameters) before the one that ran
//! it. Here the batch travels as one array per column, unnested by the server, and
//! the events processed meanwhile are marked `done` by a data-modifying CTE of the
//! same statement: each batch is one round trip and one implicit transaction.
//!
//! SQLite: the rows are inserted one by one on the writer's connection (a statement
//! per row costs no round trip there), but diesel's own insert built its SQL again,
//! then hashed it to find the cached statement, for every row.

use std::sync::LazyLock;

use chrono::NaiveDateTime;
use chrono::format::{Item, StrftimeItems};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, Integer, Nullable, Text, Timestamp};
use diesel::sqlite::Sqlite;

use super::events::{DONE, Event};

/// The columns of a new event, in the order both statements give them.
const COLUMNS: &str = "id, organization_id, integration_id, connector_type, event_type, \
     delivery_id, payload, received_at, status, attempts, next_attempt_at, last_error, \
     processed_at, occurred_at, delivery_scope";

/// Binds each value as its SQL type, the placeholders separated by commas.
macro_rules! comma_separated_binds {
    ($out:ident, $first_type:ty => $first:expr, $($type:ty => $value:expr),+ $(,)?) => {
        $out.push_bind_param::<$first_type, _>($first)?;
        $(
            $out.push_sql(", ");
            $out.push_bind_param::<$type, _>($value)?;
        )+
    };
}

/// A redelivery (same connector, scope and delivery id) is skipped: not inserted, not
/// returned.
const ON_CONFLICT: &str = " ON CONFLICT (connector_type, delivery_scope, delivery_id) DO NOTHING";

/// PostgreSQL: inserts `rows` and, when `MARK_DONE`, marks `done` the events `done`
/// names.
///
/// With `SKIP_DUPLICATES` a row whose connector and delivery id are stored already is
/// skipped, and the statement loads the ids of the rows it inserted. Without it the
/// statement is a plain `INSERT` that fails whole on a duplicate: about a third less
/// work for the server per row (measured with pgbench on this schema), since `ON
/// CONFLICT` checks each row against the unique index before inserting it as well as
/// while inserting it, and writes a second WAL record to confirm it. Redeliveries are
/// rare, so the inbox tries the plain statement first (see `write_batch_postgres`).
///
/// Two statements rather than one with an empty array: given `id = ANY('{}')` the
/// planner estimates a row and may pick any scan at all (a sequential one, on a young
/// table), which then runs for nothing on every batch.
pub(super) struct PgGroupCommit<'a, const MARK_DONE: bool, const SKIP_DUPLICATES: bool> {
    ids: Vec<&'a str>,
    organization_ids: Vec<Option<&'a str>>,
    integration_ids: Vec<Option<&'a str>>,
    connector_types: Vec<&'a str>,
    event_types: Vec<&'a str>,
    delivery_ids: Vec<&'a str>,
    payloads: Vec<&'a str>,
    statuses: Vec<&'a str>,
    last_errors: Vec<Option<&'a str>>,
    processed_at: Vec<Option<NaiveDateTime>>,
    occurred_at: Vec<Option<NaiveDateTime>>,
    delivery_scopes: Vec<&'a str>,
    done: &'a [String],
    /// When the rows were received, and the `done` ones processed.
    at: NaiveDateTime,
}

impl<'a, const MARK_DONE: bool, const SKIP_DUPLICATES: bool>
    PgGroupCommit<'a, MARK_DONE, SKIP_DUPLICATES>
{
    /// The rows are new (no attempts, no retry time; an error only when they are born
    /// dead) and received `at`, when
    /// the events of `done` are recorded processed.
    pub(super) fn new(rows: &'a [Event], done: &'a [String], at: NaiveDateTime) -> Self {
        Self {
            ids: rows.iter().map(|r| r.id.as_str()).collect(),
            organization_ids: rows.iter().map(|r| r.organization_id.as_deref()).collect(),
            integration_ids: rows.iter().map(|r| r.integration_id.as_deref()).collect(),
            connector_types: rows.iter().map(|r| r.connector_type.as_str()).collect(),
            event_types: rows.iter().map(|r| r.event_type.as_str()).collect(),
            delivery_ids: rows.iter().map(|r| r.delivery_id.as_str()).collect(),
            payloads: rows.iter().map(|r| r.payload.as_str()).collect(),
            statuses: rows.iter().map(|r| r.status.as_str()).collect(),
            last_errors: rows.iter().map(|r| r.last_error.as_deref()).collect(),
            processed_at: rows.iter().map(|r| r.processed_at).collect(),
            occurred_at: rows.iter().map(|r| r.occurred_at).collect(),
            delivery_scopes: rows.iter().map(|r| r.delivery_scope.as_str()).collect(),
            done,
            at,
        }
    }
}

/// The same SQL whatever the batch: prepared once, cached by this type.
impl<const MARK_DONE: bool, const SKIP_DUPLICATES: bool> QueryId
    for PgGroupCommit<'_, MARK_DONE, SKIP_DUPLICATES>
{
    type QueryId = PgGroupCommit<'static, MARK_DONE, SKIP_DUPLICATES>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<const MARK_DONE: bool, const SKIP_DUPLICATES: bool> Query
    for PgGroupCommit<'_, MARK_DONE, SKIP_DUPLICATES>
{
    type SqlType = Text;
}

impl<const MARK_DONE: bool, const SKIP_DUPLICATES: bool> QueryFragment<Pg>
    for PgGroupCommit<'_, MARK_DONE, SKIP_DUPLICATES>
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> diesel::QueryResult<()> {
        if MARK_DONE {
            out.push_sql("WITH processed AS (UPDATE events SET status = '");
            out.push_sql(DONE);
            out.push_sql("', processed_at = ");
            out.push_bind_param::<Timestamp, _>(&self.at)?;
            out.push_sql(", next_attempt_at = NULL WHERE id = ANY(");
            out.push_bind_param::<Array<Text>, _>(self.done)?;
            out.push_sql(")) ");
        }
        out.push_sql("INSERT INTO events (");
        out.push_sql(COLUMNS);
        out.push_sql(
            ") SELECT id, organization_id, integration_id, connector_type, event_type, \
             delivery_id, payload, ",
        );
        out.push_bind_param::<Timestamp, _>(&self.at)?;
        out.push_sql(
            ", status, 0, NULL, last_error, processed_at, occurred_at, delivery_scope FROM unnest(",
        );
        comma_separated_binds!(out,
            Array<Text> => &self.ids,
            Array<Nullable<Text>> => &self.organization_ids,
            Array<Nullable<Text>> => &self.integration_ids,
            Array<Text> => &self.connector_types,
            Array<Text> => &self.event_types,
            Array<Text> => &self.delivery_ids,
            Array<Text> => &self.payloads,
            Array<Text> => &self.statuses,
            Array<Nullable<Text>> => &self.last_errors,
            Array<Nullable<Timestamp>> => &self.processed_at,
            Array<Nullable<Timestamp>> => &self.occurred_at,
            Array<Text> => &self.delivery_scopes,
        );
        // unnest keeps the arrays' order: rows are inserted as the batch lists them.
        out.push_sql(
            ") AS batch(id, organization_id, integration_id, connector_type, event_type, \
             delivery_id, payload, status, last_error, processed_at, occurred_at, delivery_scope)",
        );
        if SKIP_DUPLICATES {
            out.push_sql(ON_CONFLICT);
            out.push_sql(" RETURNING id");
        }
        Ok(())
    }
}

/// SQLite: inserts one event unless its connector, scope and delivery id are stored already
/// (executed, it counts 1 row inserted or 0).
///
/// Its timestamps are bound as text written beforehand, in diesel's own format: diesel
/// formats each one through chrono's `strftime`, parsing the format string every time,
/// which cost the writer more than any index (and a batch shares one `received_at`).
pub(super) struct SqliteInsert<'a> {
    row: &'a Event,
    received_at: &'a str,
    processed_at: Option<String>,
    occurred_at: Option<String>,
}

impl<'a> SqliteInsert<'a> {
    /// `received_at` is `row.received_at` as [`sqlite_timestamp`] writes it.
    pub(super) fn new(row: &'a Event, received_at: &'a str) -> Self {
        let text = |at: Option<NaiveDateTime>| match at {
            Some(at) if at == row.received_at => Some(received_at.to_string()),
            at => at.map(|at| sqlite_timestamp(&at)),
        };
        Self {
            row,
            received_at,
            processed_at: text(row.processed_at),
            occurred_at: text(row.occurred_at),
        }
    }
}

/// A timestamp as diesel writes it to SQLite (`%F %T%.f`), with the format parsed once.
pub(super) fn sqlite_timestamp(at: &NaiveDateTime) -> String {
    static FORMAT: LazyLock<Vec<Item<'static>>> =
        LazyLock::new(|| StrftimeItems::new("%F %T%.f").collect());
    at.format_with_items(FORMAT.iter()).to_string()
}

impl QueryId for SqliteInsert<'_> {
    type QueryId = SqliteInsert<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<Conn> diesel::RunQueryDsl<Conn> for SqliteInsert<'_> {}

impl QueryFragment<Sqlite> for SqliteInsert<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> diesel::QueryResult<()> {
        let row = self.row;
        out.push_sql("INSERT INTO events (");
        out.push_sql(COLUMNS);
        out.push_sql(") VALUES (");
        comma_separated_binds!(out,
            Text => &row.id,
            Nullable<Text> => &row.organization_id,
            Nullable<Text> => &row.integration_id,
            Text => &row.connector_type,
            Text => &row.event_type,
            Text => &row.delivery_id,
            Text => &row.payload,
            Text => self.received_at,
            Text => &row.status,
            Integer => &row.attempts,
            Nullable<Timestamp> => &row.next_attempt_at,
            Nullable<Text> => &row.last_error,
            Nullable<Text> => &self.processed_at,
            Nullable<Text> => &self.occurred_at,
            Text => &row.delivery_scope,
        );
        out.push_sql(")");
        out.push_sql(ON_CONFLICT);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, NaiveDateTime};

    use super::sqlite_timestamp;

    #[test]
    fn sqlite_timestamps_are_written_as_diesel_writes_them() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
        let times: Vec<NaiveDateTime> = [0, 1_000_000, 120_000_000, 123_456_000, 999_999_999]
            .into_iter()
            .map(|nanos| day.and_hms_nano_opt(7, 5, 9, nanos).unwrap())
            .collect();
        for at in times {
            assert_eq!(sqlite_timestamp(&at), at.format("%F %T%.f").to_string());
        }
    }
}
