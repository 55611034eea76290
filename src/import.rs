//! `switchboard import contacts|companies --portal N FILE.csv`: bulk load from a CSV export.
//!
//! - Columns are HubSpot export names ("Phone Number", "Country/Region") or property names;
//!   `--map column=property` overrides either.
//! - Rows are validated like API writes (property types) and against duplicates (a contact's
//!   email, a company's domain); failures go to a reject file with their line number and
//!   reason, and the import goes on.
//! - Rows are committed in batches with a checkpoint (the last line) in the same transaction,
//!   so a re-run after a crash resumes after the last commit and never duplicates a row.
//! - Numbers are normalised on the way in. A server started afterwards builds its caller-ID
//!   index from them; a server already running on the same database files each committed
//!   batch within half a second (`AppState::file_external_records`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::callerid::normalize::region_code;
use crate::clock;
use crate::crm::{self, Catalog, PropertyDef};
use crate::store::{ImportRow, ObjectType, Properties, Store};

/// HubSpot's export column labels and the properties they hold.
const EXPORT_COLUMNS: &[(&str, &str)] = &[
    ("first name", "firstname"),
    ("last name", "lastname"),
    ("email", "email"),
    ("phone number", "phone"),
    ("mobile phone number", "mobilephone"),
    ("whatsapp phone number", "hs_whatsapp_phone_number"),
    ("fax number", "fax"),
    ("country/region", "country"),
    ("country", "country"),
    ("city", "city"),
    ("state/region", "state"),
    ("street address", "address"),
    ("postal code", "zip"),
    ("job title", "jobtitle"),
    ("company name", "company"),
    ("company name", "name"),
    ("website url", "website"),
    ("lifecycle stage", "lifecyclestage"),
    ("lead status", "hs_lead_status"),
    ("name", "name"),
    ("company domain name", "domain"),
    ("industry", "industry"),
    ("number of employees", "numberofemployees"),
    ("annual revenue", "annualrevenue"),
    ("description", "description"),
    ("contact owner", "hubspot_owner_id"),
    ("company owner", "hubspot_owner_id"),
];

/// Columns of an export that are not properties to write.
const IGNORED_COLUMNS: &[&str] = &[
    "record id",
    "create date",
    "last modified date",
    "associated company",
];

pub struct ImportOptions {
    pub portal_id: i64,
    pub object_type: ObjectType,
    pub file: PathBuf,
    pub map: Vec<(String, String)>,
    pub reject_file: PathBuf,
    pub batch_size: usize,
    pub progress: bool,
    pub indexes: IndexMode,
}

/// What an import does with the secondary index that makes each row a random insert (the
/// email or the domain index; `store::bulk`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexMode {
    /// Defer them when the file is large against what the database holds and no server is
    /// running on it; keep them otherwise.
    Auto,
    /// Insert into them row by row (what a server running on the same file needs).
    Keep,
    /// Drop them for the load and build them after it; refused while a server is running.
    Defer,
}

impl std::str::FromStr for IndexMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(IndexMode::Auto),
            "keep" => Ok(IndexMode::Keep),
            "defer" => Ok(IndexMode::Defer),
            other => Err(format!(
                "--indexes takes auto, keep or defer, not \"{other}\""
            )),
        }
    }
}

/// Building the indexes after the load costs about 2.5 µs per row of the whole table (10M
/// contacts: 26 s for the three), inserting into them cost 20-75 µs per imported row once they
/// outgrew the cache: deferring pays well before the file has a third as many rows as the
/// table, and a third keeps the builds from dominating a modest import into a large portal.
const DEFER_WHEN_EXISTING_PER_ROW: u64 = 3;

/// Rows in the file, from the length of its first lines.
fn estimate_rows(path: &Path, total_bytes: u64) -> u64 {
    use std::io::Read;
    let mut head = vec![0u8; 256 * 1024];
    let read = File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let lines = head[..read].iter().filter(|&&b| b == b'\n').count() as u64;
    if lines == 0 {
        return 1;
    }
    total_bytes * lines / read as u64
}

