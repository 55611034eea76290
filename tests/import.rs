//! `switchboard import`: HubSpot export columns, --map, rejects with line numbers, and a
//! resume after SIGKILL that neither loses nor duplicates a row.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

fn write_csv(path: &std::path::Path, header: &str, rows: impl Iterator<Item = String>) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "{header}").unwrap();
    for r in rows {
        writeln!(f, "{r}").unwrap();
    }
}

/// The arguments of a quiet `switchboard import contacts` of `csv` into `portal`, and `extra`.
fn import_args<'a>(portal: &'a str, csv: &'a std::path::Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "import",
        "contacts",
        "--portal",
        portal,
        csv.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push("--quiet");
    args
}

/// `switchboard import contacts` of `csv` into `portal`, committing `batch` rows at a time.
fn import_contacts(db: &Db, portal: &str, csv: &std::path::Path, batch: &str) -> String {
    db.cli(&import_args(portal, csv, &["--batch-size", batch]))
}

/// `switchboard import companies` of `csv` into `portal`.
fn import_companies(db: &Db, portal: &str, csv: &std::path::Path) -> String {
    db.cli(&[
        "import",
        "companies",
        "--portal",
        portal,
        csv.to_str().unwrap(),
        "--quiet",
    ])
}

#[tokio::test]
async fn export_columns_map_and_rejects() {
    let db = Db::new();
    db.portal(61, "GB");
    let csv = db.dir.path().join("export.csv");
    // Line 1 is the header; data rows start on line 2.
    write_csv(
        &csv,
        "Record ID,First Name,Last Name,Email,Phone Number,Cell,Country/Region,Favourite colour,numberofemployees",
        vec![
            "1,Ada,Lovelace,ada@example.com,020 7946 0958,,United Kingdom,blue,".to_string(),
            "2,Bad,Number,bad@example.com,+1 201 555 0123,,,red,".to_string(),
            "3,Dup,Email,ada@example.com,,,,green,".to_string(),
            "4,Grace,Hopper,grace@example.com,,07400 123456,,teal,".to_string(),
        ]
        .into_iter(),
    );
    // numberofemployees is not a contact property: with --map it lands on a valid column.
    let out = db.cli(&[
        "import",
        "contacts",
        "--portal",
        "61",
        csv.to_str().unwrap(),
        "--map",
        "Cell=mobilephone,numberofemployees=jobtitle",
        "--quiet",
    ]);
    assert!(out.contains("imported 3 rows, rejected 1"), "{out}");
    assert!(
        out.contains("Favourite colour"),
        "unknown columns are named: {out}"
    );
    let rejects = std::fs::read_to_string(db.dir.path().join("export.csv.rejects.csv")).unwrap();
    assert_eq!(
        rejects.lines().nth(1).unwrap(),
        "4,\"a contact with email ada@example.com already exists\"",
        "{rejects}"
    );

    let token = db.token(61, WRITE_SCOPES);
    let server = Server::start(&db);
    let (_, _, r) = post(
        &server.url(INBOUND),
        &token,
        &inbound("i", "+442079460958", false),
    )
    .await;
    assert_eq!(
        r["callerIdMatches"][0]["firstName"], "Ada",
        "imported numbers are in caller ID: {r}"
    );
    let (_, _, r) = post(
        &server.url(INBOUND),
        &token,
        &inbound("i", "+447400123456", false),
    )
    .await;
    assert_eq!(r["callerIdMatches"][0]["firstName"], "Grace", "{r}");
    let (_, _, s) = post(&server.url("/crm/v3/objects/contacts/search"), &token, &json!({"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": "grace@example.com"}]}], "properties": ["mobilephone", "hs_calculated_mobile_number"]})).await;
    assert_eq!(
        s["results"][0]["properties"]["hs_calculated_mobile_number"],
        "+447400123456"
    );
    // History of an imported record shows its imported values, then its changes.
    let id = s["results"][0]["id"].as_str().unwrap().to_string();
    patch(
        &server.url(&format!("/crm/v3/objects/contacts/{id}")),
        &token,
        &json!({"properties": {"lastname": "Murray Hopper"}}),
    )
    .await;
    let (_, h) = get(
        &server.url(&format!(
            "/crm/v3/objects/contacts/{id}?propertiesWithHistory=lastname,firstname"
        )),
        &token,
    )
    .await;
    let last: Vec<&str> = h["propertiesWithHistory"]["lastname"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["value"].as_str().unwrap())
        .collect();
    assert_eq!(last, ["Murray Hopper", "Hopper"]);
    assert_eq!(
        h["propertiesWithHistory"]["firstname"][0]["sourceType"],
        "IMPORT"
    );
}

/// A `--map` naming a column the file lacks, or a property the type lacks, stops the import
/// before anything is written, with a message naming the pair.
#[tokio::test]
async fn a_wrong_map_stops_before_writing() {
    let db = Db::new();
    db.portal(65, "US");
    let csv = db.dir.path().join("map.csv");
    write_csv(
        &csv,
        "First Name,Cell",
        ["Ann,201 555 0100".to_string()].into_iter(),
    );
    let file = csv.to_str().unwrap();
    for (map, says) in [
        ("Mobile=mobilephone", "has no column \"Mobile\""),
        ("Cell=mobile", "\"mobile\" does not exist on contacts"),
    ] {
        let err = db.cli_fails(&["import", "contacts", "--portal", "65", file, "--map", map]);
        assert!(
            err.contains(&format!("--map {map}")) && err.contains(says),
            "{err}"
        );
    }
    let out = db.cli(&[
        "import",
        "contacts",
        "--portal",
        "65",
        file,
        "--map",
        "cell=mobilephone",
        "--quiet",
    ]);
    assert!(
        out.contains("imported 1 rows, rejected 0"),
        "nothing was written before: {out}"
    );
}

