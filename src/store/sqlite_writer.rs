//! The SQLite inbox writer: one connection on a thread of its own that commits the
//! inbox's batches, and a second thread that makes each commit durable while the
//! writer is already on the next one.
//!
//! With `synchronous = FULL` SQLite syncs the WAL inside COMMIT, holding the write
//! lock, so the next batch waits for the disk as well. This connection commits with
//! `synchronous = NORMAL` (the WAL is written, not synced) and hands the commit to the
//! sync thread, which syncs the WAL file; one sync covers every commit made before it.
//! A write resolves only once its sync is done, so an acknowledged event still
//! survives a power cut. In WAL mode NORMAL never corrupts the database (SQLite syncs
//! the WAL before a checkpoint and the database after one); it only defers
//! durability, which the explicit sync restores.
//!
//! Under load neither thread sleeps between batches: the writer merges every write
//! queued while it was committing into its next transaction (a cross-thread wakeup
//! costs tens of microseconds on a busy virtual machine, more than an insert). One
//! connection also keeps its page cache warm, where pooled connections each re-read
//! the pages another had just written.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use diesel::SqliteConnection;
use diesel::connection::SimpleConnection;
use tokio::sync::oneshot;

use super::StoreError;

/// Most writes merged into one transaction.
const MERGED_WRITES: usize = 32;

/// One queued write: run inside the writer's transaction, then acknowledged once durable.
trait PendingWrite: Send {
    fn run(&mut self, conn: &mut SqliteConnection) -> Result<(), StoreError>;
    /// The transaction that held the write is over (committed or rolled back).
    fn transaction_over(&mut self);
    /// Acknowledges the write: `Ok` once the commit that holds it is on disk.
    fn finish(self: Box<Self>, outcome: Result<(), String>);
}

struct Queued<T, F, A> {
    write: Option<F>,
    written: Option<T>,
    transaction_over: Option<oneshot::Sender<()>>,
    acknowledge: A,
}

impl<T, F, A> PendingWrite for Queued<T, F, A>
where
    T: Send,
    F: FnOnce(&mut SqliteConnection) -> Result<T, StoreError> + Send,
    A: FnOnce(Result<T, StoreError>) + Send,
{
    fn run(&mut self, conn: &mut SqliteConnection) -> Result<(), StoreError> {
        if let Some(write) = self.write.take() {
            self.written = Some(write(conn)?);
        }
        Ok(())
    }

    fn transaction_over(&mut self) {
        if let Some(over) = self.transaction_over.take() {
            let _ = over.send(());
        }
    }

    fn finish(mut self: Box<Self>, outcome: Result<(), String>) {
        self.transaction_over();
        let answer = match (outcome, self.written) {
            (Ok(()), Some(written)) => Ok(written),
            (Ok(()), None) => Err(StoreError::Write("the write did not run".to_string())),
            (Err(error), _) => Err(StoreError::Write(error)),
        };
        (self.acknowledge)(answer);
    }
}

type Batch = Vec<Box<dyn PendingWrite>>;

/// Handle to the writer; both threads end when the last handle is dropped.
pub struct SqliteWriter {
    writes: mpsc::Sender<Box<dyn PendingWrite>>,
}

impl SqliteWriter {
    /// Starts the writer and WAL sync threads for the database at `path`; the
    /// connection opens on the first write (and again after a failure to open).
    pub fn start(path: PathBuf, busy: Duration) -> Result<Self, StoreError> {
        let (writes, queued) = mpsc::channel::<Box<dyn PendingWrite>>();
        let (committed, to_sync) = mpsc::channel::<Batch>();
        let wal = wal_path(&path);
        let spawn_failed = |e: std::io::Error| StoreError::Unreachable(e.to_string());
        std::thread::Builder::new()
            .name("sqlite-wal-sync".to_string())
            .spawn(move || sync_loop(&wal, to_sync))
            .map_err(spawn_failed)?;
        std::thread::Builder::new()
            .name("sqlite-writer".to_string())
            .spawn(move || write_loop(&path, busy, queued, committed))
            .map_err(spawn_failed)?;
        Ok(Self { writes })
    }

