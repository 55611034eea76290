//! Bulk loads: the secondary indexes an import may leave out and build afterwards.
//!
//! Why: an imported row lands at a random place in the email (or domain) index. Once that
//! index outgrows the writer's cache, every row reads and rewrites a leaf (with the two phone
//! indexes that migration 0009 moved into memory, about three leaves: 13k rows/s at 10M).
//! Appending the rows to their tables and then building each index in one sorted pass
//! (SQLite's `CREATE INDEX` sorts, then writes leaves in order) costs a few microseconds per
//! row, whatever the size.
//!
//! A load that defers its index also holds the database alone (the lock below), so it writes
//! through one connection with a rollback journal instead of the WAL ([`BulkWriter`]): the WAL
//! wrote every page twice, once appended and once copied back by a checkpoint, and an
//! appending load's pages are new, so a rollback journal holds almost nothing.
//!
//! The server cannot run without these indexes (`INDEXED BY` in the idProperty reads), so:
//! - an import drops them only while it holds the database's lock file exclusively, which it
//!   cannot while a server is running on the file (the server holds it shared);
//! - a server waits for that lock at start, then builds any index that is missing, so an import
//!   that was killed half-way never leaves a server without them. The import, resumed, builds
//!   them too.

use std::fs::{File, TryLockError};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::sqlite_direct::{self, ImportJob, JobThread};
use super::{ObjectType, StoreError, StoreResult};

/// The indexes a bulk load defers, as migration 0007 creates them, and the type whose rows they
/// hold. The text is the migration's own, so the planner's partial-index matching sees the same
/// index again.
pub const DEFERRABLE: &[(&str, ObjectType, &str)] = &[
    (
        "objects_email",
        ObjectType::Contact,
        "CREATE INDEX objects_email ON objects(portal_id, json_extract(properties, '$.email'))\n    WHERE object_type = '0-1'",
    ),
    (
        "objects_domain",
        ObjectType::Company,
        "CREATE INDEX objects_domain ON objects(portal_id, json_extract(properties, '$.domain'))\n    WHERE object_type = '0-2'",
    ),
];

/// The lock file beside the database: shared by a running server, exclusive for an import
/// whose indexes are dropped.
pub fn lock_file(db: &str) -> StoreResult<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(format!("{db}-switchboard.lock"))
        .map_err(|e| StoreError::Corrupt(format!("cannot open {db}-switchboard.lock: {e}")))
}

/// Takes the lock exclusively if nobody holds it; `None` when a server does.
pub fn try_exclusive(db: &str) -> StoreResult<Option<File>> {
    let file = lock_file(db)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(StoreError::Corrupt(format!("lock file: {e}"))),
    }
}

/// Takes the lock shared, waiting while an import holds it exclusively.
pub fn shared(db: &str) -> StoreResult<File> {
    let file = lock_file(db)?;
    match file.try_lock_shared() {
        Ok(()) => return Ok(file),
        Err(TryLockError::WouldBlock) => {
            tracing::warn!(
                "an import is loading this database without its indexes; waiting for it to build them"
            );
        }
        Err(TryLockError::Error(e)) => {
            return Err(StoreError::Corrupt(format!("lock file: {e}")));
        }
    }
    file.lock_shared()
        .map_err(|e| StoreError::Corrupt(format!("lock file: {e}")))?;
    Ok(file)
}

/// Drops, in one transaction, the deferrable index that rows of type `ty` go into. The other
/// would cost nothing to keep (a partial index skips other types' rows) and a full scan to
/// build again.
pub fn drop_indexes(conn: &Connection, ty: ObjectType) -> StoreResult<()> {
    let mut sql = String::from("BEGIN IMMEDIATE;");
    for (name, of, _) in DEFERRABLE {
        if *of == ty {
            sql.push_str(&format!("DROP INDEX IF EXISTS {name};"));
        }
    }
    sql.push_str("COMMIT;");
    conn.execute_batch(&sql)?;
    Ok(())
}

