//! `switchboard import contacts|companies --portal N FILE.csv`: bulk load from a CSV export.
//!
//! - Columns are HubSpot export names ("Phone Number", "Country/Region") or property names;
//!   `--map column=property` overrides either.
//! - Rows are validated like API writes (property types, duplicate emails); failures go to a
//!   reject file with their line number and reason, and the import goes on.
//! - Rows are committed in batches with a checkpoint (the last line) in the same transaction,
//!   so a re-run after a crash resumes after the last commit and never duplicates a row.
//! - Numbers are normalised on the way in; a server started afterwards builds its caller-ID
//!   index from them (a running server sees them after a restart).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::callerid::normalize::region_code;
use crate::clock;
use crate::crm::{self, Catalog};
use crate::store::{ObjectType, Properties, RecordWrite, Store};

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
    ("website url", "website"),
    ("lifecycle stage", "lifecyclestage"),
    ("lead status", "hs_lead_status"),
    ("name", "name"),
    ("company domain name", "domain"),
    ("industry", "industry"),
    ("number of employees", "numberofemployees"),
    ("annual revenue", "annualrevenue"),
    ("description", "description"),
];

/// Columns of an export that are not properties to write.
const IGNORED_COLUMNS: &[&str] = &[
    "record id",
    "create date",
    "last modified date",
    "contact owner",
    "company owner",
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
}

#[derive(Debug, Default, Clone)]
pub struct ImportReport {
    pub imported: u64,
    pub rejected: u64,
    /// Rows before the checkpoint of an earlier run, not read again.
    pub resumed_after_line: u64,
    pub seconds: f64,
    pub unknown_columns: Vec<String>,
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
            let key = h.trim().to_lowercase();
            if let Some((_, p)) = overrides
                .iter()
                .find(|(c, _)| c.trim().to_lowercase() == key)
            {
                return Some(p.clone());
            }
            if catalog.get(&key).is_some() {
                return Some(key);
            }
            if let Some((_, p)) = EXPORT_COLUMNS
                .iter()
                .find(|(c, _)| *c == key)
                .filter(|(_, p)| catalog.get(p).is_some())
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
    if !columns.iter().any(Option::is_some) {
        return Err(format!(
            "no column of {} maps to a {} property; use --map column=property",
            opts.file.display(),
            opts.object_type.plural()
        ));
    }
    let mut rejects = Rejects::open(&opts.reject_file, checkpoint > 0)
        .map_err(|e| format!("cannot write {}: {e}", opts.reject_file.display()))?;
    let mut emails: HashSet<String> = if opts.object_type == ObjectType::Contact {
        store
            .property_values(opts.portal_id, ObjectType::Contact, "email")
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|e| e.to_lowercase())
            .collect()
    } else {
        HashSet::new()
    };
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
    // Parsing and normalising run on a blocking thread while the previous batch commits:
    // on two cores this overlaps the CPU work of the two halves.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Parsed>(2);
    let batch_size = opts.batch_size;
    let object_type = opts.object_type;
    let producer = tokio::task::spawn_blocking(move || {
        let mut batch = Parsed::default();
        let mut record = csv::StringRecord::new();
        let mut last_line = checkpoint;
        loop {
            let more = match reader.read_record(&mut record) {
                Ok(more) => more,
                Err(e) => {
                    let line = e.position().map_or(last_line + 1, |p| p.line());
                    batch
                        .rejects
                        .push((line, format!("unreadable CSV row: {e}")));
                    last_line = line;
                    continue;
                }
            };
            if more {
                let line = record.position().map_or(last_line + 1, |p| p.line());
                last_line = line;
                if line <= checkpoint {
                    continue;
                }
                match row_to_write(&record, &columns, &catalog, region, &mut emails) {
                    Ok(w) => batch.writes.push(w),
                    Err(reason) => batch.rejects.push((line, reason)),
                }
            }
            let full = batch.writes.len() + batch.rejects.len() >= batch_size;
            let pending = !batch.writes.is_empty() || !batch.rejects.is_empty();
            if full || (!more && pending) {
                batch.last_line = last_line;
                batch.byte = reader.position().byte();
                if tx.blocking_send(std::mem::take(&mut batch)).is_err() {
                    return;
                }
            }
            if !more {
                return;
            }
        }
    });
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
        .map_err(|e| format!("the CSV reader failed: {e}"))?;
    progress.tick(report.imported + report.rejected, total_bytes, true);
    if opts.progress {
        eprintln!();
    }
    rejects.finish().map_err(|e| e.to_string())?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// One batch of parsed rows on its way to the store.
#[derive(Default)]
struct Parsed {
    writes: Vec<RecordWrite>,
    rejects: Vec<(u64, String)>,
    /// The last file line the batch covers: the checkpoint once it commits.
    last_line: u64,
    byte: u64,
}

/// Validates one row and computes its stored form.
fn row_to_write(
    record: &csv::StringRecord,
    columns: &[Option<String>],
    catalog: &Catalog,
    region: rlibphonenumber::Region,
    emails: &mut HashSet<String>,
) -> Result<RecordWrite, String> {
    let mut change: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut errors = Vec::new();
    for (value, column) in record.iter().zip(columns) {
        let (Some(prop), value) = (column, value.trim()) else {
            continue;
        };
        if value.is_empty() {
            continue;
        }
        match catalog.check_writable(prop).and_then(|def| {
            crm::coerce_value(&def, value.to_string()).map_err(|message| crm::PropertyError {
                property: prop.clone(),
                message,
                code: "INVALID_PROPERTY_VALUE",
            })
        }) {
            Ok(v) => {
                change.insert(prop.clone(), Some(v));
            }
            Err(e) => errors.push(e.message),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    if change.is_empty() {
        return Err("the row has no values".into());
    }
    if catalog.object_type == ObjectType::Contact
        && let Some(Some(email)) = change.get("email")
        && !emails.insert(email.to_lowercase())
    {
        return Err(format!("a contact with email {email} already exists"));
    }
    let mut w = crm::apply_write(catalog.object_type, Properties::new(), change, region);
    w.source = "IMPORT";
    Ok(w)
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
