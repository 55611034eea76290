//! Persistence behind one interface.
//!
//! Handlers and the caller-ID layer talk to [`Store`], never to SQL. SQLite (a WAL file) is the
//! embedded default; a PostgreSQL implementation plugs in behind the same trait, with its own
//! numbered migrations under `migrations/<backend>/`.
//!
//! The store is deliberately dumb: it persists what the domain layer (`crate::crm`) computed,
//! inside one transaction per call, and returns what the in-memory caller-ID index needs to stay
//! exact (the phone rows a write replaced).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

pub mod bulk;
pub mod call_links;
pub mod group_commit;
pub mod pcache;
pub mod sqlite;
mod sqlite_direct;

pub type Properties = BTreeMap<String, String>;

/// The CRM object types Switchboard serves, with HubSpot's object type ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectType {
    Contact,
    Company,
    Call,
}

impl ObjectType {
    pub const ALL: [ObjectType; 3] = [ObjectType::Contact, ObjectType::Company, ObjectType::Call];

    /// HubSpot's objectTypeId (`0-1`, `0-2`, `0-48`).
    pub fn type_id(self) -> &'static str {
        match self {
            ObjectType::Contact => "0-1",
            ObjectType::Company => "0-2",
            ObjectType::Call => "0-48",
        }
    }

    /// The plural name used in paths and association keys.
    pub fn plural(self) -> &'static str {
        match self {
            ObjectType::Contact => "contacts",
            ObjectType::Company => "companies",
            ObjectType::Call => "calls",
        }
    }

    /// The singular name, as messages say it.
    pub fn singular(self) -> &'static str {
        match self {
            ObjectType::Contact => "contact",
            ObjectType::Company => "company",
            ObjectType::Call => "call",
        }
    }

    /// Accepts a path segment as HubSpot does: the plural or singular name, or the type id.
    pub fn from_path(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "contacts" | "contact" | "0-1" => Some(ObjectType::Contact),
            "companies" | "company" | "0-2" => Some(ObjectType::Company),
            "calls" | "call" | "0-48" => Some(ObjectType::Call),
            _ => None,
        }
    }

    pub fn from_type_id(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_id() == s)
    }
}

/// How inbound-call associates a logged call when several records match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssociateMode {
    Best,
    All,
    None,
}

impl AssociateMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AssociateMode::Best => "best",
            AssociateMode::All => "all",
            AssociateMode::None => "none",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "best" => Some(AssociateMode::Best),
            "all" => Some(AssociateMode::All),
            "none" => Some(AssociateMode::None),
            _ => None,
        }
    }
}

/// A HubSpot account.
#[derive(Debug, Clone)]
pub struct Portal {
    pub id: i64,
    /// Region for numbers typed without a country code, when the record names no country.
    pub default_region: String,
    pub associate: AssociateMode,
    /// Last-N-digits matching for legacy data; off when `None`.
    pub suffix_digits: Option<u8>,
}

#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub portal_id: i64,
    pub scopes: Vec<String>,
}

/// A HubSpot user and the owner that represents it in the CRM.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub owner_id: i64,
    pub portal_id: i64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub archived: bool,
}

/// A CRM record. Timestamps are milliseconds since the epoch.
#[derive(Debug, Clone)]
pub struct Record {
    pub id: i64,
    pub object_type: ObjectType,
    pub properties: Properties,
    pub created_at: i64,
    pub updated_at: i64,
    pub archived: bool,
    pub archived_at: Option<i64>,
}

/// One phone property of a record, as typed and as normalised. The index is built from these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneRow {
    pub object_id: i64,
    pub object_type: ObjectType,
    pub property: String,
    pub raw: String,
    pub e164: Option<String>,
    pub national_key: Option<i64>,
    pub extension: Option<String>,
    /// `number`, `country` or `default`; `None` when the value could not be parsed.
    pub source: Option<String>,
    pub region: Option<String>,
}

/// A phone row reduced to what the caller-ID index holds.
#[derive(Debug, Clone)]
pub struct IndexRow {
    pub portal_id: i64,
    pub object_id: i64,
    pub object_type: ObjectType,
    /// 0 `phone`, 1 `mobilephone`, 2 `hs_whatsapp_phone_number`, 3 anything else.
    pub property: u8,
    /// E.164 digits as a number.
    pub e164_key: Option<i64>,
    pub national_key: Option<i64>,
    pub extension: Option<String>,
    /// The region was the portal default.
    pub guessed: bool,
}