/// Exports write option labels and Yes/No; the import takes them as HubSpot's does, stores
/// the internal values the API would, and rejects a label no option has, naming the options.
#[tokio::test]
async fn option_labels_and_yes_no_import_as_values() {
    let db = Db::new();
    db.portal(66, "US");
    let token = db.token(66, WRITE_SCOPES);
    let server = Server::start(&db);
    let options = [("Gold Tier", "gold"), ("Tin", "tin"), ("Silver", "ag")];
    let option_json: Vec<_> = options
        .iter()
        .map(|(label, value)| json!({"label": label, "value": value}))
        .collect();
    for body in [
        json!({"name": "tier", "label": "Tier", "type": "enumeration", "fieldType": "select", "groupName": "contactinformation", "options": option_json}),
        json!({"name": "perks", "label": "Perks", "type": "enumeration", "fieldType": "checkbox", "groupName": "contactinformation", "options": option_json}),
        json!({"name": "vip", "label": "VIP", "type": "bool", "fieldType": "booleancheckbox", "groupName": "contactinformation"}),
    ] {
        let (s, _, r) = post(&server.url("/crm/v3/properties/contacts"), &token, &body).await;
        assert_eq!(s, 201, "{r}");
    }
    // Every option by its label, its label in capitals and its value; the checkbox with the
    // next option as well; VIP as Yes/No/true/false in mixed case.
    let bools = [
        ("Yes", "true"),
        ("no", "false"),
        ("TRUE", "true"),
        ("False", "false"),
    ];
    let mut rows = Vec::new();
    let mut expected = Vec::new();
    for (i, (label, value)) in options.iter().enumerate() {
        let (next_label, next_value) = options[(i + 1) % options.len()];
        for form in [label.to_string(), label.to_uppercase(), value.to_string()] {
            let n = rows.len();
            let (typed, stored) = bools[n % bools.len()];
            rows.push(format!(
                "c{n}@example.com,{form},{form};{next_label},{typed}"
            ));
            expected.push((n, *value, format!("{value};{next_value}"), stored));
        }
    }
    let good = rows.len();
    rows.push(format!("c{good}@example.com,Platinum,,yes"));
    rows.push(format!("c{}@example.com,tin,,maybe", good + 1));
    let csv = db.dir.path().join("labels.csv");
    write_csv(&csv, "Email,Tier,Perks,VIP", rows.into_iter());
    let rejects = db.import_counted("66", &csv, &["--batch-size", "1000"], (good, 2));
    let lines: Vec<&str> = rejects.lines().skip(1).collect();
    assert!(
        lines[0].starts_with(&format!("{},", good + 2))
            && lines[0].contains(r#"""tier"" has no option ""Platinum"""#)
            && lines[0].contains("gold, tin, ag"),
        "{rejects}"
    );
    assert!(
        lines[1].starts_with(&format!("{},", good + 3))
            && lines[1].contains(r#"""vip"" is a bool"#),
        "{rejects}"
    );
    for (n, tier, perks, vip) in expected {
        let (_, _, r) = post(
            &server.url("/crm/v3/objects/contacts/search"),
            &token,
            &json!({"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": format!("c{n}@example.com")}]}], "properties": ["tier", "perks", "vip"]}),
        )
        .await;
        let p = &r["results"][0]["properties"];
        assert_eq!(
            (p["tier"].as_str(), p["perks"].as_str(), p["vip"].as_str()),
            (Some(tier), Some(perks.as_str()), Some(vip)),
            "row c{n}: {r}"
        );
    }
}

/// How many contacts a search counts.
async fn contacts_total(server: &Server, token: &str) -> u64 {
    let (_, _, r) = post(
        &server.url("/crm/v3/objects/contacts/search"),
        token,
        &json!({"limit": 0}),
    )
    .await;
    r["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("no total: {r}"))
}

/// Starts `switchboard import contacts` of `csv` with `extra` arguments and SIGKILLs it once its
/// checkpoint has passed line `lines`, whatever the machine's speed.
fn kill_import_after(db: &Db, portal: &str, csv: &std::path::Path, extra: &[&str], lines: i64) {
    let mut child = Command::new(BIN)
        .args(import_args(portal, csv, extra))
        .args(["--db", &db.url()])
        .spawn()
        .unwrap();
    let committed = || {
        rusqlite::Connection::open(db.path())
            .and_then(|c| {
                c.query_row("SELECT MAX(line) FROM imports", [], |r| {
                    r.get::<_, Option<i64>>(0)
                })
            })
            .ok()
            .flatten()
            .unwrap_or(0)
    };
    let started = std::time::Instant::now();
    while committed() < lines && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let finished_early = child.try_wait().unwrap().is_some();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !finished_early,
        "the import must still be running when it is killed"
    );
}

