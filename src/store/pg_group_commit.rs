//! One group commit of the inbox on PostgreSQL as a single prepared statement.
//!
//! A multi-row `INSERT … VALUES` has as many parameters as the batch has fields, so
//! diesel cannot cache it: every batch cost a round trip to prepare it (and the
//! server a parse and plan of some 350 parameters) before the one that ran it. Here
//! the batch travels as one array per column, unnested by the server, and the events
//! processed meanwhile are marked `done` by a data-modifying CTE of the same
//! statement: the SQL never changes, so the statement is prepared once per
//! connection and each batch is one round trip and one implicit transaction.

use chrono::NaiveDateTime;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, Nullable, Text, Timestamp};

use super::events::{DONE, Event};

/// Inserts `rows` (skipping those whose connector and delivery id are stored already)
/// and, when `MARK_DONE`, marks `done` the events `done` names; loads the ids of the
/// rows it inserted.
///
/// Two statements rather than one with an empty array: given `id = ANY('{}')` the
/// planner estimates a row and may pick any scan at all (a sequential one, on a young
/// table), which then runs for nothing on every batch.
pub(super) struct GroupCommit<'a, const MARK_DONE: bool> {
    ids: Vec<&'a str>,
    organization_ids: Vec<Option<&'a str>>,
    integration_ids: Vec<Option<&'a str>>,
    connector_types: Vec<&'a str>,
    event_types: Vec<&'a str>,
    delivery_ids: Vec<&'a str>,
    payloads: Vec<&'a str>,
    statuses: Vec<&'a str>,
    processed_at: Vec<Option<NaiveDateTime>>,
    occurred_at: Vec<Option<NaiveDateTime>>,
    done: &'a [String],
    /// When the rows were received, and the `done` ones processed.
    at: NaiveDateTime,
}

impl<'a, const MARK_DONE: bool> GroupCommit<'a, MARK_DONE> {
    /// The rows are new (no attempts, no error, no retry time) and received `at`, when
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
            processed_at: rows.iter().map(|r| r.processed_at).collect(),
            occurred_at: rows.iter().map(|r| r.occurred_at).collect(),
            done,
            at,
        }
    }
}

/// The same SQL whatever the batch: prepared once, cached by this type.
impl<const MARK_DONE: bool> QueryId for GroupCommit<'_, MARK_DONE> {
    type QueryId = GroupCommit<'static, MARK_DONE>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<const MARK_DONE: bool> Query for GroupCommit<'_, MARK_DONE> {
    type SqlType = Text;
}

impl<const MARK_DONE: bool> QueryFragment<Pg> for GroupCommit<'_, MARK_DONE> {
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
        out.push_sql(
            "INSERT INTO events (id, organization_id, integration_id, connector_type, \
             event_type, delivery_id, payload, received_at, status, attempts, \
             next_attempt_at, last_error, processed_at, occurred_at) \
             SELECT id, organization_id, integration_id, connector_type, event_type, \
             delivery_id, payload, ",
        );
        out.push_bind_param::<Timestamp, _>(&self.at)?;
        out.push_sql(", status, 0, NULL, NULL, processed_at, occurred_at FROM unnest(");
        out.push_bind_param::<Array<Text>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.organization_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.integration_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.connector_types)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.event_types)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.delivery_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.payloads)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.statuses)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Timestamp>>, _>(&self.processed_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Timestamp>>, _>(&self.occurred_at)?;
        // unnest keeps the arrays' order: rows are inserted as the batch lists them.
        out.push_sql(
            ") AS batch(id, organization_id, integration_id, connector_type, event_type, \
             delivery_id, payload, status, processed_at, occurred_at) \
             ON CONFLICT (connector_type, delivery_id) DO NOTHING RETURNING id",
        );
        Ok(())
    }
}
