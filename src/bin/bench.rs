//! `cargo run --release --bin bench -- [--contacts N] [--seconds S] [--connections C]`
//! (`--keep-db FILE` seeds FILE once and reuses it; `--only baseline|lookup|logging` drives one
//! kind of request for `--seconds`, at `--rate R` requests per second or saturated, prints its
//! figures and writes nothing, for profiling)
//!
//! Seeds a portal with N contacts (CSV import, mixed phone formats), starts the real server,
//! and drives it over loopback with an in-repo HTTP/1.1 keep-alive client. In one run it
//! measures a baseline (`/switchboard/v1/echo`: same auth, same body, same connections),
//! lookup-only inbound calls and logging inbound calls, saturated and at half that rate
//! (Poisson arrivals), and writes the figures, the machine and the command to
//! `bench/RESULTS.md`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    contacts: u64,
    seconds: u64,
    connections: usize,
    out: PathBuf,
    keep: Option<PathBuf>,
    profile: bool,
    search: bool,
    /// Drive one kind of request only, saturated, and print its figures (for profiling).
    only: Option<String>,
    /// With `--only`: this many requests per second instead of as many as the server takes.
    rate: Option<f64>,
}

const USAGE: &str =
    "usage: cargo run --release --bin bench -- [--contacts N] [--seconds S] [--connections C]
       [--out FILE] [--keep-db FILE] [--no-profile] [--search]
       [--only baseline|lookup|logging [--rate R]]

Seeds N contacts (default 100000), starts the real server and measures a baseline, lookup-only and
logging inbound calls in one run; writes the figures to bench/RESULTS.md (see its header).
--keep-db FILE seeds FILE once and reuses it; --only drives one kind and writes nothing.";