#[tokio::test]
async fn a_killed_import_resumes_without_duplicates() {
    let db = Db::new();
    db.portal(62, "US");
    let csv = db.dir.path().join("big.csv");
    let rows = 150_000u32;
    write_csv(
        &csv,
        "First Name,Email,Phone Number",
        (0..rows).map(|i| {
            format!(
                "N{i},n{i}@example.com,+1 201 {:03} {:04}",
                200 + i / 10_000,
                i % 10_000
            )
        }),
    );
    kill_import_after(&db, "62", &csv, &["--batch-size", "500"], 5_000);
    let out = import_contacts(&db, "62", &csv, "500");
    assert!(out.contains("resumed after line"), "{out}");
    assert!(out.contains("rejected 0"), "no row was seen twice: {out}");
    let token = db.token(62, WRITE_SCOPES);
    let server = Server::start(&db);
    assert_eq!(
        contacts_total(&server, &token).await,
        u64::from(rows),
        "every row exactly once"
    );
    let (_, _, r) = post(
        &server.url(INBOUND),
        &token,
        &inbound("x", "+12012149999", false),
    )
    .await;
    assert_eq!(r["callerIdMatches"].as_array().unwrap().len(), 1, "{r}");
}

/// Rows are converted on several threads; what reaches the store, the reject file and the
/// checkpoint must still be in file order. Duplicates are spread over many chunks and batches
/// (neither size divides the other), so a reordering shows as the wrong copy of an email kept,
/// a reject out of line order, or ids out of file order.
#[tokio::test]
async fn a_parallel_import_keeps_file_order() {
    let db = Db::new();
    db.portal(62, "GB");
    let csv = db.dir.path().join("many.csv");
    let rows = 3_000usize;
    // Row i repeats the email of row i - 5 when i % 7 == 5; it has no values when i % 13 == 12.
    let email = |i: usize| {
        if i % 7 == 5 {
            format!("r{}@order.example", i - 5)
        } else {
            format!("r{i}@order.example")
        }
    };
    let empty = |i: usize| i % 13 == 12;
    write_csv(
        &csv,
        "First Name,Email,Phone Number",
        (0..rows).map(|i| {
            if empty(i) {
                ",,".to_string()
            } else {
                format!("R{i},{},020 7946 {:04}", email(i), i)
            }
        }),
    );
    let mut seen = std::collections::HashSet::new();
    let mut kept = Vec::new();
    let mut rejected = Vec::new();
    for i in 0..rows {
        // Data row i is file line i + 2 (line 1 is the header).
        if empty(i) || !seen.insert(email(i)) {
            rejected.push(i + 2);
        } else {
            kept.push(format!("R{i}"));
        }
    }
    let out = import_contacts(&db, "62", &csv, "700");
    assert!(
        out.contains(&format!(
            "imported {} rows, rejected {}",
            kept.len(),
            rejected.len()
        )),
        "{out}"
    );
    let reject_lines: Vec<usize> =
        std::fs::read_to_string(db.dir.path().join("many.csv.rejects.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect();
    assert_eq!(reject_lines, rejected, "rejects in file order");

    let names = first_names(&db, 62).await;
    assert_eq!(
        names, kept,
        "records in file order, first copy of each email kept"
    );
}

/// A row that is not UTF-8 is a reject with its own line number, and the rows around it import:
/// the workers read the file into records they reuse, and an unreadable row must neither take a
/// record's place nor shift the lines after it. Bad rows fall at different places in the
/// 512-row chunks the workers take.
#[tokio::test]
async fn unreadable_rows_are_rejected_in_place() {
    let db = Db::new();
    db.portal(66, "GB");
    let csv = db.dir.path().join("bytes.csv");
    let rows = 2_000usize;
    let bad = |i: usize| i % 97 == 3 || i == 511 || i == 512;
    let mut file = b"First Name,Email,Phone Number\n".to_vec();
    for i in 0..rows {
        let name: &[u8] = if bad(i) { b"Bad\xff" } else { b"R" };
        file.extend_from_slice(name);
        file.extend_from_slice(format!("{i},r{i}@bytes.example,020 7946 {i:04}\n").as_bytes());
    }
    std::fs::write(&csv, file).unwrap();
    let out = import_contacts(&db, "66", &csv, "300");
    let rejected: Vec<usize> = (0..rows).filter(|&i| bad(i)).map(|i| i + 2).collect();
    let kept: Vec<String> = (0..rows)
        .filter(|&i| !bad(i))
        .map(|i| format!("R{i}"))
        .collect();
    assert!(
        out.contains(&format!(
            "imported {} rows, rejected {}",
            kept.len(),
            rejected.len()
        )),
        "{out}"
    );
    let rejects = std::fs::read_to_string(db.dir.path().join("bytes.csv.rejects.csv")).unwrap();
    let lines: Vec<(usize, &str)> = rejects
        .lines()
        .skip(1)
        .map(|l| {
            let (line, reason) = l.split_once(',').unwrap();
            (line.parse().unwrap(), reason)
        })
        .collect();
    assert_eq!(
        lines.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        rejected,
        "{rejects}"
    );
    assert!(
        lines.iter().all(|(_, r)| r.contains("unreadable CSV row")),
        "{rejects}"
    );

    assert_eq!(
        first_names(&db, 66).await,
        kept,
        "every readable row, in file order"
    );
}

/// Every contact's first name in the portal, in record order, read through a server.
async fn first_names(db: &Db, portal: i64) -> Vec<String> {
    let token = db.token(portal, WRITE_SCOPES);
    let server = Server::start(db);
    all_pages(
        &server,
        &token,
        "/crm/v3/objects/contacts?limit=100&properties=firstname",
    )
    .await
    .iter()
    .map(|r| r["properties"]["firstname"].as_str().unwrap().to_string())
    .collect()
}

/// A HubSpot company export: "Company name" is the company's `name` (on contacts the same label
/// is `company`), and its numbers reach caller ID like contacts' do.
#[tokio::test]
async fn a_company_export_imports_by_its_column_names() {
    let db = Db::new();
    db.portal(63, "GB");
    let csv = db.dir.path().join("companies.csv");
    write_csv(
        &csv,
        "Record ID,Company name,Company Domain Name,Phone Number,Country/Region,Number of Employees",
        vec![
            "1,Acme Ltd,acme.example,020 7946 0000,United Kingdom,12".to_string(),
            "2,Beta SARL,beta.example,01 23 45 67 89,France,many".to_string(),
        ]
        .into_iter(),
    );
    let out = import_companies(&db, "63", &csv);
    assert!(out.contains("imported 1 rows, rejected 1"), "{out}");
    assert!(!out.contains("ignored columns"), "every column maps: {out}");
    // Into an empty database a company import defers the domain and phone indexes, and
    // leaves the contacts' email index, which company rows never go into, as it was.
    assert!(out.contains("objects_domain"), "{out}");
    assert!(!out.contains("objects_email"), "{out}");
    assert_eq!(indexes(&db), migrated_indexes());
    let rejects = std::fs::read_to_string(db.dir.path().join("companies.csv.rejects.csv")).unwrap();
    let reject = rejects.lines().nth(1).unwrap();
    assert!(
        reject.starts_with("3,") && reject.contains("numberofemployees"),
        "{rejects}"
    );

    let token = db.token(63, WRITE_SCOPES);
    let server = Server::start(&db);
    let (_, _, r) = post(
        &server.url(INBOUND),
        &token,
        &inbound("c", "+442079460000", false),
    )
    .await;
    let m = &r["callerIdMatches"][0];
    assert_eq!(m["callerIdType"], "COMPANY", "{r}");
    assert_eq!(m["name"], "Acme Ltd", "{r}");
    let id = m["objectCoordinates"]["objectId"].as_i64().unwrap();
    let (status, company) = get(
        &server.url(&format!(
            "/crm/v3/objects/companies/{id}?properties=domain,numberofemployees,country,hs_calculated_phone_number"
        )),
        &token,
    )
    .await;
    assert_eq!(status, 200, "{company}");
    let p = &company["properties"];
    assert_eq!(p["domain"], "acme.example", "{company}");
    assert_eq!(p["numberofemployees"], "12", "{company}");
    assert_eq!(
        p["hs_calculated_phone_number"], "+442079460000",
        "{company}"
    );

    // Companies are matched on their domain, as in HubSpot's imports: an edited export run
    // again adds only the new company, and a domain twice in one file keeps its first row.
    write_csv(
        &csv,
        "Company name,Company Domain Name,Phone Number",
        vec![
            "Acme Ltd,ACME.example,020 7946 0000".to_string(),
            "Gamma Ltd,gamma.example,020 7946 0001".to_string(),
            "Gamma Again,gamma.example,020 7946 0002".to_string(),
        ]
        .into_iter(),
    );
    let out = import_companies(&db, "63", &csv);
    assert!(out.contains("imported 1 rows, rejected 2"), "{out}");
    let rejects = std::fs::read_to_string(db.dir.path().join("companies.csv.rejects.csv")).unwrap();
    let lines: Vec<&str> = rejects.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            "2,\"a company with domain ACME.example already exists\"",
            "4,\"a company with domain gamma.example already exists\""
        ],
        "{rejects}"
    );
    let names: Vec<String> =
        all_pages(&server, &token, "/crm/v3/objects/companies?properties=name")
            .await
            .iter()
            .map(|c| c["properties"]["name"].as_str().unwrap().to_string())
            .collect();
    assert_eq!(names, ["Acme Ltd", "Gamma Ltd"]);
}

