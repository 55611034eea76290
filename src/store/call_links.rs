//! The contact→call and company→call side of call associations, kept in memory.
//!
//! Why: a logged call's call→contact row lands at the end of the associations B-tree, since call
//! ids grow, but its contact→call row lands on a random leaf of a table keyed by contact. That
//! random leaf was 62 % of the pages a logged call wrote to the WAL, and every page written is
//! also synced and checkpointed. With the row left out, a 1M-contact database logged 35 % more
//! calls per second and its half-rate p99 fell by a third (bench/ANALYSIS.md).
//!
//! So the table keeps only the call's side of each call association (`from_type = '0-48'`), and
//! this map is derived from it:
//! - built when the store opens, by one scan of the calls' rows;
//! - kept in step by every store write that adds or removes such a row, after it commits;
//! - the reverse row's type id and category follow from the call's row, as `records::pair`
//!   builds them: 194 ↔ 193 for contacts, 182 ↔ 181 for companies, one category for both.
//!
//! Between one call and one record there is only ever one type (HubSpot defines one per
//! direction), so a link is just (record, call, category).
//!
//! The map answers which calls point at a record; whether those calls are live is read from the
//! objects table, as the SQL join did. One server per database file: another process writing
//! call associations to the file would not be seen here (the CLI writes none).

use std::sync::RwLock;

use crate::packed_map::PackedMap;

use super::{Association, ObjectType};

/// The call's side (call → record) and the record's side (record → call) of a call
/// association, by the record's type; `None` for a type that has no association with calls.
pub fn call_type_ids(record: ObjectType) -> Option<(i64, i64)> {
    match record {
        ObjectType::Contact => Some((194, 193)),
        ObjectType::Company => Some((182, 181)),
        ObjectType::Call => None,
    }
}

/// One record→call association, as the map stores it and the store writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub record: i64,
    pub record_type: ObjectType,
    pub call: i64,
    pub category: String,
}

impl Link {
    /// The link between `record` and `call`; `None` when the record's type has no calls.
    pub fn new(record: i64, record_type: ObjectType, call: i64, category: &str) -> Option<Link> {
        call_type_ids(record_type).map(|_| Link {
            record,
            record_type,
            call,
            category: category.to_string(),
        })
    }

    /// The link a call's row (`from_type` call) stands for; `None` for any other row.
    pub fn of_call_row(a: &Association) -> Option<Link> {
        (a.from_type == ObjectType::Call)
            .then(|| Link::new(a.to_id, a.to_type, a.from_id, &a.category))
            .flatten()
    }

    /// The link a record's row (`to_type` call) stands for; `None` for any other row.
    pub fn of_record_row(a: &Association) -> Option<Link> {
        (a.to_type == ObjectType::Call)
            .then(|| Link::new(a.from_id, a.from_type, a.to_id, &a.category))
            .flatten()
    }

    /// The call's row, the one the table keeps.
    pub fn call_row(&self) -> Association {
        let (call_to, _) = call_type_ids(self.record_type).expect("a link's record has calls");
        Association {
            from_id: self.call,
            from_type: ObjectType::Call,
            to_id: self.record,
            to_type: self.record_type,
            category: self.category.clone(),
            type_id: call_to,
        }
    }

    /// The record's row, as the API shows it.
    pub fn record_row(&self) -> Association {
        let (_, to_call) = call_type_ids(self.record_type).expect("a link's record has calls");
        Association {
            from_id: self.record,
            from_type: self.record_type,
            to_id: self.call,
            to_type: ObjectType::Call,
            category: self.category.clone(),
            type_id: to_call,
        }
    }
}

/// The rows to write for `pairs`: every record→call row becomes the call→record row it stands
/// for (`records::pair` sends both, and the table keeps one), and the links the write adds.
pub fn rows_to_write(pairs: &[Association]) -> (Vec<Association>, Vec<Link>) {
    let mut rows = Vec::with_capacity(pairs.len());
    let mut links = Vec::new();
    // A merge sends both sides of every call of a record; the call's row goes once.
    let mut seen = std::collections::HashSet::new();
    for a in pairs {
        let link = Link::of_call_row(a).or_else(|| Link::of_record_row(a));
        match link {
            Some(link) => {
                let row = link.call_row();
                if seen.insert((row.from_id, row.to_id, row.type_id)) {
                    rows.push(row);
                }
                links.push(link);
            }
            None => rows.push(a.clone()),
        }
    }
    (rows, links)
}

/// Bits 0-39: call id; bit 40: the record is a company; bits 41-62: category index (bit 63 is the map's).
type Packed = u64;
const ID_BITS: u32 = 40;
const CATEGORY_MASK: u64 = (1 << 22) - 1;

#[derive(Default)]
struct Inner {
    /// Record → its links, one inline in the table until it has a second
    /// (`crate::packed_map`): most records have one call.
    by_record: PackedMap<i64>,
    /// Categories seen, in first-seen order (`HUBSPOT_DEFINED`, then any the API was given).
    categories: Vec<String>,
}

impl Inner {
    fn category_index(&mut self, category: &str) -> u64 {
        match self.categories.iter().position(|c| c == category) {
            Some(i) => i as u64,
            None => {
                self.categories.push(category.to_string());
                (self.categories.len() - 1) as u64
            }
        }
    }
}

#[derive(Default)]
pub struct CallLinks {
    inner: RwLock<Inner>,
}

fn call_of(p: Packed) -> i64 {
    (p & ((1 << ID_BITS) - 1)) as i64
}