fn args() -> Args {
    let mut a = Args {
        contacts: 100_000,
        seconds: 10,
        connections: 32,
        out: PathBuf::from("bench/RESULTS.md"),
        keep: None,
        profile: true,
        search: false,
        only: None,
        rate: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--contacts" => a.contacts = v().parse().expect("--contacts N"),
            "--seconds" => a.seconds = v().parse().expect("--seconds S"),
            "--connections" => a.connections = v().parse().expect("--connections C"),
            "--out" => a.out = v().into(),
            "--keep-db" => a.keep = Some(v().into()),
            "--no-profile" => a.profile = false,
            "--search" => a.search = true,
            "--only" => a.only = Some(v()),
            "--rate" => a.rate = Some(v().parse().expect("--rate R")),
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => {
                eprintln!("unknown argument {other}\n\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    a
}

/// The contact numbers: (typed form, country column, E.164). Deterministic, spread over
/// several countries and the formats people type.
fn number(i: u64) -> (String, &'static str, String) {
    let sub = i % 10_000;
    let block = i / 10_000;
    match i % 5 {
        0 => {
            let n = format!("201{:03}{sub:04}", 200 + block % 800);
            (
                format!("+1 {}-{}-{}", &n[..3], &n[3..6], &n[6..]),
                "",
                format!("+1{n}"),
            )
        }
        1 => {
            let n = format!("415{:03}{sub:04}", 200 + block % 800);
            (
                format!("({}) {}-{} x{}", &n[..3], &n[3..6], &n[6..], i % 90 + 10),
                "",
                format!("+1{n}"),
            )
        }
        2 => {
            let n = format!("20{:04}{sub:04}", 7000 + block % 3000);
            (
                format!("0{} {} {}", &n[..2], &n[2..6], &n[6..]),
                "United Kingdom",
                format!("+44{n}"),
            )
        }
        3 => {
            let n = format!("6{:04}{sub:04}", 1000 + block % 9000);
            (
                format!(
                    "0{} {} {} {} {}",
                    &n[..1],
                    &n[1..3],
                    &n[3..5],
                    &n[5..7],
                    &n[7..]
                ),
                "FR",
                format!("+33{n}"),
            )
        }
        _ => {
            let n = format!("30{:04}{sub:04}", 1000 + block % 9000);
            (
                format!("0049 {} {}", &n[..2], &n[2..]),
                "",
                format!("+49{n}"),
            )
        }
    }
}

/// A fixed 64-bit mix (SplitMix64's finaliser): a repeatable order unrelated to any stride.
fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Runs the `switchboard` CLI on `db`; returns its stdout, and panics with its stderr if it
/// fails.
fn cli(bin: &Path, db: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .args(["--db", &format!("sqlite://{}", db.display())])
        .output()
        .expect("run switchboard");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The last line a CLI command printed (a token, for `token create`).
fn last_line(out: &str) -> String {
    out.lines().last().unwrap_or("").trim().to_string()
}

/// Imports timed per run, in seconds, in the order they ran.
struct ImportRuns(Vec<f64>);

impl ImportRuns {
    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// How the runs read in RESULTS.md, rows/s from seconds.
    fn describe(&self, contacts: u64) -> String {
        let rate = |secs: f64| contacts as f64 / secs;
        let each: Vec<String> = self
            .0
            .iter()
            .map(|&s| format!("{s:.2} s ({:.0} rows/s)", rate(s)))
            .collect();
        if self.0.len() == 1 {
            format!("Seeding by `switchboard import`: {}.", each[0])
        } else {
            format!(
                "Seeding by `switchboard import`, then the same file into {} scratch databases (this VM's speed drifts, so one import is one sample): {}; median {:.0} rows/s.",
                self.0.len() - 1,
                each.join(", "),
                rate(self.median())
            )
        }
    }
}

/// Up to this many rows the seed file is imported twice more, into scratch databases, and the
/// import figure is the median of the three runs (10M takes most of a minute a run).
const REPEAT_IMPORTS_UP_TO: u64 = 1_000_000;

/// `switchboard import contacts` of `csv` into portal 777 of `db`: its wall time (the whole
/// process) and what it printed.
fn timed_import(bin: &Path, db: &Path, csv: &Path) -> (f64, String) {
    let t = Instant::now();
    let out = cli(
        bin,
        db,
        &[
            "import",
            "contacts",
            "--portal",
            "777",
            csv.to_str().unwrap(),
            "--quiet",
        ],
    );
    (t.elapsed().as_secs_f64(), out)
}

/// One more timed import of `csv` into a fresh scratch database beside `db`; its wall time,
/// the whole process as in [`seed`].
fn scratch_import(bin: &Path, db: &Path, csv: &Path) -> f64 {
    let scratch = db.with_extension("again.db");
    cli(
        bin,
        &scratch,
        &["portal", "create", "--id", "777", "--default-region", "US"],
    );
    let (secs, out) = timed_import(bin, &scratch, csv);
    eprintln!("again: {}", out.trim());
    for suffix in ["", "-wal", "-shm", "-journal", "-switchboard.lock"] {
        std::fs::remove_file(format!("{}{suffix}", scratch.display())).ok();
    }
    secs
}

/// Seeds `db` by `switchboard import` and times it (and, up to [`REPEAT_IMPORTS_UP_TO`] rows,
/// two more imports of the file). With `profile`, imports the same file once more into a
/// scratch database under `perf record`, so that the timed figures carry no sampling cost;
/// returns the profile's summary too.
fn seed(bin: &Path, db: &Path, contacts: u64, profile: bool) -> (ImportRuns, Option<String>) {
    let run = |args: &[&str]| cli(bin, db, args);
    run(&["portal", "create", "--id", "777", "--default-region", "US"]);
    let csv = db.with_extension("csv");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
        writeln!(f, "First Name,Last Name,Email,Phone Number,Country/Region").unwrap();
        // The rows go in a scattered order, as an export's numbers and emails are: in contact
        // order they would follow the indexes' key order, each insert landing at the end of the
        // last, and the import measured 50-60k rows/s instead of about 40k. The order is a
        // hash's, not a stride's: with a stride the record ids of the contacts the phases call
        // (`(k * 7919) % N`) would follow an arithmetic progression too, and with stride 7919
        // the k-th call went to record k, so every logged call appended to the last one's pages.
        let mut order: Vec<u64> = (0..contacts).collect();
        order.sort_unstable_by_key(|&i| splitmix64(i));
        for i in order {
            let (typed, country, _) = number(i);
            writeln!(f, "C{i},Bench,c{i}@bench.example,\"{typed}\",{country}").unwrap();
        }
        // On disk before the clock starts, so the timed import does not share the disk with
        // the kernel writing this file back.
        f.into_inner().unwrap().sync_all().unwrap();
    }
    let (secs, out) = timed_import(bin, db, &csv);
    let mut runs = vec![secs];
    eprintln!("seeded: {}", out.trim());
    if contacts <= REPEAT_IMPORTS_UP_TO {
        for _ in 0..2 {
            runs.push(scratch_import(bin, db, &csv));
        }
    }
    let profiled = profile.then(|| profile_import(bin, db, &csv)).flatten();
    // BENCH_KEEP_CSV=1 keeps the file, to time imports of it again by hand.
    if std::env::var_os("BENCH_KEEP_CSV").is_none() {
        std::fs::remove_file(&csv).ok();
    }
    (ImportRuns(runs), profiled)
}

/// The same import into a scratch database, under `perf record -g`; `None` without perf.
fn profile_import(bin: &Path, db: &Path, csv: &Path) -> Option<String> {
    let scratch = db.with_extension("profile.db");
    let url = format!("sqlite://{}", scratch.display());
    cli(
        bin,
        &scratch,
        &["portal", "create", "--id", "777", "--default-region", "US"],
    );
    let data = db.with_extension("import.perf");
    eprintln!(
        "profiling a second import of the same file into {}",
        scratch.display()
    );
    let status = Command::new("perf")
        .args(["record", "-g", "-F", "499", "-o"])
        .arg(&data)
        .arg("--")
        .arg(bin)
        .args(["import", "contacts", "--portal", "777"])
        .arg(csv)
        .args(["--quiet", "--db", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let summary = status
        .is_ok_and(|s| s.success())
        .then(|| profile_summary(&data));
    for suffix in ["", "-wal", "-shm", "-switchboard.lock"] {
        std::fs::remove_file(format!("{}{suffix}", scratch.display())).ok();
    }
    std::fs::remove_file(&data).ok();
    summary
}

struct Server {
    child: Child,
    addr: String,
    startup: Duration,
}

fn start(bin: &Path, db: &Path) -> Server {
    let t = Instant::now();
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            &format!("sqlite://{}", db.display()),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(match std::env::var_os("BENCH_SERVER_LOG") {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("BENCH_SERVER_LOG")),
            None => Stdio::null(),
        })
        .spawn()
        .expect("spawn server");
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "server exited");
        if let Some(a) = line.trim().strip_prefix("Switchboard listening on http://") {
            break a.to_string();
        }
    };
    let startup = t.elapsed();
    std::thread::spawn(move || for _ in reader.lines() {});
    Server {
        child,
        addr,
        startup,
    }
}

impl Server {
    /// SIGTERM, as an operator stops it, and wait for it to finish.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// One keep-alive HTTP/1.1 connection that posts a body and reads the whole answer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    body_at: usize,
}

impl Conn {
    async fn open(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).ok();
        Conn {
            stream,
            buf: Vec::with_capacity(4096),
            body_at: 0,
        }
    }

    async fn post(&mut self, host: &str, path: &str, token: &str, body: &str) -> u16 {
        self.request("POST", host, path, token, body).await
    }

    async fn request(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        token: &str,
        body: &str,
    ) -> u16 {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(req.as_bytes()).await.expect("write");
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let (status, len) = {
                    let head = std::str::from_utf8(&self.buf[..end]).expect("utf8 head");
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    (head[9..12].parse().unwrap_or(0), len)
                };
                self.body_at = end + 4;
                while self.buf.len() < end + 4 + len {
                    let n = self.stream.read(&mut chunk).await.expect("read body");
                    assert!(n > 0);
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                return status;
            }
        }
    }
}