/// An import into the database of a running server reaches its caller ID without a restart,
/// across several of the watcher's pages, and leaves the records the server wrote itself as
/// they were: the answers match a server started afterwards, which builds its index from
/// scratch.
#[tokio::test]
async fn an_import_beside_a_running_server_reaches_caller_id() {
    let db = Db::new();
    db.portal(64, "US");
    let token = db.token(64, WRITE_SCOPES);
    let server = Server::start(&db);
    let own = create(
        &server,
        &token,
        "contacts",
        json!({"firstname": "Own", "phone": "+1 201 555 0101"}),
    )
    .await;
    // Changed before the watcher's pass that files the import reads this record again.
    patch(
        &server.url(&format!("/crm/v3/objects/contacts/{own}")),
        &token,
        &json!({"properties": {"phone": "+1 201 555 0199"}}),
    )
    .await;

    let rows = 23_000u32; // more than two of the watcher's 10,000-row pages
    let typed = |i: u32| format!("(201) {:03}-{:04}", 300 + i / 10_000, i % 10_000);
    let e164 = |i: u32| format!("+1201{:03}{:04}", 300 + i / 10_000, i % 10_000);
    let csv = db.dir.path().join("live.csv");
    write_csv(
        &csv,
        "First Name,Email,Phone Number",
        (0..rows).map(|i| format!("L{i},l{i}@live.example,\"{}\"", typed(i))),
    );
    let out = import_contacts(&db, "64", &csv, "5000");
    assert!(out.contains(&format!("imported {rows} rows")), "{out}");

    let lookup = |server: &Server, number: String| {
        let (url, token) = (server.url(INBOUND), token.clone());
        async move {
            let (_, _, r) = post(&url, &token, &inbound("live", &number, false)).await;
            r["callerIdMatches"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["firstName"].as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        }
    };
    let last = e164(rows - 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while lookup(&server, last.clone()).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the imported numbers never reached the running server's caller ID"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sample: Vec<u32> = (0..rows).step_by(997).chain([rows - 1]).collect();
    let mut live = Vec::new();
    for &i in &sample {
        let names = lookup(&server, e164(i)).await;
        assert_eq!(names, [format!("L{i}")], "row {i}");
        live.push(names);
    }

    // The server's own record is filed once, with its number as changed before the import.
    assert!(lookup(&server, "+12015550101".into()).await.is_empty());
    assert_eq!(lookup(&server, "+12015550199".into()).await, ["Own"]);

    drop(server);
    let restarted = Server::start(&db);
    for (&i, names) in sample.iter().zip(&live) {
        assert_eq!(&lookup(&restarted, e164(i)).await, names, "row {i}");
    }
    assert!(lookup(&restarted, "+12015550101".into()).await.is_empty());
    assert_eq!(lookup(&restarted, "+12015550199".into()).await, ["Own"]);
}

/// The WAL stays bounded through a long import. The writer commits without syncing and the
/// checkpointer's copy starts with a sync, so a writer that took the checkpointer's "busy" for
/// a finished checkpoint never saw the WAL restart, and a 10M-row import filled the disk with
/// its WAL. Numbers are random, so every batch writes leaves all over the indexes.
#[test]
fn the_wal_stays_bounded_through_a_long_import() {
    let db = Db::new();
    db.portal(64, "US");
    let csv = db.dir.path().join("long.csv");
    let mut rng = Rng(0x5eed);
    write_csv(
        &csv,
        "First Name,Email,Phone Number",
        (0..120_000).map(|i| {
            let n = rng.next();
            format!(
                "W{i},w{i}@long.example,+1 {} {} {:04}",
                201 + n % 700,
                200 + (n >> 10) % 800,
                (n >> 20) % 10_000
            )
        }),
    );
    let wal = std::path::PathBuf::from(format!("{}-wal", db.path().display()));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (wal, done) = (wal.clone(), done.clone());
        std::thread::spawn(move || {
            let mut largest = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
                std::thread::sleep(Duration::from_millis(5));
            }
            largest
        })
    };
    // Into the indexes row by row: a bulk load that defers them would append, and write far
    // fewer pages.
    let out = db.cli(&import_args(
        "64",
        &csv,
        &["--batch-size", "4000", "--indexes", "keep"],
    ));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let largest = watcher.join().unwrap();
    assert!(out.contains("imported 120000 rows"), "{out}");
    // Thirty batches; without the restarts the WAL holds every one of them.
    let mib = largest as f64 / (1 << 20) as f64;
    eprintln!("largest WAL during the import: {mib:.1} MiB");
    assert!(
        mib < 40.0,
        "the WAL grew to {mib:.1} MiB during a 120,000-row import"
    );
}

