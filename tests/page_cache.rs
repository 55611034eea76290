//! The page-cache wrapper (`store/pcache.rs`) leaves out truncations that could drop nothing.
//! A wrong one left out would keep pages cached beyond the end of a database that shrank, and
//! SQLite would later read them back as if they were on disk. This drives SQLite, with the
//! wrapper in place, through what moves pages about: B-tree splits (which park a page under the
//! spare number), deletes, VACUUMs that shrink the file, regrowth into the page numbers the
//! shrink freed, and a second connection whose cache goes stale at every commit. After every
//! round each row is checked against a model kept here, and SQLite checks its own file.

use std::collections::BTreeMap;

mod common;

use common::Rng;
use rusqlite::{Connection, params};
use switchboard::store::pcache;

fn open(path: &std::path::Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    // A small cache, so pages are evicted and read back as well as kept.
    conn.pragma_update(None, "cache_size", 64).unwrap();
    conn
}

fn rows(conn: &Connection) -> BTreeMap<Vec<u8>, String> {
    let mut stmt = conn.prepare("SELECT k, v FROM t ORDER BY k").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn pages_stay_right_while_truncations_are_left_out() {
    assert!(
        pcache::install(),
        "nothing in this test binary opens SQLite before this"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pcache.db");
    let mut writer = open(&path);
    let reader = open(&path);
    writer
        .execute_batch("CREATE TABLE t (k BLOB PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID")
        .unwrap();

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut model: BTreeMap<Vec<u8>, String> = BTreeMap::new();
    for round in 0..8 {
        // Random keys split leaves all over the tree.
        for _ in 0..30 {
            let tx = writer.transaction().unwrap();
            for _ in 0..100 {
                let key = rng.next().to_be_bytes().to_vec();
                let value = format!("{round}-{}", "v".repeat((rng.next() % 200) as usize));
                tx.execute(
                    "INSERT OR REPLACE INTO t (k, v) VALUES (?1, ?2)",
                    params![key, value],
                )
                .unwrap();
                model.insert(key, value);
            }
            tx.commit().unwrap();
            // The reader's cache is stale after every commit.
            let n: i64 = reader
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n as usize, model.len());
        }
        // Delete most rows, then shrink the file, so cached page numbers lie past its end.
        let doomed: Vec<Vec<u8>> = model
            .keys()
            .filter(|_| !rng.next().is_multiple_of(4))
            .cloned()
            .collect();
        let tx = writer.transaction().unwrap();
        for key in &doomed {
            tx.execute("DELETE FROM t WHERE k = ?1", params![key])
                .unwrap();
            model.remove(key);
        }
        tx.commit().unwrap();
        if round % 2 == 1 {
            writer.execute_batch("VACUUM").unwrap();
        }
        assert_eq!(rows(&writer), model, "round {round}, writer");
        assert_eq!(rows(&reader), model, "round {round}, reader");
        let check: String = writer
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "round {round}");
    }
    let (forwarded, skipped) = pcache::truncations();
    assert!(
        forwarded > 0 && skipped > 0,
        "both kinds of truncation happened: forwarded {forwarded}, skipped {skipped}"
    );
}
