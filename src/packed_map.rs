//! A hash map from a key to one or more packed `u64` values: the shape of both in-memory
//! indexes, the caller-ID index (number → records) and a record's calls
//! (`store/call_links.rs`).
//!
//! Why: almost every key has exactly one value (a number belongs to one record, a record has
//! one call), so the table holds that value inline, 8 bytes beside the key, and only a key
//! with more points into a side list. A `HashMap<K, Vec<u64>>` costs 24 bytes more per entry
//! and a heap allocation each; at 10 million numbers that was twice the index.
//!
//! Values use the low 63 bits: the top bit marks a table value that is a side-list slot.

use std::collections::HashMap;
use std::hash::Hash;

const SHARED: u64 = 1 << 63;

pub struct PackedMap<K> {
    map: HashMap<K, u64>,
    /// The values of keys that have several; `free` holds reusable slots.
    lists: Vec<Vec<u64>>,
    free: Vec<usize>,
}

impl<K> Default for PackedMap<K> {
    fn default() -> Self {
        PackedMap {
            map: HashMap::new(),
            lists: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<K: Copy + Eq + Hash> PackedMap<K> {
    pub fn get(&self, key: K) -> &[u64] {
        match self.map.get(&key) {
            None => &[],
            Some(v) if v & SHARED != 0 => &self.lists[(v & !SHARED) as usize],
            Some(v) => std::slice::from_ref(v),
        }
    }

    /// Adds `value` to `key`'s values unless one of them is `same` as it.
    pub fn add(&mut self, key: K, value: u64, same: impl Fn(u64, u64) -> bool) {
        use std::collections::hash_map::Entry;
        debug_assert_eq!(value & SHARED, 0, "the top bit is the map's");
        let PackedMap { map, lists, free } = self;
        match map.entry(key) {
            Entry::Vacant(e) => {
                e.insert(value);
            }
            Entry::Occupied(mut e) => {
                let v = *e.get();
                if v & SHARED != 0 {
                    let list = &mut lists[(v & !SHARED) as usize];
                    if !list.iter().any(|&x| same(x, value)) {
                        list.push(value);
                    }
                } else if !same(v, value) {
                    let slot = match free.pop() {
                        Some(i) => {
                            lists[i] = vec![v, value];
                            i
                        }
                        None => {
                            lists.push(vec![v, value]);
                            lists.len() - 1
                        }
                    };
                    e.insert(SHARED | slot as u64);
                }
            }
        }
    }

    /// Keeps only those of `key`'s values that `keep` accepts.
    pub fn retain(&mut self, key: K, mut keep: impl FnMut(u64) -> bool) {
        let Some(&v) = self.map.get(&key) else {
            return;
        };
        if v & SHARED == 0 {
            if !keep(v) {
                self.map.remove(&key);
            }
            return;
        }
        let slot = (v & !SHARED) as usize;
        let list = &mut self.lists[slot];
        list.retain(|&x| keep(x));
        if list.len() <= 1 {
            let rest = std::mem::take(list).pop();
            self.free.push(slot);
            match rest {
                Some(only) => self.map.insert(key, only),
                None => self.map.remove(&key),
            };
        }
    }

    /// Drops every value of `key`.
    pub fn remove_key(&mut self, key: K) {
        if let Some(v) = self.map.remove(&key)
            && v & SHARED != 0
        {
            let slot = (v & !SHARED) as usize;
            self.lists[slot] = Vec::new();
            self.free.push(slot);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Values held, over all keys.
    pub fn values(&self) -> usize {
        self.map
            .values()
            .map(|v| {
                if v & SHARED != 0 {
                    self.lists[(v & !SHARED) as usize].len()
                } else {
                    1
                }
            })
            .sum()
    }

    /// Side-list slots allocated, in use or free.
    pub fn side_lists(&self) -> usize {
        self.lists.len()
    }

    pub fn memory_bytes(&self) -> usize {
        table_bytes(&self.map)
            + self.lists.capacity() * std::mem::size_of::<Vec<u64>>()
            + self
                .lists
                .iter()
                .map(|l| l.capacity() * std::mem::size_of::<u64>())
                .sum::<usize>()
            + self.free.capacity() * std::mem::size_of::<usize>()
    }
}

/// A hash table's heap: hashbrown allocates a power of two of buckets, each a key, a value
/// and a control byte, and reports 7/8 of them as its capacity.
pub fn table_bytes<K, V>(m: &HashMap<K, V>) -> usize {
    let cap = m.capacity();
    let buckets = if cap < 8 { cap + 1 } else { cap / 7 * 8 };
    buckets * (std::mem::size_of::<K>() + std::mem::size_of::<V>() + 1)
}