/// Every index of the database as SQLite holds it, white space folded: after a bulk load it
/// must be what the migrations create, compared against a database that only ran them.
fn indexes(db: &Db) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let mut stmt = conn
        .prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .map(|r| {
            let (name, sql) = r.unwrap();
            (name, sql.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .collect()
}

fn migrated_indexes() -> Vec<(String, String)> {
    let fresh = Db::new();
    fresh.portal(1, "US");
    indexes(&fresh)
}

/// Half the rows carry a country, half are national numbers of the portal's default region,
/// so both phone indexes get rows.
fn bulk_row(i: u32) -> String {
    let country = if i.is_multiple_of(2) {
        "United States"
    } else {
        ""
    };
    format!(
        "B{i},b{i}@bulk.example,\"(201) {:03}-{:04}\",{country}",
        300 + i / 10_000,
        i % 10_000
    )
}

/// A contact export of `rows` (see [`bulk_row`]), and its path.
fn bulk_csv(db: &Db, name: &str, rows: impl Iterator<Item = u32>) -> std::path::PathBuf {
    let csv = db.dir.path().join(name);
    write_csv(
        &csv,
        "First Name,Email,Phone Number,Country/Region",
        rows.map(bulk_row),
    );
    csv
}

/// The contact of [`bulk_row`] `i` reads back by its email: `INDEXED BY objects_email`, which
/// fails outright without the index.
async fn assert_reads_by_email(server: &Server, token: &str, i: u32) {
    let (s, e) = get(
        &server.url(&format!(
            "/crm/v3/objects/contacts/b{i}@bulk.example?idProperty=email&properties=firstname"
        )),
        token,
    )
    .await;
    assert_eq!(
        (s, &e["properties"]["firstname"]),
        (200, &json!(format!("B{i}"))),
        "{e}"
    );
}

/// What the file's header says of its journal (bytes 18 and 19: 1 a rollback journal, 2 the WAL).
fn journal_version(db: &Db) -> u8 {
    let mut header = [0u8; 20];
    std::fs::File::open(db.path())
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header))
        .map_or(0, |()| header[18])
}