/// A live contact or company as the caller-ID cards are filled from it at start: its
/// properties stay JSON text so the reader parses only the few it keeps.
#[derive(Debug, Clone)]
pub struct CardRow {
    pub id: i64,
    pub portal_id: i64,
    pub object_type: ObjectType,
    pub updated_at: i64,
    pub properties_json: String,
}

/// An association row. Every pair is stored in both directions, except a call association, which
/// is stored as the call's row only (the record's side is derived: `call_links.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Association {
    pub from_id: i64,
    pub from_type: ObjectType,
    pub to_id: i64,
    pub to_type: ObjectType,
    pub category: String,
    pub type_id: i64,
}

/// Everything a record write persists in one transaction.
#[derive(Debug, Clone, Default)]
pub struct RecordWrite {
    pub properties: Properties,
    /// The `sourceType` written to property history (`API`, `INTEGRATION`, `IMPORT`).
    pub source: &'static str,
    /// The full set of phone rows after the write (`object_id` is filled in by the store).
    pub phones: Vec<PhoneRow>,
}

/// A new record in the form the store writes it, encoded off the writer thread: the import's
/// writer only binds values, so that its single thread is not also serialising JSON.
#[derive(Debug, Clone)]
pub struct ImportRow {
    /// The properties as a JSON object.
    pub properties: String,
    /// Phone rows (`object_id` is filled in by the store).
    pub phones: Vec<PhoneRow>,
}

impl ImportRow {
    pub fn encode(w: RecordWrite) -> Self {
        ImportRow {
            properties: sqlite::props_json(&w.properties),
            phones: w.phones,
        }
    }
}

/// One past value of a property (`propertiesWithHistory`).
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub object_id: i64,
    pub name: String,
    pub value: String,
    pub timestamp: i64,
    pub source_type: String,
}

/// One inbound call to log; see [`group_commit`].
#[derive(Debug, Clone)]
pub struct CallLog {
    pub portal_id: i64,
    pub external_call_id: String,
    pub properties: Properties,
    /// `properties.hs_timestamp` is the receipt time, applied only when the call is new.
    pub create_only_timestamp: bool,
    /// Records to associate with the call.
    pub associations: Vec<CallAssociation>,
    /// A company the call also goes to, decided in the logging transaction (see
    /// [`CompanyChoice`]).
    pub company: Option<CompanyChoice>,
    pub at: i64,
}

/// A record a logged call is associated with: (type, id). The type ids are HubSpot's defaults
/// for the pair ([`call_links::call_type_ids`]).
pub type CallAssociation = (ObjectType, i64);

/// The company a call goes to: the primary company the `contacts` all share, else
/// `fallback`. Resolved by the writer inside the batch's transaction, on pages its cache holds,
/// rather than by the request: a reader's page cache is emptied by every commit, so while
/// calls were logged that read cost each call a handful of `pread`s (a fifth of the workers'
/// time), and in the transaction it is also consistent with the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanyChoice {
    pub contacts: Vec<i64>,
    pub fallback: Option<i64>,
    /// The contact → company association type that marks a primary company.
    pub primary_type: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct CallLogged {
    pub call_id: i64,
    pub created: bool,
}

/// What the call logger's transactions have cost since start, as running totals: how well
/// group commit is batching, and whether a batch's time goes to statements or to the commit
/// (WAL writes and the sync). `/switchboard/v1/info` shows them; the benchmark reports the
/// difference over its logging phases.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallBatchStats {
    pub batches: u64,
    pub calls: u64,
    /// Time from the transaction's start to its commit: the batch's statements.
    pub statement_micros: u64,
    /// Time in the commit: writing the batch's pages to the WAL.
    pub commit_micros: u64,
    /// Pages the commits appended to the WAL.
    pub wal_pages: u64,
    /// WAL syncs that made the batches durable (one covers every batch committed before it
    /// began), and the time they took.
    pub syncs: u64,
    pub sync_micros: u64,
    /// Where a logged call's wait went, summed over the calls (the CPU profiles above cannot
    /// show waiting): from its hand-over to the writer until its transaction began; in its
    /// transaction; from the commit until the sync that covers it had finished; and in all,
    /// from the hand-over until the request's task had its answer, so that what is left is
    /// the time the woken task waited for a worker.
    pub call_queue_micros: u64,
    pub call_transaction_micros: u64,
    pub call_sync_wait_micros: u64,
    pub call_total_micros: u64,
}