#[derive(Debug, Default, Clone)]
pub struct ImportReport {
    pub imported: u64,
    pub rejected: u64,
    /// Rows before the checkpoint of an earlier run, not read again.
    pub resumed_after_line: u64,
    pub seconds: f64,
    pub unknown_columns: Vec<String>,
    /// Whether the secondary indexes were left out of the load and built after it.
    pub deferred_indexes: bool,
    /// The indexes built at the end, with their build times.
    pub built_indexes: Vec<(&'static str, Duration)>,
}

impl ImportReport {
    pub fn rows_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            (self.imported + self.rejected) as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// A column name as headers and `--map` are compared: trimmed, in lower case.
fn column_key(name: &str) -> String {
    name.trim().to_lowercase()
}

/// Which property each column writes (`None`: ignored).
fn column_map(
    headers: &csv::StringRecord,
    catalog: &Catalog,
    overrides: &[(String, String)],
) -> (Vec<Option<String>>, Vec<String>) {
    let mut unknown = Vec::new();
    let cols = headers
        .iter()
        .map(|h| {
            let key = column_key(h);
            if let Some((_, p)) = overrides.iter().find(|(c, _)| column_key(c) == key) {
                return Some(p.clone());
            }
            if catalog.get(&key).is_some() {
                return Some(key);
            }
            // A label can mean different properties on different types ("Company name" is a
            // contact's `company` and a company's `name`): the first that exists here wins.
            if let Some((_, p)) = EXPORT_COLUMNS
                .iter()
                .filter(|(c, _)| *c == key)
                .find(|(_, p)| catalog.get(p).is_some())
            {
                return Some((*p).to_string());
            }
            if !IGNORED_COLUMNS.contains(&key.as_str()) {
                unknown.push(h.to_string());
            }
            None
        })
        .collect();
    (cols, unknown)
}

/// Identifies a file across runs: its canonical path and size.
fn job_key(opts: &ImportOptions) -> std::io::Result<String> {
    let path = std::fs::canonicalize(&opts.file)?;
    let size = std::fs::metadata(&path)?.len();
    Ok(format!(
        "{}:{}:{}:{size}",
        opts.portal_id,
        opts.object_type.plural(),
        path.display()
    ))
}

struct Progress {
    enabled: bool,
    started: Instant,
    last: Instant,
    total_bytes: u64,
}

impl Progress {
    fn tick(&mut self, rows: u64, byte: u64, force: bool) {
        if !self.enabled || (!force && self.last.elapsed() < Duration::from_millis(250)) {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-6);
        let rate = rows as f64 / secs;
        let frac = if self.total_bytes > 0 {
            byte as f64 / self.total_bytes as f64
        } else {
            1.0
        };
        let eta = if frac > 0.0 { secs / frac - secs } else { 0.0 };
        let width = 30;
        let filled = ((frac * width as f64) as usize).min(width);
        eprint!(
            "\r[{}{}] {:>5.1}% {rows} rows  {rate:.0} rows/s  ETA {eta:.0}s   ",
            "#".repeat(filled),
            " ".repeat(width - filled),
            frac * 100.0
        );
    }
}

/// Runs an import to the end, or resumes one.
pub async fn run(store: &dyn Store, opts: &ImportOptions) -> Result<ImportReport, String> {
    let started = Instant::now();
    let portal = store
        .portal(opts.portal_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no portal {}", opts.portal_id))?;
    let region =
        region_code(&portal.default_region).ok_or("the portal's default region is not a region")?;
    let custom = crm::custom_definitions(store, opts.portal_id)
        .await
        .map_err(|e| e.to_string())?;
    let catalog = Catalog {
        object_type: opts.object_type,
        custom: custom
            .into_iter()
            .filter(|(t, _)| *t == opts.object_type)
            .map(|(_, d)| d)
            .collect(),
    };
    let job = job_key(opts).map_err(|e| format!("cannot read {}: {e}", opts.file.display()))?;
    let checkpoint = store
        .import_checkpoint(&job)
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or(0);
    let total_bytes = std::fs::metadata(&opts.file).map(|m| m.len()).unwrap_or(0);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(&opts.file)
        .map_err(|e| format!("cannot open {}: {e}", opts.file.display()))?;
    let headers = reader
        .headers()
        .map_err(|e| format!("cannot read the header row: {e}"))?
        .clone();
    let (columns, unknown) = column_map(&headers, &catalog, &opts.map);
    let users = store
        .users(opts.portal_id)
        .await
        .map_err(|e| e.to_string())?;
    let plan = Plan::new(&columns, &catalog, region, Owners::of(&users));
    // A mistake in --map would reject every row, or silently import nothing from a column:
    // stop before anything is written instead.
    for (column, property) in &opts.map {
        let at = headers
            .iter()
            .position(|h| column_key(h) == column_key(column));
        match at.and_then(|i| plan.columns[i].as_ref()) {
            None => {
                return Err(format!(
                    "--map {column}={property}: {} has no column \"{column}\"",
                    opts.file.display()
                ));
            }
            Some(Err(message)) => return Err(format!("--map {column}={property}: {message}")),
            Some(Ok(_)) => {}
        }
    }
    if !columns.iter().any(Option::is_some) {
        return Err(format!(
            "no column of {} maps to a {} property; use --map column=property",
            opts.file.display(),
            opts.object_type.plural()
        ));
    }
    let mut rejects = Rejects::open(&opts.reject_file, checkpoint > 0)
        .map_err(|e| format!("cannot write {}: {e}", opts.reject_file.display()))?;
    // A resumed import has only the lines after its checkpoint left to load.
    let rows_left = estimate_rows(&opts.file, total_bytes).saturating_sub(checkpoint);
    let mut keys: HashSet<String> = HashSet::new();
    if let Some(property) = unique_property(opts.object_type) {
        let existing = store
            .property_values(opts.portal_id, opts.object_type, property)
            .await
            .map_err(|e| e.to_string())?;
        // Grown by doubling, the set rehashed every key it held: at 10M rows, hundreds of MiB
        // moved on the thread that hands batches to the writer.
        keys.reserve(existing.len() + rows_left.min(50_000_000) as usize);
        keys.extend(existing.into_iter().map(|e| e.to_lowercase()));
    }
    let mut report = ImportReport {
        resumed_after_line: checkpoint,
        unknown_columns: unknown,
        ..ImportReport::default()
    };
    let mut progress = Progress {
        enabled: opts.progress,
        started,
        last: started,
        total_bytes,
    };
    // Parsing and normalising (libphonenumber is most of a row's cost) run on worker threads
    // while the writer commits the previous batch; see `pipeline`.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Parsed>(2);
    let batch_size = opts.batch_size;
    let object_type = opts.object_type;
    let workers = conversion_workers();
    // A named thread rather than tokio's blocking pool, so that a profile of the import shows
    // the converters and this one apart (see bench/RESULTS.md).
    let (finished, producer) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("import-order".into())
        .spawn(move || {
            let batching = Batching {
                size: batch_size,
                file_bytes: total_bytes,
            };
            let _ = finished.send(pipeline(
                reader, checkpoint, plan, keys, batching, workers, tx,
            ));
        })
        .map_err(cannot_spawn)?;
    // Decided while the first rows convert: no batch is written before this returns.
    report.deferred_indexes = settle_indexes(store, opts, rows_left).await?;
    if report.deferred_indexes {
        // No server can start now: the store writes without the WAL (`store::bulk`).
        store
            .hand_over_to_bulk_load()
            .await
            .map_err(|e| e.to_string())?;
    }
    while let Some(mut batch) = rx.recv().await {
        let written = batch.writes.len() as u64;
        store
            .import_batch(
                opts.portal_id,
                object_type,
                std::mem::take(&mut batch.writes),
                &job,
                batch.last_line,
                clock::now_ms(),
            )
            .await
            .map_err(|e| {
                format!(
                    "import stopped; every row before this batch is saved, re-run to resume: {e}"
                )
            })?;
        report.imported += written;
        report.rejected += batch.rejects.len() as u64;
        rejects.write(&batch.rejects).map_err(|e| e.to_string())?;
        progress.tick(report.imported + report.rejected, batch.byte, false);
    }
    producer
        .await
        .map_err(|_| "the CSV reader stopped".to_string())??;
    progress.tick(report.imported + report.rejected, total_bytes, true);
    if opts.progress {
        eprintln!();
        if report.deferred_indexes {
            eprintln!(
                "building the deferred email or domain index (about a second per million records) ..."
            );
        }
    }
    // Without deferral `settle_indexes` already made sure they all exist.
    if report.deferred_indexes {
        report.built_indexes = store
            .build_missing_indexes()
            .await
            .map_err(|e| format!("every row is saved, but building the indexes failed (a server builds them at start): {e}"))?;
    }
    rejects.finish().map_err(|e| e.to_string())?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// One batch of parsed rows on its way to the store.
#[derive(Default)]
struct Parsed {
    writes: Vec<ImportRow>,
    rejects: Vec<(u64, String)>,
    /// The last file line the batch covers: the checkpoint once it commits.
    last_line: u64,
    byte: u64,
}

/// What each column writes, worked out once per file rather than once per cell.
struct Plan {
    object_type: ObjectType,
    /// Per column: nothing, the property it writes, or why it cannot be written.
    columns: Vec<Option<Result<PropertyDef, String>>>,
    /// The portal's default region, for numbers without a country code or a country.
    region: rlibphonenumber::Region,
    owners: Owners,
}

impl Plan {
    fn new(
        columns: &[Option<String>],
        catalog: &Catalog,
        region: rlibphonenumber::Region,
        owners: Owners,
    ) -> Self {
        Plan {
            object_type: catalog.object_type,
            region,
            owners,
            columns: columns
                .iter()
                .map(|c| {
                    c.as_ref()
                        .map(|p| catalog.check_writable(p).map_err(|e| e.message))
                })
                .collect(),
        }
    }
}

/// The portal's active owners by what an export's owner column may hold: HubSpot's exports write
/// the owner's name ("Contact owner"), and its imports also take the owner's email or id.
struct Owners {
    /// Lower-cased email, full name or id → the owner id; `None` for a name two owners share.
    by_key: HashMap<String, Option<i64>>,
}

impl Owners {
    fn of(users: &[crate::store::User]) -> Self {
        let mut by_key: HashMap<String, Option<i64>> = HashMap::new();
        for u in users.iter().filter(|u| !u.archived) {
            let name = format!("{} {}", u.first_name.trim(), u.last_name.trim());
            for key in [u.email.to_lowercase(), u.owner_id.to_string()] {
                by_key.insert(key, Some(u.owner_id));
            }
            by_key
                .entry(name.trim().to_lowercase())
                .and_modify(|id| {
                    if *id != Some(u.owner_id) {
                        *id = None;
                    }
                })
                .or_insert(Some(u.owner_id));
        }
        Owners { by_key }
    }

    /// The owner id a cell names, or why it names none.
    fn resolve(&self, cell: &str) -> Result<String, String> {
        match self.by_key.get(&cell.trim().to_lowercase()) {
            Some(Some(id)) => Ok(id.to_string()),
            Some(None) => Err(format!(
                "several owners are named \"{cell}\"; give the owner's email or id"
            )),
            None => Err(format!(
                "no owner \"{cell}\" in this portal; give an owner's name, email or id (GET /crm/v3/owners)"
            )),
        }
    }
}

/// Rows read from the file, numbered so the converted chunks can be put back in file order.
struct Chunk<T> {
    seq: u64,
    rows: Vec<(u64, T)>,
    last_line: u64,
    byte: u64,
}

/// A row ready for the store, with its unique key for the duplicate check.
struct Converted {
    row: ImportRow,
    key: Option<UniqueKey>,
}

/// A unique value lower-cased, as the duplicate check compares it, and as written when that
/// differs, for the reject's reason. Most values are written in lower case already, and a
/// second copy of each was freed on the order thread: mimalloc's slow path for a block from
/// another thread, at 1M rows about 3 % of the import's CPU.
struct UniqueKey {
    lower: String,
    written: Option<String>,
}

/// The property an import treats as a record's identity: a row whose value is already in the
/// portal, or earlier in the file, is rejected, so a re-run of an edited file adds only its
/// new records. A contact's email, as HubSpot's imports do; a company's domain, which is what
/// HubSpot's imports match companies on.
fn unique_property(ty: ObjectType) -> Option<&'static str> {
    match ty {
        ObjectType::Contact => Some("email"),
        ObjectType::Company => Some("domain"),
        ObjectType::Call => None,
    }
}

/// Decides whether this import defers the secondary indexes, and drops them if so; otherwise
/// builds any that an earlier bulk load left out, so rows go into complete indexes.
async fn settle_indexes(
    store: &dyn Store,
    opts: &ImportOptions,
    rows_left: u64,
) -> Result<bool, String> {
    let wanted = match opts.indexes {
        IndexMode::Keep => false,
        IndexMode::Defer => true,
        IndexMode::Auto => {
            let existing = store.max_record_id().await.map_err(|e| e.to_string())?;
            rows_left > 0 && rows_left * DEFER_WHEN_EXISTING_PER_ROW >= existing.max(0) as u64
        }
    };
    let deferred = wanted
        && store
            .defer_indexes(opts.object_type)
            .await
            .map_err(|e| e.to_string())?;
    if opts.indexes == IndexMode::Defer && !deferred {
        return Err("--indexes defer: a server is running on this database, and it needs the indexes; stop it, or import with --indexes keep".into());
    }
    if !deferred {
        store
            .build_missing_indexes()
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(deferred)
}

/// Conversion threads. The writer keeps a core to itself: with two workers on two cores it was
/// preempted while it maintained the indexes (1M rows in 10.3-10.6 s instead of 8.5-9.4 s), and
/// with the indexes deferred a second worker measured no faster (9.3-9.9 s against 10.0-11.7 s).
fn conversion_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).clamp(1, 8))
}

/// Rows a worker converts at a time: large enough that channel hand-offs cost nothing per
/// row, small enough that the workers share the file evenly.
const CHUNK_ROWS: usize = 512;

/// Converts rows on worker threads, each reading its next rows from the file in turn; this
/// thread puts the results back in file order (the duplicate-email check keeps the first
/// occurrence in the file, and a checkpoint must cover exactly the lines before it) and hands
/// them to the writer in batches.
///
/// Why threads: converting a row (libphonenumber is most of it) costs about as much as writing
/// it, so the conversion runs beside the writer instead of in turn with it. Why the workers read:
/// a reader thread allocated every row's record and a worker freed it, and a free from another
/// thread is mimalloc's slow path; a worker reads into records it reuses.
fn pipeline(
    reader: csv::Reader<File>,
    checkpoint: u64,
    plan: Plan,
    mut keys: HashSet<String>,
    batching: Batching,
    workers: usize,
    tx: tokio::sync::mpsc::Sender<Parsed>,
) -> Result<(), String> {
    let source = Mutex::new(Source {
        reader,
        checkpoint,
        next_seq: 0,
        last_line: checkpoint,
        finished: false,
    });
    let (done_tx, done_rx) = mpsc::sync_channel::<Chunk<Result<Converted, String>>>(workers * 2);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let (plan, source) = (&plan, &source);
            std::thread::Builder::new()
                .name("import-convert".into())
                .spawn_scoped(scope, move || convert_chunks(source, &done_tx, plan))
                .map_err(cannot_spawn)?;
        }
        drop(done_tx);
        // In file order: chunks that arrive early wait here for the ones before them.
        let mut early = BTreeMap::new();
        let mut next_seq = 0;
        let mut batch = Parsed::default();
        let mut last = (checkpoint, 0);
        let mut target = batching.small();
        for chunk in done_rx {
            early.insert(chunk.seq, chunk);
            while let Some(chunk) = early.remove(&next_seq) {
                next_seq += 1;
                if batching.near_end(&chunk) {
                    target = target.min(batching.small());
                }
                for (line, row) in chunk.rows {
                    match row.and_then(|c| dedup(c, &mut keys, plan.object_type)) {
                        Ok(row) => batch.writes.push(row),
                        Err(reason) => batch.rejects.push((line, reason)),
                    }
                    if batch.writes.len() + batch.rejects.len() >= target {
                        batch.last_line = line;
                        batch.byte = chunk.byte;
                        if tx.blocking_send(std::mem::take(&mut batch)).is_err() {
                            return Err("the import stopped".to_string());
                        }
                        target = (target * 2).min(batching.size);
                    }
                }
                last = (chunk.last_line, chunk.byte);
            }
        }
        if !batch.writes.is_empty() || !batch.rejects.is_empty() {
            (batch.last_line, batch.byte) = last;
            tx.blocking_send(batch)
                .map_err(|_| "the import stopped".to_string())?;
        }
        Ok(())
    })
}

