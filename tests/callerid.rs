//! Caller ID through the real server: a corpus generated from libphonenumber's example
//! numbers, plus extensions, the ignore list, explain, associate modes, suffix and doctor.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use rlibphonenumber::{PHONE_NUMBER_UTIL, PhoneNumberFormat, PhoneNumberType, Region};
use serde_json::{Value, json};

const EXPLAIN: &str = "/switchboard/v1/caller-id/explain";

/// Human ways of writing one number: (label, text, carries its own country code).
fn formats(n: &rlibphonenumber::PhoneNumber) -> Vec<(&'static str, String, bool)> {
    let e164 = n.format_as(PhoneNumberFormat::E164).into_owned();
    let intl = n.format_as(PhoneNumberFormat::International).into_owned();
    let national = n.format_as(PhoneNumberFormat::National).into_owned();
    let tel = n.format_as(PhoneNumberFormat::RFC3966).into_owned();
    let nsn = n.get_national_significant_number();
    vec![
        ("e164", e164.clone(), true),
        ("international", intl.clone(), true),
        ("national", national.clone(), false),
        ("tel-uri", tel, true),
        ("idd-00", format!("00 {} {nsn}", n.country_code), true),
        ("labelled", format!("Tel: {intl} (mobile)"), true),
        ("national-dashes", national.replace(' ', "-"), false),
    ]
}