/// A number a portal never matches (its own main line, a carrier's test number).
#[derive(Debug, Clone)]
pub struct IgnoredNumber {
    pub portal_id: i64,
    pub e164: String,
    pub note: String,
    pub created_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A database URL this build cannot serve.
    #[error("{0}")]
    Unsupported(String),
    #[error("bad stored data: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The storage interface. Every method is scoped to a portal where data belongs to one, so a
/// handler cannot read across tenants by forgetting a filter.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn create_portal(&self, portal: &Portal) -> StoreResult<()>;
    async fn portal(&self, id: i64) -> StoreResult<Option<Portal>>;
    async fn portals(&self) -> StoreResult<Vec<Portal>>;
    async fn update_portal(&self, portal: &Portal) -> StoreResult<()>;

    /// Stores a token by its SHA-256 hash; the token itself is never written.
    async fn create_token(&self, portal_id: i64, hash: &str, scopes: &[String]) -> StoreResult<()>;
    async fn token(&self, hash: &str) -> StoreResult<Option<TokenInfo>>;

    /// Creates a user and its owner; user ids and owner ids come from different sequences.
    async fn create_user(
        &self,
        portal_id: i64,
        email: &str,
        first_name: &str,
        last_name: &str,
    ) -> StoreResult<User>;
    async fn users(&self, portal_id: i64) -> StoreResult<Vec<User>>;

