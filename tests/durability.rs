//! Nothing acknowledged is lost: the server is killed with SIGKILL while calls are being
//! logged, and every call that got a 200 is there after a restart.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use tokio::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_call_survives_sigkill() {
    let db = Db::new();
    db.portal(700, "US");
    let token = db.token(700, WRITE_SCOPES);
    let server = Server::start(&db);
    let url = server.url(INBOUND);
    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..16 {
        let (url, token, acked, sent) = (url.clone(), token.clone(), acked.clone(), sent.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            for i in 0..200 {
                let ext = format!("crash-{w}-{i}");
                sent.fetch_add(1, Ordering::Relaxed);
                let body = inbound(&ext, "+12015550123", true);
                let Ok(r) = c.post(&url).bearer_auth(&token).json(&body).send().await else {
                    return; // the server is gone
                };
                if r.status() == 200 {
                    let id = r.headers()["x-switchboard-call-id"]
                        .to_str()
                        .unwrap()
                        .to_string();
                    acked.lock().await.push((ext, id));
                }
            }
        }));
    }
    // Kill mid-stream, once a good number of calls have been acknowledged.
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if acked.lock().await.len() >= 300 || workers.iter().all(|w| w.is_finished()) {
            break;
        }
    }
    server.kill();
    for w in workers {
        let _ = w.await;
    }
    let acked = acked.lock().await.clone();
    assert!(
        acked.len() >= 300,
        "only {} calls were acknowledged",
        acked.len()
    );

    let server = Server::start(&db);
    let mut missing = Vec::new();
    for (ext, id) in &acked {
        let (s, call) = get(
            &server.url(&format!(
                "/crm/v3/objects/calls/{ext}?idProperty=hs_call_external_id"
            )),
            &token,
        )
        .await;
        if s != 200 || call["id"] != id.as_str() {
            missing.push(ext.clone());
        }
    }
    println!(
        "sent {}, acknowledged {}, missing after SIGKILL {}",
        sent.load(Ordering::Relaxed),
        acked.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged calls lost: {missing:?}");
}

/// The store opens the file by name on several connections, so a database URL that cannot be
/// shared that way (in-memory SQLite) or that this build cannot serve (PostgreSQL) is refused at
/// start with a message saying why, rather than silently giving each connection its own data.
#[test]
fn unusable_database_urls_are_refused_with_a_reason() {
    let scratch = common::Db::new();
    let memory_url = format!("{}?mode=memory", scratch.url());
    for (url, reason) in [
        ("sqlite::memory:", "in-memory"),
        (memory_url.as_str(), "in-memory"),
        ("postgres://localhost/switchboard", "PostgreSQL"),
    ] {
        let out = std::process::Command::new(common::BIN)
            .args(["portal", "create", "--id", "1", "--db", url])
            .output()
            .expect("run switchboard");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url} was accepted");
        assert!(stderr.contains(reason), "{url}: {stderr}");
    }
    // sqlx's URL options still work: the direct connections use the file part.
    let db = common::Db::new();
    let url = format!("{}?mode=rwc", db.url());
    let out = std::process::Command::new(common::BIN)
        .args(["portal", "create", "--id", "7", "--db", &url])
        .output()
        .expect("run switchboard");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.path().exists());
}