/// The page cache of the connection that builds indexes, in KiB, which is also how much the
/// sorter holds in memory before it hands a run to a helper thread to sort and write out. Small
/// on purpose: with 256 MiB every key fit, and the scan and the one big sort ran in turn on one
/// thread; with 8 MiB the helper sorts each run while the scan goes on (1M contacts, the email
/// and E.164 builds: 1.09 s and 0.70 s against 2.35 s and 1.36 s). With 2 MiB the runs are
/// smaller still and each sorts within the CPU's caches: the email build took 0.55–0.60 s
/// against 0.68–0.80 s at 1M (three runs each; 32 MiB: 1.02–1.11 s, 1 MiB and 512 KiB no
/// better than 2), and 6.6 s against 7.9 s at 10M.
const BUILD_CACHE_KIB: i64 = -2048;

/// Builds every deferrable index that is missing, each in its own transaction; returns their
/// names and how long each took.
pub fn build_missing(db: &str) -> StoreResult<Vec<(&'static str, Duration)>> {
    let conn = Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(60))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", BUILD_CACHE_KIB)?;
    // Helper threads for the sorter: each sorts and writes a run, and merges them.
    conn.pragma_update(None, "threads", 2)?;
    let mut built = Vec::new();
    for (name, _, create) in DEFERRABLE {
        let exists: bool = conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'index' AND name = ?1",
            [name],
            |r| r.get(0),
        )?;
        if !exists {
            let t = Instant::now();
            conn.execute_batch(create)?;
            built.push((*name, t.elapsed()));
        }
    }
    Ok(built)
}

/// A batch for the bulk writer, and where its ids go.
type BulkJob = (ImportJob, oneshot::Sender<StoreResult<Vec<i64>>>);

/// The one connection of a bulk load that holds the database alone, on a thread of its own:
/// every other connection of the process is closed first, because SQLite leaves WAL mode only
/// for a connection that has the file to itself.
///
/// Why a rollback journal: in WAL mode every page went to the WAL and was copied into the
/// database file by a checkpoint, and the copy ran on the writer between batches. An appending
/// load writes new pages, which a rollback journal does not hold, so each page is written
/// once. At 1M rows the checkpoints and WAL frames were 12 % of the import's CPU. Each commit
/// syncs the journal and the file (`synchronous=FULL`), so a committed batch and its checkpoint
/// are on disk as before, and a load killed mid-batch leaves a hot journal that the next
/// connection to open the file rolls back.
pub struct BulkWriter {
    jobs: JobThread<BulkJob>,
    /// Whether the file left WAL mode. Another process with the file open (a reader, say) keeps
    /// it in WAL mode; the load then works as before, with SQLite's own checkpoints.
    pub rollback: bool,
}

impl BulkWriter {
    pub fn open(path: &str) -> StoreResult<Self> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "cache_size", sqlite_direct::APPEND_CACHE_KIB)?;
        // Without waiting: a connection elsewhere holds the file, and the load stays in WAL.
        conn.busy_timeout(Duration::ZERO)?;
        let mode = conn.query_row("PRAGMA journal_mode = TRUNCATE", [], |r| {
            r.get::<_, String>(0)
        });
        let rollback = matches!(&mode, Ok(m) if m.eq_ignore_ascii_case("truncate"));
        conn.busy_timeout(Duration::from_secs(10))?;
        let jobs = JobThread::spawn(
            "bulk writer",
            "sqlite-bulk",
            move |rx: mpsc::Receiver<BulkJob>| {
                for (job, reply) in rx {
                    let _ = reply.send(sqlite_direct::import_batch(&mut conn, &job));
                }
            },
        )?;
        Ok(BulkWriter { jobs, rollback })
    }

    pub async fn import_batch(&self, job: ImportJob) -> StoreResult<Vec<i64>> {
        self.jobs.run(|reply| (job, reply)).await
    }

    /// Finishes the batches already sent and closes the connection.
    pub fn close(&self) {
        self.jobs.close();
    }
}

/// Puts the file back in WAL mode after a bulk load, once its connection is closed.
pub fn restore_wal(db: &str) -> StoreResult<()> {
    let conn = Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(60))?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))?;
    Ok(())
}
