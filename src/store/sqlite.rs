//! The embedded store: one SQLite file in WAL mode.
//!
//! `synchronous=FULL` makes every commit durable before it returns. The call and import writer
//! (`sqlite_direct.rs`) commits without the sync and answers only after a sync of the WAL that
//! began after its commit (`group_commit.rs`), so a 200 from inbound-call means "on disk" there
//! too. Throughput comes from group commit, not from relaxing this.
//!
//! This file is the sqlx pool, which serves everything but the hot paths; those (caller-ID
//! reads, call and import batches, the start-up index load) are in `sqlite_direct.rs`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::bulk;
use super::call_links::{self, CallLinks, Link};
use super::sqlite_direct::{self, ImportJob, Writer};
use super::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const FIRST_USER_ID: i64 = 1_000_001;
const FIRST_OWNER_ID: i64 = 70_000_001;

pub struct SqliteStore {
    pool: SqlitePool,
    /// The file, for the direct connections of `sqlite_direct.rs`.
    path: String,
    writer: Writer,
    /// Each record's calls: the side of call associations the table does not keep.
    links: Arc<CallLinks>,
    /// The lock file (`bulk.rs`), held shared while this store serves.
    serving: std::sync::Mutex<Option<std::fs::File>>,
    /// The lock file, held exclusively while a bulk load has the indexes dropped.
    loading: std::sync::Mutex<Option<std::fs::File>>,
    /// The bulk load's own connection, once the store was handed over to it.
    bulk: std::sync::Mutex<Option<Arc<bulk::BulkWriter>>>,
}

impl SqliteStore {
    pub async fn open(path: &str) -> StoreResult<Self> {
        super::pcache::install();
        // The direct connections of `sqlite_direct.rs` open the file by name, so it must be a
        // file: sqlx's `?mode=…` options are dropped for them, and `:memory:` would give every
        // connection a database of its own.
        let file = path.split('?').next().unwrap_or(path);
        if file.is_empty() || file == ":memory:" || path.contains("mode=memory") {
            return Err(StoreError::Unsupported(
                "an in-memory SQLite database cannot be shared by the server's connections; give a file path".into(),
            ));
        }
        // A bulk load holds the file alone and without the WAL (`bulk.rs`), and a connection
        // opened meanwhile would find it locked: wait for the load to finish. The lock is let go
        // once the store is open; a load that starts later finds this store's connections and
        // stays in WAL mode, and a server holds the lock for as long as it runs.
        let gate = {
            let file = file.to_string();
            blocking("lock file", move || bulk::shared(&file)).await?
        };
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("cache_size", sqlite_direct::CACHE_KIB.to_string());
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        MIGRATOR.run(&pool).await?;
        let links = Arc::new(CallLinks::default());
        let mut batch = Vec::new();
        sqlite_direct::call_link_rows(file, |l| {
            batch.push(l);
            if batch.len() == 4096 {
                links.add(&batch);
                batch.clear();
            }
        })?;
        links.add(&batch);
        let writer = Writer::open(file, links.clone())?;
        drop(gate);
        Ok(SqliteStore {
            pool,
            path: file.to_string(),
            writer,
            links,
            serving: std::sync::Mutex::new(None),
            loading: std::sync::Mutex::new(None),
            bulk: std::sync::Mutex::new(None),
        })
    }
}

/// Runs `f` on a blocking thread, off the workers that answer calls.
async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))?
}

fn record_from_row(row: &SqliteRow) -> StoreResult<Record> {
    let ty: String = row.try_get("object_type")?;
    let props: String = row.try_get("properties")?;
    Ok(Record {
        id: row.try_get("id")?,
        object_type: ObjectType::from_type_id(&ty)
            .ok_or_else(|| StoreError::Corrupt(format!("object type {ty}")))?,
        properties: serde_json::from_str(&props)
            .map_err(|e| StoreError::Corrupt(format!("properties: {e}")))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        archived: row.try_get::<i64, _>("archived")? != 0,
        archived_at: row.try_get("archived_at")?,
    })
}

