//! Nothing acknowledged is lost: the server is killed with SIGKILL while calls are being
//! logged, and every call that got a 200 is there after a restart.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_call_survives_sigkill() {
    let (db, token, server) = portal_server(700);
    // The caller is a contact, so every call is also an association that must survive: the
    // call's row on disk, the contact's side rebuilt from it at start (`call_links.rs`).
    let contact = create(
        &server,
        &token,
        "contacts",
        serde_json::json!({"firstname": "Crash", "phone": "+12015550123"}),
    )
    .await;
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
    // Every page of the contact's calls (500 a page).
    let mut linked = std::collections::HashSet::new();
    let mut after = String::new();
    loop {
        let (s, page) = get(
            &server.url(&format!(
                "/crm/v4/objects/contacts/{contact}/associations/calls?limit=500{after}"
            )),
            &token,
        )
        .await;
        assert_eq!(s, 200, "{page}");
        for r in page["results"].as_array().unwrap() {
            linked.insert(r["toObjectId"].to_string());
        }
        match page["paging"]["next"]["after"].as_str() {
            Some(a) => after = format!("&after={a}"),
            None => break,
        }
    }
    let unlinked: Vec<&String> = acked
        .iter()
        .map(|(_, id)| id)
        .filter(|id| !linked.contains(*id))
        .collect();
    assert!(
        unlinked.is_empty(),
        "acknowledged calls missing from the contact's calls: {unlinked:?}"
    );
    for (_, id) in acked.iter().step_by(25) {
        let (contacts, _) = call_associations(&server, &token, id).await;
        assert_eq!(contacts, vec![contact], "the contacts of call {id}");
    }
    println!(
        "sent {}, acknowledged {}, missing after SIGKILL {}",
        sent.load(Ordering::Relaxed),
        acked.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged calls lost: {missing:?}");
}

