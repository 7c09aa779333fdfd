//! Leases for several nodes on one PostgreSQL: which nodes are alive, and which node
//! owns each integration (the lease-table pattern of River, Oban and Convoy).
//!
//! - A node heartbeats its row in `cluster_nodes`; one whose `expires_at` passed is
//!   gone.
//! - Each live integration has one row in `integration_leases`. A node claims free or
//!   expired rows (`FOR UPDATE SKIP LOCKED`, so two nodes never claim the same one),
//!   up to its fair share, and each claim adds one to the row's epoch.
//! - A node renews all of its leases in one statement; a lease missing from the
//!   answer was lost (it expired and another node may hold it now).
//! - A side effect is fenced by the `(node, epoch)` it started under: [`holds`] in
//!   the same transaction, with a share lock that keeps the lease from changing owner
//!   until the write commits.
//! - Every time is the database's clock (`now()`), never a node's: nodes' clocks drift,
//!   the database's is one.
//!
//! SQLite is one node's file: these functions refuse it.

use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::sql_types::{Array, BigInt, Double, Nullable, Text, Timestamp};
use diesel::{QueryableByName, sql_query};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::{Store, StoreError};

/// The channel nodes `NOTIFY` when leases are handed back, so the others claim them
/// at once instead of at their next renewal.
pub const LEASES_CHANNEL: &str = "switchboard_leases";

/// The database's clock, as the naive UTC the tables hold.
const NOW: &str = "(now() AT TIME ZONE 'UTC')";
/// Integrations that run an actor (and so have a lease).
const LIVE: &str = "i.status NOT IN ('pending', 'revoked')";

/// A lease held: the integration and the epoch it was claimed at.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Lease {
    #[diesel(sql_type = Text)]
    pub integration_id: String,
    #[diesel(sql_type = BigInt)]
    pub epoch: i64,
}

/// A live node, as the cluster sees it.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct Node {
    #[diesel(sql_type = Text)]
    pub node_id: String,
    #[diesel(sql_type = Text)]
    pub version: String,
    #[diesel(sql_type = Timestamp)]
    pub started_at: NaiveDateTime,
    #[diesel(sql_type = Timestamp)]
    pub heartbeat_at: NaiveDateTime,
    /// Seconds since its last heartbeat, by the database's clock.
    #[diesel(sql_type = Double)]
    pub heartbeat_age: f64,
    /// Leases it holds that have not expired.
    #[diesel(sql_type = BigInt)]
    pub leases: i64,
}

/// Who owns an integration.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Owner {
    #[diesel(sql_type = Nullable<Text>)]
    pub node_id: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub epoch: i64,
    #[diesel(sql_type = Timestamp)]
    pub expires_at: NaiveDateTime,
    /// Whether the lease is still in force (not expired, not handed back).
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub held: bool,
}

/// What a side effect was started under: the node and the lease's epoch then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence<'a> {
    pub node_id: &'a str,
    pub epoch: i64,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// A pooled PostgreSQL connection, or why there is none.
async fn connection(
    store: &Store,
) -> Result<diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>, StoreError> {
    match store {
        Store::Postgres { pool, .. } => Ok(pool.get().await?),
        Store::Sqlite { .. } => Err(StoreError::Conflict(
            "cluster mode needs PostgreSQL: a SQLite file belongs to one node".into(),
        )),
    }
}