    async fn insert_record(
        &self,
        portal_id: i64,
        object_type: ObjectType,
        write: RecordWrite,
        associations: &[Association],
        now: i64,
    ) -> StoreResult<Record>;
    /// Replaces a record's properties and phone rows; returns the record and the phone rows the
    /// write replaced.
    async fn update_record(
        &self,
        portal_id: i64,
        object_type: ObjectType,
        id: i64,
        write: RecordWrite,
        now: i64,
    ) -> StoreResult<(Record, Vec<PhoneRow>)>;
    /// Archives a record; returns the phone rows it had (they leave caller ID).
    async fn archive_record(
        &self,
        portal_id: i64,
        object_type: ObjectType,
        id: i64,
        now: i64,
    ) -> StoreResult<Vec<PhoneRow>>;
    async fn record(
        &self,
        portal_id: i64,
        object_type: ObjectType,
        id: i64,
    ) -> StoreResult<Option<Record>>;
    async fn records_by_ids(&self, portal_id: i64, ids: &[i64]) -> StoreResult<Vec<Record>>;
    /// Records in id order after `after`, for cursor paging.
    async fn list_records(
        &self,
        portal_id: i64,
        object_type: ObjectType,
        after: i64,
        limit: i64,
        archived: bool,
    ) -> StoreResult<Vec<Record>>;
    /// The non-archived record whose property equals `value` (the `idProperty` lookups).
    async fn record_by_property(
        &self,
        portal_id: i64,
        object_type: ObjectType,
        property: &str,
        value: &str,
    ) -> StoreResult<Option<Record>>;
    /// One page of what the caller-ID index is built from at start, in key order after
    /// `after` (an object id and property). Integers only, so 10 million rows load fast.
    async fn index_rows(
        &self,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> StoreResult<Vec<IndexRow>>;
    /// One page of live contacts and companies of every portal, in id order after `after`:
    /// what the caller-ID cards are filled from at start.
    async fn card_rows(&self, after: i64, limit: i64) -> StoreResult<Vec<CardRow>>;
    async fn phones_of_portal(&self, portal_id: i64) -> StoreResult<Vec<PhoneRow>>;
    /// The highest record id ever committed, of any type and portal (0 when there is none).
    async fn max_record_id(&self) -> StoreResult<i64>;
    /// One page of phone rows, with their portal, in key order after `after` (an object id and
    /// property, as [`Store::index_rows`] pages): how a running server files records that
    /// another process (`switchboard import`) added, since ids only grow.
    async fn phones_after(
        &self,
        after: (i64, String),
        limit: i64,
    ) -> StoreResult<Vec<(i64, PhoneRow)>>;
    /// The phone rows of some records.
    async fn phones_of_records(&self, portal_id: i64, ids: &[i64]) -> StoreResult<Vec<PhoneRow>>;

    async fn associate(&self, portal_id: i64, pairs: &[Association]) -> StoreResult<()>;
    async fn associations(
        &self,
        portal_id: i64,
        from_id: i64,
        to_type: ObjectType,
    ) -> StoreResult<Vec<Association>>;
    /// Each record's most recently logged live call (its highest associated call id), for
    /// ranking rule 4; records without one are left out.
    async fn latest_calls(&self, portal_id: i64, ids: &[i64]) -> StoreResult<Vec<(i64, i64)>>;

    /// Logs an inbound call, idempotent on (portal, external call id), and returns once it is
    /// durable. Concurrent calls share transactions and syncs (the group commit,
    /// `group_commit.rs`), so a request hands over its one call without batching it itself.
    async fn log_call(&self, call: CallLog) -> StoreResult<CallLogged>;

    async fn ignore_number(&self, n: &IgnoredNumber) -> StoreResult<()>;
    async fn unignore_number(&self, portal_id: i64, e164: &str) -> StoreResult<bool>;
    async fn ignored_numbers(&self, portal_id: Option<i64>) -> StoreResult<Vec<IgnoredNumber>>;

    /// Deletes a record for good (GDPR): its properties, history, phones and associations.
    /// Returns the phone rows it had.
    async fn delete_record(&self, portal_id: i64, id: i64) -> StoreResult<Vec<PhoneRow>>;
    /// Every record of a type (the search scan when no index applies).
    async fn all_records(
        &self,
        portal_id: i64,
        object_type: ObjectType,
        archived: bool,
    ) -> StoreResult<Vec<Record>>;
    async fn remove_associations(
        &self,
        portal_id: i64,
        from_id: i64,
        to_id: i64,
        // (type id, its inverse); `None` removes every type between the two.
        types: Option<(i64, i64)>,
    ) -> StoreResult<()>;
    async fn history(
        &self,
        portal_id: i64,
        ids: &[i64],
        names: &[String],
    ) -> StoreResult<Vec<HistoryEntry>>;
    async fn create_custom_property(
        &self,
        portal_id: i64,
        object_type: ObjectType,
        name: &str,
        definition: &str,
    ) -> StoreResult<()>;
    /// Custom property definitions (JSON) of a portal.
    async fn custom_properties(&self, portal_id: i64) -> StoreResult<Vec<(ObjectType, String)>>;

    /// Inserts new records in one transaction (`ImportRow::phones` may have `object_id` 0)
    /// and moves the import checkpoint `job` to `line` in the same transaction. Returns the
    /// new ids in input order.
    async fn import_batch(
        &self,
        portal_id: i64,
        object_type: ObjectType,
        rows: Vec<ImportRow>,
        job: &str,
        line: u64,
        now: i64,
    ) -> StoreResult<Vec<i64>>;
    /// The last line committed by an import job.
    async fn import_checkpoint(&self, job: &str) -> StoreResult<Option<u64>>;
    /// Every non-empty value of one property on the live records of a type (import dedup).
    async fn property_values(
        &self,
        portal_id: i64,
        object_type: ObjectType,
        property: &str,
    ) -> StoreResult<Vec<String>>;

    /// For a bulk load of records of type `ty`: unless a server is running on the database,
    /// drops the secondary indexes those records would be random inserts into
    /// ([`bulk::DEFERRABLE`]) and keeps servers from starting until
    /// [`Store::build_missing_indexes`]. `false`, with nothing dropped, when a server is running.
    async fn defer_indexes(&self, _ty: ObjectType) -> StoreResult<bool> {
        Ok(false)
    }
    /// Gives the database to the bulk load that [`Store::defer_indexes`] let in, for the rest of
    /// this store's life: SQLite closes its pool and its call writer, and imports through one
    /// connection with a rollback journal ([`bulk::BulkWriter`]) until
    /// [`Store::build_missing_indexes`]. Afterwards the store only takes `import_batch`,
    /// `build_missing_indexes` and `close`.
    async fn hand_over_to_bulk_load(&self) -> StoreResult<()> {
        Ok(())
    }
    /// Builds any deferrable index that is missing (one left out by a bulk load, or by one that
    /// was killed), and lets servers start again. Returns each built index and its time.
    async fn build_missing_indexes(&self) -> StoreResult<Vec<(&'static str, std::time::Duration)>> {
        Ok(Vec::new())
    }
    /// Marks the database as served for as long as the store is open, so that no import drops
    /// its indexes under the server; waits while an import has them dropped.
    async fn hold_for_serving(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Running totals of the call logger's transactions (zero where the store keeps none).
    fn call_batch_stats(&self) -> CallBatchStats {
        CallBatchStats::default()
    }

    /// Record → call links held in memory (`call_links.rs`), and their heap bytes.
    fn call_link_stats(&self) -> (usize, usize) {
        (0, 0)
    }

    /// Flushes and closes; called once on shutdown.
    async fn close(&self);
}

pub type DynStore = Arc<dyn Store>;

/// Opens the store named by a database URL: a path, `sqlite://PATH` or `sqlite:PATH`.
pub async fn open(url: &str) -> StoreResult<DynStore> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(StoreError::Unsupported(
            "PostgreSQL is not supported by this build yet; use a SQLite path".into(),
        ));
    }
    Ok(Arc::new(sqlite::SqliteStore::open(path).await?))
}
