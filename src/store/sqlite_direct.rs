//! The paths that run while a phone rings, on rusqlite connections instead of sqlx's.
//!
//! Why: sqlx runs every SQLite connection on a worker thread of its own, so each statement is a
//! round trip between threads, and on these VMs one costs 50–60 µs (`../shared/docs/stack.md`).
//! A caller-ID lookup that found no cached record paid one; a batch of logged calls paid eight,
//! and waited for a pool connection behind readers. Here:
//!
//! - a read runs on the calling thread, on a connection of that thread's own: a primary-key
//!   read of a page in memory takes microseconds, less than the hop it replaces;
//! - writes that must be fast (call batches, import batches) go to one writer thread that owns
//!   its connection and runs the whole transaction there: one hop per batch. Call batches
//!   queued behind one another share a transaction, and a syncer thread syncs the WAL beside
//!   the writer (`group_commit.rs`). A bulk load that holds the file alone writes through a
//!   connection of its own instead, without the WAL (`bulk.rs`);
//! - a checkpointer thread copies the WAL back into the database file beside the writer, so a
//!   checkpoint is not part of any caller's wait (see [`CHECKPOINT_PAGES`]).
//!
//! Every connection uses the same file and WAL as the sqlx pool, with `synchronous=FULL` except
//! the writer's (`NORMAL`: nothing it commits is acknowledged before the syncer's sync), and
//! every write transaction here starts with `BEGIN IMMEDIATE`, so it never fails half-way on a
//! lock.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::ffi::c_int;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::hooks::Wal;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::call_links::{self, CallLinks, Link};
use super::group_commit::{SyncCounters, Syncer};
use super::sqlite::{
    PENDING_IMPORT, PENDING_INTEGRATION, history_changes, history_source, pending_source,
    props_json, record_columns, values_sql,
};
use super::*;

const RECORD_BY_ID: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM objects WHERE id = ?1 AND portal_id = ?2"
);

/// A new record whose history is its first properties (`history_pending`), as calls and
/// imported rows are written.
const INSERT_PENDING_RECORD: &str = "INSERT INTO objects (id, portal_id, object_type, properties, created_at, updated_at, history_pending)
     VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)";

/// Page cache per connection, in KiB (negative, as SQLite takes it). Small on purpose: SQLite
/// empties a reader's cache whenever another connection has committed. The writer's cache used
/// to be walked whole at every commit (a 64 MiB cache took a quarter of the writer's time);
/// `pcache.rs` removed that walk, and then 64 MiB logged no faster than 8 MiB (5.8–5.0k against
/// 5.9–5.3k calls/s at 100k contacts). The OS page cache holds the file.
/// Readers too: at 1M contacts, 32 and 128 MiB reader caches left lookups where they were
/// (29–30k req/s) and the 128 MiB one cost logging 15 %.
pub(super) const CACHE_KIB: i64 = -8192;

/// Readers' page cache, in KiB. SQLite empties a reader's cache at its first read after
/// another connection commits, which while calls are logged is every read, so a reader keeps
/// almost nothing; emptying a small cache is cheap.
const READER_CACHE_KIB: i64 = -512;

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", CACHE_KIB)?;
    Ok(())
}

thread_local! {
    /// One read connection per thread and database file. Tokio's worker threads live as long as
    /// the runtime, so these are opened once per worker.
    static READERS: RefCell<HashMap<String, Connection>> = RefCell::new(HashMap::new());
}

/// Runs `f` on this thread's read connection to `path`, opening it on first use.
fn with_reader<T>(path: &str, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
    READERS.with(|readers| {
        let mut readers = readers.borrow_mut();
        if !readers.contains_key(path) {
            let conn = Connection::open(path)?;
            configure(&conn)?;
            conn.pragma_update(None, "query_only", "ON")?;
            conn.pragma_update(None, "cache_size", READER_CACHE_KIB)?;
            // No mmap: SQLite unmaps a reader's whole mapping at the first read after any
            // commit by another connection, so while calls were being logged every lookup
            // faulted its pages back in, with a TLB shootdown per unmap: 15 % of the server's
            // CPU, and 25 % less logging throughput. A pread per page costs less than that.
            readers.insert(path.to_string(), conn);
        }
        f(&readers[path])
    })
}

/// Reads records by id on the calling thread. Only committed data is visible, as from any
/// other connection, so the caller-ID cards' epoch check works the same as with the pool.
pub fn records_by_ids(path: &str, portal_id: i64, ids: &[i64]) -> StoreResult<Vec<Record>> {
    with_reader(path, |conn| {
        let mut stmt = conn.prepare_cached(RECORD_BY_ID)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(r) = stmt
                .query_row(params![id, portal_id], record_from_row)
                .optional()?
            {
                out.push(r?);
            }
        }
        Ok(out)
    })
}