/// Records that `node_id` is alive for `ttl` more (joining if it is new).
pub async fn heartbeat(
    store: &Store,
    node_id: &str,
    version: &str,
    ttl: Duration,
) -> Result<(), StoreError> {
    let mut conn = connection(store).await?;
    sql_query(format!(
        "INSERT INTO cluster_nodes (node_id, version, started_at, heartbeat_at, expires_at) \
         VALUES ($1, $2, {NOW}, {NOW}, {NOW} + $3 * interval '1 millisecond') \
         ON CONFLICT (node_id) DO UPDATE SET version = EXCLUDED.version, \
         heartbeat_at = EXCLUDED.heartbeat_at, expires_at = EXCLUDED.expires_at"
    ))
    .bind::<Text, _>(node_id)
    .bind::<Text, _>(version)
    .bind::<BigInt, _>(millis(ttl))
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// The nodes whose heartbeat has not expired, by id.
pub async fn live_nodes(store: &Store) -> Result<Vec<Node>, StoreError> {
    let mut conn = connection(store).await?;
    Ok(sql_query(format!(
        "SELECT n.node_id, n.version, n.started_at, n.heartbeat_at, \
         EXTRACT(EPOCH FROM ({NOW} - n.heartbeat_at))::float8 AS heartbeat_age, \
         (SELECT count(*) FROM integration_leases l \
          WHERE l.node_id = n.node_id AND l.expires_at > {NOW}) AS leases \
         FROM cluster_nodes n WHERE n.expires_at > {NOW} ORDER BY n.node_id"
    ))
    .load(&mut conn)
    .await?)
}

/// Gives every live integration a lease row (free) and drops the rows of revoked
/// ones: the number of live integrations.
pub async fn sync_leases(store: &Store) -> Result<i64, StoreError> {
    let mut conn = connection(store).await?;
    conn.transaction::<_, StoreError, _>(async |conn| {
        sql_query(format!(
            "INSERT INTO integration_leases (integration_id, node_id, epoch, expires_at) \
             SELECT i.id, NULL, 0, {NOW} FROM integrations i WHERE {LIVE} \
             ON CONFLICT (integration_id) DO NOTHING"
        ))
        .execute(conn)
        .await?;
        sql_query(format!(
            "DELETE FROM integration_leases l USING integrations i \
             WHERE i.id = l.integration_id AND NOT ({LIVE})"
        ))
        .execute(conn)
        .await?;
        let live: Count = sql_query("SELECT count(*) AS count FROM integration_leases")
            .get_result(conn)
            .await?;
        Ok(live.count)
    })
    .await
}

/// Claims up to `limit` free or expired leases for `node_id`, each for `ttl` and one
/// epoch more. Rows another node is claiming or fencing a write on are skipped.
pub async fn claim(
    store: &Store,
    node_id: &str,
    ttl: Duration,
    limit: i64,
) -> Result<Vec<Lease>, StoreError> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    let mut conn = connection(store).await?;
    Ok(sql_query(format!(
        "WITH free AS ( \
           SELECT l.integration_id FROM integration_leases l \
           JOIN integrations i ON i.id = l.integration_id AND {LIVE} \
           WHERE l.node_id IS NULL OR l.expires_at <= {NOW} \
           ORDER BY l.expires_at, l.integration_id \
           LIMIT $3 FOR UPDATE OF l SKIP LOCKED) \
         UPDATE integration_leases l SET node_id = $1, epoch = l.epoch + 1, \
           expires_at = {NOW} + $2 * interval '1 millisecond' \
         FROM free WHERE l.integration_id = free.integration_id \
         RETURNING l.integration_id, l.epoch"
    ))
    .bind::<Text, _>(node_id)
    .bind::<BigInt, _>(millis(ttl))
    .bind::<BigInt, _>(limit)
    .load(&mut conn)
    .await?)
}

/// Extends every lease `node_id` still holds by `ttl`, in one statement: the leases
/// held. One the node thought it held and is not here was lost.
pub async fn renew(store: &Store, node_id: &str, ttl: Duration) -> Result<Vec<Lease>, StoreError> {
    let mut conn = connection(store).await?;
    Ok(sql_query(format!(
        "UPDATE integration_leases SET expires_at = {NOW} + $2 * interval '1 millisecond' \
         WHERE node_id = $1 AND expires_at > {NOW} \
         RETURNING integration_id, epoch"
    ))
    .bind::<Text, _>(node_id)
    .bind::<BigInt, _>(millis(ttl))
    .load(&mut conn)
    .await?)
}