/// How the order thread cuts the rows into batches for the writer.
///
/// The first batches are an eighth, a quarter and half of `--batch-size`: the writer waits for
/// the first one, and a full one took about 100 ms to convert (a sixth of a 100k-row import)
/// while the writer sat idle. The batches of the last `--batch-size` rows of the file are an
/// eighth too, so that the writer is not left committing a full batch alone after the last row
/// is converted.
#[derive(Clone, Copy)]
struct Batching {
    size: usize,
    file_bytes: u64,
}

impl Batching {
    fn small(&self) -> usize {
        (self.size / 8).max(1)
    }

    /// Whether fewer than `size` rows follow this chunk, by the bytes per line so far.
    fn near_end<T>(&self, chunk: &Chunk<T>) -> bool {
        let left = self.file_bytes.saturating_sub(chunk.byte);
        left.saturating_mul(chunk.last_line) < (self.size as u64).saturating_mul(chunk.byte)
    }
}

fn cannot_spawn(e: std::io::Error) -> String {
    format!("cannot start the import's threads: {e}")
}

/// A conversion worker: reads the next chunk of rows and converts it, until the file is done
/// or the import stopped (its send fails).
fn convert_chunks(
    source: &Mutex<Source>,
    done: &mpsc::SyncSender<Chunk<Result<Converted, String>>>,
    plan: &Plan,
) {
    let mut records = vec![csv::StringRecord::new(); CHUNK_ROWS];
    loop {
        let next = source.lock().ok().and_then(|mut s| s.read(&mut records));
        let Some(chunk) = next else { return };
        let rows = chunk
            .rows
            .into_iter()
            .map(|(line, r)| (line, r.and_then(|at| convert(&records[at], plan))))
            .collect();
        let converted = Chunk {
            seq: chunk.seq,
            rows,
            last_line: chunk.last_line,
            byte: chunk.byte,
        };
        if done.send(converted).is_err() {
            return;
        }
    }
}