/// Checkpoints keep up with sustained logging: the WAL file stays bounded (1,000 pages plus one
/// batch) however many calls are logged, instead of growing for as long as calls keep coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_sustained_logging() {
    let (db, token, server) = portal_server(701);
    // Callers in the CRM, so every call also writes associations at random places.
    let callers: Vec<String> = (0..200).map(|i| format!("+1201555{:04}", i * 37)).collect();
    for (i, n) in callers.iter().enumerate() {
        create(
            &server,
            &token,
            "contacts",
            serde_json::json!({"firstname": format!("W{i}"), "phone": n}),
        )
        .await;
    }
    // One call after those creates: its transaction's pages are its own, not the WAL's length.
    post(
        &server.url(INBOUND),
        &token,
        &inbound("wal-first", &callers[0], true),
    )
    .await;
    let (_, info) = get(&server.url("/switchboard/v1/info"), &token).await;
    assert_eq!(info["loggedCalls"], 1, "{info}");
    let pages = info["callBatchWalPages"].as_u64().unwrap();
    assert!(
        (1..=20).contains(&pages),
        "one call wrote {pages} WAL pages: {info}"
    );

    let calls = 4000;
    let mut workers = Vec::new();
    for w in 0..32 {
        let (url, token, callers) = (server.url(INBOUND), token.clone(), callers.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            for i in (w..calls).step_by(32) {
                let body = inbound(&format!("wal-{i}"), &callers[i % callers.len()], true);
                let r = c
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let wal = std::fs::metadata(format!("{}-wal", db.path().display())).map_or(0, |m| m.len());
    let page = 4096 + 24;
    // Unchecked, these calls fill about 3 pages each: 12,000 pages.
    assert!(
        wal < 3000 * page,
        "the WAL grew to {} pages for {calls} calls",
        wal / page
    );
    // The server's group-commit totals: every call counted once, and 32 concurrent callers
    // shared transactions (one per call would mean no batching at all).
    let (_, info) = get(&server.url("/switchboard/v1/info"), &token).await;
    let total = |k: &str| info[k].as_u64().unwrap_or_else(|| panic!("{k}: {info}"));
    assert_eq!(total("loggedCalls"), calls as u64 + 1, "{info}");
    assert!(total("callBatches") < total("loggedCalls"), "{info}");
    assert!(total("callBatchWalPages") >= total("callBatches"), "{info}");
    assert!(total("callBatchCommitMicros") > 0, "{info}");
    // Each sync made many calls durable at once.
    assert!(total("callBatchSyncs") < total("callBatches"), "{info}");
    server.stop();
}

/// A 200 for a logged call comes after a WAL sync that began after the call's commit: the
/// writer commits without syncing and a syncer thread syncs beside it, and this is what keeps a
/// 200 as durable as a synced commit. The server's test-only sync delay widens the moment
/// between commit and sync to 300 ms, so an answer sent inside it would arrive early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_answer_waits_for_a_sync_after_its_commit() {
    const DELAY: Duration = Duration::from_millis(300);
    let db = Db::new();
    db.portal(702, "US");
    let token = db.token(702, WRITE_SCOPES);
    let server = Server::start_env(&db, &[], &[("SWITCHBOARD_SYNC_DELAY_MS", "300")]);
    let info = || async { get(&server.url("/switchboard/v1/info"), &token).await.1 };
    let total = |info: &Value, k: &str| info[k].as_u64().unwrap_or_else(|| panic!("{k}: {info}"));
    let before = info().await;

    // One caller, call after call: each answer waited for its own sync.
    for i in 0..3 {
        let started = Instant::now();
        let (status, _, body) = post(
            &server.url(INBOUND),
            &token,
            &inbound(&format!("sync-{i}"), "+12015550123", true),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(
            started.elapsed() >= DELAY,
            "answered {:?} after the post, before its sync",
            started.elapsed()
        );
    }

    // Sixteen at once: all wait for a sync, and share a few.
    let started = Instant::now();
    let calls: Vec<_> = (0..16)
        .map(|i| {
            let (url, token) = (server.url(INBOUND), token.clone());
            tokio::spawn(async move {
                post(
                    &url,
                    &token,
                    &inbound(&format!("burst-{i}"), "+12015550123", true),
                )
                .await
            })
        })
        .collect();
    for call in calls {
        let (status, _, body) = call.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    assert!(started.elapsed() >= DELAY);
    let after = info().await;
    let syncs = total(&after, "callBatchSyncs") - total(&before, "callBatchSyncs");
    assert_eq!(
        total(&after, "loggedCalls") - total(&before, "loggedCalls"),
        19,
        "{after}"
    );
    assert!(
        (4..19).contains(&syncs),
        "19 calls made durable by {syncs} syncs: {after}"
    );
    assert!(
        total(&after, "callBatchSyncMicros") >= 4 * 300_000,
        "{after}"
    );
    // Where the calls waited: every call's commit-to-sync wait holds at least one delayed
    // sync, and the parts (queue, transaction, sync wait) fit inside each call's total.
    let waited = |k: &str| total(&after, k) - total(&before, k);
    let (queue, transaction, sync_wait, all) = (
        waited("callQueueMicros"),
        waited("callTransactionMicros"),
        waited("callSyncWaitMicros"),
        waited("callTotalMicros"),
    );
    assert!(sync_wait >= 19 * 300_000, "{after}");
    assert!(transaction > 0, "{after}");
    assert!(queue + transaction + sync_wait <= all, "{after}");
    assert!(
        all < 19 * 4 * 300_000,
        "no call waited for four syncs: {after}"
    );
    server.stop();
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

/// A call that fails is answered with its error alone: calls posted at the same moment, which
/// the writer merges into its transaction with it (and then retries one by one when that
/// transaction fails), are still committed, synced and answered 200. The failing call is a
/// repost of a call whose stored properties were damaged behind the server's back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_call_fails_alone() {
    let (db, token, server) = portal_server(703);
    let url = server.url(INBOUND);
    let (status, _, _) = post(&url, &token, &inbound("damaged", "+12015550123", true)).await;
    assert_eq!(status, 200);
    // Valid JSON to SQLite (its indexes still read it), but not a record's properties.
    let damaged = rusqlite::Connection::open(db.path()).unwrap();
    damaged.busy_timeout(Duration::from_secs(5)).unwrap();
    let changed = damaged
        .execute(
            "UPDATE objects SET properties = '{\"hs_call_external_id\":\"damaged\",\"n\":1}'
             WHERE object_type = '0-48' AND json_extract(properties, '$.hs_call_external_id') = 'damaged'",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(damaged);

    // The repost and twenty new calls, all at once.
    let send = |ext: String| {
        let (url, token) = (url.clone(), token.clone());
        tokio::spawn(async move {
            let (status, headers, _) =
                post(&url, &token, &inbound(&ext, "+12015550123", true)).await;
            let id = headers
                .get("x-switchboard-call-id")
                .map(|v| v.to_str().unwrap().to_string());
            (ext, status, id)
        })
    };
    let mut others = vec![send("damaged".into())];
    others.extend((0..20).map(|i| send(format!("beside-{i}"))));
    let mut logged = Vec::new();
    for t in others {
        let (ext, status, id) = t.await.unwrap();
        if ext == "damaged" {
            assert!(status >= 500, "the damaged repost answered {status}");
        } else {
            assert_eq!(status, 200, "{ext} failed beside the damaged call");
            logged.push(id.expect("a logged call's id"));
        }
    }
    assert_eq!(logged.len(), 20);
    for id in logged {
        let (status, call) = get(&server.url(&format!("/crm/v3/objects/calls/{id}")), &token).await;
        assert_eq!(status, 200, "{call}");
    }
    server.stop();
}
