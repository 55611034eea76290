//! Group commit for inbound-call logging: many calls to one transaction, and one WAL sync
//! for every transaction committed while the last sync ran.
//!
//! Every logged call must be on disk before its 200 is sent, and one fsync per call would cap
//! the rate at the disk's sync rate. So the writer thread (`sqlite_direct.rs`) takes every call
//! waiting in its queue into one transaction, and commits it with `synchronous=NORMAL`, which
//! writes the transaction to the WAL without syncing it. It then hands the answers to the
//! [`Syncer`] here and goes on with the next transaction while the disk syncs. Nobody is
//! answered before an `fdatasync` of the WAL that began after the commit holding their call,
//! so every 200 is as durable as with `synchronous=FULL`. An idle server still commits and
//! syncs a lone call at once.
//!
//! Before, the writer committed with `synchronous=FULL` and waited for each sync itself, so the
//! next transaction's calls also waited for it: at 100k contacts (Intel VM) the logging p99 at
//! half the saturated rate fell from 4.1–6.2 ms to 3.0–3.8 ms with the sync beside the writer.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{StoreError, StoreResult};

/// `SWITCHBOARD_SYNC_DELAY_MS`, a fault injection for tests: every sync waits this long first,
/// which widens the moment between a commit and its sync enough for a test to see that no
/// answer leaves inside it (`tests/durability.rs`). Never set it in production.
fn sync_delay() -> Option<Duration> {
    let ms: u64 = std::env::var("SWITCHBOARD_SYNC_DELAY_MS")
        .ok()?
        .parse()
        .ok()?;
    tracing::warn!(
        ms,
        "SWITCHBOARD_SYNC_DELAY_MS is set: every WAL sync waits this long first"
    );
    Some(Duration::from_millis(ms))
}

/// A transaction or sync slower than this is logged: every caller in it waited that long.
pub(super) const SLOW: Duration = Duration::from_millis(10);

/// What runs once the WAL is synced, given the sync's outcome.
pub(super) type AfterSync = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Syncs and the time they took, as `/switchboard/v1/info` reports them.
#[derive(Default)]
pub(super) struct SyncCounters {
    pub syncs: AtomicU64,
    pub micros: AtomicU64,
}

/// The thread that syncs the WAL beside the writer. One `fdatasync` covers every commit handed
/// over before it began.
///
/// A reader may see a call in the moment between its commit and its sync; if the machine loses
/// power then, that call is gone, but its caller never got a 200 and reposts it.
pub(super) struct Syncer {
    tx: mpsc::Sender<AfterSync>,
    thread: JoinHandle<()>,
}

impl Syncer {
    /// `wal` is the WAL file the writer's connection appends to.
    pub fn start(wal: File, stats: Arc<SyncCounters>) -> StoreResult<Self> {
        let delay = sync_delay();
        let (tx, rx) = mpsc::channel::<AfterSync>();
        let thread = std::thread::Builder::new()
            .name("sqlite-syncer".into())
            .spawn(move || {
                // After a failed fsync Linux may drop the pages it could not write and report
                // success the next time, so one failure fails every later batch too: nothing
                // is acknowledged that may not be on disk (restart the server to recover).
                let mut failed: Option<String> = None;
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let started = Instant::now();
                    if let Some(delay) = delay {
                        std::thread::sleep(delay);
                    }
                    let synced = match &failed {
                        Some(e) => Err(e.clone()),
                        None => wal.sync_data().map_err(|e| {
                            let e = format!("WAL sync failed, nothing since is acknowledged: {e}");
                            tracing::error!("{e}");
                            failed = Some(e.clone());
                            e
                        }),
                    };
                    let took = started.elapsed();
                    stats.syncs.fetch_add(1, Relaxed);
                    stats.micros.fetch_add(took.as_micros() as u64, Relaxed);
                    for done in waiting {
                        done(synced.clone());
                    }
                }
            })
            .map_err(|e| StoreError::Corrupt(format!("cannot start the syncer: {e}")))?;
        Ok(Syncer { tx, thread })
    }

    /// Runs `done` after the next sync, which begins after this call.
    pub fn after_sync(&self, done: AfterSync) {
        if let Err(mpsc::SendError(done)) = self.tx.send(done) {
            done(Err("the syncer stopped".into()));
        }
    }

    /// Syncs what is still waiting, then stops.
    pub fn close(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}