/// The file as the workers share it: each takes the next chunk under the lock.
struct Source {
    reader: csv::Reader<File>,
    /// Lines up to here were committed by an earlier run and are skipped.
    checkpoint: u64,
    next_seq: u64,
    last_line: u64,
    finished: bool,
}

impl Source {
    /// Reads up to `CHUNK_ROWS` rows after the checkpoint into `records`; each row of the chunk
    /// is the index of its record, or why it could not be read (a reject). `None` at the end.
    fn read(&mut self, records: &mut [csv::StringRecord]) -> Option<Chunk<Result<usize, String>>> {
        let mut rows = Vec::with_capacity(records.len());
        // Records filled so far: a row that could not be read leaves its record to the next.
        let mut used = 0;
        while !self.finished && rows.len() < records.len() {
            match self.reader.read_record(&mut records[used]) {
                Ok(true) => {
                    let line = records[used]
                        .position()
                        .map_or(self.last_line + 1, |p| p.line());
                    self.last_line = line;
                    if line > self.checkpoint {
                        rows.push((line, Ok(used)));
                        used += 1;
                    }
                }
                Ok(false) => self.finished = true,
                Err(e) => {
                    let line = e.position().map_or(self.last_line + 1, |p| p.line());
                    self.last_line = line;
                    if line > self.checkpoint {
                        rows.push((line, Err(format!("unreadable CSV row: {e}"))));
                    }
                }
            }
        }
        if rows.is_empty() {
            return None;
        }
        let chunk = Chunk {
            seq: self.next_seq,
            rows,
            last_line: self.last_line,
            byte: self.reader.position().byte(),
        };
        self.next_seq += 1;
        Some(chunk)
    }
}