/// Watches a bulk load of `rows` rows: the largest the WAL got, and whether the file was ever in
/// rollback-journal mode.
fn watch_load(db: &Db, name: &str, rows: u32) -> (String, u64, bool) {
    let csv = bulk_csv(db, name, 0..rows);
    let wal = std::path::PathBuf::from(format!("{}-wal", db.path().display()));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (db_path, done) = (db.path(), done.clone());
        std::thread::spawn(move || {
            let (mut largest, mut rollback) = (0, false);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
                let mut header = [0u8; 20];
                if std::fs::File::open(&db_path)
                    .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header))
                    .is_ok()
                {
                    rollback |= header[18] == 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (largest, rollback)
        })
    };
    let out = import_contacts(db, "67", &csv, "2000");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (largest, rollback) = watcher.join().unwrap();
    (out, largest, rollback)
}

/// A bulk load that holds the database alone writes through a rollback journal, not the WAL
/// (which wrote every page twice), and leaves the file in WAL mode for the server. With another
/// connection open on the file SQLite cannot leave WAL mode; the load then goes through the
/// WAL and loses nothing.
#[tokio::test]
async fn a_bulk_load_writes_without_the_wal() {
    let db = Db::new();
    db.portal(67, "US");
    let rows = 30_000u32;
    let (out, largest, rollback) = watch_load(&db, "alone.csv", rows);
    assert!(out.contains(&format!("imported {rows} rows")), "{out}");
    assert!(rollback, "the load ran with a rollback journal");
    // 30,000 rows are about 12 MiB of pages.
    assert!(largest < 1 << 20, "the WAL grew to {largest} bytes");
    assert_eq!(journal_version(&db), 2, "back in WAL mode");
    let journal = std::path::PathBuf::from(format!("{}-journal", db.path().display()));
    assert!(!journal.exists(), "no journal left behind");

    let other = Db::new();
    other.portal(67, "US");
    let reader = rusqlite::Connection::open(other.path()).unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM objects", [], |r| r.get(0))
        .unwrap();
    let (out, largest, rollback) = watch_load(&other, "beside.csv", rows);
    assert!(out.contains(&format!("imported {rows} rows")), "{out}");
    assert!(!rollback, "an open connection keeps the file in WAL mode");
    assert!(largest > 0, "the rows went through the WAL");
    let loaded: i64 = reader
        .query_row("SELECT count(*) FROM objects", [], |r| r.get(0))
        .unwrap();
    assert_eq!(loaded, i64::from(rows));
    drop(reader);

    for db in [&db, &other] {
        let token = db.token(67, WRITE_SCOPES);
        assert_all_loaded(&Server::start(db), &token, rows).await;
    }
}

/// Every one of a [`bulk_csv`]'s `rows` rows is there, and the last reads back by its email.
async fn assert_all_loaded(server: &Server, token: &str, rows: u32) {
    assert_reads_by_email(server, token, rows - 1).await;
    assert_eq!(contacts_total(server, token).await, u64::from(rows));
}