#[tokio::test]
async fn corpus_of_example_numbers_in_many_regions_and_formats() {
    let db = Db::new();
    db.portal(900, "US");
    let token = db.token(900, WRITE_SCOPES);
    let server = Server::start(&db);

    let mut regions: Vec<Region> = PHONE_NUMBER_UTIL.get_supported_regions().collect();
    regions.sort_by_key(|r| r.to_string());
    // Every 4th region, so the corpus spans the alphabet and the world: about 60 regions.
    let regions: Vec<Region> = regions.into_iter().step_by(4).collect();

    // record id -> (caller E.164, expected tier)
    let mut expected: HashMap<i64, (String, &'static str)> = HashMap::new();
    let mut per_caller: HashMap<String, Vec<i64>> = HashMap::new();
    let mut used_regions = HashSet::new();
    let mut stored = 0;
    for region in &regions {
        for kind in [PhoneNumberType::FixedLine, PhoneNumberType::Mobile] {
            let Ok(n) = PHONE_NUMBER_UTIL.get_example_number_for_type_and_region(*region, kind)
            else {
                continue;
            };
            let e164 = n.format_as(PhoneNumberFormat::E164).into_owned();
            used_regions.insert(region.to_string());
            for (i, (_label, text, explicit)) in formats(&n).into_iter().enumerate() {
                for with_country in [true, false] {
                    let mut props = json!({ "phone": text });
                    if with_country {
                        props["country"] = json!(if i % 2 == 0 {
                            region.to_string()
                        } else {
                            region.to_string().to_lowercase()
                        });
                    }
                    let company = i == 4;
                    if !company {
                        props["firstname"] = json!(format!("{region}-{i}"));
                    } else {
                        props["name"] = json!(format!("{region} company"));
                    }
                    let id = create(
                        &server,
                        &token,
                        if company { "companies" } else { "contacts" },
                        props,
                    )
                    .await;
                    stored += 1;
                    let tier = if with_country || explicit {
                        "exact"
                    } else {
                        "national"
                    };
                    expected.insert(id, (e164.clone(), tier));
                    per_caller.entry(e164.clone()).or_default().push(id);
                }
            }
        }
    }
    assert!(
        used_regions.len() >= 40,
        "corpus spans {} regions",
        used_regions.len()
    );

    let (mut found, mut wrong_exact, mut wrong_national) = (0usize, 0usize, 0usize);
    let mut national_expected = 0usize;
    let mut national_found = 0usize;
    for (caller, ids) in &per_caller {
        let (s, _, res) = post(
            &server.url(INBOUND),
            &token,
            &inbound("corpus", caller, false),
        )
        .await;
        assert_eq!(s, 200, "{caller}: {res}");
        let (s, _, explained) =
            post(&server.url(EXPLAIN), &token, &json!({ "number": caller })).await;
        assert_eq!(s, 200, "{explained}");
        let got: Vec<i64> = match_ids(&res);
        let explained_ids: Vec<i64> = explained["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["record"]["objectId"].as_i64().unwrap())
            .collect();
        assert_eq!(
            got, explained_ids,
            "inbound-call and explain rank alike for {caller}"
        );
        let tiers: HashMap<i64, String> = explained["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["record"]["objectId"].as_i64().unwrap(),
                    m["tier"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        for id in ids {
            let (_, tier) = &expected[id];
            if *tier == "national" {
                national_expected += 1;
            }
            match tiers.get(id) {
                Some(t) if t == tier => {
                    found += 1;
                    if *tier == "national" {
                        national_found += 1;
                    }
                }
                other => panic!("{caller}: record {id} expected in tier {tier}, got {other:?}"),
            }
        }
        for (id, tier) in &tiers {
            if expected.get(id).map(|(e, _)| e) != Some(caller) {
                if tier == "exact" {
                    wrong_exact += 1;
                } else {
                    wrong_national += 1;
                }
            }
        }
        // Ranking: tiers never go back up, and within a tier contacts come before companies.
        let order: Vec<(u8, bool)> = explained["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let t = match m["tier"].as_str().unwrap() {
                    "exact" => 1,
                    "national" => 2,
                    _ => 3,
                };
                (t, m["record"]["objectTypeId"] != "0-1")
            })
            .collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "ranking of {caller}");
    }
    println!(
        "corpus: {} regions, {} numbers, {stored} stored values; recall {found}/{stored}; national tier {national_found}/{national_expected}; wrong records: {wrong_exact} exact, {wrong_national} national",
        used_regions.len(),
        per_caller.len()
    );
    assert_eq!(found, stored, "recall is 100%");
    assert_eq!(
        wrong_exact, 0,
        "no record of another number in the exact tier"
    );
}

#[tokio::test]
async fn extensions_shared_numbers_and_associate_modes() {
    let db = Db::new();
    db.portal(901, "GB");
    let token = db.token(901, WRITE_SCOPES);
    let server = Server::start(&db);
    let acme = create(
        &server,
        &token,
        "companies",
        json!({"name": "Acme", "phone": "+44 20 7946 0000"}),
    )
    .await;
    let other = create(&server, &token, "companies", json!({"name": "Other"})).await;
    let mut staff = Vec::new();
    for (i, ext) in ["11", "12", "13"].iter().enumerate() {
        let (s, _, b) = post(&server.url("/crm/v3/objects/contacts"), &token, &json!({
            "properties": {"firstname": format!("Staff{i}"), "phone": format!("020 7946 0000 ext. {ext}"), "country": "United Kingdom"},
            "associations": [{"to": {"id": acme.to_string()}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 1}]}]
        })).await;
        assert_eq!(s, 201, "{b}");
        staff.push(b["id"].as_str().unwrap().parse::<i64>().unwrap());
    }
    // The caller's extension ranks its owner first.
    let mut body = inbound("ext-1", "+442079460000", true);
    body["fromNumber"]["extension"] = json!("12");
    let (_, h, r) = post(&server.url(INBOUND), &token, &body).await;
    let ids: Vec<i64> = match_ids(&r);
    assert_eq!(ids[0], staff[1], "{r}");
    assert_eq!(ids.len(), 4, "three contacts and the company: {r}");
    assert_eq!(*ids.last().unwrap(), acme, "contacts before companies");
    // best: one best contact (extension agrees) gets the call, with its primary company.
    let call = h["x-switchboard-call-id"].to_str().unwrap().to_string();
    let (_, c) = get(
        &server.url(&format!(
            "/crm/v3/objects/calls/{call}?associations=contacts,companies"
        )),
        &token,
    )
    .await;
    let assoc = |c: &Value, t: &str| -> Vec<String> {
        c["associations"][t]["results"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x["id"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(assoc(&c, "contacts"), vec![staff[1].to_string()]);
    assert_eq!(assoc(&c, "companies"), vec![acme.to_string()]);
    // Ranking rule 4 beats rule 5: the contact with the most recent call comes first, even
    // after another contact was modified later.
    patch(
        &server.url(&format!("/crm/v3/objects/contacts/{}", staff[2])),
        &token,
        &json!({"properties": {"jobtitle": "Receptionist"}}),
    )
    .await;
    let (_, _, r) = post(
        &server.url(INBOUND),
        &token,
        &inbound("rank-1", "+442079460000", false),
    )
    .await;
    let order: Vec<i64> = match_ids(&r);
    assert_eq!(order, vec![staff[1], staff[2], staff[0], acme], "{r}");
    // best, shared number without an extension: the common company, none of the contacts.
    let (_, h, _) = post(
        &server.url(INBOUND),
        &token,
        &inbound("shared-1", "+442079460000", true),
    )
    .await;
    let call = h["x-switchboard-call-id"].to_str().unwrap().to_string();
    let (_, c) = get(
        &server.url(&format!(
            "/crm/v3/objects/calls/{call}?associations=contacts,companies"
        )),
        &token,
    )
    .await;
    assert!(assoc(&c, "contacts").is_empty(), "{c}");
    assert_eq!(assoc(&c, "companies"), vec![acme.to_string()]);
    // all / none.
    for (mode, contacts, companies) in [("all", 3, 1), ("none", 0, 0)] {
        let (s, r) = patch(
            &server.url("/switchboard/v1/settings"),
            &token,
            &json!({"associate": mode}),
        )
        .await;
        assert_eq!(s, 200, "{r}");
        let (_, h, _) = post(
            &server.url(INBOUND),
            &token,
            &inbound(&format!("shared-{mode}"), "+442079460000", true),
        )
        .await;
        let call = h["x-switchboard-call-id"].to_str().unwrap().to_string();
        let (_, c) = get(
            &server.url(&format!(
                "/crm/v3/objects/calls/{call}?associations=contacts,companies"
            )),
            &token,
        )
        .await;
        assert_eq!(assoc(&c, "contacts").len(), contacts, "{mode}: {c}");
        assert_eq!(assoc(&c, "companies").len(), companies, "{mode}: {c}");
    }
    let (s, r) = patch(
        &server.url("/switchboard/v1/settings"),
        &token,
        &json!({"associate": "most"}),
    )
    .await;
    assert_eq!(s, 400, "{r}");
    let _ = other;
}

/// `best` mode: the company a logged call goes to is the contacts' shared primary company,
/// read when the call is logged (so an archived company no longer counts), else the best
/// company match.
#[tokio::test]
async fn best_mode_sends_the_call_to_the_shared_primary_company() {
    let db = Db::new();
    db.portal(904, "US");
    let token = db.token(904, WRITE_SCOPES);
    let server = Server::start(&db);
    let hq = create(&server, &token, "companies", json!({"name": "HQ"})).await;
    let branch = create(
        &server,
        &token,
        "companies",
        json!({"name": "Branch", "phone": "+1 415 555 0177"}),
    )
    .await;
    let contact = |phone: &'static str, company: Option<i64>| {
        let server = &server;
        let token = &token;
        async move {
            let associations: Vec<Value> = company
                .map(|c| json!({"to": {"id": c.to_string()}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 1}]}))
                .into_iter()
                .collect();
            let (s, _, b) = post(
                &server.url("/crm/v3/objects/contacts"),
                token,
                &json!({"properties": {"phone": phone}, "associations": associations}),
            )
            .await;
            assert_eq!(s, 201, "{b}");
            b["id"].as_str().unwrap().parse::<i64>().unwrap()
        }
    };
    let associated = |external: &'static str, from: &'static str| {
        let server = &server;
        let token = &token;
        async move {
            let (s, h, r) = post(&server.url(INBOUND), token, &inbound(external, from, true)).await;
            assert_eq!(s, 200, "{r}");
            let call = h["x-switchboard-call-id"].to_str().unwrap().to_string();
            call_associations(server, token, &call).await
        }
    };
    // Two contacts share a number and a primary company that does not carry the number.
    contact("(415) 555-0150", Some(hq)).await;
    contact("415.555.0150", Some(hq)).await;
    assert_eq!(associated("p-1", "+14155550150").await, (vec![], vec![hq]));
    // Two contacts share a number but not a primary company, and no company matches.
    contact("(415) 555-0160", Some(hq)).await;
    contact("(415) 555-0160", Some(branch)).await;
    assert_eq!(associated("p-2", "+14155550160").await, (vec![], vec![]));
    // One contact without a primary company: the company that matches the number.
    let solo = contact("(415) 555-0177", None).await;
    assert_eq!(
        associated("p-3", "+14155550177").await,
        (vec![solo], vec![branch])
    );
    // An archived company is nobody's primary company any more.
    let (s, r) = http_delete(
        &server.url(&format!("/crm/v3/objects/companies/{hq}")),
        &token,
    )
    .await;
    assert_eq!(s, 204, "{r}");
    assert_eq!(associated("p-4", "+14155550150").await, (vec![], vec![]));
}