/// Keeps the first record of each unique key in the file (and none already in the portal).
fn dedup(c: Converted, keys: &mut HashSet<String>, ty: ObjectType) -> Result<ImportRow, String> {
    match c.key {
        Some(UniqueKey { lower, written }) => {
            // One lookup: `replace` hands back the value already there, equal to this one.
            match keys.replace(lower) {
                None => Ok(c.row),
                Some(lower) => Err(format!(
                    "a {} with {} {} already exists",
                    ty.singular(),
                    unique_property(ty).unwrap_or("key"),
                    written.unwrap_or(lower)
                )),
            }
        }
        None => Ok(c.row),
    }
}

/// Validates one row and computes its stored form.
fn convert(record: &csv::StringRecord, plan: &Plan) -> Result<Converted, String> {
    let mut change: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut errors = Vec::new();
    for (value, column) in record.iter().zip(&plan.columns) {
        let (Some(def), value) = (column, value.trim()) else {
            continue;
        };
        if value.is_empty() {
            continue;
        }
        match def {
            Ok(def) if def.name == "hubspot_owner_id" => match plan.owners.resolve(value) {
                Ok(id) => {
                    change.insert(def.name.clone(), Some(id));
                }
                Err(message) => errors.push(message),
            },
            Ok(def) => match crm::coerce_value(def, import_value(def, value)) {
                Ok(v) => {
                    change.insert(def.name.clone(), Some(v));
                }
                Err(message) => errors.push(message),
            },
            Err(message) => errors.push(message.clone()),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    if change.is_empty() {
        return Err("the row has no values".into());
    }
    let key = unique_property(plan.object_type)
        .and_then(|p| change.get(p)?.as_ref())
        .map(|v| {
            let lower = v.to_lowercase();
            let written = (lower != *v).then(|| v.clone());
            UniqueKey { lower, written }
        });
    let w = crm::apply_write(plan.object_type, Properties::new(), change, plan.region);
    Ok(Converted {
        row: ImportRow::encode(w),
        key,
    })
}

/// A cell as the API would take it. HubSpot's imports accept an option's label as well as its
/// internal value (its exports write labels) and Yes or No for a checkbox; the API takes only
/// values and true or false. Anything else is left as it is, for `coerce_value` to reject with
/// the property's options named.
fn import_value(def: &PropertyDef, value: &str) -> String {
    match def.kind.as_str() {
        "enumeration" => value
            .split(';')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                let options = &def.options;
                options
                    .iter()
                    .find(|o| o.value == part)
                    .or_else(|| options.iter().find(|o| o.label.eq_ignore_ascii_case(part)))
                    .or_else(|| options.iter().find(|o| o.value.eq_ignore_ascii_case(part)))
                    .map_or(part, |o| o.value.as_str())
            })
            .collect::<Vec<_>>()
            .join(";"),
        "bool" if value.eq_ignore_ascii_case("yes") => "true".to_string(),
        "bool" if value.eq_ignore_ascii_case("no") => "false".to_string(),
        _ => value.to_string(),
    }
}