/// While a bulk load holds the file without the WAL, another process that opens it (the CLI
/// making a token, a server starting) waits for the load to finish instead of failing on the
/// lock (or flipping the file back to WAL mode under the load), and then sees every row.
#[tokio::test]
async fn a_server_and_the_cli_wait_for_a_bulk_load() {
    let db = Db::new();
    db.portal(68, "US");
    let rows = 200_000u32;
    let csv = bulk_csv(&db, "wait.csv", 0..rows);
    let mut import = Command::new(BIN)
        .args(import_args("68", &csv, &[]))
        .args(["--db", &db.url()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Until the load has the file in rollback-journal mode.
    let started = std::time::Instant::now();
    while journal_version(&db) != 1 {
        assert!(
            import.try_wait().unwrap().is_none(),
            "the import ended first"
        );
        assert!(started.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(1));
    }
    let token = db.token(68, WRITE_SCOPES);
    // The load lets the lock go only once its index is built.
    assert_eq!(
        indexes(&db),
        migrated_indexes(),
        "the CLI waited for the load to finish"
    );
    let server = Server::start(&db);
    let out = import.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains(&format!("imported {rows} rows")), "{out}");
    assert_all_loaded(&server, &token, rows).await;
}

/// An import into a database smaller than the file leaves the email and phone indexes out of
/// the load and builds them after it; the server then reads through them (`INDEXED BY` fails
/// outright without its index). While a server is running, no import drops them.
#[tokio::test]
async fn a_bulk_load_builds_the_indexes_it_deferred() {
    let db = Db::new();
    db.portal(65, "US");
    let rows = 30_000u32;
    let csv = bulk_csv(&db, "bulk.csv", (0..rows).chain([7]));
    let out = import_contacts(&db, "65", &csv, "5000");
    assert!(
        out.contains(&format!("imported {rows} rows, rejected 1")),
        "{out}"
    );
    assert!(out.contains("indexes built after the load"), "{out}");
    assert_eq!(indexes(&db), migrated_indexes());
    // Run again, the file has nothing left to load: nothing is dropped and built again.
    let again = import_contacts(&db, "65", &csv, "5000");
    assert!(again.contains("imported 0 rows"), "{again}");
    assert!(!again.contains("indexes built"), "{again}");

    let token = db.token(65, WRITE_SCOPES);
    let server = Server::start(&db);
    assert_reads_by_email(&server, &token, 12345).await;
    let (s, _, e) = post(
        &server.url("/crm/v3/objects/contacts"),
        &token,
        &json!({"properties": {"email": "b7@bulk.example"}}),
    )
    .await;
    assert_eq!(s, 409, "{e}");
    for i in [0, 1, rows - 1] {
        let number = format!("+1201{:03}{:04}", 300 + i / 10_000, i % 10_000);
        let (_, _, r) = post(&server.url(INBOUND), &token, &inbound("b", &number, false)).await;
        assert_eq!(r["callerIdMatches"][0]["firstName"], format!("B{i}"), "{r}");
        let (s, _, r) = post(
            &server.url("/switchboard/v1/caller-id/explain"),
            &token,
            &json!({ "number": number }),
        )
        .await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["matches"].as_array().map(Vec::len), Some(1), "{r}");
    }

    let more = bulk_csv(&db, "more.csv", rows..rows + 200);
    let refused = db.cli_fails(&import_args("65", &more, &["--indexes", "defer"]));
    assert!(refused.contains("a server is running"), "{refused}");
    // The file is larger than a third of the database only while the server is away.
    let grown = bulk_csv(&db, "grown.csv", rows + 200..2 * rows);
    let out = import_contacts(&db, "65", &grown, "5000");
    assert!(
        !out.contains("indexes built"),
        "a running server keeps its indexes: {out}"
    );
    assert_eq!(indexes(&db), migrated_indexes());
    let number = format!(
        "+1201{:03}{:04}",
        300 + (2 * rows - 1) / 10_000,
        (2 * rows - 1) % 10_000
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, r) = post(&server.url(INBOUND), &token, &inbound("g", &number, false)).await;
        if r["callerIdMatches"][0]["firstName"] == format!("B{}", 2 * rows - 1) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A bulk load killed while its indexes are dropped leaves them dropped; the next server to
/// start builds them before it serves, and the resumed import finishes without duplicates.
#[tokio::test]
async fn a_server_builds_the_indexes_a_killed_bulk_load_left_out() {
    let db = Db::new();
    db.portal(66, "US");
    let rows = 150_000u32;
    let csv = bulk_csv(&db, "killed.csv", 0..rows);
    kill_import_after(
        &db,
        "66",
        &csv,
        &["--batch-size", "500", "--indexes", "defer"],
        5_000,
    );
    let left: Vec<String> = indexes(&db).into_iter().map(|(n, _)| n).collect();
    assert!(
        !left.contains(&"objects_email".to_string()),
        "killed while deferred: {left:?}"
    );

    let token = db.token(66, WRITE_SCOPES);
    let server = Server::start(&db);
    assert_eq!(indexes(&db), migrated_indexes());
    assert_reads_by_email(&server, &token, 10).await;
    drop(server);

    let out = import_contacts(&db, "66", &csv, "20000");
    assert!(out.contains("resumed after line"), "{out}");
    assert!(out.contains("rejected 0"), "{out}");
    assert_eq!(indexes(&db), migrated_indexes());
    let server = Server::start(&db);
    assert_eq!(
        contacts_total(&server, &token).await,
        u64::from(rows),
        "every row exactly once"
    );
}

/// HubSpot's built-in dropdowns (a contact's lifecycle stage and lead status, a company's
/// type) are enumerations with HubSpot's options: the properties API lists them, an export's
/// labels import as their internal values, and a value that is no option is refused by the
/// API and rejected by the import.
#[tokio::test]
async fn builtin_dropdowns_take_hubspot_options() {
    let (db, token, server) = portal_server(67);
    let mut options = std::collections::BTreeMap::new();
    for (ty, name) in [
        ("contacts", "lifecyclestage"),
        ("contacts", "hs_lead_status"),
        ("companies", "type"),
        ("companies", "lifecyclestage"),
    ] {
        let (s, p) = get(
            &server.url(&format!("/crm/v3/properties/{ty}/{name}")),
            &token,
        )
        .await;
        assert_eq!(s, 200, "{p}");
        assert_eq!(p["type"], "enumeration", "{p}");
        let list: Vec<(String, String)> = p["options"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["label"].as_str().unwrap().into(),
                    o["value"].as_str().unwrap().into(),
                )
            })
            .collect();
        options.insert((ty, name), list);
    }
    // The values integrations write, as HubSpot names them.
    let values = |ty, name| -> Vec<String> {
        options[&(ty, name)]
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    };
    for (ty, name, value) in [
        ("contacts", "lifecyclestage", "marketingqualifiedlead"),
        ("contacts", "lifecyclestage", "customer"),
        ("contacts", "hs_lead_status", "ATTEMPTED_TO_CONTACT"),
        ("companies", "type", "PROSPECT"),
    ] {
        assert!(
            values(ty, name).contains(&value.to_string()),
            "{name}: {value}"
        );
    }

    // Every option of both contact dropdowns, by label (as an export writes it), in lower case
    // and by value; then one row whose stage is no option.
    let stages = &options[&("contacts", "lifecyclestage")];
    let statuses = &options[&("contacts", "hs_lead_status")];
    let mut rows = Vec::new();
    let mut expected = Vec::new();
    for (i, (label, value)) in stages.iter().enumerate() {
        let (status_label, status_value) = &statuses[i % statuses.len()];
        for form in [label.clone(), label.to_lowercase(), value.clone()] {
            let n = rows.len();
            rows.push(format!("d{n}@example.com,{form},{status_label}"));
            expected.push((n, value.clone(), status_value.clone()));
        }
    }
    let good = rows.len();
    rows.push(format!("d{good}@example.com,Champion,New"));
    let csv = db.dir.path().join("stages.csv");
    write_csv(&csv, "Email,Lifecycle Stage,Lead Status", rows.into_iter());
    let rejects = db.import_counted("67", &csv, &["--batch-size", "1000"], (good, 1));
    assert!(
        rejects.contains(&format!("{},", good + 2))
            && rejects.contains(r#"no option ""Champion"""#),
        "{rejects}"
    );
    for (n, stage, status) in expected {
        let (_, _, r) = post(
            &server.url("/crm/v3/objects/contacts/search"),
            &token,
            &json!({"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": format!("d{n}@example.com")}]}], "properties": ["lifecyclestage", "hs_lead_status"]}),
        )
        .await;
        let p = &r["results"][0]["properties"];
        assert_eq!(
            (p["lifecyclestage"].as_str(), p["hs_lead_status"].as_str()),
            (Some(stage.as_str()), Some(status.as_str())),
            "row d{n}: {r}"
        );
    }

    // The API takes the values only, as HubSpot's does.
    let contacts = server.url("/crm/v3/objects/contacts");
    let (s, _, e) = post(
        &contacts,
        &token,
        &json!({"properties": {"lifecyclestage": "Champion"}}),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        error_fields(&e, "VALIDATION_ERROR").contains(&"properties.lifecyclestage".to_string()),
        "{e}"
    );
    let (s, _, e) = post(
        &server.url("/crm/v3/objects/companies"),
        &token,
        &json!({"properties": {"name": "Acme", "type": values("companies", "type")[0]}}),
    )
    .await;
    assert_eq!(s, 201, "{e}");
}