/// A record's live associations to records of one type; inbound-call reads a contact's
/// companies on every logged call.
pub fn associations(
    path: &str,
    portal_id: i64,
    from_id: i64,
    to_type: ObjectType,
) -> StoreResult<Vec<Association>> {
    with_reader(path, |conn| {
        let mut stmt = conn.prepare_cached(
            "SELECT a.from_id, a.to_id, a.type_id, a.category, a.from_type
             FROM associations a JOIN objects o ON o.id = a.to_id
             WHERE a.from_id = ?1 AND a.to_type = ?2 AND a.portal_id = ?3 AND o.archived = 0
             ORDER BY a.to_id, a.type_id",
        )?;
        let rows = stmt.query_map(params![from_id, to_type.type_id(), portal_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (from_id, to_id, type_id, category, from_type) = row?;
            out.push(Association {
                from_id,
                from_type: ObjectType::from_type_id(&from_type)
                    .ok_or_else(|| StoreError::Corrupt(format!("object type {from_type}")))?,
                to_id,
                to_type,
                category,
                type_id,
            });
        }
        Ok(out)
    })
}

/// Whether a record is live in the portal: what the reads of a record's calls check each call
/// for, as their SQL join with `objects` did.
const LIVE_RECORD: &str = "SELECT 1 FROM objects WHERE id = ?1 AND portal_id = ?2 AND archived = 0";

/// Which of `ids` are live records of the portal: the map of `call_links.rs` names a record's
/// calls, and this is the join with `objects` that the SQL read of them had.
pub fn live_ids(path: &str, portal_id: i64, ids: &[i64]) -> StoreResult<HashSet<i64>> {
    with_reader(path, |conn| {
        let mut stmt = conn.prepare_cached(LIVE_RECORD)?;
        let mut out = HashSet::new();
        for &id in ids {
            if stmt.exists(params![id, portal_id])? {
                out.insert(id);
            }
        }
        Ok(out)
    })
}

/// Each record's highest live call among `candidates` (a record and its calls, highest first).
/// Call ids grow in the order calls are logged, so this is its most recent call; the first
/// live one ends the search.
pub fn latest_calls(
    path: &str,
    portal_id: i64,
    candidates: &[(i64, Vec<i64>)],
) -> StoreResult<Vec<(i64, i64)>> {
    with_reader(path, |conn| {
        let mut stmt = conn.prepare_cached(LIVE_RECORD)?;
        let mut out = Vec::with_capacity(candidates.len());
        for (record, calls) in candidates {
            for &call in calls {
                if stmt.exists(params![call, portal_id])? {
                    out.push((*record, call));
                    break;
                }
            }
        }
        Ok(out)
    })
}

/// Every call's row of a call association (`call_links.rs`), in key order: what the map of
/// records' calls is built from when the store opens. On a connection of its own rather than the
/// thread's reader, which would stay open on whichever thread opened the store (a bulk load
/// needs every connection closed, `bulk::BulkWriter`).
pub fn call_link_rows(path: &str, mut each: impl FnMut(Link)) -> StoreResult<()> {
    let conn = Connection::open(path)?;
    configure(&conn)?;
    conn.pragma_update(None, "query_only", "ON")?;
    {
        let mut stmt = conn.prepare(
            "SELECT from_id, to_id, to_type, category FROM associations WHERE from_type = '0-48'",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let to_type: String = r.get(2)?;
            let category: String = r.get(3)?;
            let (record, call): (i64, i64) = (r.get(1)?, r.get(0)?);
            let link = ObjectType::from_type_id(&to_type)
                .and_then(|ty| Link::new(record, ty, call, &category));
            if let Some(link) = link {
                each(link);
            }
        }
    }
    Ok(())
}

/// A page of phone rows in key order, reduced to integers for the caller-ID index. Read here
/// rather than through sqlx, whose per-row decoding by column name made start-up at 10M
/// contacts take a minute.
pub fn index_rows(
    path: &str,
    after: Option<(i64, String)>,
    limit: i64,
) -> StoreResult<Vec<IndexRow>> {
    let (after_id, after_prop) = after.unwrap_or((i64::MIN, String::new()));
    with_reader(path, |conn| {
        let mut stmt = conn.prepare_cached(
            "SELECT portal_id, object_id,
                    CASE object_type WHEN '0-1' THEN 0 WHEN '0-2' THEN 1 ELSE 2 END,
                    CASE property WHEN 'phone' THEN 0 WHEN 'mobilephone' THEN 1
                                  WHEN 'hs_whatsapp_phone_number' THEN 2 ELSE 3 END,
                    CAST(substr(e164, 2) AS INTEGER), national_key, extension,
                    source = 'default'
             FROM phones WHERE (object_id, property) > (?1, ?2)
             ORDER BY object_id, property LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![after_id, after_prop, limit], |r| {
            Ok(IndexRow {
                portal_id: r.get(0)?,
                object_id: r.get(1)?,
                object_type: match r.get::<_, i64>(2)? {
                    0 => ObjectType::Contact,
                    1 => ObjectType::Company,
                    _ => ObjectType::Call,
                },
                property: r.get::<_, i64>(3)? as u8,
                e164_key: r.get(4)?,
                national_key: r.get(5)?,
                extension: r.get(6)?,
                guessed: r.get::<_, Option<bool>>(7)?.unwrap_or(false),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    })
}

/// A page of live contacts and companies in id order, for the caller-ID cards.
pub fn card_rows(path: &str, after: i64, limit: i64) -> StoreResult<Vec<CardRow>> {
    with_reader(path, |conn| {
        let mut stmt = conn.prepare_cached(
            "SELECT id, portal_id, object_type = '0-2', updated_at, properties FROM objects
             WHERE id > ?1 AND archived = 0 AND object_type IN ('0-1', '0-2')
             ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit], |r| {
            Ok(CardRow {
                id: r.get(0)?,
                portal_id: r.get(1)?,
                object_type: if r.get::<_, bool>(2)? {
                    ObjectType::Company
                } else {
                    ObjectType::Contact
                },
                updated_at: r.get(3)?,
                properties_json: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    })
}

fn record_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoreResult<Record>> {
    let ty: String = row.get(1)?;
    let props: String = row.get(2)?;
    let Some(object_type) = ObjectType::from_type_id(&ty) else {
        return Ok(Err(StoreError::Corrupt(format!("object type {ty}"))));
    };
    let properties = match serde_json::from_str(&props) {
        Ok(p) => p,
        Err(e) => return Ok(Err(StoreError::Corrupt(format!("properties: {e}")))),
    };
    Ok(Ok(Record {
        id: row.get(0)?,
        object_type,
        properties,
        created_at: row.get(3)?,
        updated_at: row.get(4)?,
        archived: row.get::<_, i64>(5)? != 0,
        archived_at: row.get(6)?,
    }))
}

/// WAL pages after which, and then every so many new pages, the writer asks the checkpointer
/// thread to copy the WAL back into the database file (waking it after every commit instead
/// cost 7 % of logging throughput in database-file syncs). The checkpoint runs beside the
/// writer, not inside a commit: when SQLite's automatic checkpoint ran inside the commit that
/// crossed it, every caller of that batch waited for the copy and the database file's sync
/// (4 ms at the median, 8 ms at p90, for about 670 pages), and the logging p99 at half rate
/// was 6–7 ms. With the checkpointer it was 3.9 ms at 1M contacts, for the same throughput.
const CHECKPOINT_PAGES: i32 = 100;

/// WAL pages after which the writer checkpoints itself before its next batch. A checkpoint
/// beside a busy writer seldom catches up with it, and SQLite only restarts the WAL from its
/// start once everything in it is copied, so without this the WAL would grow for as long as
/// calls kept coming. Between two of its own transactions the writer can copy all of it. The
/// batch after it waits for the copy: at 4,000 pages that was a 20 ms stall and a saturated
/// logging p99 of 20 ms at 100k contacts; at 1,000 it was 5.7 ms, and throughput rose by half.
const CHECKPOINT_LIMIT_PAGES: i32 = 1000;

thread_local! {
    /// Pages in the WAL after the writer's last commit, from SQLite's WAL hook.
    static WAL_PAGES: Cell<i32> = const { Cell::new(0) };
}

fn note_wal_pages(_: &Wal, pages: c_int) -> rusqlite::Result<()> {
    WAL_PAGES.set(pages);
    Ok(())
}

/// How far a checkpoint got.
enum Copied {
    /// The whole WAL is in the database file: the next write transaction restarts it.
    All,
    /// Some frames are left, which a reader may still need; a later checkpoint copies them.
    Part,
    /// The other thread was checkpointing, so this one did nothing.
    Busy,
}

/// Copies the WAL back into the database file. PASSIVE, as SQLite's own automatic checkpoint:
/// it never waits, and copies what no reader still needs. When the other thread is already
/// checkpointing, this one returns at once (the pragma reports busy rather than failing).
fn checkpoint(conn: &Connection) -> Copied {
    let row = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    match row {
        Ok((0, log, copied)) if copied >= log => Copied::All,
        Ok((0, _, _)) => Copied::Part,
        Ok(_) => Copied::Busy,
        Err(e) => {
            tracing::warn!(error = %e, "WAL checkpoint failed; the next one retries");
            Copied::Part
        }
    }
}

/// The writer's own checkpoint once the WAL passes [`CHECKPOINT_LIMIT_PAGES`]. While the
/// checkpointer thread is copying, the writer waits for it (up to a second) and checkpoints
/// again, rather than take the busy answer for done: the writer commits without syncing, so the
/// checkpointer's copy starts with syncing the WAL and takes long enough that a writer which
/// went on at once found it busy at every limit, the WAL never restarted, and a 10M-row import
/// filled the disk with a 60 GB WAL. The count is kept until a checkpoint copies everything.
fn checkpoint_at_limit(conn: &Connection) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match checkpoint(conn) {
            Copied::All => return WAL_PAGES.set(0),
            Copied::Busy if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Copied::Busy | Copied::Part => return,
        }
    }
}

/// A batch of imported rows and where it ends in the file.
pub struct ImportJob {
    pub portal_id: i64,
    pub object_type: ObjectType,
    pub rows: Vec<ImportRow>,
    pub job: String,
    pub line: u64,
    pub now: i64,
}

enum Job {
    /// The call, where its answer goes, and when it was handed over.
    LogCall(CallLog, CallReply, Instant),
    Import(ImportJob, oneshot::Sender<StoreResult<Vec<i64>>>),
}

/// The writer thread. Dropping the last sender (see [`Writer::close`]) ends it.
pub struct Writer {
    jobs: JobThread<Job>,
    stats: Arc<BatchCounters>,
}

/// [`CallBatchStats`] as the writer thread adds to them.
#[derive(Default)]
struct BatchCounters {
    batches: AtomicU64,
    calls: AtomicU64,
    statement_micros: AtomicU64,
    commit_micros: AtomicU64,
    wal_pages: AtomicU64,
    sync: Arc<SyncCounters>,
    /// Per call, summed (see [`CallBatchStats`]).
    queue_micros: AtomicU64,
    transaction_micros: AtomicU64,
    sync_wait_micros: AtomicU64,
    total_micros: AtomicU64,
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

impl BatchCounters {
    fn add(&self, calls: usize, started: Instant, committing: Instant, pages: u64) {
        let done = Instant::now();
        if done - started > super::group_commit::SLOW {
            tracing::warn!(
                calls,
                ms = (done - started).as_millis() as u64,
                "slow call batch: each of its callers waited this long before its sync"
            );
        }
        self.batches.fetch_add(1, Relaxed);
        self.calls.fetch_add(calls as u64, Relaxed);
        self.statement_micros
            .fetch_add(micros(committing - started), Relaxed);
        self.commit_micros
            .fetch_add(micros(done - committing), Relaxed);
        self.wal_pages.fetch_add(pages, Relaxed);
        self.transaction_micros
            .fetch_add(micros(done - started) * calls as u64, Relaxed);
    }
}

impl Writer {
    pub fn open(path: &str, links: Arc<CallLinks>) -> StoreResult<Self> {
        let mut conn = Connection::open(path)?;
        configure(&conn)?;
        // The WAL hook replaces SQLite's automatic checkpoint, which ran inside the commit.
        conn.wal_hook(Some(note_wal_pages));
        let checkpointer = Connection::open(path)?;
        configure(&checkpointer)?;
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let checkpointer = std::thread::Builder::new()
            .name("sqlite-checkpointer".into())
            .spawn(move || {
                for () in woken {
                    let _ = checkpoint(&checkpointer);
                }
            })
            .map_err(|e| StoreError::Corrupt(format!("cannot start the checkpointer: {e}")))?;
        // Commits leave the sync to the syncer thread (`group_commit.rs`); checkpoints still
        // sync the WAL before copying it and the database file after.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let stats = Arc::new(BatchCounters::default());
        // The WAL exists once a connection has read the database in WAL mode.
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })?;
        let wal = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("{path}-wal"))
            .map_err(|e| StoreError::Corrupt(format!("cannot open the WAL: {e}")))?;
        let syncer = Syncer::start(wal, stats.sync.clone())?;
        let counters = stats.clone();
        let jobs = JobThread::spawn("writer thread", "sqlite-writer", move |rx| {
            let mut woken_at = 0;
            let mut next: Option<Job> = None;
            while let Some(job) = next.take().or_else(|| rx.recv().ok()) {
                if WAL_PAGES.get() >= CHECKPOINT_LIMIT_PAGES {
                    checkpoint_at_limit(&conn);
                }
                match job {
                    Job::LogCall(call, reply, queued) => {
                        let mut calls = vec![(call, reply)];
                        let mut queued_micros = micros(queued.elapsed());
                        // Every call queued behind the last transaction joins this one.
                        while calls.len() < MAX_MERGED_CALLS {
                            match rx.try_recv() {
                                Ok(Job::LogCall(call, reply, queued)) => {
                                    queued_micros += micros(queued.elapsed());
                                    calls.push((call, reply));
                                }
                                Ok(other) => {
                                    next = Some(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        counters.queue_micros.fetch_add(queued_micros, Relaxed);
                        log_merged(&mut conn, calls, &counters, &syncer, &links);
                    }
                    Job::Import(job, reply) => match conn
                        .pragma_update(None, "cache_size", IMPORT_CACHE_KIB)
                        .map_err(StoreError::from)
                        .and_then(|()| import_batch(&mut conn, &job))
                    {
                        Ok(ids) => syncer.after_sync(Box::new(move |synced| {
                            let _ = reply.send(synced.map(|()| ids).map_err(StoreError::Corrupt));
                        })),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    },
                }
                // Wake the checkpointer for every CHECKPOINT_PAGES new pages, not after every
                // commit: each checkpoint ends with a sync of the database file.
                let pages = WAL_PAGES.get();
                if pages < woken_at {
                    woken_at = 0; // the WAL restarted from its start
                }
                if pages >= woken_at + CHECKPOINT_PAGES && wake.try_send(()).is_ok() {
                    woken_at = pages;
                }
            }
            drop(wake);
            let _ = checkpointer.join();
            syncer.close();
        })?;
        Ok(Writer { jobs, stats })
    }

    pub fn call_batch_stats(&self) -> CallBatchStats {
        let s = &self.stats;
        CallBatchStats {
            batches: s.batches.load(Relaxed),
            calls: s.calls.load(Relaxed),
            statement_micros: s.statement_micros.load(Relaxed),
            commit_micros: s.commit_micros.load(Relaxed),
            wal_pages: s.wal_pages.load(Relaxed),
            syncs: s.sync.syncs.load(Relaxed),
            sync_micros: s.sync.micros.load(Relaxed),
            call_queue_micros: s.queue_micros.load(Relaxed),
            call_transaction_micros: s.transaction_micros.load(Relaxed),
            call_sync_wait_micros: s.sync_wait_micros.load(Relaxed),
            call_total_micros: s.total_micros.load(Relaxed),
        }
    }

    pub async fn log_call(&self, call: CallLog) -> StoreResult<CallLogged> {
        let handed = Instant::now();
        let logged = self
            .jobs
            .run(|reply| Job::LogCall(call, reply, handed))
            .await?;
        self.stats
            .total_micros
            .fetch_add(micros(handed.elapsed()), Relaxed);
        Ok(logged)
    }

    pub async fn import_batch(&self, job: ImportJob) -> StoreResult<Vec<i64>> {
        self.jobs.run(|reply| Job::Import(job, reply)).await
    }

    /// Finishes the jobs already sent, then closes the connection.
    pub fn close(&self) {
        self.jobs.close();
    }
}

/// A thread that owns a connection and runs the jobs sent to it, each carrying where its
/// answer goes: the call writer, and a bulk load's writer (`bulk.rs`). Closing drops the
/// sender, which ends the thread's loop once the jobs already sent are done.
pub(super) struct JobThread<J> {
    /// What the thread is, for errors.
    what: &'static str,
    tx: Mutex<Option<mpsc::Sender<J>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<J: Send + 'static> JobThread<J> {
    pub(super) fn spawn(
        what: &'static str,
        name: &str,
        body: impl FnOnce(mpsc::Receiver<J>) + Send + 'static,
    ) -> StoreResult<Self> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(rx))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the {what}: {e}")))?;
        Ok(JobThread {
            what,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Sends the job `make` builds around its reply channel and waits for the answer.
    pub(super) async fn run<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> J,
    ) -> StoreResult<T> {
        let (reply, rx) = oneshot::channel();
        let sent = match self.tx.lock().expect("job thread").as_ref() {
            Some(tx) => tx.send(make(reply)).is_ok(),
            None => false,
        };
        if !sent {
            return Err(StoreError::Corrupt(format!("the {} is closed", self.what)));
        }
        rx.await
            .map_err(|_| StoreError::Corrupt(format!("the {} stopped", self.what)))?
    }

    /// Finishes the jobs already sent, then ends the thread.
    pub(super) fn close(&self) {
        self.tx.lock().expect("job thread").take();
        if let Some(t) = self.thread.lock().expect("job thread").take() {
            let _ = t.join();
        }
    }
}

/// The most calls one transaction carries when the writer merges queued calls; bounds the
/// latency a transaction adds.
const MAX_MERGED_CALLS: usize = 256;

/// Logs the merged calls in one transaction and hands their answers to the syncer: nobody is
/// answered before a sync that began after the commit. When the transaction fails, nothing of
/// it was written, and each call is tried again on its own, so that one request's failure is
/// not every merged request's.
fn log_merged(
    conn: &mut Connection,
    calls: Vec<(CallLog, CallReply)>,
    stats: &Arc<BatchCounters>,
    syncer: &Syncer,
    links: &CallLinks,
) {
    let (calls, mut replies): (Vec<CallLog>, Vec<CallReply>) = calls.into_iter().unzip();
    match log_calls(conn, &calls, stats) {
        Ok((logged, linked)) => {
            // Before any answer: a caller that reads the record's calls after its 200 finds it.
            links.add(&linked);
            let committed = Instant::now();
            let stats = stats.clone();
            syncer.after_sync(Box::new(move |synced| {
                let waited = committed.elapsed();
                stats
                    .sync_wait_micros
                    .fetch_add(micros(waited) * logged.len() as u64, Relaxed);
                if waited > super::group_commit::SLOW {
                    tracing::warn!(
                        calls = logged.len(),
                        ms = waited.as_millis() as u64,
                        "slow WAL sync: these calls waited this long after their commit"
                    );
                }
                for (reply, logged) in replies.into_iter().zip(logged) {
                    let _ = reply.send(match &synced {
                        Ok(()) => Ok(logged),
                        Err(e) => Err(StoreError::Corrupt(e.clone())),
                    });
                }
            }))
        }
        Err(e) if replies.len() == 1 => {
            let _ = replies.pop().map(|reply| reply.send(Err(e)));
        }
        Err(e) => {
            tracing::warn!(error = %e, calls = replies.len(), "merged calls failed; trying each on its own");
            for pair in calls.into_iter().zip(replies) {
                log_merged(conn, vec![pair], stats, syncer, links);
            }
        }
    }
}

type CallReply = oneshot::Sender<StoreResult<CallLogged>>;

/// Logs a batch of calls in one transaction: a new externalCallId makes a call, a known one
/// updates its call (a repost), in batch order. Writes only the call's side of each association
/// (`call_links.rs`) and returns the links the map must add once the transaction commits.
fn log_calls(
    conn: &mut Connection,
    batch: &[CallLog],
    stats: &BatchCounters,
) -> StoreResult<(Vec<CallLogged>, Vec<Link>)> {
    let started = Instant::now();
    pages_written(conn);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut out = Vec::with_capacity(batch.len());
    let mut linked = Vec::new();
    {
        // The call with this externalCallId, archived or not (a repost restores it); the
        // objects_external_id index answers it, so no table of keys has to be kept in step.
        let mut find = tx.prepare_cached(
            "SELECT id FROM objects INDEXED BY objects_external_id
             WHERE portal_id = ?1 AND object_type = '0-48'
               AND json_extract(properties, '$.hs_call_external_id') = ?2
             ORDER BY id LIMIT 1",
        )?;
        let mut insert_call = tx.prepare_cached(INSERT_PENDING_RECORD)?;
        let mut associate = tx.prepare_cached(
            "INSERT OR IGNORE INTO associations (from_id, to_id, type_id, portal_id, from_type, to_type, category)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut next: i64 = tx
            .prepare_cached("SELECT COALESCE(MAX(id), 0) + 1 FROM objects")?
            .query_row([], |r| r.get(0))?;
        for call in batch {
            let known: Option<i64> = find
                .query_row(params![call.portal_id, call.external_call_id], |r| r.get(0))
                .optional()?;
            let logged = match known {
                Some(id) => {
                    repost(&tx, id, call)?;
                    CallLogged {
                        call_id: id,
                        created: false,
                    }
                }
                None => {
                    let id = next;
                    next += 1;
                    // Its history is its first properties, written out only if it changes.
                    insert_call.execute(params![
                        id,
                        call.portal_id,
                        ObjectType::Call.type_id(),
                        props_json(&call.properties),
                        call.at,
                        PENDING_INTEGRATION
                    ])?;
                    CallLogged {
                        call_id: id,
                        created: true,
                    }
                }
            };
            let company = match &call.company {
                Some(choice) => shared_primary(&tx, call.portal_id, choice)?
                    .or(choice.fallback)
                    .map(|id| (ObjectType::Company, id)),
                None => None,
            };
            for &(ty, id) in call.associations.iter().chain(&company) {
                let Some((call_to, _)) = call_links::call_type_ids(ty) else {
                    continue;
                };
                associate.execute(params![
                    logged.call_id,
                    id,
                    call_to,
                    call.portal_id,
                    ObjectType::Call.type_id(),
                    ty.type_id(),
                    HUBSPOT_DEFINED
                ])?;
                linked.extend(Link::new(id, ty, logged.call_id, HUBSPOT_DEFINED));
            }
            out.push(logged);
        }
    }
    let committing = Instant::now();
    tx.commit()?;
    stats.add(batch.len(), started, committing, pages_written(conn));
    Ok((out, linked))
}

const HUBSPOT_DEFINED: &str = "HUBSPOT_DEFINED";

/// Pages this connection has written to the WAL since the last call (SQLite's
/// `SQLITE_DBSTATUS_CACHE_WRITE`, reset as it is read). The WAL hook's count would not do: it
/// is the WAL's length, frames of every connection included.
fn pages_written(conn: &Connection) -> u64 {
    let (mut current, mut highest) = (0, 0);
    // SAFETY: the handle belongs to this open connection, used on the thread that owns it;
    // SQLite only writes the two integers.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_db_status(
            conn.handle(),
            rusqlite::ffi::SQLITE_DBSTATUS_CACHE_WRITE,
            &mut current,
            &mut highest,
            1,
        )
    };
    if rc == rusqlite::ffi::SQLITE_OK {
        current.max(0) as u64
    } else {
        0
    }
}

/// The live primary company that every contact of `choice` has, if they share one. A
/// contact's lowest-id primary company counts, as the objects API lists them.
fn shared_primary(
    tx: &rusqlite::Transaction<'_>,
    portal_id: i64,
    choice: &CompanyChoice,
) -> StoreResult<Option<i64>> {
    let mut stmt = tx.prepare_cached(
        "SELECT a.to_id FROM associations a JOIN objects o ON o.id = a.to_id
         WHERE a.from_id = ?1 AND a.to_type = ?2 AND a.type_id = ?3 AND a.portal_id = ?4
           AND o.archived = 0
         ORDER BY a.to_id LIMIT 1",
    )?;
    let mut shared = None;
    for (i, &contact) in choice.contacts.iter().enumerate() {
        let primary: Option<i64> = stmt
            .query_row(
                params![
                    contact,
                    ObjectType::Company.type_id(),
                    choice.primary_type,
                    portal_id
                ],
                |r| r.get(0),
            )
            .optional()?;
        match primary {
            None => return Ok(None),
            Some(p) if i > 0 && shared != Some(p) => return Ok(None),
            Some(p) => shared = Some(p),
        }
    }
    Ok(shared)
}

/// A repost's properties go over the call's; a repost keeps the call's time unless it sends one.
fn reposted_properties(before: &Properties, call: &CallLog) -> Properties {
    let mut props = before.clone();
    props.extend(
        call.properties
            .iter()
            .filter(|(k, _)| !(call.create_only_timestamp && k.as_str() == "hs_timestamp"))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    props
}

/// A repost of a known externalCallId: its new properties go over the call's, and the change
/// enters the call's history.
fn repost(tx: &rusqlite::Transaction<'_>, id: i64, call: &CallLog) -> StoreResult<()> {
    let (props, created_at, pending): (String, i64, i64) = tx
        .prepare_cached(
            "SELECT properties, created_at, history_pending FROM objects WHERE id = ?1",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let before: Properties = serde_json::from_str(&props)
        .map_err(|e| StoreError::Corrupt(format!("properties: {e}")))?;
    let mut history = tx.prepare_cached(
        "INSERT INTO property_history (object_id, name, value, timestamp, source_type) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    if pending != 0 {
        for (name, value) in history_changes(None, &before) {
            let src = history_source(name, pending_source(pending));
            history.execute(params![id, name, value, created_at, src])?;
        }
    }
    let after = reposted_properties(&before, call);
    for (name, value) in history_changes(Some(&before), &after) {
        let src = history_source(name, "INTEGRATION");
        history.execute(params![id, name, value, call.at, src])?;
    }
    tx.prepare_cached(
        "UPDATE objects SET properties = ?1, updated_at = ?2, archived = 0, archived_at = NULL, history_pending = 0 WHERE id = ?3",
    )?
    .execute(params![props_json(&after), call.at, id])?;
    Ok(())
}

/// The call writer's page cache while it imports (with the email or domain index in place: a
/// load that defers it goes through `bulk::BulkWriter`), in KiB.
/// Imported numbers land at random places in
/// the phone and email indexes, and with the 8 MiB cache of call logging a batch spilled dirty
/// pages to the WAL mid-transaction and read most leaves back from the OS: at 1M contacts with
/// random numbers, 23k rows/s in 5,000-row batches. With 256 MiB the leaves stay cached from
/// batch to batch, and with 20,000-row batches each leaf takes more rows per write: 40k rows/s
/// (100,000-row batches: 51k). Only `switchboard import` runs import jobs, so the server's
/// writer keeps its small cache; setting the same size again costs nothing.
const IMPORT_CACHE_KIB: i64 = -262_144;

/// The bulk writer's page cache: a load with its index deferred only appends, so a batch touches
/// the last pages of each table and nothing else again, so a large cache only grew, each new
/// page a fresh allocation and page fault. With 8 MiB the same pages are reused: at 1M rows,
/// 6.4 against 6.6 core-seconds (four alternating runs each; 32 MiB: 6.5).
pub(super) const APPEND_CACHE_KIB: i64 = CACHE_KIB;

/// Rows per multi-row `INSERT` of an import. Run once per row, a statement opened and closed
/// its cursors and was reset for every row; at 32 rows a statement that overhead is spread thin,
/// and the statement stays far below SQLite's limit of 32,766 parameters.
const ROWS_PER_INSERT: usize = 32;

/// Inserts `items`, `ROWS_PER_INSERT` rows a statement: `prefix` is the statement up to
/// `VALUES `, and `row` gives one item's values in its columns' order.
fn insert_rows<T, const N: usize>(
    tx: &rusqlite::Transaction,
    prefix: &str,
    items: &[T],
    row: impl Fn(&T) -> [&dyn rusqlite::ToSql; N],
) -> StoreResult<()> {
    let full = values_sql(prefix, N, ROWS_PER_INSERT);
    for chunk in items.chunks(ROWS_PER_INSERT) {
        let mut insert = if chunk.len() == ROWS_PER_INSERT {
            tx.prepare_cached(&full)?
        } else {
            tx.prepare_cached(&values_sql(prefix, N, chunk.len()))?
        };
        for (at, value) in chunk.iter().flat_map(&row).enumerate() {
            insert.raw_bind_parameter(at + 1, value)?;
        }
        insert.raw_execute()?;
    }
    Ok(())
}

/// Imported rows and the file checkpoint, in one transaction: a re-run resumes after the last
/// batch that committed, so no row is written twice.
/// The connection's page cache is its owner's to set (`IMPORT_CACHE_KIB`, `APPEND_CACHE_KIB`).
pub(super) fn import_batch(conn: &mut Connection, job: &ImportJob) -> StoreResult<Vec<i64>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let ty = job.object_type.type_id();
    let max: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) FROM objects", [], |r| r.get(0))?;
    let ids: Vec<i64> = (1..=job.rows.len() as i64).map(|i| max + i).collect();
    let rows: Vec<(i64, &ImportRow)> = ids.iter().copied().zip(&job.rows).collect();
    insert_rows(
        &tx,
        "INSERT INTO objects (id, portal_id, object_type, properties, created_at, updated_at, history_pending) VALUES ",
        &rows,
        |(id, w)| {
            [
                id,
                &job.portal_id,
                &ty,
                &w.properties,
                &job.now,
                &job.now,
                &PENDING_IMPORT,
            ]
        },
    )?;
    let phones: Vec<(i64, &PhoneRow)> = rows
        .iter()
        .flat_map(|(id, w)| w.phones.iter().map(move |p| (*id, p)))
        .collect();
    insert_rows(
        &tx,
        "INSERT INTO phones (object_id, property, portal_id, object_type, raw, e164, national_key, extension, source, region) VALUES ",
        &phones,
        |(id, p)| {
            [
                id,
                &p.property,
                &job.portal_id,
                &ty,
                &p.raw,
                &p.e164,
                &p.national_key,
                &p.extension,
                &p.source,
                &p.region,
            ]
        },
    )?;
    tx.execute(
        "INSERT INTO imports (job, portal_id, object_type, line, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (job) DO UPDATE SET line = excluded.line, updated_at = excluded.updated_at",
        params![job.job, job.portal_id, ty, job.line as i64, job.now],
    )?;
    tx.commit()?;
    Ok(ids)
}