    /// Queues `write`, to run in a `BEGIN IMMEDIATE` transaction on the writer's
    /// connection (with other writes queued meanwhile: an error in any of them rolls
    /// back all). Writes commit in the order they were queued, which is this call's.
    ///
    /// `acknowledge` is called, on a thread of the writer's, once the commit is on
    /// disk or with the error that stopped it. The returned future resolves as soon
    /// as the transaction is over, before the sync: the moment to hand over the next
    /// write, which the writer then commits while this one is being synced.
    pub fn write<T, F, A>(
        &self,
        write: F,
        acknowledge: A,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, StoreError> + Send + 'static,
        A: FnOnce(Result<T, StoreError>) + Send + 'static,
    {
        let (over, transaction_over) = oneshot::channel();
        let queued = Box::new(Queued {
            write: Some(write),
            written: None,
            transaction_over: Some(over),
            acknowledge,
        });
        if let Err(mpsc::SendError(queued)) = self.writes.send(queued) {
            queued.finish(Err("the SQLite writer stopped".to_string()));
        }
        async move {
            let _ = transaction_over.await;
        }
    }
}

fn write_loop(
    path: &Path,
    busy: Duration,
    queued: mpsc::Receiver<Box<dyn PendingWrite>>,
    committed: mpsc::Sender<Batch>,
) {
    let mut conn: Option<SqliteConnection> = None;
    while let Ok(first) = queued.recv() {
        let mut batch: Batch = vec![first];
        batch.extend(queued.try_iter().take(MERGED_WRITES - 1));
        let outcome = match &mut conn {
            Some(conn) => Ok(conn),
            empty => open(path, busy).map(|opened| empty.insert(opened)),
        }
        .and_then(|conn| {
            conn.immediate_transaction(|conn| batch.iter_mut().try_for_each(|w| w.run(conn)))
        });
        for write in &mut batch {
            write.transaction_over();
        }
        match outcome {
            Ok(()) => {
                if let Err(mpsc::SendError(batch)) = committed.send(batch) {
                    finish_all(batch, Err("the WAL sync thread stopped".to_string()));
                }
            }
            Err(error) => finish_all(batch, Err(error.to_string())),
        }
    }
}

/// Syncs the WAL for every commit handed over meanwhile, then answers their writes.
fn sync_loop(wal: &Path, committed: mpsc::Receiver<Batch>) {
    while let Ok(first) = committed.recv() {
        let mut batches = vec![first];
        batches.extend(committed.try_iter());
        // Opened by path each time: fsync applies to the file whichever descriptor
        // it goes through, and a fresh open cannot hold on to a replaced WAL.
        let synced = std::fs::File::open(wal)
            .and_then(|file| file.sync_data())
            .map_err(|e| format!("syncing {}: {e}", wal.display()));
        for batch in batches {
            finish_all(batch, synced.clone());
        }
    }
}

fn finish_all(batch: Batch, outcome: Result<(), String>) {
    for write in batch {
        write.finish(outcome.clone());
    }
}

fn wal_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

fn open(path: &Path, busy: Duration) -> Result<SqliteConnection, StoreError> {
    let mut conn = super::open_sqlite(&path.to_string_lossy(), busy)
        .map_err(|e| StoreError::Unreachable(e.to_string()))?;
    conn.batch_execute("PRAGMA synchronous = NORMAL;")?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use diesel::prelude::*;
    use diesel::sql_types::BigInt;

    use super::*;
    use crate::store::open_sqlite;

    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    fn insert(n: i64) -> impl FnOnce(&mut SqliteConnection) -> Result<i64, StoreError> {
        move |conn| {
            diesel::sql_query("INSERT INTO log (n, at) VALUES (?, 'now')")
                .bind::<BigInt, _>(n)
                .execute(conn)?;
            Ok(n)
        }
    }

    /// Queues `write` now; the returned future answers once it is acknowledged.
    fn durably<T: Send + 'static>(
        writer: &SqliteWriter,
        write: impl FnOnce(&mut SqliteConnection) -> Result<T, StoreError> + Send + 'static,
    ) -> impl Future<Output = Result<T, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let transaction_over = writer.write(write, move |written| {
            let _ = reply.send(written);
        });
        drop(transaction_over);
        async move { answer.await.expect("every write is acknowledged") }
    }

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("writer.db");
        let mut conn = open_sqlite(&path.to_string_lossy(), Duration::from_secs(5)).unwrap();
        conn.batch_execute("CREATE TABLE log (seq INTEGER PRIMARY KEY, n BIGINT NOT NULL UNIQUE, at TEXT NOT NULL)")
            .unwrap();
        (dir, path)
    }

    /// What a fresh connection reads, in commit order.
    fn logged(path: &Path) -> Vec<i64> {
        let mut conn = open_sqlite(&path.to_string_lossy(), Duration::from_secs(5)).unwrap();
        diesel::sql_query("SELECT n FROM log ORDER BY seq")
            .load::<Row>(&mut conn)
            .unwrap()
            .into_iter()
            .map(|row| row.n)
            .collect()
    }

    #[tokio::test]
    async fn writes_commit_in_the_order_they_were_queued() {
        let (_dir, path) = setup();
        let writer = SqliteWriter::start(path.clone(), Duration::from_secs(5)).unwrap();
        // Queued all at once, awaited in reverse: the order is the queue's.
        let pending: Vec<_> = (0..500).map(|n| durably(&writer, insert(n))).collect();
        for (n, written) in pending.into_iter().enumerate().rev() {
            assert_eq!(written.await.unwrap(), n as i64);
        }
        drop(writer);
        assert_eq!(logged(&path), (0..500).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_failing_write_answers_its_error_stores_nothing_and_the_writer_goes_on() {
        let (_dir, path) = setup();
        let writer = SqliteWriter::start(path.clone(), Duration::from_secs(5)).unwrap();
        durably(&writer, insert(1)).await.unwrap();
        // Its first insert succeeds, its second breaks the unique constraint: both go.
        let failing = durably(&writer, |conn| {
            insert(2)(conn)?;
            insert(1)(conn)
        });
        let error = failing.await.unwrap_err();
        assert!(matches!(error, StoreError::Write(_)), "{error:?}");
        durably(&writer, insert(3)).await.unwrap();
        assert_eq!(logged(&path), vec![1, 3]);
    }

    #[tokio::test]
    async fn a_database_that_cannot_be_opened_answers_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-directory").join("writer.db");
        let writer = SqliteWriter::start(path, Duration::from_secs(5)).unwrap();
        for n in 0..3 {
            let error = durably(&writer, insert(n)).await.unwrap_err();
            assert!(matches!(error, StoreError::Write(_)), "{error:?}");
        }
        // The caller waiting for the transaction to be over is not left hanging either.
        writer.write(insert(3), |_| {}).await;
    }
}