/// Hands `integration_ids` back (free at once) and tells the other nodes.
pub async fn release(
    store: &Store,
    node_id: &str,
    integration_ids: &[String],
) -> Result<usize, StoreError> {
    let mut conn = connection(store).await?;
    conn.transaction::<_, StoreError, _>(async |conn| {
        let released = sql_query(format!(
            "UPDATE integration_leases SET node_id = NULL, expires_at = {NOW} \
             WHERE node_id = $1 AND integration_id = ANY($2)"
        ))
        .bind::<Text, _>(node_id)
        .bind::<Array<Text>, _>(integration_ids)
        .execute(conn)
        .await?;
        notify(conn, node_id).await?;
        Ok(released)
    })
    .await
}

/// A graceful stop: every lease handed back, the node gone from the live ones, the
/// others told.
pub async fn leave(store: &Store, node_id: &str) -> Result<usize, StoreError> {
    let mut conn = connection(store).await?;
    conn.transaction::<_, StoreError, _>(async |conn| {
        let released = sql_query(format!(
            "UPDATE integration_leases SET node_id = NULL, expires_at = {NOW} WHERE node_id = $1"
        ))
        .bind::<Text, _>(node_id)
        .execute(conn)
        .await?;
        sql_query("DELETE FROM cluster_nodes WHERE node_id = $1")
            .bind::<Text, _>(node_id)
            .execute(conn)
            .await?;
        notify(conn, node_id).await?;
        Ok(released)
    })
    .await
}

