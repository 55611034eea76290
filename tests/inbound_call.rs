//! Inbound calls end to end: the real server over HTTP on a temporary SQLite file.

mod common;

use common::*;
use serde_json::{Value, json};

/// Removes or replaces the value at a JSON pointer.
fn mutate(body: &Value, pointer: &str, value: Option<Value>) -> Value {
    let mut b = body.clone();
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    let target = if parent.is_empty() {
        &mut b
    } else {
        b.pointer_mut(parent).expect("parent")
    };
    let obj = target.as_object_mut().expect("object");
    match value {
        Some(v) => {
            obj.insert(key.to_string(), v);
        }
        None => {
            obj.remove(key);
        }
    }
    b
}

fn field_of(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

#[tokio::test]
async fn demo_seed_example_call_matches_the_seeded_contact() {
    let db = Db::new();
    let server = Server::start_with(&db, &["--demo"]);
    let token = server
        .banner
        .iter()
        .find(|l| l.starts_with("pat-"))
        .expect("token printed")
        .clone();
    let curl = server.banner.join("\n");
    let body_json = curl
        .split("-d '")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("curl body");
    let body: Value = serde_json::from_str(body_json).expect("curl body is JSON");
    let (status, headers, res) = post(&server.url(INBOUND), &token, &body).await;
    assert_eq!(status, 200, "{res}");
    let matches = res["callerIdMatches"].as_array().expect("matches");
    assert!(
        !matches.is_empty(),
        "the example caller is a seeded contact"
    );
    let caller = body["fromNumber"]["e164Number"].as_str().unwrap();
    for m in matches {
        let id = m["objectCoordinates"]["objectId"].as_i64().unwrap();
        let ty = if m["callerIdType"] == "CONTACT" {
            "contacts"
        } else {
            "companies"
        };
        let (s, rec) = get(&server.url(&format!("/crm/v3/objects/{ty}/{id}?properties=hs_calculated_phone_number,hs_calculated_mobile_number")), &token).await;
        assert_eq!(s, 200);
        let p = &rec["properties"];
        assert!(
            p["hs_calculated_phone_number"] == caller || p["hs_calculated_mobile_number"] == caller,
            "{rec}"
        );
    }
    assert!(headers.get("x-switchboard-call-id").is_some());
}

#[tokio::test]
async fn every_validation_failure_gets_a_400_naming_the_field() {
    let (_db, token, server) = portal_server(101);
    let url = server.url(INBOUND);
    let valid = inbound("v-1", "+442079460958", false);
    let (s, _, _) = post(&url, &token, &valid).await;
    assert_eq!(s, 200, "the base body is valid");

    let required = [
        "/createEngagement",
        "/engagementProperties",
        "/externalCallId",
        "/finalCallStatus",
        "/fromNumber",
        "/fromNumber/e164Number",
        "/fromNumber/phoneNumberType",
        "/toNumber",
        "/toNumber/e164Number",
        "/toNumber/phoneNumberType",
        "/potentialRecipientUserIds",
    ];
    let mut cases: Vec<(Value, String)> = required
        .iter()
        .map(|p| (mutate(&valid, p, None), field_of(p)))
        .collect();
    // Wrong types for every field, derived from the valid body.
    let wrong = [
        ("/createEngagement", json!("yes")),
        ("/engagementProperties", json!([])),
        ("/externalCallId", json!(12)),
        ("/finalCallStatus", json!("DONE")),
        ("/fromNumber", json!("+442079460958")),
        ("/fromNumber/phoneNumberType", json!("LANDLINE")),
        ("/fromNumber/e164Number", json!("+44 20 7946 0958")),
        ("/fromNumber/e164Number", json!("442079460958")),
        ("/fromNumber/e164Number", json!("+4420")),
        ("/toNumber/e164Number", json!("anonymous")),
        ("/potentialRecipientUserIds", json!("1,2")),
        ("/callStartedTimestamp", json!("yesterday")),
        ("/callStartedTimestamp", json!("2026-13-01T00:00:00Z")),
        ("/durationSeconds", json!(-5)),
        ("/durationSeconds", json!("95")),
        ("/userId", json!("me")),
    ];
    cases.extend(
        wrong
            .iter()
            .map(|(p, v)| (mutate(&valid, p, Some(v.clone())), field_of(p))),
    );
    cases.push((
        mutate(
            &valid,
            "/engagementProperties/hs_call_title",
            Some(json!(5)),
        ),
        "engagementProperties.hs_call_title".into(),
    ));
    cases.push((
        mutate(
            &valid,
            "/engagementProperties/hs_object_id",
            Some(json!("1")),
        ),
        "engagementProperties.hs_object_id".into(),
    ));
    cases.push((
        mutate(
            &valid,
            "/engagementProperties/no_such_property",
            Some(json!("x")),
        ),
        "engagementProperties.no_such_property".into(),
    ));
    cases.push((
        mutate(
            &valid,
            "/potentialRecipientUserIds",
            Some(json!([1, "two"])),
        ),
        "potentialRecipientUserIds[1]".into(),
    ));

    for (body, field) in &cases {
        let (status, _, res) = post(&url, &token, body).await;
        assert_eq!(status, 400, "{field}: {res}");
        let fields = error_fields(&res, "VALIDATION_ERROR");
        assert!(
            fields.contains(field),
            "expected errors[].in = {field}, got {fields:?}"
        );
        assert!(
            res["message"]
                .as_str()
                .unwrap()
                .contains(field.split('[').next().unwrap()),
            "message names {field}: {res}"
        );
    }

    // Two bad fields are both reported.
    let two = mutate(
        &mutate(&valid, "/externalCallId", None),
        "/durationSeconds",
        Some(json!(-1)),
    );
    let (_, _, res) = post(&url, &token, &two).await;
    let fields = error_fields(&res, "VALIDATION_ERROR");
    assert!(
        fields.contains(&"externalCallId".to_string())
            && fields.contains(&"durationSeconds".to_string()),
        "{fields:?}"
    );

    // Malformed JSON, wrong content type, oversized body.
    let c = client();
    let r = c
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"createEngagement\": tru")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        error_fields(&r.json().await.unwrap(), "VALIDATION_ERROR").contains(&"body".to_string())
    );
    let r = c
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body(valid.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.unwrap();
    assert!(
        b["message"].as_str().unwrap().contains("Content-Type"),
        "{b}"
    );
    let big = json!({ "pad": "x".repeat(2 * 1024 * 1024) });
    let r = c
        .post(&url)
        .bearer_auth(&token)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.unwrap();
    assert!(
        b["message"].as_str().unwrap().contains("larger than"),
        "{b}"
    );
    let (s, _, b) = post(&url, &token, &json!([1, 2])).await;
    assert_eq!(s, 400, "{b}");
}