/// Ranking rule 4 reads the tied records' calls: a record's most recent live call, whichever
/// way the call was associated with it (inbound-call or the objects API), and an archived
/// call no longer counts.
#[tokio::test]
async fn most_recent_call_orders_records_that_share_a_number() {
    let db = Db::new();
    db.portal(903, "US");
    let token = db.token(903, WRITE_SCOPES);
    let server = Server::start(&db);
    let number = "+14155550123";
    let mut people = Vec::new();
    for name in ["Ann", "Bob", "Cyd"] {
        people.push(
            create(
                &server,
                &token,
                "contacts",
                json!({"firstname": name, "phone": "(415) 555-0123"}),
            )
            .await,
        );
    }
    let order = || async {
        let (s, _, r) = post(
            &server.url(INBOUND),
            &token,
            &inbound("look", number, false),
        )
        .await;
        assert_eq!(s, 200, "{r}");
        match_ids(&r)
    };
    // No calls yet: the most recently modified first (rule 5).
    let (s, r) = patch(
        &server.url(&format!("/crm/v3/objects/contacts/{}", people[0])),
        &token,
        &json!({"properties": {"jobtitle": "Buyer"}}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(order().await, vec![people[0], people[2], people[1]]);
    // A call logged on one of them through the objects API puts it first; a later call on
    // another puts that one first.
    let mut calls = Vec::new();
    for &who in [people[1], people[2]].iter() {
        let (s, _, c) = post(&server.url("/crm/v3/objects/calls"), &token, &json!({
            "properties": {"hs_timestamp": "2026-11-25T10:00:00Z", "hs_call_direction": "INBOUND"},
            "associations": [{"to": {"id": who.to_string()}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 194}]}]
        })).await;
        assert_eq!(s, 201, "{c}");
        calls.push(c["id"].as_str().unwrap().to_string());
        assert_eq!(order().await[0], who);
    }
    assert_eq!(order().await, vec![people[2], people[1], people[0]]);
    // Archiving the newer call hands first place back.
    let (s, r) = http_delete(
        &server.url(&format!("/crm/v3/objects/calls/{}", calls[1])),
        &token,
    )
    .await;
    assert_eq!(s, 204, "{r}");
    assert_eq!(order().await, vec![people[1], people[0], people[2]]);
    // A call logged by inbound-call in `all` mode lands on every match: the tie falls to rule 5.
    let (s, r) = patch(
        &server.url("/switchboard/v1/settings"),
        &token,
        &json!({"associate": "all"}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let (s, _, r) = post(
        &server.url(INBOUND),
        &token,
        &inbound("all-1", number, true),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(order().await, vec![people[0], people[2], people[1]]);
}

#[tokio::test]
async fn ignore_list_explain_suffix_and_doctor() {
    let db = Db::new();
    db.portal(902, "US");
    let token = db.token(902, WRITE_SCOPES);
    let no_admin = db.token(902, "crm.objects.contacts.write");
    let server = Server::start(&db);
    let main_line = create(
        &server,
        &token,
        "companies",
        json!({"name": "Us", "phone": "(415) 555-2671"}),
    )
    .await;
    let uk = create(
        &server,
        &token,
        "contacts",
        json!({"firstname": "Guessed", "phone": "020 7946 0958"}),
    )
    .await;
    let us_twin = create(
        &server,
        &token,
        "contacts",
        json!({"firstname": "Twin", "phone": "+1 207 946 0958"}),
    )
    .await;
    let legacy = create(
        &server,
        &token,
        "contacts",
        json!({"firstname": "Legacy", "phone": "555-2671"}),
    )
    .await;
    let junk = create(
        &server,
        &token,
        "contacts",
        json!({"firstname": "Junk", "phone": "call reception"}),
    )
    .await;

    // Explain: the guessed UK number is a national-tier match; the +1 twin is a near miss.
    let (s, _, e) = post(
        &server.url(EXPLAIN),
        &token,
        &json!({"number": "+442079460958"}),
    )
    .await;
    assert_eq!(s, 200, "{e}");
    let m = &e["matches"][0];
    assert_eq!(m["record"]["objectId"], uk);
    assert_eq!(m["tier"], "national");
    assert_eq!(m["property"], "phone");
    assert_eq!(m["storedValue"], "020 7946 0958");
    assert_eq!(m["normalized"]["regionSource"], "default");
    assert!(m["reason"].as_str().unwrap().contains("default"));
    let near: Vec<i64> = e["nearMisses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["objectId"].as_i64().unwrap())
        .collect();
    assert!(near.contains(&us_twin), "{e}");
    let (s, _, _) = post(&server.url(EXPLAIN), &token, &json!({})).await;
    assert_eq!(s, 400);

    // Suffix tier: off by default, on per portal.
    let (_, _, r) = post(
        &server.url(INBOUND),
        &token,
        &inbound("s1", "+14155552671", false),
    )
    .await;
    assert_eq!(match_ids(&r), vec![main_line]);
    patch(
        &server.url("/switchboard/v1/settings"),
        &token,
        &json!({"suffixDigits": 7}),
    )
    .await;
    let (_, _, r) = post(
        &server.url(INBOUND),
        &token,
        &inbound("s2", "+14155552671", false),
    )
    .await;
    assert_eq!(
        match_ids(&r),
        vec![main_line, legacy],
        "suffix matches rank last"
    );
    patch(
        &server.url("/switchboard/v1/settings"),
        &token,
        &json!({"suffixDigits": null}),
    )
    .await;

    // Ignore list: the main line never matches, until removed.
    let (s, _, b) = post(
        &server.url("/switchboard/v1/ignored-numbers"),
        &no_admin,
        &json!({"number": "+14155552671"}),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    let (s, _, b) = post(
        &server.url("/switchboard/v1/ignored-numbers"),
        &token,
        &json!({"number": "415.555.2671", "note": "main line"}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let (_, _, r) = post(
        &server.url(INBOUND),
        &token,
        &inbound("i1", "+14155552671", false),
    )
    .await;
    assert_eq!(r["callerIdMatches"], json!([]));
    let (_, list) = get(&server.url("/switchboard/v1/ignored-numbers"), &token).await;
    assert_eq!(list["results"][0]["number"], "+14155552671");
    let r = client()
        .delete(server.url("/switchboard/v1/ignored-numbers/+14155552671"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (_, _, r) = post(
        &server.url(INBOUND),
        &token,
        &inbound("i2", "+14155552671", false),
    )
    .await;
    assert_eq!(match_ids(&r), vec![main_line]);

    // Updates and archives keep caller ID exact.
    patch(
        &server.url(&format!("/crm/v3/objects/contacts/{uk}")),
        &token,
        &json!({"properties": {"country": "GB"}}),
    )
    .await;
    let (_, _, e) = post(
        &server.url(EXPLAIN),
        &token,
        &json!({"number": "+442079460958"}),
    )
    .await;
    assert_eq!(
        e["matches"][0]["tier"], "exact",
        "the record's country made it exact: {e}"
    );
    client()
        .delete(server.url(&format!("/crm/v3/objects/contacts/{uk}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (_, _, r) = post(
        &server.url(INBOUND),
        &token,
        &inbound("a1", "+442079460958", false),
    )
    .await;
    assert_eq!(r["callerIdMatches"], json!([]));
    server.stop();

    // The CLI ignore list and the doctor.
    db.cli(&["ignore", "add", "--portal", "902", "+1 415 555 2671"]);
    let listed = db.cli(&["ignore", "list", "--portal", "902"]);
    assert!(listed.contains("+14155552671"));
    let server = Server::start(&db);
    let (_, _, r) = post(
        &server.url(INBOUND),
        &token,
        &inbound("i3", "+14155552671", false),
    )
    .await;
    assert_eq!(r["callerIdMatches"], json!([]));
    server.stop();
    let report = db.cli(&["doctor", "phones", "--portal", "902"]);
    assert!(
        report.contains(&format!("contacts {junk} phone: \"call reception\"")),
        "{report}"
    );
    assert!(
        report.contains(&format!("contacts {legacy} phone")),
        "{report}"
    );
    assert!(
        report.contains("Summary: 1 unparsable, 2 guessed region, 0 shared numbers"),
        "{report}"
    );
}