impl CallLinks {
    /// Adds links; one already there keeps its category, as `INSERT OR IGNORE` keeps the row.
    pub fn add(&self, links: &[Link]) {
        if links.is_empty() {
            return;
        }
        let mut inner = self.inner.write().expect("call links lock");
        for l in links {
            let company = (l.record_type == ObjectType::Company) as u64;
            let packed = (l.call as u64 & ((1 << ID_BITS) - 1))
                | company << ID_BITS
                | (inner.category_index(&l.category) & CATEGORY_MASK) << (ID_BITS + 1);
            inner
                .by_record
                .add(l.record, packed, |a, b| call_of(a) == call_of(b));
        }
    }

    /// Removes the link between a record and a call, in either order of the two ids.
    pub fn remove(&self, a: i64, b: i64) {
        let mut inner = self.inner.write().expect("call links lock");
        inner.by_record.retain(a, |p| call_of(p) != b);
        inner.by_record.retain(b, |p| call_of(p) != a);
    }

    /// Drops every link of a record that is gone for good.
    pub fn forget(&self, record: i64) {
        self.inner
            .write()
            .expect("call links lock")
            .by_record
            .remove_key(record);
    }

    /// The calls whose rows point at `record`, as links, in call id order.
    pub fn of_record(&self, record: i64) -> Vec<Link> {
        let inner = self.inner.read().expect("call links lock");
        let mut out: Vec<Link> = inner
            .by_record
            .get(record)
            .iter()
            .map(|&p| Link {
                record,
                record_type: if p >> ID_BITS & 1 == 1 {
                    ObjectType::Company
                } else {
                    ObjectType::Contact
                },
                call: call_of(p),
                category: inner.categories[((p >> (ID_BITS + 1)) & CATEGORY_MASK) as usize].clone(),
            })
            .collect();
        out.sort_by_key(|l| l.call);
        out
    }

    /// The ids of the calls whose rows point at `record`, highest (latest) first: what ranking
    /// rule 4 reads, without building each link.
    pub fn latest_first(&self, record: i64) -> Vec<i64> {
        let inner = self.inner.read().expect("call links lock");
        let mut calls: Vec<i64> = inner
            .by_record
            .get(record)
            .iter()
            .map(|&p| call_of(p))
            .collect();
        calls.sort_unstable_by(|a, b| b.cmp(a));
        calls
    }

    /// Links held.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .expect("call links lock")
            .by_record
            .values()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes of the map (the categories are a few short strings).
    pub fn memory_bytes(&self) -> usize {
        self.inner
            .read()
            .expect("call links lock")
            .by_record
            .memory_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(record: i64, ty: ObjectType, call: i64, category: &str) -> Link {
        Link {
            record,
            record_type: ty,
            call,
            category: category.into(),
        }
    }

    #[test]
    fn type_ids_are_the_ones_the_api_validates() {
        for ty in [ObjectType::Contact, ObjectType::Company] {
            let (call_to, to_call) = call_type_ids(ty).unwrap();
            let t = crate::records::association_type(call_to).unwrap();
            assert_eq!((t.1, t.2, t.3), (ObjectType::Call, ty, to_call));
            let t = crate::records::association_type(to_call).unwrap();
            assert_eq!((t.1, t.2, t.3), (ty, ObjectType::Call, call_to));
        }
    }

    #[test]
    fn both_sides_of_a_pair_write_one_row_and_one_link() {
        let l = link(7, ObjectType::Contact, 9, "HUBSPOT_DEFINED");
        let (rows, links) = rows_to_write(&[l.call_row(), l.record_row()]);
        assert_eq!(rows, vec![l.call_row()]);
        assert_eq!(links, vec![l.clone(), l]);
    }

    #[test]
    fn links_keep_their_type_and_category_and_go_with_their_record() {
        let links = CallLinks::default();
        let a = link(1, ObjectType::Contact, 30, "HUBSPOT_DEFINED");
        let b = link(1, ObjectType::Contact, 20, "USER_DEFINED");
        let c = link(2, ObjectType::Company, 30, "HUBSPOT_DEFINED");
        links.add(&[a.clone(), b.clone(), c.clone(), a.clone()]);
        assert_eq!(links.of_record(1), vec![b.clone(), a.clone()]);
        assert_eq!(links.of_record(2)[0].record_row().type_id, 181);
        links.remove(30, 1);
        assert_eq!(links.of_record(1), vec![b]);
        links.forget(2);
        assert!(links.of_record(2).is_empty());
        assert_eq!(links.len(), 1);
    }

    #[test]
    fn every_category_keeps_its_name() {
        let links = CallLinks::default();
        let all: Vec<Link> = (0..300)
            .map(|i| link(5, ObjectType::Contact, i, &format!("C{i}")))
            .collect();
        links.add(&all);
        assert_eq!(links.of_record(5), all);
    }

    #[test]
    fn random_adds_and_removes_match_a_set() {
        let links = CallLinks::default();
        let mut model = std::collections::BTreeSet::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (record, call) = ((x % 7) as i64, 100 + (x >> 8) as i64 % 9);
            match x >> 20 & 3 {
                0 | 1 => {
                    links.add(&[link(record, ObjectType::Contact, call, "HUBSPOT_DEFINED")]);
                    model.insert((record, call));
                }
                2 => {
                    links.remove(call, record);
                    model.remove(&(record, call));
                }
                _ if x >> 30 & 15 == 0 => {
                    links.forget(record);
                    model.retain(|&(r, _)| r != record);
                }
                _ => {}
            }
            let calls: Vec<i64> = links.of_record(record).iter().map(|l| l.call).collect();
            let expected: Vec<i64> = model
                .iter()
                .filter(|&&(r, _)| r == record)
                .map(|&(_, c)| c)
                .collect();
            assert_eq!(calls, expected);
        }
        assert_eq!(links.len(), model.len());
    }
}
