//! A record's calls (contact → call, company → call) are not stored as rows: the server derives
//! them from the calls' rows and keeps them in memory (`src/store/call_links.rs`). These tests
//! drive every write that adds or removes one, through the real server and its SQLite file,
//! across restarts, and check both sides of every association against a model.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::json;

/// What the API must show: which links exist, and which records and calls are live.
#[derive(Default)]
struct Model {
    /// (record, call)
    links: BTreeSet<(i64, i64)>,
    /// Record id → its type's path segment (`contacts`, `companies`), for live records.
    records: BTreeMap<i64, &'static str>,
    live_calls: BTreeSet<i64>,
    all_calls: Vec<i64>,
    /// Contact → the number only it was created with.
    numbers: BTreeMap<i64, String>,
}

impl Model {
    fn calls_of(&self, record: i64) -> BTreeSet<i64> {
        self.links
            .iter()
            .filter(|&&(r, c)| r == record && self.live_calls.contains(&c))
            .map(|&(_, c)| c)
            .collect()
    }

    fn records_of(&self, call: i64, kind: &str) -> BTreeSet<i64> {
        self.links
            .iter()
            .filter(|&&(r, c)| c == call && self.records.get(&r) == Some(&kind))
            .map(|&(r, _)| r)
            .collect()
    }
}

/// The record's calls through the v4 API, with the type each association carries.
async fn v4_calls(server: &Server, token: &str, kind: &str, id: i64) -> BTreeSet<i64> {
    let (s, body) = get(
        &server.url(&format!("/crm/v4/objects/{kind}/{id}/associations/calls")),
        token,
    )
    .await;
    assert_eq!(s, 200, "{kind} {id}: {body}");
    let expected_type = if kind == "contacts" { 193 } else { 181 };
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let types = r["associationTypes"].as_array().unwrap();
            assert_eq!(types.len(), 1, "{body}");
            assert_eq!(types[0]["typeId"], expected_type, "{body}");
            assert_eq!(types[0]["category"], "HUBSPOT_DEFINED", "{body}");
            r["toObjectId"].as_i64().unwrap()
        })
        .collect()
}