#[tokio::test]
async fn auth_errors_are_401_and_403() {
    let db = Db::new();
    db.portal(102, "US");
    let no_write = db.token(102, "crm.objects.contacts.read");
    let server = Server::start(&db);
    let url = server.url(INBOUND);
    let body = inbound("a-1", "+442079460958", false);
    let r = client().post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    error_fields(&r.json().await.unwrap(), "INVALID_AUTHENTICATION");
    let (s, _, b) = post(&url, "pat-local-not-a-token", &body).await;
    assert_eq!(s, 401);
    error_fields(&b, "INVALID_AUTHENTICATION");
    let (s, _, b) = post(&url, &no_write, &body).await;
    assert_eq!(s, 403, "{b}");
    error_fields(&b, "MISSING_SCOPES");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("crm.objects.contacts.write")
    );
    // Health, info and the OpenAPI document need no token.
    for path in [
        "/switchboard/v1/health",
        "/switchboard/v1/info",
        "/openapi.json",
    ] {
        let r = client().get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn a_logged_call_has_hubspots_properties_and_associations_and_reposts_update_it() {
    let (_db, token, server) = portal_server(103);
    let (s, _, user) = post(
        &server.url("/settings/v3/users"),
        &token,
        &json!({"email": "agent@example.com", "firstName": "Agent"}),
    )
    .await;
    assert_eq!(s, 201, "{user}");
    let user_id: i64 = user["id"].as_str().unwrap().parse().unwrap();
    let owner_id = user["ownerId"].as_i64().unwrap();
    assert_ne!(user_id, owner_id, "user ids and owner ids differ");
    let (s, owner) = get(
        &server.url(&format!("/crm/v3/owners/{user_id}?idProperty=userId")),
        &token,
    )
    .await;
    assert_eq!(s, 200, "{owner}");
    assert_eq!(owner["id"], owner_id.to_string());

    let company = create(
        &server,
        &token,
        "companies",
        json!({"name": "Acme", "phone": "+44 20 7946 0000"}),
    )
    .await;
    let contact = create(&server, &token, "contacts", json!({"firstname": "Ada", "lastname": "Lovelace", "email": "ada@example.com", "phone": "020 7946 0958", "country": "United Kingdom"})).await;

    let mut body = inbound("call-42", "+442079460958", true);
    body["fromNumber"]["extension"] = json!("12");
    body["userId"] = json!(user_id);
    body["potentialRecipientUserIds"] = json!([user_id, 999]);
    body["durationSeconds"] = json!(95);
    body["callStartedTimestamp"] = json!("2026-11-25T10:00:00Z");
    body["finalCallStatus"] = json!("RINGING");
    body["engagementProperties"] = json!({"hs_call_title": "Support line"});
    let (s, headers, res) = post(&server.url(INBOUND), &token, &body).await;
    assert_eq!(s, 200, "{res}");
    let m = &res["callerIdMatches"][0];
    assert_eq!(m["callerIdType"], "CONTACT");
    assert_eq!(
        m["objectCoordinates"],
        json!({"objectId": contact, "objectTypeId": "0-1", "portalId": 103})
    );
    assert_eq!(m["firstName"], "Ada");
    assert!(m.get("name").is_none(), "no nulls or absent fields: {m}");
    let call_id = headers["x-switchboard-call-id"]
        .to_str()
        .unwrap()
        .to_string();

    let props = "hs_call_direction,hs_call_status,hs_call_from_number,hs_call_to_number,hs_timestamp,hs_call_duration,hs_call_external_id,hs_call_source,hubspot_owner_id,hs_call_callee_object_id,hs_call_callee_object_type_id,hs_call_title";
    let (s, call) = get(
        &server.url(&format!(
            "/crm/v3/objects/calls/{call_id}?properties={props}&associations=contacts,companies"
        )),
        &token,
    )
    .await;
    assert_eq!(s, 200, "{call}");
    let p = &call["properties"];
    assert_eq!(p["hs_call_direction"], "INBOUND");
    assert_eq!(p["hs_call_status"], "RINGING");
    assert_eq!(p["hs_call_from_number"], "+442079460958;ext=12");
    assert_eq!(p["hs_call_to_number"], "+14155550100");
    assert_eq!(p["hs_timestamp"], "2026-11-25T10:00:00.000Z");
    assert_eq!(p["hs_call_duration"], "95000");
    assert_eq!(p["hs_call_external_id"], "call-42");
    assert_eq!(p["hs_call_source"], "INTEGRATIONS_PLATFORM");
    assert_eq!(p["hubspot_owner_id"], owner_id.to_string());
    assert_eq!(p["hs_call_callee_object_id"], contact.to_string());
    assert_eq!(p["hs_call_callee_object_type_id"], "0-1");
    assert_eq!(p["hs_call_title"], "Support line");
    assert_eq!(
        call["associations"]["contacts"]["results"][0]["id"],
        contact.to_string()
    );
    assert_eq!(
        call["associations"]["contacts"]["results"][0]["type"],
        "call_to_contact"
    );
    // Symmetric: the contact sees the call.
    let (_, c) = get(
        &server.url(&format!(
            "/crm/v3/objects/contacts/{contact}?associations=calls"
        )),
        &token,
    )
    .await;
    assert_eq!(c["associations"]["calls"]["results"][0]["id"], call_id);
    let _ = company;

    // Repost: same call, new status and duration; never a second record.
    body["finalCallStatus"] = json!("COMPLETED");
    body["durationSeconds"] = json!(120);
    body.as_object_mut().unwrap().remove("callStartedTimestamp");
    let (s, headers, _) = post(&server.url(INBOUND), &token, &body).await;
    assert_eq!(s, 200);
    assert_eq!(headers["x-switchboard-call-id"].to_str().unwrap(), call_id);
    let (_, call) = get(
        &server.url(&format!(
            "/crm/v3/objects/calls/{call_id}?properties={props}"
        )),
        &token,
    )
    .await;
    assert_eq!(call["properties"]["hs_call_status"], "COMPLETED");
    assert_eq!(call["properties"]["hs_call_duration"], "120000");
    assert_eq!(
        call["properties"]["hs_timestamp"], "2026-11-25T10:00:00.000Z",
        "a repost keeps the call's time"
    );
    let (_, calls) = get(&server.url("/crm/v3/objects/calls?limit=100"), &token).await;
    assert_eq!(calls["results"].as_array().unwrap().len(), 1);
    let (_, found) = get(
        &server.url("/crm/v3/objects/calls/call-42?idProperty=hs_call_external_id"),
        &token,
    )
    .await;
    assert_eq!(found["id"], call_id);

    // A repost finds its call by externalCallId even when engagementProperties tries to rename
    // it, and restores an archived call rather than making a second one.
    body["engagementProperties"] = json!({"hs_call_external_id": "renamed"});
    let (s, headers, _) = post(&server.url(INBOUND), &token, &body).await;
    assert_eq!(s, 200);
    assert_eq!(headers["x-switchboard-call-id"].to_str().unwrap(), call_id);
    let (s, _) = http_delete(
        &server.url(&format!("/crm/v3/objects/calls/{call_id}")),
        &token,
    )
    .await;
    assert_eq!(s, 204);
    let (s, headers, _) = post(&server.url(INBOUND), &token, &body).await;
    assert_eq!(s, 200);
    assert_eq!(headers["x-switchboard-call-id"].to_str().unwrap(), call_id);
    let (s, call) = get(
        &server.url(&format!(
            "/crm/v3/objects/calls/{call_id}?properties=hs_call_external_id"
        )),
        &token,
    )
    .await;
    assert_eq!(s, 200, "the repost restored the archived call: {call}");
    assert_eq!(call["properties"]["hs_call_external_id"], "call-42");

    // The date-versioned twins are the same endpoint; an unknown version is a 404.
    for v in ["2025-09", "2026-03", "2026-09"] {
        let (s, _, r) = post(
            &server.url(&format!("/crm/extensions/calling/{v}/inbound-call")),
            &token,
            &inbound("twin", "+442079460958", false),
        )
        .await;
        assert_eq!(s, 200, "{v}: {r}");
        assert_eq!(
            r["callerIdMatches"][0]["objectCoordinates"]["objectId"],
            contact
        );
    }
    let (s, _, _) = post(
        &server.url("/crm/extensions/calling/2020-01/inbound-call"),
        &token,
        &inbound("twin", "+442079460958", false),
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn withheld_callers_are_logged_without_matches() {
    let (_db, token, server) = portal_server(104);
    for (i, w) in [
        "anonymous",
        "PRIVATE",
        "Restricted",
        "unknown",
        "unavailable",
    ]
    .iter()
    .enumerate()
    {
        let (s, headers, res) = post(
            &server.url(INBOUND),
            &token,
            &inbound(&format!("w-{i}"), w, true),
        )
        .await;
        assert_eq!(s, 200, "{w}: {res}");
        assert_eq!(res["callerIdMatches"], json!([]));
        let id = headers["x-switchboard-call-id"].to_str().unwrap();
        let (_, call) = get(
            &server.url(&format!(
                "/crm/v3/objects/calls/{id}?properties=hs_call_from_number,hs_call_status"
            )),
            &token,
        )
        .await;
        assert_eq!(call["properties"]["hs_call_from_number"], Value::Null);
        assert_eq!(call["properties"]["hs_call_status"], "COMPLETED");
    }
}

#[tokio::test]
async fn portals_never_see_each_others_records() {
    let db = Db::new();
    db.portal(201, "US");
    db.portal(202, "US");
    let a = db.token(201, WRITE_SCOPES);
    let b = db.token(202, WRITE_SCOPES);
    let server = Server::start(&db);
    let in_a = create(
        &server,
        &a,
        "contacts",
        json!({"firstname": "A", "phone": "+1 201 555 0123"}),
    )
    .await;
    let in_b = create(
        &server,
        &b,
        "contacts",
        json!({"firstname": "B", "phone": "(201) 555-0123"}),
    )
    .await;
    let (_, _, ra) = post(
        &server.url(INBOUND),
        &a,
        &inbound("iso", "+12015550123", true),
    )
    .await;
    let (_, _, rb) = post(
        &server.url(INBOUND),
        &b,
        &inbound("iso", "+12015550123", true),
    )
    .await;
    assert_eq!(match_ids(&ra), vec![in_a]);
    assert_eq!(match_ids(&rb), vec![in_b]);
    assert_eq!(
        rb["callerIdMatches"][0]["objectCoordinates"]["portalId"],
        202
    );
    let (s, _) = get(&server.url(&format!("/crm/v3/objects/contacts/{in_b}")), &a).await;
    assert_eq!(s, 404);
    let (s, _) = patch(
        &server.url(&format!("/crm/v3/objects/contacts/{in_b}")),
        &a,
        &json!({"properties": {"firstname": "X"}}),
    )
    .await;
    assert_eq!(s, 404);
    let (_, list) = get(&server.url("/crm/v3/objects/contacts?limit=100"), &a).await;
    assert_eq!(list["results"].as_array().unwrap().len(), 1);
    let (_, calls) = get(&server.url("/crm/v3/objects/calls?limit=100"), &a).await;
    assert_eq!(
        calls["results"].as_array().unwrap().len(),
        1,
        "the same externalCallId in two portals is two calls"
    );
}

#[tokio::test]
async fn a_restarted_server_keeps_every_contact_and_call() {
    let db = Db::new();
    db.portal(301, "GB");
    let token = db.token(301, WRITE_SCOPES);
    let server = Server::start(&db);
    let mut contacts = Vec::new();
    for i in 0..20 {
        contacts.push(
            create(
                &server,
                &token,
                "contacts",
                json!({"firstname": format!("C{i}"), "phone": format!("020 7946 {:04}", 1000 + i)}),
            )
            .await,
        );
    }
    let mut calls = Vec::new();
    for i in 0..10 {
        let (s, h, _) = post(
            &server.url(INBOUND),
            &token,
            &inbound(
                &format!("r-{i}"),
                &format!("+44207946{:04}", 1000 + i),
                true,
            ),
        )
        .await;
        assert_eq!(s, 200);
        calls.push(h["x-switchboard-call-id"].to_str().unwrap().to_string());
    }
    server.stop();
    let server = Server::start(&db);
    for id in &contacts {
        let (s, _) = get(
            &server.url(&format!("/crm/v3/objects/contacts/{id}")),
            &token,
        )
        .await;
        assert_eq!(s, 200);
    }
    for id in &calls {
        let (s, _) = get(&server.url(&format!("/crm/v3/objects/calls/{id}")), &token).await;
        assert_eq!(s, 200);
    }
    // The index was rebuilt: numbers typed nationally still match.
    let (_, _, r) = post(
        &server.url(INBOUND),
        &token,
        &inbound("after", "+442079461005", false),
    )
    .await;
    assert_eq!(
        r["callerIdMatches"][0]["objectCoordinates"]["objectId"],
        contacts[5]
    );
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let db = Db::new();
    let server = Server::start(&db);
    let doc: Value = client()
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/crm/v3/extensions/calling/inbound-call",
        "/crm/extensions/calling/{version}/inbound-call",
        "/crm/v3/objects/{objectType}",
        "/crm/v3/objects/{objectType}/{objectId}",
        "/crm/v3/owners",
        "/settings/v3/users",
        "/switchboard/v1/health",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(
        doc["components"]["schemas"]
            .get("InboundCallRequest")
            .is_some()
    );
}