/// The reject file: `line,reason` rows, written only after the batch they belong to commits.
struct Rejects {
    out: BufWriter<File>,
}

impl Rejects {
    fn open(path: &Path, append: bool) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)?;
        let mut out = BufWriter::new(file);
        if !append {
            writeln!(out, "line,reason")?;
        }
        Ok(Rejects { out })
    }

    fn write(&mut self, rows: &[(u64, String)]) -> std::io::Result<()> {
        for (line, reason) in rows {
            writeln!(self.out, "{line},\"{}\"", reason.replace('"', "\"\""))?;
        }
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Parses `--map "Phone=phone,Cell=mobilephone"`.
pub fn parse_map(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(c, p)| (c.trim().to_string(), p.trim().to_string()))
                .ok_or_else(|| format!("--map takes column=property pairs, got \"{pair}\""))
        })
        .collect()
}

/// Unused columns and how many rows each outcome had, for the CLI's summary.
pub fn summary(r: &ImportReport, reject_file: &Path) -> String {
    let mut s = format!(
        "imported {} rows, rejected {} ({}) in {:.2}s: {:.0} rows/s",
        r.imported,
        r.rejected,
        reject_file.display(),
        r.seconds,
        r.rows_per_second()
    );
    if r.resumed_after_line > 0 {
        s.push_str(&format!("; resumed after line {}", r.resumed_after_line));
    }
    if !r.built_indexes.is_empty() {
        let built: Vec<String> = r
            .built_indexes
            .iter()
            .map(|(name, took)| format!("{name} {:.2}s", took.as_secs_f64()))
            .collect();
        s.push_str(&format!(
            "; indexes built after the load: {}",
            built.join(", ")
        ));
    }
    if !r.unknown_columns.is_empty() {
        let m: HashMap<&str, ()> = r.unknown_columns.iter().map(|c| (c.as_str(), ())).collect();
        let mut cols: Vec<&str> = m.into_keys().collect();
        cols.sort();
        s.push_str(&format!(
            "; ignored columns without a property: {}",
            cols.join(", ")
        ));
    }
    s
}