/// Both sides of every association, as the v4 and v3 APIs show them, against the model; and
/// the server's count of links, which also holds those of archived calls and records.
async fn check(server: &Server, token: &str, m: &Model, step: &str) {
    let (_, info) = get(&server.url("/switchboard/v1/info"), token).await;
    assert_eq!(
        info["callLinks"].as_u64(),
        Some(m.links.len() as u64),
        "{step}: the server's links"
    );
    assert!(info["callLinkBytes"].as_u64().unwrap() > 0 || m.links.is_empty());
    for (&id, &kind) in &m.records {
        assert_eq!(
            v4_calls(server, token, kind, id).await,
            m.calls_of(id),
            "{step}: the calls of {kind} {id}"
        );
        // The v3 read of the record's calls goes through the same store read.
        let (_, r) = get(
            &server.url(&format!("/crm/v3/objects/{kind}/{id}?associations=calls")),
            token,
        )
        .await;
        let v3: BTreeSet<i64> = r["associations"]["calls"]["results"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x["id"].as_str().unwrap().parse().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(v3, m.calls_of(id), "{step}: v3 calls of {kind} {id}: {r}");
    }
    for &call in &m.live_calls {
        let (contacts, companies) = call_associations(server, token, &call.to_string()).await;
        let got: (BTreeSet<i64>, BTreeSet<i64>) = (
            contacts.into_iter().collect(),
            companies.into_iter().collect(),
        );
        assert_eq!(
            got,
            (
                m.records_of(call, "contacts"),
                m.records_of(call, "companies")
            ),
            "{step}: the records of call {call}"
        );
    }
}

#[tokio::test]
async fn records_calls_stay_exact_through_every_write_and_restart() {
    let (db, token, mut server) = portal_server(401);
    let mut m = Model::default();
    let mut contacts = Vec::new();
    for i in 0..6 {
        let number = format!("+1415555{:04}", 2000 + i);
        let id = create(
            &server,
            &token,
            "contacts",
            json!({"firstname": format!("C{i}"), "lastname": "Links", "phone": number}),
        )
        .await;
        m.records.insert(id, "contacts");
        m.numbers.insert(id, number);
        contacts.push(id);
    }
    let mut companies = Vec::new();
    for i in 0..2 {
        let id = create(
            &server,
            &token,
            "companies",
            json!({"name": format!("Co{i}"), "domain": format!("co{i}.example")}),
        )
        .await;
        m.records.insert(id, "companies");
        companies.push(id);
    }
    let mut rng = Rng(0x5eed_ca11);
    let pick = |rng: &mut Rng, v: &[i64]| v[rng.below(v.len())];
    for step in 0..70 {
        let live_contacts: Vec<i64> = contacts
            .iter()
            .copied()
            .filter(|c| m.records.contains_key(c))
            .collect();
        let live_calls: Vec<i64> = m.live_calls.iter().copied().collect();
        let op = rng.below(10);
        let what = match op {
            // A logged call from a contact's number, live or not.
            0..=2 => {
                let contact = pick(&mut rng, &contacts);
                let number = m.numbers[&contact].clone();
                let (s, h, body) = post(
                    &server.url(INBOUND),
                    &token,
                    &inbound(&format!("links-{step}"), &number, true),
                )
                .await;
                assert_eq!(s, 200, "{body}");
                let call: i64 = h["x-switchboard-call-id"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                if m.records.contains_key(&contact) {
                    m.links.insert((contact, call));
                }
                m.live_calls.insert(call);
                m.all_calls.push(call);
                format!("inbound call {call} from contact {contact}")
            }
            // An association made from either side, to a contact or a company.
            3 | 4 if !live_calls.is_empty() => {
                let call = pick(&mut rng, &live_calls);
                let (record, kind) = if rng.below(3) == 0 {
                    (pick(&mut rng, &companies), "companies")
                } else if live_contacts.is_empty() {
                    continue;
                } else {
                    (pick(&mut rng, &live_contacts), "contacts")
                };
                let url = if rng.below(2) == 0 {
                    format!("/crm/v4/objects/calls/{call}/associations/default/{kind}/{record}")
                } else {
                    format!("/crm/v4/objects/{kind}/{record}/associations/default/calls/{call}")
                };
                let r = client()
                    .put(server.url(&url))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{url}: {}", r.status());
                m.links.insert((record, call));
                format!("associate {url}")
            }
            // An association removed from either side.
            5 if !m.links.is_empty() => {
                let all: Vec<(i64, i64)> = m.links.iter().copied().collect();
                let (record, call) = all[rng.below(all.len())];
                let kind = m.records.get(&record).copied().unwrap_or("contacts");
                let url = if rng.below(2) == 0 {
                    format!("/crm/v4/objects/calls/{call}/associations/{kind}/{record}")
                } else {
                    format!("/crm/v4/objects/{kind}/{record}/associations/calls/{call}")
                };
                let (s, body) = http_delete(&server.url(&url), &token).await;
                assert!(s == 204 || s == 404, "{url}: {s} {body}");
                if s == 204 {
                    m.links.remove(&(record, call));
                }
                format!("remove {url} ({s})")
            }
            // A call archived: it leaves its records' lists.
            6 if !live_calls.is_empty() => {
                let call = pick(&mut rng, &live_calls);
                let (s, body) = http_delete(
                    &server.url(&format!("/crm/v3/objects/calls/{call}")),
                    &token,
                )
                .await;
                assert_eq!(s, 204, "{body}");
                m.live_calls.remove(&call);
                format!("archive call {call}")
            }
            // Two contacts merged: the primary takes the other's live calls.
            7 if live_contacts.len() >= 3 => {
                let primary = pick(&mut rng, &live_contacts);
                let other = pick(&mut rng, &live_contacts);
                if primary == other {
                    continue;
                }
                let (s, _, body) = post(
                    &server.url("/crm/v3/objects/contacts/merge"),
                    &token,
                    &json!({"primaryObjectId": primary.to_string(), "objectIdToMerge": other.to_string()}),
                )
                .await;
                assert_eq!(s, 200, "{body}");
                for c in m.calls_of(other) {
                    m.links.insert((primary, c));
                }
                m.records.remove(&other);
                format!("merge {other} into {primary}")
            }
            // A contact deleted for good: its links go with it.
            8 if live_contacts.len() >= 3 => {
                let contact = pick(&mut rng, &live_contacts);
                let (s, _, body) = post(
                    &server.url("/crm/v3/objects/contacts/gdpr-delete"),
                    &token,
                    &json!({"objectId": contact.to_string()}),
                )
                .await;
                assert_eq!(s, 204, "{body}");
                m.records.remove(&contact);
                m.links.retain(|&(r, _)| r != contact);
                format!("gdpr-delete {contact}")
            }
            // The map is rebuilt from the file.
            9 => {
                server.stop();
                server = Server::start(&db);
                "restart".to_string()
            }
            _ => continue,
        };
        check(&server, &token, &m, &format!("step {step}, after {what}")).await;
    }
    assert!(
        m.links.len() >= 5 && m.all_calls.len() >= 10,
        "the run made too few links ({}) or calls ({}) to test anything",
        m.links.len(),
        m.all_calls.len()
    );
    server.stop();
}

/// A database written before the record's rows to calls were dropped (migration 0008) keeps
/// every association: the migration turns each record → call row into the call's row.
#[tokio::test]
async fn older_record_rows_become_call_rows_at_migration() {
    let (db, token, server) = portal_server(402);
    let contact = create(
        &server,
        &token,
        "contacts",
        json!({"firstname": "Old", "phone": "+14155553000"}),
    )
    .await;
    let (s, h, _) = post(
        &server.url(INBOUND),
        &token,
        &inbound("old-1", "+14155553000", true),
    )
    .await;
    assert_eq!(s, 200);
    let call: i64 = h["x-switchboard-call-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    server.stop();
    // Make the file look as 0007 left it: the contact's row to the call, and no call's row.
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let moved = conn
        .execute(
            "UPDATE associations SET from_id = to_id, to_id = from_id, type_id = 193,
                    from_type = '0-1', to_type = '0-48'
             WHERE from_id = ?1 AND to_id = ?2",
            [call, contact],
        )
        .unwrap();
    assert_eq!(moved, 1);
    conn.execute("DELETE FROM _sqlx_migrations WHERE version = 8", [])
        .unwrap();
    drop(conn);
    let server = Server::start(&db);
    let mut m = Model::default();
    m.records.insert(contact, "contacts");
    m.live_calls.insert(call);
    m.links.insert((contact, call));
    check(&server, &token, &m, "after the migration").await;
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let record_rows: i64 = conn
        .query_row(
            "SELECT count(*) FROM associations WHERE to_type = '0-48'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(record_rows, 0);
    server.stop();
}