fn phone_from_row(row: &SqliteRow) -> StoreResult<PhoneRow> {
    let ty: String = row.try_get("object_type")?;
    Ok(PhoneRow {
        object_id: row.try_get("object_id")?,
        object_type: ObjectType::from_type_id(&ty)
            .ok_or_else(|| StoreError::Corrupt(format!("object type {ty}")))?,
        property: row.try_get("property")?,
        raw: row.try_get("raw")?,
        e164: row.try_get("e164")?,
        national_key: row.try_get("national_key")?,
        extension: row.try_get("extension")?,
        source: row.try_get("source")?,
        region: row.try_get("region")?,
    })
}

fn portal_from_row(row: &SqliteRow) -> StoreResult<Portal> {
    let associate: String = row.try_get("associate")?;
    let suffix: Option<i64> = row.try_get("suffix_digits")?;
    Ok(Portal {
        id: row.try_get("id")?,
        default_region: row.try_get("default_region")?,
        associate: AssociateMode::parse(&associate).unwrap_or(AssociateMode::Best),
        suffix_digits: suffix.map(|s| s.clamp(0, 15) as u8),
    })
}

fn user_from_row(row: &SqliteRow) -> StoreResult<User> {
    Ok(User {
        id: row.try_get("id")?,
        owner_id: row.try_get("owner_id")?,
        portal_id: row.try_get("portal_id")?,
        email: row.try_get("email")?,
        first_name: row.try_get("first_name")?,
        last_name: row.try_get("last_name")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        archived: row.try_get::<i64, _>("archived")? != 0,
    })
}

/// `objects.history_pending`: the record's first properties are its history, not yet written
/// out as rows; the code says who wrote them.
pub(super) const PENDING_IMPORT: i64 = 1;
pub(super) const PENDING_INTEGRATION: i64 = 2;

pub(super) fn pending_source(code: i64) -> &'static str {
    if code == PENDING_INTEGRATION {
        "INTEGRATION"
    } else {
        "IMPORT"
    }
}

/// Rows per multi-row INSERT (7 columns x 100 rows stays far below SQLite's limit of 32,766
/// bound parameters).
const MULTI_ROW_CHUNK: usize = 100;

/// `prefix (?, ?, ...), (...), ...` for `rows` rows of `cols` parameters.
pub(super) fn values_sql(prefix: &str, cols: usize, rows: usize) -> String {
    let mut sql = String::with_capacity(prefix.len() + rows * cols * 6);
    sql.push_str(prefix);
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..cols {
            if c > 0 {
                sql.push(',');
            }
            // Anonymous `?`: SQLite looks a numbered parameter's name up in a list, which
            // made binding thousands of `$n` parameters quadratic (44 % of import time).
            sql.push('?');
        }
        sql.push(')');
    }
    sql
}

/// The columns a [`Record`] is read from, in the order both drivers decode them.
/// (`objects.last_call_at` is no longer read or written: ranking rule 4 reads a record's latest
/// call from `associations`. Dropping the column would rewrite the whole table.)
macro_rules! record_columns {
    () => {
        "id, object_type, properties, created_at, updated_at, archived, archived_at"
    };
}
pub(super) use record_columns;
const RECORD_COLUMNS: &str = record_columns!();

pub(super) fn props_json(p: &Properties) -> String {
    serde_json::to_string(p).expect("string map serialises")
}

async fn replace_phones(
    tx: &mut Transaction<'_, Sqlite>,
    portal_id: i64,
    object_id: i64,
    object_type: ObjectType,
    phones: &[PhoneRow],
) -> StoreResult<Vec<PhoneRow>> {
    let old = sqlx::query("SELECT * FROM phones WHERE object_id = $1")
        .bind(object_id)
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(phone_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
    sqlx::query("DELETE FROM phones WHERE object_id = $1")
        .bind(object_id)
        .execute(&mut **tx)
        .await?;
    for p in phones {
        sqlx::query(
            "INSERT INTO phones (object_id, property, portal_id, object_type, raw, e164, national_key, extension, source, region)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(object_id)
        .bind(&p.property)
        .bind(portal_id)
        .bind(object_type.type_id())
        .bind(&p.raw)
        .bind(&p.e164)
        .bind(p.national_key)
        .bind(&p.extension)
        .bind(&p.source)
        .bind(&p.region)
        .execute(&mut **tx)
        .await?;
    }
    Ok(old)
}

/// Derived properties are recorded as `CALCULATED`, whatever wrote the record.
pub(super) fn history_source<'a>(name: &str, source: &'a str) -> &'a str {
    if name.starts_with("hs_calculated_") || name.starts_with("hs_searchable_") {
        "CALCULATED"
    } else {
        source
    }
}