/// An export's owner column holds the owner's name; the import also takes an email or an owner
/// id, and files `hubspot_owner_id`. A name nobody has, or one two owners share, is a reject.
#[tokio::test]
async fn owner_columns_resolve_names_emails_and_ids() {
    let (db, token, server) = portal_server(68);
    let people = [
        ("Ada", "Lovelace"),
        ("Grace", "Hopper"),
        ("Alan", "Turing"),
        ("Alan", "Turing"),
    ];
    for (i, (first, last)) in people.iter().enumerate() {
        let (s, _, u) = post(
            &server.url("/settings/v3/users"),
            &token,
            &json!({"email": format!("{}.{i}@owners.example", first.to_lowercase()), "firstName": first, "lastName": last}),
        )
        .await;
        assert_eq!(s, 201, "{u}");
    }
    let (_, owners) = get(&server.url("/crm/v3/owners?limit=100"), &token).await;
    let owners: Vec<(String, String, String)> = owners["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let name = format!(
                "{} {}",
                o["firstName"].as_str().unwrap(),
                o["lastName"].as_str().unwrap()
            );
            (
                o["id"].as_str().unwrap().into(),
                o["email"].as_str().unwrap().into(),
                name,
            )
        })
        .collect();
    assert_eq!(owners.len(), people.len());
    // Each owner by name (upper-cased), by email and by id; the shared name only by email or id.
    let mut rows = Vec::new();
    let mut expected = Vec::new();
    for (id, email, name) in &owners {
        let shared = owners.iter().filter(|o| &o.2 == name).count() > 1;
        let forms = if shared {
            vec![email.clone(), id.clone()]
        } else {
            vec![name.to_uppercase(), email.clone(), id.clone()]
        };
        for form in forms {
            let n = rows.len();
            rows.push(format!("o{n}@example.com,{form}"));
            expected.push((n, id.clone()));
        }
    }
    let good = rows.len();
    rows.push(format!("o{good}@example.com,Alan Turing"));
    rows.push(format!("o{}@example.com,Nobody Here", good + 1));
    let csv = db.dir.path().join("owners.csv");
    write_csv(&csv, "Email,Contact owner", rows.into_iter());
    let rejects = db.import_counted("68", &csv, &[], (good, 2));
    let lines: Vec<&str> = rejects.lines().skip(1).collect();
    assert!(
        lines[0].starts_with(&format!("{},", good + 2)) && lines[0].contains("several owners"),
        "{rejects}"
    );
    assert!(
        lines[1].starts_with(&format!("{},", good + 3)) && lines[1].contains("no owner"),
        "{rejects}"
    );
    for (n, owner) in expected {
        let (_, _, r) = post(
            &server.url("/crm/v3/objects/contacts/search"),
            &token,
            &json!({"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": format!("o{n}@example.com")}]}], "properties": ["hubspot_owner_id"]}),
        )
        .await;
        assert_eq!(
            r["results"][0]["properties"]["hubspot_owner_id"].as_str(),
            Some(owner.as_str()),
            "row o{n}: {r}"
        );
    }
}
