//! Group commit for inbound-call logging.
//!
//! Every logged call must be on disk before its 200 is sent. One fsync per call would cap the
//! rate at the disk's sync rate, so a single writer task drains whatever calls are waiting and
//! commits them in one transaction: under load many calls share one fsync, and an idle server
//! still commits a lone call at once. Nobody is answered before the commit that holds their
//! call returns.

use tokio::sync::{mpsc, oneshot};

use super::{CallLog, CallLogged, DynStore, StoreError};

/// The most calls one transaction carries; bounds the latency a batch adds.
const MAX_BATCH: usize = 256;

/// A batch slower than this is logged: every caller in it waited that long for its 200.
const SLOW_BATCH: std::time::Duration = std::time::Duration::from_millis(10);

type Reply = oneshot::Sender<Result<CallLogged, String>>;

/// Handle to the writer task. Cloning is cheap; the task ends when every handle is dropped.
#[derive(Clone)]
pub struct CallLogger {
    tx: mpsc::Sender<(CallLog, Reply)>,
}

impl CallLogger {
    pub fn start(store: DynStore) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4096);
        let handle = tokio::spawn(run(store, rx));
        (CallLogger { tx }, handle)
    }

    /// Logs one call and waits until the transaction holding it is durable.
    pub async fn log(&self, call: CallLog) -> Result<CallLogged, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((call, reply))
            .await
            .map_err(|_| StoreError::Corrupt("call logger stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Corrupt("call logger stopped".into()))?
            .map_err(StoreError::Corrupt)
    }
}

async fn run(store: DynStore, mut rx: mpsc::Receiver<(CallLog, Reply)>) {
    let mut batch: Vec<(CallLog, Reply)> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (calls, replies): (Vec<CallLog>, Vec<Reply>) = batch.drain(..).unzip();
        let count = calls.len();
        let started = std::time::Instant::now();
        let result = store.log_calls(calls).await;
        let took = started.elapsed();
        if took > SLOW_BATCH {
            tracing::warn!(
                calls = count,
                ms = took.as_millis() as u64,
                "slow call batch: each of its callers waited this long for its 200"
            );
        }
        match result {
            Ok(done) => {
                for (reply, logged) in replies.into_iter().zip(done) {
                    let _ = reply.send(Ok(logged));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, calls = count, "call batch failed; none of it was acknowledged");
                for reply in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}