/// The history entries a write makes: every property whose value changed, and every removed
/// property as an empty value (`old` is `None` on create).
pub(super) fn history_changes<'a>(
    old: Option<&'a Properties>,
    new: &'a Properties,
) -> Vec<(&'a str, &'a str)> {
    let mut changes: Vec<(&str, &str)> = new
        .iter()
        .filter(|(k, v)| old.and_then(|o| o.get(*k)) != Some(*v))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Some(old) = old {
        changes.extend(
            old.keys()
                .filter(|k| !new.contains_key(*k))
                .map(|k| (k.as_str(), "")),
        );
    }
    changes
}

/// Appends a history entry for every property whose value changed (`old` is `None` on create).
/// Derived properties are recorded with source `CALCULATED`.
async fn write_history(
    tx: &mut Transaction<'_, Sqlite>,
    object_id: i64,
    old: Option<&Properties>,
    new: &Properties,
    now: i64,
    source: &str,
) -> StoreResult<()> {
    let source = if source.is_empty() { "API" } else { source };
    for (name, value) in history_changes(old, new) {
        let src = history_source(name, source);
        sqlx::query("INSERT INTO property_history (object_id, name, value, timestamp, source_type) VALUES ($1, $2, $3, $4, $5)")
            .bind(object_id)
            .bind(name)
            .bind(value)
            .bind(now)
            .bind(src)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Association rows, in multi-row statements. A record's row to a call is written as the
/// call's row (`call_links.rs`); returns the links to add to the map once the transaction
/// commits.
async fn insert_associations(
    tx: &mut Transaction<'_, Sqlite>,
    portal_id: i64,
    pairs: &[Association],
) -> StoreResult<Vec<Link>> {
    let (rows, links) = call_links::rows_to_write(pairs);
    for chunk in rows.chunks(MULTI_ROW_CHUNK) {
        let sql = values_sql(
            "INSERT OR IGNORE INTO associations (from_id, to_id, type_id, portal_id, from_type, to_type, category) VALUES ",
            7,
            chunk.len(),
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for a in chunk {
            q = q
                .bind(a.from_id)
                .bind(a.to_id)
                .bind(a.type_id)
                .bind(portal_id)
                .bind(a.from_type.type_id())
                .bind(a.to_type.type_id())
                .bind(&a.category);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(links)
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_portal(&self, p: &Portal) -> StoreResult<()> {
        let res = sqlx::query(
            "INSERT INTO portals (id, default_region, associate, suffix_digits, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(p.id)
        .bind(&p.default_region)
        .bind(p.associate.as_str())
        .bind(p.suffix_digits.map(i64::from))
        .bind(crate::clock::now_ms())
        .execute(&self.pool)
        .await;
        match res {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!("portal {}", p.id)))
            }
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    async fn portal(&self, id: i64) -> StoreResult<Option<Portal>> {
        sqlx::query("SELECT * FROM portals WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(portal_from_row)
            .transpose()
    }

    async fn portals(&self) -> StoreResult<Vec<Portal>> {
        sqlx::query("SELECT * FROM portals ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(portal_from_row)
            .collect()
    }

    async fn update_portal(&self, p: &Portal) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE portals SET default_region = $2, associate = $3, suffix_digits = $4 WHERE id = $1",
        )
        .bind(p.id)
        .bind(&p.default_region)
        .bind(p.associate.as_str())
        .bind(p.suffix_digits.map(i64::from))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn create_token(&self, portal_id: i64, hash: &str, scopes: &[String]) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO tokens (hash, portal_id, scopes, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(hash)
        .bind(portal_id)
        .bind(scopes.join(" "))
        .bind(crate::clock::now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn token(&self, hash: &str) -> StoreResult<Option<TokenInfo>> {
        let row = sqlx::query("SELECT portal_id, scopes FROM tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            None => None,
            Some(r) => {
                let scopes: String = r.try_get("scopes")?;
                Some(TokenInfo {
                    portal_id: r.try_get("portal_id")?,
                    scopes: scopes.split_whitespace().map(str::to_string).collect(),
                })
            }
        })
    }

    async fn create_user(
        &self,
        portal_id: i64,
        email: &str,
        first_name: &str,
        last_name: &str,
    ) -> StoreResult<User> {
        let now = crate::clock::now_ms();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(
            "INSERT INTO users (id, owner_id, portal_id, email, first_name, last_name, created_at, updated_at)
             VALUES ((SELECT COALESCE(MAX(id) + 1, $1) FROM users),
                     (SELECT COALESCE(MAX(owner_id) + 1, $2) FROM users),
                     $3, $4, $5, $6, $7, $7)
             RETURNING *",
        )
        .bind(FIRST_USER_ID)
        .bind(FIRST_OWNER_ID)
        .bind(portal_id)
        .bind(email)
        .bind(first_name)
        .bind(last_name)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        user_from_row(&row)
    }

    async fn users(&self, portal_id: i64) -> StoreResult<Vec<User>> {
        sqlx::query("SELECT * FROM users WHERE portal_id = $1 ORDER BY id")
            .bind(portal_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(user_from_row)
            .collect()
    }

    async fn insert_record(
        &self,
        portal_id: i64,
        object_type: ObjectType,
        write: RecordWrite,
        associations: &[Association],
        now: i64,
    ) -> StoreResult<Record> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO objects (portal_id, object_type, properties, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $4) RETURNING id",
        )
        .bind(portal_id)
        .bind(object_type.type_id())
        .bind(props_json(&write.properties))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        replace_phones(&mut tx, portal_id, id, object_type, &write.phones).await?;
        write_history(&mut tx, id, None, &write.properties, now, write.source).await?;
        let pairs: Vec<Association> = associations
            .iter()
            .map(|a| Association {
                from_id: if a.from_id == 0 { id } else { a.from_id },
                to_id: if a.to_id == 0 { id } else { a.to_id },
                ..a.clone()
            })
            .collect();
        let links = insert_associations(&mut tx, portal_id, &pairs).await?;
        tx.commit().await?;
        self.links.add(&links);
        Ok(Record {
            id,
            object_type,
            properties: write.properties,
            created_at: now,
            updated_at: now,
            archived: false,
            archived_at: None,
        })
    }

    async fn update_record(
        &self,
        portal_id: i64,
        object_type: ObjectType,
        id: i64,
        write: RecordWrite,
        now: i64,
    ) -> StoreResult<(Record, Vec<PhoneRow>)> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let before = sqlx::query(
            "SELECT properties, created_at, history_pending FROM objects WHERE id = $1 AND portal_id = $2 AND object_type = $3 AND archived = 0",
        )
        .bind(id)
        .bind(portal_id)
        .bind(object_type.type_id())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let props: String = before.try_get("properties")?;
        let before_props: Properties =
            serde_json::from_str(&props).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let pending: i64 = before.try_get("history_pending")?;
        if pending != 0 {
            // The first change of an imported record writes out its imported values.
            let created: i64 = before.try_get("created_at")?;
            write_history(
                &mut tx,
                id,
                None,
                &before_props,
                created,
                pending_source(pending),
            )
            .await?;
        }
        write_history(
            &mut tx,
            id,
            Some(&before_props),
            &write.properties,
            now,
            write.source,
        )
        .await?;
        let row = sqlx::query(
            "UPDATE objects SET properties = $1, updated_at = $2, history_pending = 0
             WHERE id = $3 AND portal_id = $4 AND object_type = $5 AND archived = 0
             RETURNING id, object_type, properties, created_at, updated_at, archived, archived_at",
        )
        .bind(props_json(&write.properties))
        .bind(now)
        .bind(id)
        .bind(portal_id)
        .bind(object_type.type_id())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let old = replace_phones(&mut tx, portal_id, id, object_type, &write.phones).await?;
        tx.commit().await?;
        Ok((record_from_row(&row)?, old))
    }

    async fn archive_record(
        &self,
        portal_id: i64,
        object_type: ObjectType,
        id: i64,
        now: i64,
    ) -> StoreResult<Vec<PhoneRow>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "UPDATE objects SET archived = 1, archived_at = $1, updated_at = $1
             WHERE id = $2 AND portal_id = $3 AND object_type = $4 AND archived = 0",
        )
        .bind(now)
        .bind(id)
        .bind(portal_id)
        .bind(object_type.type_id())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let old = replace_phones(&mut tx, portal_id, id, object_type, &[]).await?;
        tx.commit().await?;
        Ok(old)
    }

    async fn record(
        &self,
        portal_id: i64,
        object_type: ObjectType,
        id: i64,
    ) -> StoreResult<Option<Record>> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM objects WHERE id = $1 AND portal_id = $2 AND object_type = $3"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(portal_id)
            .bind(object_type.type_id())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(record_from_row)
            .transpose()
    }

    /// Caller ID reads here when a record is not cached, so it runs on the calling thread.
    async fn records_by_ids(&self, portal_id: i64, ids: &[i64]) -> StoreResult<Vec<Record>> {
        sqlite_direct::records_by_ids(&self.path, portal_id, ids)
    }

    async fn list_records(
        &self,
        portal_id: i64,
        object_type: ObjectType,
        after: i64,
        limit: i64,
        archived: bool,
    ) -> StoreResult<Vec<Record>> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM objects
             WHERE portal_id = $1 AND object_type = $2 AND archived = $3 AND id > $4
             ORDER BY id LIMIT $5"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(portal_id)
            .bind(object_type.type_id())
            .bind(archived as i64)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(record_from_row)
            .collect()
    }

    async fn record_by_property(
        &self,
        portal_id: i64,
        object_type: ObjectType,
        property: &str,
        value: &str,
    ) -> StoreResult<Option<Record>> {
        // The unique properties have partial expression indexes (migrations 0004, 0007), which
        // SQLite uses only when the query spells the same expression and, literally, the same
        // type. The type is one of three constants, so inlining it is safe.
        // `INDEXED BY` because the planner, without statistics, preferred objects_portal_type
        // (three equality terms against two) and scanned the portal; with it, a query that
        // cannot use the index fails instead of silently scanning.
        let (path, indexed) = match (property, object_type) {
            ("email", ObjectType::Contact) => (
                "json_extract(properties, '$.email')",
                "INDEXED BY objects_email",
            ),
            ("domain", ObjectType::Company) => (
                "json_extract(properties, '$.domain')",
                "INDEXED BY objects_domain",
            ),
            ("hs_call_external_id", ObjectType::Call) => (
                "json_extract(properties, '$.hs_call_external_id')",
                "INDEXED BY objects_external_id",
            ),
            _ => ("json_extract(properties, '$.' || json_quote($2))", ""),
        };
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM objects {indexed}
             WHERE portal_id = $1 AND object_type = '{}' AND archived = 0 AND {path} = $3 AND $2 = $2
             ORDER BY id LIMIT 1",
            object_type.type_id()
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(portal_id)
            .bind(property)
            .bind(value)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(record_from_row)
            .transpose()
    }

    /// Start-up reads every phone row through here: ten million rows at 10M contacts.
    async fn index_rows(
        &self,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> StoreResult<Vec<IndexRow>> {
        sqlite_direct::index_rows(&self.path, after, limit)
    }

    /// A page is a range scan of 10,000 rows: run on a blocking thread, off the workers that
    /// answer calls while the cards fill.
    async fn card_rows(&self, after: i64, limit: i64) -> StoreResult<Vec<CardRow>> {
        let path = self.path.clone();
        blocking("card reader", move || {
            sqlite_direct::card_rows(&path, after, limit)
        })
        .await
    }

    async fn phones_of_records(&self, portal_id: i64, ids: &[i64]) -> StoreResult<Vec<PhoneRow>> {
        sqlx::query(
            "SELECT * FROM phones WHERE portal_id = $1 AND object_id IN (SELECT value FROM json_each($2))
             ORDER BY object_id, property",
        )
        .bind(portal_id)
        .bind(serde_json::to_string(ids).expect("ids serialise"))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(phone_from_row)
        .collect()
    }

    async fn phones_of_portal(&self, portal_id: i64) -> StoreResult<Vec<PhoneRow>> {
        sqlx::query("SELECT * FROM phones WHERE portal_id = $1 ORDER BY object_id, property")
            .bind(portal_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(phone_from_row)
            .collect()
    }

    async fn max_record_id(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM objects")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn phones_after(
        &self,
        after: (i64, String),
        limit: i64,
    ) -> StoreResult<Vec<(i64, PhoneRow)>> {
        sqlx::query(
            "SELECT * FROM phones WHERE (object_id, property) > ($1, $2)
             ORDER BY object_id, property LIMIT $3",
        )
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("portal_id")?, phone_from_row(r)?)))
        .collect()
    }

    async fn associate(&self, portal_id: i64, pairs: &[Association]) -> StoreResult<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let links = insert_associations(&mut tx, portal_id, pairs).await?;
        tx.commit().await?;
        self.links.add(&links);
        Ok(())
    }

    async fn associations(
        &self,
        portal_id: i64,
        from_id: i64,
        to_type: ObjectType,
    ) -> StoreResult<Vec<Association>> {
        if to_type != ObjectType::Call {
            return sqlite_direct::associations(&self.path, portal_id, from_id, to_type);
        }
        let links = self.links.of_record(from_id);
        let calls: Vec<i64> = links.iter().map(|l| l.call).collect();
        let live = sqlite_direct::live_ids(&self.path, portal_id, &calls)?;
        Ok(links
            .iter()
            .filter(|l| live.contains(&l.call))
            .map(Link::record_row)
            .collect())
    }

    async fn latest_calls(&self, portal_id: i64, ids: &[i64]) -> StoreResult<Vec<(i64, i64)>> {
        let candidates: Vec<(i64, Vec<i64>)> = ids
            .iter()
            .map(|&id| (id, self.links.latest_first(id)))
            .collect();
        sqlite_direct::latest_calls(&self.path, portal_id, &candidates)
    }

    async fn log_call(&self, call: CallLog) -> StoreResult<CallLogged> {
        self.writer.log_call(call).await
    }

    fn call_batch_stats(&self) -> CallBatchStats {
        self.writer.call_batch_stats()
    }

    fn call_link_stats(&self) -> (usize, usize) {
        (self.links.len(), self.links.memory_bytes())
    }

    async fn ignore_number(&self, n: &IgnoredNumber) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO ignored_numbers (portal_id, e164, note, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (portal_id, e164) DO UPDATE SET note = excluded.note",
        )
        .bind(n.portal_id)
        .bind(&n.e164)
        .bind(&n.note)
        .bind(n.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn unignore_number(&self, portal_id: i64, e164: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM ignored_numbers WHERE portal_id = $1 AND e164 = $2")
            .bind(portal_id)
            .bind(e164)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn ignored_numbers(&self, portal_id: Option<i64>) -> StoreResult<Vec<IgnoredNumber>> {
        let rows = sqlx::query(
            "SELECT * FROM ignored_numbers WHERE $1 IS NULL OR portal_id = $1 ORDER BY portal_id, e164",
        )
        .bind(portal_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(IgnoredNumber {
                    portal_id: r.try_get("portal_id")?,
                    e164: r.try_get("e164")?,
                    note: r.try_get("note")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn delete_record(&self, portal_id: i64, id: i64) -> StoreResult<Vec<PhoneRow>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query("DELETE FROM objects WHERE id = $1 AND portal_id = $2")
            .bind(id)
            .bind(portal_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let old = sqlx::query("SELECT * FROM phones WHERE object_id = $1")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(phone_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        // A call's rows name the records whose links to it go with it.
        let linked: Vec<i64> = sqlx::query_scalar(
            "SELECT to_id FROM associations WHERE from_id = $1 AND from_type = '0-48'",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        for sql in [
            "DELETE FROM phones WHERE object_id = $1",
            "DELETE FROM property_history WHERE object_id = $1",
            "DELETE FROM associations WHERE from_id = $1 OR to_id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        for record in linked {
            self.links.remove(record, id);
        }
        self.links.forget(id);
        Ok(old)
    }

    async fn all_records(
        &self,
        portal_id: i64,
        object_type: ObjectType,
        archived: bool,
    ) -> StoreResult<Vec<Record>> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM objects WHERE portal_id = $1 AND object_type = $2 AND archived = $3 ORDER BY id"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(portal_id)
            .bind(object_type.type_id())
            .bind(archived as i64)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(record_from_row)
            .collect()
    }

    async fn remove_associations(
        &self,
        portal_id: i64,
        from_id: i64,
        to_id: i64,
        types: Option<(i64, i64)>,
    ) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM associations WHERE portal_id = $1
               AND ((from_id = $2 AND to_id = $3 AND ($4 IS NULL OR type_id = $4))
                 OR (from_id = $3 AND to_id = $2 AND ($5 IS NULL OR type_id = $5)))",
        )
        .bind(portal_id)
        .bind(from_id)
        .bind(to_id)
        .bind(types.map(|t| t.0))
        .bind(types.map(|t| t.1))
        .execute(&self.pool)
        .await?;
        // Between a call and a record there is one type, so any removal between the two is it.
        self.links.remove(from_id, to_id);
        Ok(())
    }

    async fn history(
        &self,
        portal_id: i64,
        ids: &[i64],
        names: &[String],
    ) -> StoreResult<Vec<HistoryEntry>> {
        if ids.is_empty() || names.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT h.object_id, h.name, h.value, h.timestamp, h.source_type
             FROM property_history h JOIN objects o ON o.id = h.object_id AND o.portal_id = $1
             WHERE h.object_id IN (SELECT value FROM json_each($2))
               AND h.name IN (SELECT value FROM json_each($3))
             ORDER BY h.object_id, h.name, h.timestamp DESC, h.rowid DESC",
        )
        .bind(portal_id)
        .bind(serde_json::to_string(ids).expect("ids serialise"))
        .bind(serde_json::to_string(names).expect("names serialise"))
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(HistoryEntry {
                    object_id: r.try_get("object_id")?,
                    name: r.try_get("name")?,
                    value: r.try_get("value")?,
                    timestamp: r.try_get("timestamp")?,
                    source_type: r.try_get("source_type")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        // Imported records not changed since: their history is their imported values.
        let pending = sqlx::query(
            "SELECT id, properties, created_at, history_pending FROM objects
             WHERE +portal_id = $1 AND history_pending != 0 AND id IN (SELECT value FROM json_each($2))",
        )
        .bind(portal_id)
        .bind(serde_json::to_string(ids).expect("ids serialise"))
        .fetch_all(&self.pool)
        .await?;
        for r in pending {
            let props: Properties = serde_json::from_str(&r.try_get::<String, _>("properties")?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            for name in names {
                if let Some(v) = props.get(name) {
                    out.push(HistoryEntry {
                        object_id: r.try_get("id")?,
                        name: name.clone(),
                        value: v.clone(),
                        timestamp: r.try_get("created_at")?,
                        source_type: history_source(
                            name,
                            pending_source(r.try_get("history_pending")?),
                        )
                        .to_string(),
                    });
                }
            }
        }
        Ok(out)
    }

    async fn create_custom_property(
        &self,
        portal_id: i64,
        object_type: ObjectType,
        name: &str,
        definition: &str,
    ) -> StoreResult<()> {
        let res = sqlx::query(
            "INSERT INTO custom_properties (portal_id, object_type, name, definition, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(portal_id)
        .bind(object_type.type_id())
        .bind(name)
        .bind(definition)
        .bind(crate::clock::now_ms())
        .execute(&self.pool)
        .await;
        match res {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!("property {name}")))
            }
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    async fn custom_properties(&self, portal_id: i64) -> StoreResult<Vec<(ObjectType, String)>> {
        let rows = sqlx::query(
            "SELECT object_type, definition FROM custom_properties WHERE portal_id = $1 ORDER BY created_at, name",
        )
        .bind(portal_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let ty: String = r.try_get("object_type")?;
                Ok((
                    ObjectType::from_type_id(&ty).ok_or_else(|| StoreError::Corrupt(ty.clone()))?,
                    r.try_get("definition")?,
                ))
            })
            .collect()
    }

    async fn import_batch(
        &self,
        portal_id: i64,
        object_type: ObjectType,
        rows: Vec<ImportRow>,
        job: &str,
        line: u64,
        now: i64,
    ) -> StoreResult<Vec<i64>> {
        let job = ImportJob {
            portal_id,
            object_type,
            rows,
            job: job.to_string(),
            line,
            now,
        };
        let bulk = self.bulk.lock().expect("bulk writer").clone();
        match bulk {
            Some(bulk) => bulk.import_batch(job).await,
            None => self.writer.import_batch(job).await,
        }
    }

    async fn import_checkpoint(&self, job: &str) -> StoreResult<Option<u64>> {
        let line: Option<i64> = sqlx::query_scalar("SELECT line FROM imports WHERE job = $1")
            .bind(job)
            .fetch_optional(&self.pool)
            .await?;
        Ok(line.map(|l| l as u64))
    }

    async fn property_values(
        &self,
        portal_id: i64,
        object_type: ObjectType,
        property: &str,
    ) -> StoreResult<Vec<String>> {
        let values: Vec<String> = sqlx::query_scalar(
            "SELECT v FROM (SELECT json_extract(properties, '$.' || json_quote($3)) AS v FROM objects
             WHERE portal_id = $1 AND object_type = $2 AND archived = 0) WHERE v IS NOT NULL AND v != ''",
        )
        .bind(portal_id)
        .bind(object_type.type_id())
        .bind(property)
        .fetch_all(&self.pool)
        .await?;
        Ok(values)
    }

    async fn defer_indexes(&self, ty: ObjectType) -> StoreResult<bool> {
        let path = self.path.clone();
        let lock = blocking("dropping indexes", move || {
            let Some(lock) = bulk::try_exclusive(&path)? else {
                return Ok(None);
            };
            bulk::drop_indexes(&rusqlite::Connection::open(&path)?, ty)?;
            Ok(Some(lock))
        })
        .await?;
        let deferred = lock.is_some();
        *self.loading.lock().expect("lock file") = lock;
        Ok(deferred)
    }

    async fn hand_over_to_bulk_load(&self) -> StoreResult<()> {
        self.writer.close();
        self.pool.close().await;
        let path = self.path.clone();
        let writer = blocking("bulk load", move || bulk::BulkWriter::open(&path)).await?;
        if !writer.rollback {
            tracing::warn!(
                "another connection has the database open, so the bulk load writes through the WAL"
            );
        }
        *self.bulk.lock().expect("bulk writer") = Some(Arc::new(writer));
        Ok(())
    }

    async fn build_missing_indexes(&self) -> StoreResult<Vec<(&'static str, Duration)>> {
        let path = self.path.clone();
        let loaded = self.bulk.lock().expect("bulk writer").take();
        // Built before the file goes back to WAL mode, so that the index's pages are written once
        // too.
        let built = blocking("building indexes", move || {
            if let Some(writer) = &loaded {
                writer.close();
            }
            let built = bulk::build_missing(&path)?;
            if loaded.is_some_and(|w| w.rollback) {
                bulk::restore_wal(&path)?;
            }
            Ok(built)
        })
        .await?;
        // A bulk load's exclusive lock ends here; a server's shared one is kept.
        self.loading.lock().expect("lock file").take();
        Ok(built)
    }

    async fn hold_for_serving(&self) -> StoreResult<()> {
        let path = self.path.clone();
        let lock = blocking("lock file", move || bulk::shared(&path)).await?;
        *self.serving.lock().expect("lock file") = Some(lock);
        Ok(())
    }

    async fn close(&self) {
        // A bulk load that stopped before its index build: the file goes back to WAL mode.
        if let Some(writer) = self.bulk.lock().expect("bulk writer").take() {
            writer.close();
            if writer.rollback {
                let _ = bulk::restore_wal(&self.path);
            }
        }
        self.writer.close();
        // A checkpoint folds the WAL back into the main file, so a copied .db file is complete.
        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await;
        self.pool.close().await;
    }
}
