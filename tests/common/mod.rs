//! Test harness: the real `switchboard` binary, on a free port, over a temporary SQLite file,
//! driven over HTTP. Portals and tokens are made with the real CLI.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

pub const WRITE_SCOPES: &str = "crm.schemas.contacts.write,crm.schemas.companies.write,crm.objects.contacts.read,crm.objects.contacts.write,crm.objects.companies.read,crm.objects.companies.write,crm.objects.owners.read,settings.users.write,switchboard.admin";

/// A temporary database folder that outlives server restarts.
pub struct Db {
    pub dir: tempfile::TempDir,
}

impl Db {
    pub fn new() -> Self {
        Db {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("switchboard.db")
    }

    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path().display())
    }

    fn run_cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .args(["--db", &self.url()])
            .output()
            .expect("run switchboard")
    }

    /// Runs a CLI command against this database and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.run_cli(args);
        assert!(
            out.status.success(),
            "switchboard {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    /// A quiet `switchboard import contacts` of `csv` into `portal` (with `extra` options)
    /// whose summary counts `imported` and `rejected` rows; returns the reject file.
    pub fn import_counted(
        &self,
        portal: &str,
        csv: &std::path::Path,
        extra: &[&str],
        (imported, rejected): (usize, usize),
    ) -> String {
        let file = csv.to_str().unwrap();
        let mut args = vec!["import", "contacts", "--portal", portal, file, "--quiet"];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        assert!(
            out.contains(&format!("imported {imported} rows, rejected {rejected}")),
            "{out}"
        );
        std::fs::read_to_string(format!("{file}.rejects.csv")).expect("the reject file")
    }

    /// Runs a CLI command that must fail, and returns its stderr.
    pub fn cli_fails(&self, args: &[&str]) -> String {
        let out = self.run_cli(args);
        assert!(!out.status.success(), "switchboard {args:?} succeeded");
        String::from_utf8(out.stderr).expect("utf8")
    }

    pub fn portal(&self, id: i64, region: &str) {
        self.cli(&[
            "portal",
            "create",
            "--id",
            &id.to_string(),
            "--default-region",
            region,
        ]);
    }

    /// Creates a token and returns it (the last line of the command's stdout).
    pub fn token(&self, portal: i64, scopes: &str) -> String {
        let out = self.cli(&[
            "token",
            "create",
            "--portal",
            &portal.to_string(),
            "--scopes",
            scopes,
        ]);
        out.lines().last().expect("token line").trim().to_string()
    }
}

/// A running server.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// Everything the server printed on stdout before it was listening.
    pub banner: Vec<String>,
}

/// A fresh database with one US portal, a token with [`WRITE_SCOPES`] and a server on it.
/// Bind it as `let (db, token, server) = ...`: the server stops before the folder goes.
pub fn portal_server(portal: i64) -> (Db, String, Server) {
    let db = Db::new();
    db.portal(portal, "US");
    let token = db.token(portal, WRITE_SCOPES);
    let server = Server::start(&db);
    (db, token, server)
}

impl Server {
    pub fn start(db: &Db) -> Self {
        Self::start_with(db, &[])
    }

    pub fn start_with(db: &Db, extra: &[&str]) -> Self {
        Self::start_env(db, extra, &[])
    }

    /// With extra arguments and environment variables.
    pub fn start_env(db: &Db, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--db", &db.url()])
            .args(extra)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut banner = Vec::new();
        let base = loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).expect("read stdout");
            assert!(n > 0, "server exited before listening; printed {banner:?}");
            if let Some(addr) = line.trim().strip_prefix("Switchboard listening on ") {
                break addr.to_string();
            }
            banner.push(line.trim_end().to_string());
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        Server {
            child,
            base,
            banner,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGTERM, then wait: the graceful path.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// SIGKILL: the crash path.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// POST JSON with a token; returns (status, headers, body).
pub async fn post(
    url: &str,
    token: &str,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = client()
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Sends a request and returns (status, JSON body, or the text as a JSON string).
async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub async fn get(url: &str, token: &str) -> (u16, Value) {
    send(client().get(url).bearer_auth(token)).await
}

pub async fn patch(url: &str, token: &str, body: &Value) -> (u16, Value) {
    send(client().patch(url).bearer_auth(token).json(body)).await
}

pub async fn http_delete(url: &str, token: &str) -> (u16, Value) {
    send(client().delete(url).bearer_auth(token)).await
}

/// Every record of a list endpoint (`path` with its query, without `after`), following
/// `paging.next.after` to the end.
pub async fn all_pages(server: &Server, token: &str, path: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let url = match &after {
            Some(a) => format!("{path}&after={a}"),
            None => path.to_string(),
        };
        let (status, page) = get(&server.url(&url), token).await;
        assert_eq!(status, 200, "{url}: {page}");
        all.extend(page["results"].as_array().unwrap().iter().cloned());
        match page["paging"]["next"]["after"].as_str() {
            Some(a) => after = Some(a.to_string()),
            None => return all,
        }
    }
}

/// The contact and company ids a logged call is associated with, read back through the objects
/// API.
pub async fn call_associations(server: &Server, token: &str, call: &str) -> (Vec<i64>, Vec<i64>) {
    let (_, c) = get(
        &server.url(&format!(
            "/crm/v3/objects/calls/{call}?associations=contacts,companies"
        )),
        token,
    )
    .await;
    let ids = |t: &str| -> Vec<i64> {
        c["associations"][t]["results"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x["id"].as_str().unwrap().parse().unwrap())
                    .collect()
            })
            .unwrap_or_default()
    };
    (ids("contacts"), ids("companies"))
}

/// Creates a record through the objects API and returns its id.
pub async fn create(server: &Server, token: &str, ty: &str, props: Value) -> i64 {
    let (status, _, body) = post(
        &server.url(&format!("/crm/v3/objects/{ty}")),
        token,
        &json!({ "properties": props }),
    )
    .await;
    assert_eq!(status, 201, "create {ty}: {body}");
    body["id"]
        .as_str()
        .expect("string id")
        .parse()
        .expect("numeric id")
}

/// A valid inbound-call body from `from`.
pub fn inbound(external_id: &str, from: &str, create_engagement: bool) -> Value {
    json!({
        "createEngagement": create_engagement,
        "engagementProperties": {},
        "externalCallId": external_id,
        "finalCallStatus": "COMPLETED",
        "fromNumber": { "e164Number": from, "phoneNumberType": "MOBILE" },
        "toNumber": { "e164Number": "+14155550100", "phoneNumberType": "FIXED_LINE" },
        "potentialRecipientUserIds": [],
    })
}

pub const INBOUND: &str = "/crm/v3/extensions/calling/inbound-call";

/// The record ids of an inbound-call answer's `callerIdMatches`, in rank order.
pub fn match_ids(answer: &Value) -> Vec<i64> {
    answer["callerIdMatches"]
        .as_array()
        .expect("callerIdMatches")
        .iter()
        .map(|m| {
            m["objectCoordinates"]["objectId"]
                .as_i64()
                .expect("objectId")
        })
        .collect()
}

/// Asserts HubSpot's error body and returns the `in` of each entry of `errors[]`.
pub fn error_fields(body: &Value, category: &str) -> Vec<String> {
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["category"], category, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        body["correlationId"]
            .as_str()
            .is_some_and(|c| c.len() >= 32),
        "{body}"
    );
    body["errors"]
        .as_array()
        .expect("errors[]")
        .iter()
        .filter_map(|e| e["in"].as_str().map(str::to_string))
        .collect()
}

/// xorshift64*: a tiny deterministic generator, so a failing seed can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