/// `NOTIFY` the leases channel (delivered when the transaction commits).
async fn notify(conn: &mut AsyncPgConnection, node_id: &str) -> Result<(), StoreError> {
    sql_query("SELECT pg_notify($1, $2)")
        .bind::<Text, _>(LEASES_CHANNEL)
        .bind::<Text, _>(node_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// `NOTIFY channel, payload` outside any transaction.
pub async fn notify_channel(store: &Store, channel: &str, payload: &str) -> Result<(), StoreError> {
    let mut conn = connection(store).await?;
    sql_query("SELECT pg_notify($1, $2)")
        .bind::<Text, _>(channel)
        .bind::<Text, _>(payload)
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// Who owns `integration_id`, if it has a lease row.
pub async fn owner(store: &Store, integration_id: &str) -> Result<Option<Owner>, StoreError> {
    use diesel::OptionalExtension;
    let mut conn = connection(store).await?;
    Ok(sql_query(format!(
        "SELECT node_id, epoch, expires_at, (node_id IS NOT NULL AND expires_at > {NOW}) AS held \
         FROM integration_leases WHERE integration_id = $1"
    ))
    .bind::<Text, _>(integration_id)
    .get_result(&mut conn)
    .await
    .optional()?)
}

/// Whether `fence` still holds `integration_id`'s lease, checked inside the caller's
/// transaction: the share lock keeps the lease from changing owner until it commits,
/// so a write after a `true` is the owner's.
pub async fn holds(
    conn: &mut AsyncPgConnection,
    integration_id: &str,
    fence: Fence<'_>,
) -> Result<bool, StoreError> {
    let found: Count = sql_query(format!(
        "SELECT count(*) AS count FROM (SELECT 1 FROM integration_leases \
         WHERE integration_id = $1 AND node_id = $2 AND epoch = $3 AND expires_at > {NOW} \
         FOR SHARE) held"
    ))
    .bind::<Text, _>(integration_id)
    .bind::<Text, _>(fence.node_id)
    .bind::<BigInt, _>(fence.epoch)
    .get_result(conn)
    .await?;
    Ok(found.count > 0)
}

/// Inside a write's transaction: [`StoreError::Fenced`] unless `fence` still holds
/// `integration_id`'s lease (which [`holds`] then keeps until the commit).
async fn ensure_held(
    conn: &mut AsyncPgConnection,
    integration_id: &str,
    fence: Fence<'_>,
) -> Result<(), StoreError> {
    if holds(conn, integration_id, fence).await? {
        Ok(())
    } else {
        Err(StoreError::Fenced(integration_id.to_string()))
    }
}

/// Marks the integration's processed events `done`, fenced.
pub async fn mark_done(
    store: &Store,
    integration_id: &str,
    fence: Fence<'_>,
    ids: &[String],
) -> Result<(), StoreError> {
    use super::schema::events;
    use diesel::{ExpressionMethods, QueryDsl};
    let at = super::now();
    let mut conn = connection(store).await?;
    conn.transaction::<_, StoreError, _>(async |conn| {
        ensure_held(conn, integration_id, fence).await?;
        diesel::update(events::table.filter(events::id.eq_any(ids)))
            .set(super::events::done_changes(at))
            .execute(conn)
            .await?;
        Ok(())
    })
    .await
}

/// Records a failed attempt of event `id`: a retry at `next_attempt_at`, or `dead`
/// without one. Fenced.
pub async fn mark_failed(
    store: &Store,
    integration_id: &str,
    fence: Fence<'_>,
    id: &str,
    attempts: i32,
    error: &str,
    next_attempt_at: Option<NaiveDateTime>,
) -> Result<(), StoreError> {
    use super::schema::events;
    use diesel::QueryDsl;
    let mut conn = connection(store).await?;
    conn.transaction::<_, StoreError, _>(async |conn| {
        ensure_held(conn, integration_id, fence).await?;
        diesel::update(events::table.find(id))
            .set(super::events::failed_changes(
                attempts,
                error,
                next_attempt_at,
            ))
            .execute(conn)
            .await?;
        Ok(())
    })
    .await
}

/// Saves a poll cursor (the whole row), fenced.
pub async fn save_cursor(
    store: &Store,
    fence: Fence<'_>,
    row: &super::poll_cursors::PollCursor,
) -> Result<(), StoreError> {
    use super::schema::poll_cursors;
    use diesel::ExpressionMethods;
    let mut conn = connection(store).await?;
    conn.transaction::<_, StoreError, _>(async |conn| {
        ensure_held(conn, &row.integration_id, fence).await?;
        diesel::insert_into(poll_cursors::table)
            .values(row)
            .on_conflict((poll_cursors::integration_id, poll_cursors::stream))
            .do_update()
            .set((
                poll_cursors::cursor.eq(&row.cursor),
                poll_cursors::last_polled_at.eq(row.last_polled_at),
                poll_cursors::next_poll_at.eq(row.next_poll_at),
                poll_cursors::last_error.eq(&row.last_error),
            ))
            .execute(conn)
            .await?;
        Ok(())
    })
    .await
}

/// Replaces an integration's credentials (already sealed by the vault), fenced.
pub async fn replace_credentials(
    store: &Store,
    organization_id: &str,
    integration_id: &str,
    fence: Fence<'_>,
    credentials: Vec<super::integrations::NewCredential>,
) -> Result<(), StoreError> {
    use super::schema::{integration_credentials, integrations};
    use diesel::{ExpressionMethods, QueryDsl};
    let rows = super::integrations::credential_rows(organization_id, integration_id, credentials);
    let mut conn = connection(store).await?;
    conn.transaction::<_, StoreError, _>(async |conn| {
        ensure_held(conn, integration_id, fence).await?;
        diesel::update(integrations::table.find(integration_id))
            .set(integrations::updated_at.eq(super::now()))
            .execute(conn)
            .await?;
        diesel::delete(
            integration_credentials::table
                .filter(integration_credentials::integration_id.eq(integration_id)),
        )
        .execute(conn)
        .await?;
        diesel::insert_into(integration_credentials::table)
            .values(&rows)
            .execute(conn)
            .await?;
        Ok(())
    })
    .await
}

/// How many leases a node should hold: its share of the live integrations, rounded
/// up, plus `leeway`.
pub fn fair_share(integrations: i64, nodes: i64, leeway: i64) -> i64 {
    if nodes <= 0 {
        return integrations;
    }
    (integrations + nodes - 1) / nodes + leeway
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fair_share_rounds_up_and_leaves_slack() {
        assert_eq!(fair_share(300, 3, 0), 100);
        assert_eq!(fair_share(301, 3, 0), 101);
        assert_eq!(fair_share(300, 4, 2), 77);
        assert_eq!(fair_share(5, 0, 1), 5);
    }
}
