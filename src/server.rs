//! Running the server: bind, serve, and shut down gracefully.
//!
//! On SIGTERM or Ctrl-C the listener stops accepting, requests in flight finish (their calls
//! are committed before they are answered), and then the store is checkpointed and closed.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::http;
use crate::state::AppState;

/// Serves until a shutdown signal, then closes the store.
pub async fn serve(state: Arc<AppState>, listener: TcpListener) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, index_ready_ms = state.index_ready_ms, "listening");
    let app = http::app(state.clone());
    let watcher = tokio::spawn(watch_external_writes(state.clone()));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    watcher.abort();
    tracing::info!("shutting down: requests drained, closing the store");
    state.store.close().await;
    Ok(())
}

/// How often the server looks for records another process added. A contact imported while
/// the server runs is in caller ID within about this long of its batch's commit.
const EXTERNAL_WRITES_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// `switchboard import` writes the database directly, beside a running server; this files what
/// it adds (see [`AppState::file_external_records`]). One `MAX(id)` read per tick when nothing
/// was imported.
async fn watch_external_writes(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(EXTERNAL_WRITES_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = state.file_external_records().await {
            tracing::warn!(error = %e, "could not file records added by another process; retrying");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