impl Conn {
    /// The body of the last answer.
    fn body(&self) -> &str {
        std::str::from_utf8(&self.buf[self.body_at..]).unwrap_or("")
    }
}

/// `--search`: seeds contacts through `batch/create` over HTTP, then times a phone `EQ` search
/// (served by the phones index) against a search that must scan every contact.
fn search_bench(bin: &Path, dir: &Path, contacts: u64, out: &Path) {
    let db = dir.join("search.db");
    let cli = |args: &[&str]| last_line(&cli(bin, &db, args));
    cli(&["portal", "create", "--id", "778"]);
    let token = cli(&[
        "token",
        "create",
        "--portal",
        "778",
        "--scopes",
        "crm.objects.contacts.read,crm.objects.contacts.write",
    ]);
    let server = start(bin, &db);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = server.addr.clone();
    let (seed_secs, phone, scan) = rt.block_on(async move {
        let t = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..4u64 {
            let (addr, token) = (addr.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = Conn::open(&addr).await;
                let mut start = w * 100;
                while start < contacts {
                    let inputs: Vec<String> = (start..(start + 100).min(contacts))
                        .map(|i| {
                            let (typed, country, _) = number(i);
                            format!(r#"{{"properties":{{"firstname":"C{i}","email":"s{i}@bench.example","phone":"{typed}","country":"{country}"}}}}"#)
                        })
                        .collect();
                    let body = format!(r#"{{"inputs":[{}]}}"#, inputs.join(","));
                    let status = c.post(&addr, "/crm/v3/objects/contacts/batch/create", &token, &body).await;
                    assert_eq!(status, 201, "{}", c.body());
                    start += 400;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let seed_secs = t.elapsed().as_secs_f64();
        let mut c = Conn::open(&addr).await;
        let mut phone = Vec::new();
        for k in 0..200u64 {
            let i = (k * 7919) % contacts;
            let e164 = number(i).2;
            let body = format!(r#"{{"filterGroups":[{{"filters":[{{"propertyName":"phone","operator":"EQ","value":"{e164}"}}]}}],"limit":10}}"#);
            let t = Instant::now();
            let status = c.post(&addr, "/crm/v3/objects/contacts/search", &token, &body).await;
            phone.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(status, 200);
            assert!(c.body().contains("\"total\":1"), "phone {e164} must find one contact: {}", c.body());
        }
        let mut scan = Vec::new();
        for k in 0..10u64 {
            let i = (k * 7919) % contacts;
            let body = format!(r#"{{"filterGroups":[{{"filters":[{{"propertyName":"firstname","operator":"EQ","value":"C{i}"}}]}}],"limit":10}}"#);
            let t = Instant::now();
            let status = c.post(&addr, "/crm/v3/objects/contacts/search", &token, &body).await;
            scan.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(status, 200);
        }
        (seed_secs, phone, scan)
    });
    server.stop();
    let med = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (p, sc) = (med(&phone), med(&scan));
    let text = format!(
        "# Search benchmark\n\nWritten by `cargo run --release --bin bench -- --search --contacts {contacts}` on {}.\n\n{contacts} contacts seeded through `POST /crm/v3/objects/contacts/batch/create` (100 per call, 4 connections) in {seed_secs:.1} s ({:.0} contacts/s).\n\n| Search | Median latency (ms) | Runs |\n|---|---|---|\n| `phone EQ <E.164>` (candidates from the in-memory caller-ID index) | {p:.2} | {} |\n| `firstname EQ <name>` (scans every contact) | {sc:.2} | {} |\n\nThe phone search is {:.0}x faster than the scan: it reads only the records whose stored number normalises to the searched one, whatever format it was typed in.\n",
        machine(),
        contacts as f64 / seed_secs,
        phone.len(),
        scan.len(),
        sc / p
    );
    std::fs::write(out, &text).unwrap();
    println!("{text}");
}

#[derive(Clone, Copy)]
enum Kind {
    Baseline,
    Lookup,
    Logging,
}

struct Phase {
    requests: u64,
    seconds: f64,
    errors: u64,
    latencies_us: Vec<u32>,
}

impl Phase {
    fn empty() -> Self {
        Phase {
            requests: 0,
            seconds: 0.0,
            errors: 0,
            latencies_us: Vec::new(),
        }
    }
    /// Adds a slice of the same phase measured in another round.
    fn absorb(&mut self, other: Phase) {
        self.requests += other.requests;
        self.seconds += other.seconds;
        self.errors += other.errors;
        self.latencies_us.extend(other.latencies_us);
        self.latencies_us.sort_unstable();
    }
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
    fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

fn body(kind: Kind, i: u64, contacts: u64, run: &str) -> String {
    // Nine in ten callers are in the CRM; the tenth is not.
    let caller = if i % 10 == 9 {
        format!("+1650{:07}", i % 10_000_000)
    } else {
        number((i * 7919) % contacts).2
    };
    format!(
        r#"{{"createEngagement":{},"engagementProperties":{{}},"externalCallId":"{run}-{i}","finalCallStatus":"COMPLETED","fromNumber":{{"e164Number":"{caller}","phoneNumberType":"FIXED_LINE"}},"toNumber":{{"e164Number":"+14155550100","phoneNumberType":"FIXED_LINE"}},"potentialRecipientUserIds":[],"durationSeconds":42}}"#,
        matches!(kind, Kind::Logging)
    )
}

/// Where and how hard to drive: the server, its token, connections and the seeded size.
struct Load {
    addr: String,
    token: String,
    conns: usize,
    contacts: u64,
    /// Request sequence over the whole run, so that no slice repeats another's callers or
    /// externalCallIds (a repeated id would be a repost, not a new call).
    next: Arc<AtomicU64>,
}

/// Releases requests as a Poisson process of `rate` a second until `deadline`, as permits
/// any idle connection takes (the semaphore is closed at the deadline).
///
/// Why: calls reach a switch independently of one another, so a fixed rate should arrive as
/// one. Each connection used to sleep on tokio's timer until its next slot, as most load
/// generators pace, and that timer has millisecond ticks: every connection due within a
/// millisecond woke on the same tick, so the server saw bursts of `rate / 1000` requests and
/// then nothing. The bursts made the lookup p99 at half rate grow with the connection count
/// (1.2 ms with 32 connections, 3.4 ms with 64), and they flattered logging, whose group commit
/// turns a burst into one transaction: at 8,500 calls/s on 100k contacts the logging p99 was
/// 3.0–3.9 ms with ticks and 4.4–5.6 ms with Poisson arrivals (`bench/ANALYSIS.md`). This
/// thread sleeps on the OS's high-resolution timer and releases what has arrived every 250 µs
/// (every 100 µs cost the pacer a tenth of a core). A request's latency is timed from its send,
/// so a wait for an idle connection is not in it; at half rate about 9 of the 32 are busy.
fn pace(rate: f64, deadline: Instant) -> Arc<tokio::sync::Semaphore> {
    let permits = Arc::new(tokio::sync::Semaphore::new(0));
    let sem = permits.clone();
    std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            let start = Instant::now();
            // A fixed seed: every run draws the same arrivals.
            let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
            let mut next_at = 0.0f64;
            while Instant::now() < deadline {
                let now = start.elapsed().as_secs_f64();
                let mut arrived = 0;
                while next_at <= now {
                    // A 64-bit LCG (Knuth's MMIX constants) is plenty for inter-arrival times.
                    rng = rng
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let u = ((rng >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
                    next_at += -u.ln() / rate;
                    arrived += 1;
                }
                if arrived > 0 {
                    sem.add_permits(arrived);
                }
                std::thread::sleep(Duration::from_micros(250));
            }
            sem.close();
        })
        .expect("start the pacer thread");
    permits
}

/// Drives one phase: `rate` requests per second in all (None: as fast as answers come).
async fn drive(load: &Load, kind: Kind, secs: u64, rate: Option<f64>, run: &str) -> Phase {
    let path = match kind {
        Kind::Baseline => "/switchboard/v1/echo",
        _ => "/crm/v3/extensions/calling/inbound-call",
    };
    let (addr, token, conns, contacts) = (&load.addr, &load.token, load.conns, load.contacts);
    let counter = load.next.clone();
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let permits = rate.map(|r| pace(r, deadline));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (addr, token, counter, errors, run, permits) = (
            addr.to_string(),
            token.to_string(),
            counter.clone(),
            errors.clone(),
            run.to_string(),
            permits.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await;
            let mut lat = Vec::with_capacity(1 << 16);
            while Instant::now() < deadline {
                if let Some(permits) = &permits {
                    match permits.acquire().await {
                        Ok(p) => p.forget(),
                        Err(_) => break, // the pacer closed it at the deadline
                    }
                }
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let b = body(kind, i, contacts, &run);
                let t = Instant::now();
                let status = conn.post(&addr, path, &token, &b).await;
                lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                if status != 200 {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort_unstable();
    Phase {
        requests: all.len() as u64,
        seconds,
        errors: errors.load(Ordering::Relaxed),
        latencies_us: all,
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total = mem
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map_or(0.0, |k| k / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cores} cores, {total:.0} GiB RAM, Linux {}",
        kernel.trim()
    )
}

/// Samples the server with `perf record` during a phase, when perf is available.
fn profile_start(pid: u32, out: &Path) -> Option<Child> {
    Command::new("perf")
        .args(["record", "-g", "-F", "499", "-p", &pid.to_string(), "-o"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// Stops a `perf record` of the server and summarises it.
fn profile_report(mut rec: Child, data: &Path) -> String {
    let _ = Command::new("kill")
        .args(["-INT", &rec.id().to_string()])
        .status();
    let _ = rec.wait();
    profile_summary(data)
}

/// The profile's threads (tokio workers, SQLite writer, checkpointer; the import's reader,
/// converters and orderer) and its top 25 symbols.
fn profile_summary(data: &Path) -> String {
    let report = |sort: &str, take: usize| {
        let out = Command::new("perf")
            .args([
                "report",
                "--no-children",
                "--sort",
                sort,
                "--stdio",
                "-g",
                "none",
                "-i",
            ])
            .arg(data)
            .output()
            .ok()?;
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| {
                    l.trim_start()
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_digit())
                })
                .take(take)
                .map(|l| {
                    // "  12.3%  dso  [.] symbol   -  -": keep the share, the object and the symbol.
                    let l = l.trim_end().trim_end_matches(['-', ' ']);
                    l.split_whitespace().collect::<Vec<_>>().join(" ")
                })
                .collect::<Vec<_>>()
                .join("\n"),
        )
    };
    match (report("comm", 8), report("dso,symbol", 25)) {
        (Some(threads), Some(symbols)) if !threads.is_empty() => {
            format!("By thread:\n{threads}\n\nTop symbols:\n{symbols}")
        }
        (Some(_), Some(_)) => String::new(),
        _ => "perf is not installed (apt-get install linux-perf)".into(),
    }
}

fn main() {
    let a = args();
    let exe = std::env::current_exe().unwrap();
    let bin = exe.with_file_name("switchboard");
    // `cargo run --bin bench` builds this binary only: build the server beside it, so that the
    // bench never measures a missing or stale server (a no-op when it is up to date).
    if let Some(cargo) = std::env::var_os("CARGO") {
        let release = exe
            .parent()
            .and_then(|d| d.file_name())
            .is_some_and(|d| d == "release");
        let mut build = Command::new(cargo);
        build.args(["build", "--bin", "switchboard"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build --bin switchboard failed");
    }
    assert!(
        bin.exists(),
        "build the server first: cargo build --release (looked for {})",
        bin.display()
    );
    let dir = tempfile_dir();
    if a.search {
        search_bench(&bin, &dir, a.contacts, &a.out.with_file_name("SEARCH.md"));
        std::fs::remove_dir_all(&dir).ok();
        return;
    }
    let db = a.keep.clone().unwrap_or_else(|| dir.join("bench.db"));
    let command = format!(
        "cargo run --release --bin bench -- {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    eprintln!("seeding {} contacts into {}", a.contacts, db.display());
    let fresh = !db.exists();
    let (imports, import_profile) = if fresh {
        let (runs, profile) = seed(&bin, &db, a.contacts, a.profile);
        (Some(runs), profile)
    } else {
        (None, None)
    };
    let token = last_line(&cli(
        &bin,
        &db,
        &[
            "token",
            "create",
            "--portal",
            "777",
            "--scopes",
            "crm.objects.contacts.write",
        ],
    ));
    let server = start(&bin, &db);
    eprintln!(
        "server up in {:.2}s at {}",
        server.startup.as_secs_f64(),
        server.addr
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let run = format!("bench{}", std::process::id());
    let pid = server.child.id();
    let load = Load {
        addr: server.addr.clone(),
        token: token.clone(),
        conns: a.connections,
        contacts: a.contacts,
        next: Arc::new(AtomicU64::new(0)),
    };
    // The cards fill after the port opens; measure the steady state, once they are all filed.
    let info = rt.block_on(async {
        loop {
            let body = server_info(&load.addr).await;
            if body.contains("\"cardsReadyMs\"") {
                break body;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let field = |k: &str| info_field(&info, k);
    let (cards, card_mib, cards_secs) = (
        field("cards"),
        field("cardBytes") / 1048576.0,
        field("cardsReadyMs") / 1000.0,
    );
    eprintln!("{cards:.0} cards ready {cards_secs:.1} s after the index, {card_mib:.1} MiB");
    let (index_mib, per_number, numbers) = (
        field("indexBytes") / 1048576.0,
        field("indexBytesPerNumber"),
        field("indexedNumbers"),
    );
    if let Some(only) = &a.only {
        let kind = match only.as_str() {
            "baseline" => Kind::Baseline,
            "lookup" => Kind::Lookup,
            "logging" => Kind::Logging,
            other => panic!("--only takes baseline, lookup or logging, not {other}"),
        };
        let before = rt.block_on(server_info(&load.addr));
        let p = rt.block_on(drive(&load, kind, a.seconds, a.rate, &format!("{run}o")));
        eprintln!(
            "{only}: {:.0} req/s (p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms); server pid {pid}",
            p.rps(),
            p.pct(0.5),
            p.pct(0.99),
            p.pct(0.999)
        );
        if matches!(kind, Kind::Logging) {
            let after = rt.block_on(server_info(&load.addr));
            eprint!("{}", BatchFigures::between(&before, &after).describe());
            let (p50, p99) = disk_sync(db.parent().unwrap_or(Path::new(".")), 300);
            eprintln!("disk sync (128 KiB write + fdatasync): p50 {p50:.2} ms, p99 {p99:.2} ms");
        }
        server.stop();
        std::fs::remove_dir_all(&dir).ok();
        return;
    }
    // The three phases are interleaved in rounds rather than run one after another: on a shared
    // VM the machine's speed drifts by tens of percent within a minute, and a drift must hit
    // the baseline and the calls alike for their ratio to mean anything.
    const ROUNDS: u64 = 5;
    let slice = (a.seconds / ROUNDS).max(1);
    let kinds = [
        ("1 baseline (echo)", Kind::Baseline),
        ("2 lookup-only", Kind::Lookup),
        ("3 logging", Kind::Logging),
    ];
    let mut results: BTreeMap<&str, (Phase, Phase)> = BTreeMap::new();
    let mut round_rps: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut profiles = Vec::new();
    for (name, kind) in kinds {
        rt.block_on(drive(&load, kind, 2, None, &format!("{run}w{name}")));
        results.insert(name, (Phase::empty(), Phase::empty()));
    }
    let db_dir = db.parent().unwrap_or(Path::new(".")).to_path_buf();
    let sync_before = disk_sync(&db_dir, 300);
    let batches_before = rt.block_on(server_info(&load.addr));
    for round in 0..ROUNDS {
        for (name, kind) in kinds {
            let sat = rt.block_on(drive(
                &load,
                kind,
                slice,
                None,
                &format!("{run}s{round}{name}"),
            ));
            round_rps.entry(name).or_default().push(sat.rps());
            results.get_mut(name).unwrap().0.absorb(sat);
        }
    }
    let batches = BatchFigures::between(&batches_before, &rt.block_on(server_info(&load.addr)));
    // Then each kind at half its saturated rate, interleaved the same way.
    for round in 0..ROUNDS {
        for (name, kind) in kinds {
            let rate = results[name].0.rps() / 2.0;
            let half = rt.block_on(drive(
                &load,
                kind,
                slice,
                Some(rate),
                &format!("{run}h{round}{name}"),
            ));
            results.get_mut(name).unwrap().1.absorb(half);
        }
    }
    for (name, (sat, half)) in &results {
        eprintln!(
            "{name}: {:.0} req/s saturated (p50 {:.2} ms, p99 {:.2} ms); at half rate p99 {:.2} ms",
            sat.rps(),
            sat.pct(0.5),
            sat.pct(0.99),
            half.pct(0.99)
        );
    }
    if a.profile {
        // Separate saturated phases under `perf record`, so sampling does not slow the
        // measured ones.
        for (name, kind) in [("lookup-only", Kind::Lookup), ("logging", Kind::Logging)] {
            let data = dir.join("perf.data");
            // perf now and then writes a file without samples; one more try, then say so.
            for attempt in 0..2 {
                let Some(rec) = profile_start(pid, &data) else {
                    break;
                };
                rt.block_on(drive(
                    &load,
                    kind,
                    5,
                    None,
                    &format!("{run}p{name}{attempt}"),
                ));
                let profile = profile_report(rec, &data);
                if !profile.is_empty() || attempt == 1 {
                    let profile = if profile.is_empty() {
                        "perf recorded no samples, twice".to_string()
                    } else {
                        profile
                    };
                    profiles.push((name, profile));
                    break;
                }
            }
        }
    }
    let sync_after = disk_sync(&db_dir, 300);
    let rss = peak_rss_mib(pid);
    let startup = server.startup;
    server.stop();

    let base = results["1 baseline (echo)"].0.rps();
    let mut section = String::new();
    section.push_str(&format!(
        "## {} contacts\n\nMachine: {}. Command: `{command}` ({} connections; {} s per phase, run as {ROUNDS} interleaved rounds of {slice} s (baseline, lookup, logging, again) saturated, then the same at half each saturated rate, as Poisson arrivals; load generator in the same process tree, sharing the cores).\n\n",
        a.contacts,
        machine(),
        a.connections,
        slice * ROUNDS
    ));
    section.push_str("| Phase | Throughput (req/s) | Ratio to baseline | Ratio, lowest and highest round | p50 (ms) | p99 (ms) | p99.9 (ms) | p50 at half rate (ms) | p99 at half rate (ms) | Errors |\n|---|---|---|---|---|---|---|---|---|---|\n");
    let base_rounds = &round_rps["1 baseline (echo)"];
    for (name, (sat, half)) in &results {
        let ratios: Vec<f64> = round_rps[name]
            .iter()
            .zip(base_rounds)
            .map(|(r, b)| r / b)
            .collect();
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(0.0, f64::max);
        section.push_str(&format!(
            "| {} | {:.0} | {:.2} | {lo:.2}–{hi:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |\n",
            &name[2..],
            sat.rps(),
            sat.rps() / base,
            sat.pct(0.5),
            sat.pct(0.99),
            sat.pct(0.999),
            half.pct(0.5),
            half.pct(0.99),
            sat.errors + half.errors
        ));
    }
    let seeding = match &imports {
        Some(runs) => runs.describe(a.contacts),
        None => "The database was seeded by an earlier run (`--keep-db`), so this run has no import figure."
            .to_string(),
    };
    section.push_str(&format!(
        "\nServer peak RSS: {rss:.0} MiB. Caller-ID index: {numbers:.0} numbers in {index_mib:.1} MiB, {per_number:.1} bytes per number (`indexBytes` of `/switchboard/v1/info`). Start-up until the index was ready and the port open: {:.2} s. Caller-ID cards (what an answer shows of each record, `callerid/cards.rs`): {cards:.0} in {card_mib:.1} MiB, {:.1} bytes per record, {:.1} bytes per number with the index, filed {cards_secs:.1} s after the port opened; the phases ran after that. {seeding}\n",
        startup.as_secs_f64(),
        card_mib * 1048576.0 / cards.max(1.0),
        (index_mib + card_mib) * 1048576.0 / numbers.max(1.0),
    ));
    section.push_str(&batches.describe());
    section.push_str(&format!(
        "\nThe disk's own sync, the floor under every logged call (128 KiB written and `fdatasync`ed beside the database, 300 times before the phases and 300 after, with the server idle): p50 {:.2} · {:.2} ms, p99 {:.2} · {:.2} ms (before · after).\n",
        sync_before.0, sync_after.0, sync_before.1, sync_after.1
    ));
    for (name, profile) in &profiles {
        section.push_str(&format!("\nWhere the server's time went in a separate 5 s saturated {name} phase (`perf record -g`, share of the server's samples):\n\n```text\n{profile}\n```\n"));
    }
    if let Some(profile) = &import_profile {
        section.push_str(&format!("\nWhere the import's time went (`perf record -g` of a second `switchboard import` of the same file into a scratch database, share of its samples; `sqlite-bulk` inserts the rows (the bulk load's own connection, with a rollback journal), `import-convert` reads the CSV and parses and normalises the rows, `import-order` puts them back in file order and checks duplicate emails, and `tokio-rt-worker` builds the deferred indexes with SQLite's sorter threads):\n\n```text\n{profile}\n```\n"));
    }
    write_section(&a.out, a.contacts, &section);
    println!("{section}");
    if a.keep.is_none() {
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// The disk's own sync, the least a logged call waits: `samples` overwrites of 32 pages
/// (128 KiB, about one group commit's WAL frames) at spread offsets of a file beside the
/// database, each followed by `fdatasync`, as SQLite commits. Returns (p50, p99) in ms.
fn disk_sync(dir: &Path, samples: usize) -> (f64, f64) {
    use std::os::unix::fs::FileExt;
    const CHUNK: usize = 32 * 4096;
    const SPAN: u64 = 256;
    let path = dir.join(format!("sync-probe-{}", std::process::id()));
    let file = std::fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("sync probe file");
    let buf = vec![0x5a_u8; CHUNK];
    for i in 0..SPAN {
        file.write_all_at(&buf, i * CHUNK as u64).unwrap();
    }
    file.sync_all().unwrap();
    let mut ms: Vec<f64> = (0..samples as u64)
        .map(|i| {
            let started = Instant::now();
            file.write_all_at(&buf, (i * 37 % SPAN) * CHUNK as u64)
                .unwrap();
            file.sync_data().unwrap();
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    drop(file);
    std::fs::remove_file(&path).ok();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// The body of `GET /switchboard/v1/info`.
async fn server_info(addr: &str) -> String {
    let mut c = Conn::open(addr).await;
    c.request("GET", addr, "/switchboard/v1/info", "", "").await;
    c.body().to_string()
}

/// A number of `/switchboard/v1/info`'s flat JSON (0 when absent).
fn info_field(info: &str, k: &str) -> f64 {
    info.split(&format!("\"{k}\":"))
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The call logger's transactions between two readings of the server's running totals (only
/// logging makes any).
struct BatchFigures {
    batches: f64,
    calls: f64,
    statement_us: f64,
    commit_us: f64,
    wal_pages: f64,
    syncs: f64,
    sync_us: f64,
    queue_us: f64,
    transaction_us: f64,
    sync_wait_us: f64,
    total_us: f64,
    /// The record → call links the server held after the rounds, and their bytes.
    links: f64,
    link_bytes: f64,
}

impl BatchFigures {
    fn between(before: &str, after: &str) -> Self {
        let d = |k: &str| info_field(after, k) - info_field(before, k);
        BatchFigures {
            batches: d("callBatches"),
            calls: d("loggedCalls"),
            statement_us: d("callBatchStatementMicros"),
            commit_us: d("callBatchCommitMicros"),
            wal_pages: d("callBatchWalPages"),
            syncs: d("callBatchSyncs"),
            sync_us: d("callBatchSyncMicros"),
            queue_us: d("callQueueMicros"),
            transaction_us: d("callTransactionMicros"),
            sync_wait_us: d("callSyncWaitMicros"),
            total_us: d("callTotalMicros"),
            links: info_field(after, "callLinks"),
            link_bytes: info_field(after, "callLinkBytes"),
        }
    }

    fn describe(&self) -> String {
        let n = self.batches.max(1.0);
        format!(
            "\nGroup commit in the saturated logging rounds (the server's `callBatch*` totals of `/switchboard/v1/info`): {:.0} calls in {:.0} transactions, {:.1} calls per transaction; per transaction {:.0} µs of statements ({:.1} µs per call) and {:.0} µs of commit (writing the WAL), {:.1} WAL pages ({:.1} per call). The syncer thread made them durable in {:.0} WAL syncs of {:.0} µs each on average, {:.1} calls per sync.\n",
            self.calls,
            self.batches,
            self.calls / n,
            self.statement_us / n,
            self.statement_us / self.calls.max(1.0),
            self.commit_us / n,
            self.wal_pages / n,
            self.wal_pages / self.calls.max(1.0),
            self.syncs,
            self.sync_us / self.syncs.max(1.0),
            self.calls / self.syncs.max(1.0),
        ) + &self.waits()
            + &format!(
                "\nEach call's contact→call link is kept in memory, not written (`store/call_links.rs`): after the phases the server held {:.0} links in {:.1} MiB, {:.1} bytes each (`callLinks`, `callLinkBytes`).\n",
                self.links,
                self.link_bytes / 1048576.0,
                self.link_bytes / self.links.max(1.0),
            )
    }

    /// Where the average logged call's time in the store went (`callQueueMicros` and the
    /// rest): the waits a CPU profile does not show.
    fn waits(&self) -> String {
        let per = |us: f64| us / self.calls.max(1.0);
        let (total, queue, tx, sync) = (
            per(self.total_us),
            per(self.queue_us),
            per(self.transaction_us),
            per(self.sync_wait_us),
        );
        format!(
            "\nWhere a logged call's time in the store went in those rounds, on average (`callQueueMicros`, `callTransactionMicros`, `callSyncWaitMicros` and `callTotalMicros` of `/switchboard/v1/info`): {total:.0} µs from its hand-over to the writer until the request's task had the answer: {queue:.0} µs queued for the writer, {tx:.0} µs in its transaction, {sync:.0} µs from the commit until the sync that covers it had finished (waiting for the sync before it, then its own), and {:.0} µs until the woken task ran.\n",
            total - queue - tx - sync
        )
    }
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Replaces this size's section of RESULTS.md, keeping the others.
fn write_section(path: &Path, contacts: u64, section: &str) {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let header = "# Benchmark results\n\nWritten by `cargo run --release --bin bench`; each section is replaced when its size is run again.\n\n";
    let mut sections: BTreeMap<u64, String> = BTreeMap::new();
    for part in old.split("\n## ").skip(1) {
        if let Some(n) = part
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
        {
            sections.insert(n, format!("## {}", part.trim_end()));
        }
    }
    sections.insert(contacts, section.trim_end().to_string());
    let body: Vec<String> = sections.into_values().collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(path, format!("{header}{}\n", body.join("\n\n"))).expect("write results");
}
