//! The CRM objects API over HTTP: paging, batch limits, merge, GDPR delete, history, search
//! operators and limits, properties, associations and owners.

mod common;

use common::*;
use serde_json::{Value, json};

fn ids(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

async fn search(server: &Server, token: &str, ty: &str, body: Value) -> (u16, Value) {
    let (s, _, b) = post(
        &server.url(&format!("/crm/v3/objects/{ty}/search")),
        token,
        &body,
    )
    .await;
    (s, b)
}

fn eq(prop: &str, op: &str, value: Value) -> Value {
    json!({ "filterGroups": [{ "filters": [{ "propertyName": prop, "operator": op, "value": value }] }], "limit": 100 })
}

#[tokio::test]
async fn paging_properties_and_default_properties() {
    let db = Db::new();
    db.portal(1, "US");
    let token = db.token(1, WRITE_SCOPES);
    let server = Server::start(&db);
    let mut made = Vec::new();
    for i in 0..25 {
        made.push(
            create(
                &server,
                &token,
                "contacts",
                json!({"firstname": format!("P{i}"), "lastname": "Page", "city": "Paris"}),
            )
            .await
            .to_string(),
        );
    }
    // Default limit 10 and cursor paging to the end.
    let (_, first) = get(&server.url("/crm/v3/objects/contacts"), &token).await;
    assert_eq!(ids(&first), made[..10].to_vec());
    let seen: Vec<String> = all_pages(&server, &token, "/crm/v3/objects/0-1?limit=7")
        .await
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, made);
    // Default properties, and both array forms of `properties`.
    let p = &first["results"][0]["properties"];
    for k in [
        "createdate",
        "email",
        "firstname",
        "hs_object_id",
        "lastmodifieddate",
        "lastname",
    ] {
        assert!(p.get(k).is_some(), "default property {k}: {p}");
    }
    assert!(p.get("city").is_none());
    let (_, a) = get(
        &server.url("/crm/v3/objects/contacts?limit=1&properties=city&properties=firstname"),
        &token,
    )
    .await;
    let (_, b) = get(
        &server.url("/crm/v3/objects/contacts?limit=1&properties=city,firstname"),
        &token,
    )
    .await;
    assert_eq!(a["results"][0]["properties"], b["results"][0]["properties"]);
    assert_eq!(a["results"][0]["properties"]["city"], "Paris");
    // Asked-for properties come with the system fields; a defined property without a value is
    // null, and a name no property has is left out (HubSpot's behaviour).
    let id = &made[1];
    for path in [
        format!("/crm/v3/objects/contacts/{id}?properties=firstname,jobtitle,no_such_thing"),
        "/crm/v3/objects/contacts?limit=2&properties=firstname,jobtitle,no_such_thing".to_string(),
    ] {
        let (_, r) = get(&server.url(&path), &token).await;
        let record = if r["results"].is_array() {
            &r["results"][1]
        } else {
            &r
        };
        let p = record["properties"].as_object().unwrap();
        let keys: Vec<&str> = p.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "createdate",
                "firstname",
                "hs_object_id",
                "jobtitle",
                "lastmodifieddate"
            ],
            "{path}: {r}"
        );
        assert_eq!(p["hs_object_id"], record["id"], "{path}");
        assert_eq!(p["createdate"], record["createdAt"], "{path}");
        assert!(p["jobtitle"].is_null(), "{path}");
    }
    // Asked only for history, the properties are those, with the system fields.
    let (_, h) = get(
        &server.url(&format!(
            "/crm/v3/objects/contacts/{id}?propertiesWithHistory=city"
        )),
        &token,
    )
    .await;
    let keys: Vec<&str> = h["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["city", "createdate", "hs_object_id", "lastmodifieddate"],
        "{h}"
    );
    assert_eq!(
        h["propertiesWithHistory"]["city"][0]["value"], "Paris",
        "{h}"
    );
    let (_, found) = search(
        &server,
        &token,
        "contacts",
        json!({"filterGroups": [{"filters": [{"propertyName": "hs_object_id", "operator": "EQ", "value": id}]}], "properties": ["city"]}),
    )
    .await;
    let p = &found["results"][0]["properties"];
    assert_eq!(
        (p["city"].as_str(), p["hs_object_id"].as_str()),
        (Some("Paris"), Some(id.as_str())),
        "{found}"
    );
    // Limits and bad parameters are 400s that name the parameter.
    for bad in [
        "limit=0",
        "limit=101",
        "limit=ten",
        "archived=maybe",
        "after=xyz",
    ] {
        let (s, e) = get(
            &server.url(&format!("/crm/v3/objects/contacts?{bad}")),
            &token,
        )
        .await;
        assert_eq!(s, 400, "{bad}: {e}");
        let field = bad.split('=').next().unwrap();
        assert!(
            error_fields(&e, "VALIDATION_ERROR").contains(&field.to_string()),
            "{bad}: {e}"
        );
    }
    let (s, e) = get(&server.url("/crm/v3/objects/deals"), &token).await;
    assert_eq!(s, 404, "{e}");
    // Archived records only with archived=true.
    let gone = &made[0];
    client()
        .delete(server.url(&format!("/crm/v3/objects/contacts/{gone}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (_, live) = get(&server.url("/crm/v3/objects/contacts?limit=100"), &token).await;
    assert!(!ids(&live).contains(gone));
    let (_, arch) = get(
        &server.url("/crm/v3/objects/contacts?limit=100&archived=true"),
        &token,
    )
    .await;
    assert_eq!(ids(&arch), vec![gone.clone()]);
    assert!(arch["results"][0]["archivedAt"].is_string());
}

#[tokio::test]
async fn writes_are_validated_and_history_is_kept() {
    let db = Db::new();
    db.portal(2, "US");
    let token = db.token(2, WRITE_SCOPES);
    let server = Server::start(&db);
    let url = server.url("/crm/v3/objects/contacts");
    for (props, field) in [
        (json!({"nope": "x"}), "properties.nope"),
        (json!({"hs_object_id": "5"}), "properties.hs_object_id"),
        (
            json!({"hs_calculated_phone_number": "+1"}),
            "properties.hs_calculated_phone_number",
        ),
        (json!({"firstname": ["a"]}), "properties.firstname"),
    ] {
        let (s, _, e) = post(&url, &token, &json!({ "properties": props })).await;
        assert_eq!(s, 400, "{e}");
        assert!(
            error_fields(&e, "VALIDATION_ERROR").contains(&field.to_string()),
            "{e}"
        );
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains(field.trim_start_matches("properties.")),
            "{e}"
        );
    }
    let (s, _, e) = post(
        &server.url("/crm/v3/objects/companies"),
        &token,
        &json!({"properties": {"numberofemployees": "many"}}),
    )
    .await;
    assert_eq!(s, 400);
    assert!(e["message"].as_str().unwrap().contains("numberofemployees"));
    let (s, _, e) = post(
        &server.url("/crm/v3/objects/calls"),
        &token,
        &json!({"properties": {"hs_timestamp": "noon"}}),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    // Duplicate email.
    let id = create(
        &server,
        &token,
        "contacts",
        json!({"email": "dup@example.com", "firstname": "One"}),
    )
    .await;
    let (s, _, e) = post(
        &url,
        &token,
        &json!({"properties": {"email": "dup@example.com"}}),
    )
    .await;
    assert_eq!(s, 409);
    error_fields(&e, "CONFLICT");
    assert_eq!(
        e["message"],
        format!("Contact already exists. Existing ID: {id}")
    );
    // History, newest first, with derived properties calculated.
    patch(
        &server.url(&format!("/crm/v3/objects/contacts/{id}")),
        &token,
        &json!({"properties": {"firstname": "Two", "phone": "+44 20 7946 0958"}}),
    )
    .await;
    patch(
        &server.url(&format!("/crm/v3/objects/contacts/{id}")),
        &token,
        &json!({"properties": {"firstname": "Three"}}),
    )
    .await;
    let (_, r) = get(&server.url(&format!("/crm/v3/objects/contacts/{id}?propertiesWithHistory=firstname,hs_calculated_phone_number")), &token).await;
    let h = &r["propertiesWithHistory"];
    let values: Vec<&str> = h["firstname"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["Three", "Two", "One"]);
    assert_eq!(h["firstname"][0]["sourceType"], "API");
    assert_eq!(h["hs_calculated_phone_number"][0]["value"], "+442079460958");
    assert_eq!(
        h["hs_calculated_phone_number"][0]["sourceType"],
        "CALCULATED"
    );
}

#[tokio::test]
async fn batch_limits_partial_failures_merge_and_gdpr() {
    let db = Db::new();
    db.portal(3, "GB");
    let token = db.token(3, WRITE_SCOPES);
    let server = Server::start(&db);
    let batch = |op: &str| server.url(&format!("/crm/v3/objects/contacts/batch/{op}"));
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"properties": {"firstname": format!("x{i}")}}))
        .collect();
    for op in ["create", "read", "update", "upsert", "archive"] {
        let (s, _, e) = post(&batch(op), &token, &json!({"inputs": too_many})).await;
        assert_eq!(s, 400, "{op}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains("at most 100"),
            "{op}: {e}"
        );
    }
    // A duplicate email fails alone: 207 with numErrors.
    create(
        &server,
        &token,
        "contacts",
        json!({"email": "taken@example.com"}),
    )
    .await;
    let (s, _, r) = post(&batch("create"), &token, &json!({"inputs": [
        {"properties": {"email": "free@example.com"}}, {"properties": {"email": "taken@example.com"}}
    ]})).await;
    assert_eq!(s, 207, "{r}");
    assert_eq!(r["numErrors"], 1);
    assert_eq!(r["errors"][0]["category"], "CONFLICT");
    assert_eq!(r["results"].as_array().unwrap().len(), 1);
    let (s, _, r) = post(
        &batch("update"),
        &token,
        &json!({"inputs": [{"id": "987654", "properties": {"firstname": "x"}}]}),
    )
    .await;
    assert_eq!(s, 207, "{r}");
    assert_eq!(r["errors"][0]["context"]["ids"][0], "987654");
    // An invalid property fails the whole batch with the input's index in `in`.
    let (s, _, e) = post(
        &batch("create"),
        &token,
        &json!({"inputs": [{"properties": {}}, {"properties": {"bogus": "1"}}]}),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        error_fields(&e, "VALIDATION_ERROR").contains(&"inputs[1].properties.bogus".to_string()),
        "{e}"
    );

    // Merge: the primary keeps its values, takes the other's number and associations.
    let company = create(&server, &token, "companies", json!({"name": "Co"})).await;
    let primary = create(
        &server,
        &token,
        "contacts",
        json!({"firstname": "Keep", "email": "keep@example.com"}),
    )
    .await;
    let (_, _, other) = post(&server.url("/crm/v3/objects/contacts"), &token, &json!({
        "properties": {"firstname": "Gone", "mobilephone": "07400 123456", "country": "GB"},
        "associations": [{"to": {"id": company.to_string()}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]}]
    })).await;
    let other: i64 = other["id"].as_str().unwrap().parse().unwrap();
    let (s, _, m) = post(
        &server.url("/crm/v3/objects/contacts/merge"),
        &token,
        &json!({"primaryObjectId": primary.to_string(), "objectIdToMerge": other.to_string()}),
    )
    .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["id"], primary.to_string());
    assert_eq!(m["properties"]["firstname"], "Keep");
    assert_eq!(m["properties"]["mobilephone"], "07400 123456");
    let (_, _, r) = post(
        &server.url(INBOUND),
        &token,
        &inbound("m", "+447400123456", false),
    )
    .await;
    let matched: Vec<i64> = match_ids(&r);
    assert_eq!(matched, vec![primary], "caller ID follows the merge: {r}");
    let (_, a) = get(
        &server.url(&format!(
            "/crm/v3/objects/contacts/{primary}?associations=companies"
        )),
        &token,
    )
    .await;
    assert_eq!(
        a["associations"]["companies"]["results"][0]["id"],
        company.to_string()
    );
    let (s, _) = get(
        &server.url(&format!("/crm/v3/objects/contacts/{other}")),
        &token,
    )
    .await;
    assert_eq!(s, 404);

    // GDPR delete: gone for good, out of caller ID, scrubbed from the calls that matched it.
    let (_, h, _) = post(
        &server.url(INBOUND),
        &token,
        &inbound("g", "+447400123456", true),
    )
    .await;
    let call = h["x-switchboard-call-id"].to_str().unwrap().to_string();
    let r = client()
        .post(server.url("/crm/v3/objects/contacts/gdpr-delete"))
        .bearer_auth(&token)
        .json(&json!({"objectId": "keep@example.com", "idProperty": "email"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for q in ["", "?archived=true"] {
        let (s, _) = get(
            &server.url(&format!("/crm/v3/objects/contacts/{primary}{q}")),
            &token,
        )
        .await;
        assert_eq!(s, 404);
    }
    let (_, _, r) = post(
        &server.url(INBOUND),
        &token,
        &inbound("g2", "+447400123456", false),
    )
    .await;
    assert_eq!(r["callerIdMatches"], json!([]));
    let (_, c) = get(&server.url(&format!("/crm/v3/objects/calls/{call}?properties=hs_call_from_number,hs_call_to_number&associations=contacts")), &token).await;
    assert_eq!(c["properties"]["hs_call_from_number"], Value::Null, "{c}");
    assert_eq!(c["properties"]["hs_call_to_number"], "+14155550100");
    assert!(c["associations"].get("contacts").is_none(), "{c}");
}

#[tokio::test]
async fn search_operators_limits_and_phone_formats() {
    let db = Db::new();
    db.portal(4, "US");
    let token = db.token(4, WRITE_SCOPES);
    let server = Server::start(&db);
    // A custom property of each type, then records that use them.
    let props = server.url("/crm/v3/properties/contacts");
    for (name, kind, extra) in [
        ("score", "number", json!({})),
        ("vip", "bool", json!({})),
        ("renewal", "date", json!({})),
        ("seen", "datetime", json!({})),
        (
            "tier",
            "enumeration",
            json!({"options": [{"label": "Gold", "value": "gold"}, {"label": "Tin", "value": "tin"}]}),
        ),
        ("direct_line", "phone_number", json!({})),
        ("nickname", "string", json!({})),
    ] {
        let mut body = json!({"name": name, "label": name, "type": kind, "fieldType": "text", "groupName": "contactinformation"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (s, _, r) = post(&props, &token, &body).await;
        assert_eq!(s, 201, "{r}");
    }
    let rows = [
        (
            "Ann",
            "9",
            "true",
            "2026-01-05",
            "2026-01-05T10:00:00Z",
            "gold",
            "+33 6 12 34 56 78",
            "FR",
        ),
        (
            "Bob",
            "10",
            "false",
            "2026-03-01",
            "1767225600000",
            "tin",
            "06 12 34 56 79",
            "FR",
        ),
        (
            "Cy",
            "100",
            "true",
            "2025-12-31",
            "2025-12-31T23:59:59Z",
            "gold",
            "(415) 555-2671",
            "",
        ),
    ];
    let mut id = Vec::new();
    for (n, score, vip, renewal, seen, tier, phone, country) in rows {
        let mut p = json!({"firstname": n, "score": score, "vip": vip, "renewal": renewal, "seen": seen, "tier": tier, "phone": phone, "nickname": format!("{n} the tester")});
        if !country.is_empty() {
            p["country"] = json!(country);
        }
        id.push(create(&server, &token, "contacts", p).await.to_string());
    }
    let (s, e) = search(&server, &token, "contacts", json!({"filterGroups": [{"filters": [{"propertyName": "score", "operator": "GT", "value": "x"}]}]})).await;
    assert_eq!(s, 200, "a non-number compares as no match: {e}");
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (eq("score", "GT", json!("9")), vec![&id[1], &id[2]]),
        (eq("score", "LT", json!(10)), vec![&id[0]]),
        (eq("score", "LTE", json!("10")), vec![&id[0], &id[1]]),
        (eq("score", "GTE", json!("100")), vec![&id[2]]),
        (eq("score", "EQ", json!("10.0")), vec![&id[1]]),
        (eq("score", "NEQ", json!("10")), vec![&id[0], &id[2]]),
        (eq("vip", "EQ", json!("true")), vec![&id[0], &id[2]]),
        (
            eq("renewal", "GT", json!("2026-01-01")),
            vec![&id[0], &id[1]],
        ),
        (
            eq("seen", "LT", json!("2026-01-01T00:00:00Z")),
            vec![&id[2]],
        ),
        (
            eq("seen", "GTE", json!("1767225600000")),
            vec![&id[0], &id[1]],
        ),
        (eq("tier", "EQ", json!("GOLD")), vec![&id[0], &id[2]]),
        (
            json!({"filterGroups": [{"filters": [{"propertyName": "tier", "operator": "IN", "values": ["tin"]}]}]}),
            vec![&id[1]],
        ),
        (
            json!({"filterGroups": [{"filters": [{"propertyName": "firstname", "operator": "NOT_IN", "values": ["Ann", "Bob"]}]}]}),
            vec![&id[2]],
        ),
        (
            json!({"filterGroups": [{"filters": [{"propertyName": "score", "operator": "BETWEEN", "value": "9", "highValue": "10"}]}]}),
            vec![&id[0], &id[1]],
        ),
        (
            json!({"filterGroups": [{"filters": [{"propertyName": "country", "operator": "HAS_PROPERTY"}]}]}),
            vec![&id[0], &id[1]],
        ),
        (
            json!({"filterGroups": [{"filters": [{"propertyName": "country", "operator": "NOT_HAS_PROPERTY"}]}]}),
            vec![&id[2]],
        ),
        (
            eq("nickname", "CONTAINS_TOKEN", json!("tester")),
            vec![&id[0], &id[1], &id[2]],
        ),
        (
            eq("nickname", "NOT_CONTAINS_TOKEN", json!("bob")),
            vec![&id[0], &id[2]],
        ),
        (eq("firstname", "EQ", json!("ann")), vec![&id[0]]),
        // Phones in any format, on the raw and the derived properties.
        (eq("phone", "EQ", json!("+33612345678")), vec![&id[0]]),
        (eq("phone", "EQ", json!("+33612345679")), vec![&id[1]]),
        (eq("phone", "EQ", json!("415.555.2671")), vec![&id[2]]),
        (
            eq(
                "hs_searchable_calculated_phone_number",
                "EQ",
                json!("612345679"),
            ),
            vec![&id[1]],
        ),
        (
            eq("hs_calculated_phone_number", "EQ", json!("+14155552671")),
            vec![&id[2]],
        ),
        // OR of groups, AND inside.
        (
            json!({"filterGroups": [
                {"filters": [{"propertyName": "vip", "operator": "EQ", "value": "true"}, {"propertyName": "score", "operator": "LT", "value": "50"}]},
                {"filters": [{"propertyName": "firstname", "operator": "EQ", "value": "Bob"}]}
            ]}),
            vec![&id[0], &id[1]],
        ),
        (json!({"query": "bob"}), vec![&id[1]]),
        (json!({"query": "4155552671"}), vec![&id[2]]),
    ];
    for (body, want) in cases {
        let (s, r) = search(&server, &token, "contacts", body.clone()).await;
        assert_eq!(s, 200, "{body}: {r}");
        let mut got = ids(&r);
        got.sort();
        let mut want: Vec<String> = want.into_iter().map(str::to_string).collect();
        want.sort();
        assert_eq!(got, want, "{body}");
        assert_eq!(r["total"], want.len(), "{body}");
    }
    // Sorts as strings and objects; paging with after.
    let (_, r) = search(
        &server,
        &token,
        "contacts",
        json!({"sorts": [{"propertyName": "score", "direction": "DESCENDING"}], "limit": 2}),
    )
    .await;
    assert_eq!(ids(&r), vec![id[2].clone(), id[1].clone()]);
    assert_eq!(r["paging"]["next"]["after"], "2");
    let (_, r) = search(
        &server,
        &token,
        "contacts",
        json!({"sorts": ["score"], "limit": 2, "after": "2"}),
    )
    .await;
    assert_eq!(ids(&r), vec![id[2].clone()]);
    assert!(r.get("paging").is_none());
    // Each limit is a 400 that says which.
    let f = json!({"propertyName": "firstname", "operator": "HAS_PROPERTY"});
    let limits = [
        (
            json!({"filterGroups": vec![json!({"filters": [f.clone()]}); 6]}),
            "filterGroups has 6 groups",
        ),
        (
            json!({"filterGroups": [{"filters": vec![f.clone(); 11]}]}),
            "the limit is 10 per group",
        ),
        (
            json!({"filterGroups": vec![json!({"filters": vec![f.clone(); 6]}); 5]}),
            "30 filters in all; the limit is 25",
        ),
        (
            json!({"limit": 201}),
            "limit must be an integer from 0 to 200",
        ),
        (
            json!({"limit": 10, "after": "9995"}),
            "at most 10000 results",
        ),
        (
            json!({"filterGroups": [{"filters": [{"propertyName": "x", "operator": "LIKE", "value": "1"}]}]}),
            "is not one of EQ",
        ),
        (
            json!({"filterGroups": [{"filters": [{"propertyName": "x", "operator": "EQ"}]}]}),
            "value is required",
        ),
    ];
    for (body, says) in limits {
        let (s, e) = search(&server, &token, "contacts", body).await;
        assert_eq!(s, 400, "{e}");
        error_fields(&e, "VALIDATION_ERROR");
        assert!(e["message"].as_str().unwrap().contains(says), "{says}: {e}");
    }
    // Typed custom properties reject wrong values with a 400 naming them.
    for (name, bad) in [
        ("score", "lots"),
        ("vip", "yes"),
        ("renewal", "March"),
        ("seen", "soon"),
        ("tier", "silver"),
    ] {
        let (s, _, e) = post(
            &server.url("/crm/v3/objects/contacts"),
            &token,
            &json!({"properties": {name: bad}}),
        )
        .await;
        assert_eq!(s, 400, "{name}={bad}: {e}");
        assert!(
            error_fields(&e, "VALIDATION_ERROR").contains(&format!("properties.{name}")),
            "{e}"
        );
    }
    let (s, p) = get(&server.url("/crm/v3/properties/contacts/tier"), &token).await;
    assert_eq!(s, 200);
    assert_eq!(p["type"], "enumeration");
    let (s, _) = get(
        &server.url("/crm/v3/properties/contacts/nothing_here"),
        &token,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _, e) = post(
        &props,
        &token,
        &json!({"name": "Bad Name", "label": "x", "type": "colour", "fieldType": "text"}),
    )
    .await;
    assert_eq!(s, 400);
    let fields = error_fields(&e, "VALIDATION_ERROR");
    assert!(
        fields.contains(&"name".to_string()) && fields.contains(&"type".to_string()),
        "{e}"
    );
}

#[tokio::test]
async fn associations_and_owners() {
    let db = Db::new();
    db.portal(5, "US");
    let token = db.token(5, WRITE_SCOPES);
    let server = Server::start(&db);
    let contact = create(&server, &token, "contacts", json!({"firstname": "A"})).await;
    let company = create(&server, &token, "companies", json!({"name": "C"})).await;
    let c = client();
    let put = |url: String, body: Value| {
        let c = c.clone();
        let token = token.clone();
        async move {
            let r = c
                .put(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (s, r) = put(
        server.url(&format!(
            "/crm/v4/objects/contacts/{contact}/associations/companies/{company}"
        )),
        json!([{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 1}]),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["labels"], json!(["Primary"]));
    let (s, r) = put(
        server.url(&format!(
            "/crm/v4/objects/contacts/{contact}/associations/companies/{company}"
        )),
        json!([{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 194}]),
    )
    .await;
    assert_eq!(s, 400, "a call type between a contact and a company: {r}");
    let (s, _) = put(
        server.url(&format!(
            "/crm/v4/objects/contacts/{contact}/associations/companies/999999"
        )),
        json!([{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 1}]),
    )
    .await;
    assert_eq!(s, 404);
    let (_, r) = get(
        &server.url(&format!(
            "/crm/v4/objects/companies/{company}/associations/contacts"
        )),
        &token,
    )
    .await;
    assert_eq!(r["results"][0]["toObjectId"], contact);
    assert_eq!(r["results"][0]["associationTypes"][0]["typeId"], 2);
    // v3 call association, read back from the contact's side.
    let call = create(
        &server,
        &token,
        "calls",
        json!({"hs_timestamp": "1767225600000"}),
    )
    .await;
    let (s, r) = put(
        server.url(&format!(
            "/crm/v3/objects/calls/{call}/associations/contacts/{contact}/194"
        )),
        Value::Null,
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        r["associations"]["contacts"]["results"][0]["id"],
        contact.to_string()
    );
    let (_, r) = get(
        &server.url(&format!(
            "/crm/v3/objects/contacts/{contact}?associations=calls,companies"
        )),
        &token,
    )
    .await;
    assert_eq!(
        r["associations"]["calls"]["results"][0]["id"],
        call.to_string()
    );
    assert_eq!(
        r["associations"]["companies"]["results"][0]["type"],
        "contact_to_company"
    );
    // Delete removes both directions.
    let d = c
        .delete(server.url(&format!(
            "/crm/v4/objects/contacts/{contact}/associations/companies/{company}"
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(d.status(), 204);
    let (_, r) = get(
        &server.url(&format!(
            "/crm/v4/objects/companies/{company}/associations/contacts"
        )),
        &token,
    )
    .await;
    assert_eq!(r["results"], json!([]));
    // Batch: create with one bad input, read, archive.
    let (s, _, r) = post(&server.url("/crm/v4/associations/contacts/companies/batch/create"), &token, &json!({"inputs": [
        {"from": {"id": contact.to_string()}, "to": {"id": company.to_string()}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]},
        {"from": {"id": contact.to_string()}, "to": {"id": "424242"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]}
    ]})).await;
    assert_eq!(s, 207, "{r}");
    assert_eq!(r["numErrors"], 1);
    let (_, _, r) = post(
        &server.url("/crm/v4/associations/companies/contacts/batch/read"),
        &token,
        &json!({"inputs": [{"id": company.to_string()}]}),
    )
    .await;
    assert_eq!(r["results"][0]["to"][0]["toObjectId"], contact);
    let (s, _, _) = post(&server.url("/crm/v4/associations/contacts/companies/batch/archive"), &token, &json!({"inputs": [{"from": {"id": contact.to_string()}, "to": [{"id": company.to_string()}]}]})).await;
    assert_eq!(s, 204);
    let (_, _, r) = post(
        &server.url("/crm/v4/associations/companies/contacts/batch/read"),
        &token,
        &json!({"inputs": [{"id": company.to_string()}]}),
    )
    .await;
    assert_eq!(r["results"][0]["to"], json!([]));

    // Owners: paging, email filter, idProperty.
    for i in 0..5 {
        let (s, _, _) = post(
            &server.url("/settings/v3/users"),
            &token,
            &json!({"email": format!("u{i}@example.com")}),
        )
        .await;
        assert_eq!(s, 201);
    }
    let (_, p1) = get(&server.url("/crm/v3/owners?limit=3"), &token).await;
    assert_eq!(p1["results"].as_array().unwrap().len(), 3);
    let after = p1["paging"]["next"]["after"].as_str().unwrap();
    let (_, p2) = get(
        &server.url(&format!("/crm/v3/owners/?limit=3&after={after}")),
        &token,
    )
    .await;
    assert_eq!(p2["results"].as_array().unwrap().len(), 2);
    assert!(p2.get("paging").is_none());
    let (_, f) = get(&server.url("/crm/v3/owners?email=U3@example.com"), &token).await;
    assert_eq!(f["results"].as_array().unwrap().len(), 1);
    let owner = &f["results"][0];
    assert!(owner["id"].is_string() && owner["userId"].is_i64() && owner["teams"].is_array());
    let (_, by_user) = get(
        &server.url(&format!(
            "/crm/v3/owners/{}?idProperty=userId",
            owner["userId"]
        )),
        &token,
    )
    .await;
    assert_eq!(by_user["id"], owner["id"]);
    let (s, _) = get(
        &server.url(&format!("/crm/v3/owners/{}", owner["userId"])),
        &token,
    )
    .await;
    assert_eq!(s, 404, "a user id is not an owner id");
}

/// A malformed email is refused wherever a contact's email is written (create, update, an
/// upsert that creates by email, an import row), with HubSpot's `INVALID_EMAIL`; the bad forms
/// are made from good addresses by one mutation each, so every rule is exercised.
#[tokio::test]
async fn malformed_emails_are_refused_wherever_an_email_is_written() {
    let (db, token, server) = portal_server(9);
    let contacts = server.url("/crm/v3/objects/contacts");
    let good = [
        "ada@example.com",
        "ada.lovelace+calls@mail.example.co.uk",
        "o'brien_2@sub-domain.example.org",
        "zoë@exämple.de",
    ];
    type Mutation = fn(&str) -> String;
    let mutations: [(&str, Mutation); 9] = [
        ("no @", |e| e.replace('@', "")),
        ("two @", |e| e.replacen('@', "@@", 1)),
        ("a space", |e| e.replacen('@', " @", 1)),
        ("no name", |e| e[e.find('@').unwrap()..].to_string()),
        ("no dot in the domain", |e| {
            format!("{}@localhost", &e[..e.find('@').unwrap()])
        }),
        ("an empty label", |e| {
            e.replacen('.', "..", e.matches('.').count())
        }),
        ("a hyphen at a label's start", |e| e.replacen('@', "@-", 1)),
        ("a dot before the @", |e| e.replacen('@', ".@", 1)),
        ("a comma", |e| e.replacen('@', ",x@", 1)),
    ];
    let mut n = 0;
    for email in good {
        let id = create(
            &server,
            &token,
            "contacts",
            json!({"email": format!(" {email} ")}),
        )
        .await;
        let (_, c) = get(&format!("{contacts}/{id}?properties=email"), &token).await;
        assert_eq!(c["properties"]["email"], email, "stored trimmed: {c}");
        for (what, mutate) in &mutations {
            let bad = mutate(email);
            n += 1;
            let check = |e: &Value, field: &str| {
                let codes: Vec<&str> = e["errors"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["code"].as_str())
                    .collect();
                assert!(codes.contains(&"INVALID_EMAIL"), "{what}: {bad:?}: {e}");
                assert!(
                    error_fields(e, "VALIDATION_ERROR").contains(&field.to_string()),
                    "{e}"
                );
                assert!(
                    e["message"].as_str().unwrap().contains("Email address"),
                    "{e}"
                );
            };
            let (s, _, e) = post(&contacts, &token, &json!({"properties": {"email": bad}})).await;
            assert_eq!(s, 400, "create with {what}: {bad:?}: {e}");
            check(&e, "properties.email");
            let (s, e) = patch(
                &format!("{contacts}/{id}"),
                &token,
                &json!({"properties": {"email": bad}}),
            )
            .await;
            assert_eq!(s, 400, "update with {what}: {bad:?}: {e}");
            check(&e, "properties.email");
            let (s, _, e) = post(
                &server.url("/crm/v3/objects/contacts/batch/upsert"),
                &token,
                &json!({"inputs": [{"id": bad, "idProperty": "email", "properties": {"firstname": "X"}}]}),
            )
            .await;
            assert_eq!(s, 207, "upsert by {what}: {bad:?}: {e}");
            assert_eq!(e["numErrors"], 1, "{e}");
        }
        let (_, c) = get(&format!("{contacts}/{id}?properties=email"), &token).await;
        assert_eq!(
            c["properties"]["email"], email,
            "unchanged by the refused updates: {c}"
        );
    }
    let (_, all) = get(&format!("{contacts}?limit=100"), &token).await;
    assert_eq!(
        all["results"].as_array().unwrap().len(),
        good.len(),
        "{n} refused: {all}"
    );

    // An import sends the same rows to its reject file, with their lines and the reason.
    let csv = db.dir.path().join("emails.csv");
    let mut rows = vec!["Email,First Name".to_string()];
    let mut bad_lines = Vec::new();
    for (i, (_, mutate)) in mutations.iter().enumerate() {
        rows.push(format!("ok{i}@import.example,Good"));
        rows.push(format!(
            "\"{}\",Bad",
            mutate(&format!("bad{i}@import.example"))
        ));
        bad_lines.push(rows.len() as u64);
    }
    std::fs::write(&csv, rows.join("\n") + "\n").unwrap();
    let n = mutations.len();
    let rejects = db.import_counted("9", &csv, &[], (n, n));
    let lines: Vec<u64> = rejects
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(lines, bad_lines, "{rejects}");
    assert_eq!(
        rejects.matches("Email address").count(),
        mutations.len(),
        "{rejects}"
    );
    server.stop();
}
