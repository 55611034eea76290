//! A bounded cache of the records caller ID shows and ranks, so that a lookup while the phone
//! rings needs no database read once a record has been seen.
//!
//! Exactness: every code path that changes a record (`records.rs`) invalidates it, and bumps
//! an epoch. Logging a call changes nothing on the records it is logged on (ranking reads
//! their latest call separately), so calls leave the cache alone. A lookup notes the epoch
//! before it reads the store and caches what it read only if no invalidation happened
//! meanwhile, so a read that raced a write can never put the old version back. When full, the
//! cache empties itself: crude, but it bounds memory without bookkeeping on the hot path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::store::Record;

pub struct RecordCache {
    map: RwLock<HashMap<i64, Arc<Record>>>,
    epoch: AtomicU64,
    capacity: usize,
}

impl RecordCache {
    pub fn new(capacity: usize) -> Self {
        RecordCache {
            map: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            capacity,
        }
    }

    /// The epoch to pass to [`RecordCache::insert`] after reading the store.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Cached records among `ids`, and the ids that were not cached.
    pub fn get(&self, ids: &[i64]) -> (Vec<Arc<Record>>, Vec<i64>) {
        let map = self.map.read().expect("cache lock");
        let mut found = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            match map.get(id) {
                Some(r) => found.push(r.clone()),
                None => missing.push(*id),
            }
        }
        (found, missing)
    }

    /// Caches records read from the store, unless something was invalidated since `epoch`.
    pub fn insert(&self, records: &[Arc<Record>], epoch: u64) {
        if self.capacity == 0 {
            return;
        }
        let mut map = self.map.write().expect("cache lock");
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if map.len() + records.len() > self.capacity {
            map.clear();
        }
        for r in records {
            map.insert(r.id, r.clone());
        }
    }

    /// Drops records that changed.
    pub fn invalidate(&self, ids: &[i64]) {
        let mut map = self.map.write().expect("cache lock");
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for id in ids {
            map.remove(id);
        }
    }
}
