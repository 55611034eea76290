//! The in-memory caller-ID index: per portal, normalised number → the records that carry it.
//!
//! Keys are E.164 digits as a `u64` (a string key costs twice the memory and three times the
//! probe time, `../shared/docs/stack.md` §4). A posting is packed into one `u64` (record id,
//! type, property, flags) and almost every number belongs to one record, so a table entry is
//! the key and that one posting: 16 bytes plus a control byte (a `SmallVec` value made it 32).
//! A number shared by several records points into a side list instead (`crate::packed_map`). The
//! rare stored extension lives in a side map.
//!
//! A number typed without a country code on a record with no country (its region was a
//! guess) is also filed under its national digits, but only when the guess did not give a
//! valid number: a number valid in the default region is trusted to be there.
//!
//! Locking: one `RwLock` over all portals. Lookups take the read lock for a few hash probes;
//! writers take the write lock only to apply a diff that the store has already committed.
//! Record writes are serialised by the state's write gate, so diffs apply in commit order and
//! the index never runs ahead of, or behind, the store for longer than one write.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use crate::packed_map::{PackedMap, table_bytes};
use crate::store::{IndexRow, ObjectType, PhoneRow};

use super::normalize::{CallerNumber, e164_key};

/// One record's claim on a key, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    pub object_id: i64,
    pub object_type: ObjectType,
    /// Index into [`PHONE_PROPERTIES`] of the property that holds the number.
    pub property: u8,
    /// The region was only the portal default: any match is at best national tier.
    pub guessed: bool,
    /// The stored extension, when it is all digits and fits.
    pub extension: Option<u32>,
}

/// The properties caller ID reads, in the order postings refer to them.
pub const PHONE_PROPERTIES: [&str; 3] = ["phone", "mobilephone", "hs_whatsapp_phone_number"];

/// Bits 0-39: record id; 40-41: type; 42-43: property; 44: guessed; 45: has an extension.
type Packed = u64;
const ID_BITS: u32 = 40;

fn pack(p: &Posting) -> Packed {
    let ty = match p.object_type {
        ObjectType::Contact => 0u64,
        ObjectType::Company => 1,
        ObjectType::Call => 2,
    };
    (p.object_id as u64 & ((1 << ID_BITS) - 1))
        | ty << ID_BITS
        | (p.property as u64) << (ID_BITS + 2)
        | (p.guessed as u64) << (ID_BITS + 4)
        | (p.extension.is_some() as u64) << (ID_BITS + 5)
}

fn id_of(x: Packed) -> i64 {
    (x & ((1 << ID_BITS) - 1)) as i64
}

fn property_of(x: Packed) -> u8 {
    ((x >> (ID_BITS + 2)) & 3) as u8
}

/// Number key → the postings filed under it (one inline, several in a side list).
#[derive(Default)]
struct PostingMap(PackedMap<u64>);

impl PostingMap {
    fn get(&self, key: u64) -> &[Packed] {
        self.0.get(key)
    }

    fn add(&mut self, key: u64, posting: Packed) {
        self.0.add(key, posting, |a, b| a == b);
    }

    fn remove(&mut self, key: u64, object_id: i64, property: u8) {
        self.0.retain(key, |p| {
            !(id_of(p) == object_id && property_of(p) == property)
        });
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn postings(&self) -> usize {
        self.0.values()
    }

    fn memory_bytes(&self) -> usize {
        self.0.memory_bytes()
    }
}

#[derive(Default)]
struct PortalIndex {
    exact: PostingMap,
    national: PostingMap,
    /// Every stored number's national key, guessed or not: search's and explain's candidates
    /// ([`CallerIdIndex::candidates`]). Caller ID never reads it. It replaced the SQL index
    /// `phones_national` (migration 0009), which every imported row landed at a random place
    /// in, and which a bulk load had to rebuild: 1 s per million rows.
    by_national: PostingMap,
    /// Stored extensions by [`ext_key`] (record id and property): a `u64` key makes an entry
    /// 16 bytes, where an `(i64, u8)` key made it 24, and one number in five has one.
    extensions: HashMap<u64, u32>,
    /// Last-N-digits map, present only while the portal has suffix matching on.
    suffix: Option<(u8, PostingMap)>,
    ignored: HashSet<u64>,
}

impl PortalIndex {
    fn unpack(&self, x: Packed) -> Posting {
        let object_id = id_of(x);
        let property = property_of(x);
        Posting {
            object_id,
            object_type: match (x >> ID_BITS) & 3 {
                0 => ObjectType::Contact,
                1 => ObjectType::Company,
                _ => ObjectType::Call,
            },
            property,
            guessed: (x >> (ID_BITS + 4)) & 1 == 1,
            extension: if (x >> (ID_BITS + 5)) & 1 == 1 {
                self.extensions.get(&ext_key(object_id, property)).copied()
            } else {
                None
            },
        }
    }
}

fn ext_key(object_id: i64, property: u8) -> u64 {
    (object_id as u64) << 2 | u64::from(property)
}

/// What a lookup found, before ranking.
#[derive(Debug, Clone, Copy)]
pub struct Hit {
    pub posting: Posting,
    pub tier: super::Tier,
}

#[derive(Default)]
pub struct CallerIdIndex {
    portals: RwLock<HashMap<i64, PortalIndex>>,
}

pub fn parse_extension(ext: Option<&str>) -> Option<u32> {
    ext.filter(|e| e.len() <= 9 && !e.is_empty())
        .and_then(|e| e.parse().ok())
}

fn posting_of(row: &PhoneRow) -> Option<Posting> {
    let property = PHONE_PROPERTIES.iter().position(|p| *p == row.property)? as u8;
    Some(Posting {
        object_id: row.object_id,
        object_type: row.object_type,
        property,
        guessed: row.source.as_deref() == Some("default"),
        extension: parse_extension(row.extension.as_deref()),
    })
}

/// The last `n` digits of what was typed (extension excluded), as a number.
fn suffix_key(row: &PhoneRow, n: u8) -> Option<u64> {
    let digits: String = row.raw.chars().filter(|c| c.is_ascii_digit()).collect();
    let digits = match &row.extension {
        Some(ext) if digits.ends_with(ext.as_str()) => &digits[..digits.len() - ext.len()],
        _ => digits.as_str(),
    };
    let n = n as usize;
    if n == 0 || digits.len() < n {
        return None;
    }
    digits[digits.len() - n..].parse().ok()
}

impl PortalIndex {
    /// Files a posting under its number's keys, for a row written now or read at start alike;
    /// returns it packed.
    fn file(&mut self, posting: &Posting, e164: Option<u64>, national: Option<u64>) -> Packed {
        let packed = pack(posting);
        if let Some(ext) = posting.extension {
            self.extensions
                .insert(ext_key(posting.object_id, posting.property), ext);
        }
        if let Some(key) = e164 {
            self.exact.add(key, packed);
        }
        if let Some(key) = national {
            self.by_national.add(key, packed);
            if posting.guessed && e164.is_none() {
                self.national.add(key, packed);
            }
        }
        packed
    }

    fn insert(&mut self, row: &PhoneRow) {
        let Some(posting) = posting_of(row) else {
            return;
        };
        let e164 = row.e164.as_deref().and_then(e164_key);
        let packed = self.file(&posting, e164, row.national_key.map(|k| k as u64));
        if let Some((n, map)) = &mut self.suffix
            && let Some(key) = suffix_key(row, *n)
        {
            map.add(key, packed);
        }
    }

    fn delete(&mut self, row: &PhoneRow) {
        let Some(posting) = posting_of(row) else {
            return;
        };
        self.extensions
            .remove(&ext_key(row.object_id, posting.property));
        if let Some(key) = row.e164.as_deref().and_then(e164_key) {
            self.exact.remove(key, row.object_id, posting.property);
        }
        if let Some(key) = row.national_key {
            self.national
                .remove(key as u64, row.object_id, posting.property);
            self.by_national
                .remove(key as u64, row.object_id, posting.property);
        }
        if let Some((n, map)) = &mut self.suffix
            && let Some(key) = suffix_key(row, *n)
        {
            map.remove(key, row.object_id, posting.property);
        }
    }
}

impl CallerIdIndex {
    /// Adds rows read at start (see [`crate::store::Store::index_rows`]).
    pub fn load(&self, rows: &[IndexRow]) {
        let mut portals = self.portals.write().expect("index lock poisoned");
        for r in rows {
            if r.property as usize >= PHONE_PROPERTIES.len() {
                continue;
            }
            let posting = Posting {
                object_id: r.object_id,
                object_type: r.object_type,
                property: r.property,
                guessed: r.guessed,
                extension: parse_extension(r.extension.as_deref()),
            };
            portals.entry(r.portal_id).or_default().file(
                &posting,
                r.e164_key.map(|k| k as u64),
                r.national_key.map(|k| k as u64),
            );
        }
    }

    /// Marks a number a portal never matches.
    pub fn load_ignored(&self, ignored: &[(i64, String)]) {
        for (portal, e164) in ignored {
            self.set_ignored(*portal, e164, true);
        }
    }

    /// Applies a committed write: `removed` rows leave, `added` rows join.
    pub fn apply(&self, portal_id: i64, removed: &[PhoneRow], added: &[PhoneRow]) {
        let mut portals = self.portals.write().expect("index lock poisoned");
        let idx = portals.entry(portal_id).or_default();
        for row in removed {
            idx.delete(row);
        }
        for row in added {
            idx.insert(row);
        }
    }

    /// Turns suffix matching on (with all of the portal's rows) or off.
    pub fn set_suffix(&self, portal_id: i64, digits: Option<u8>, rows: &[PhoneRow]) {
        let mut portals = self.portals.write().expect("index lock poisoned");
        let idx = portals.entry(portal_id).or_default();
        idx.suffix = digits.map(|n| {
            let mut map = PostingMap::default();
            for row in rows {
                if let (Some(p), Some(k)) = (posting_of(row), suffix_key(row, n)) {
                    map.add(k, pack(&p));
                }
            }
            (n, map)
        });
    }

    pub fn set_ignored(&self, portal_id: i64, e164: &str, ignored: bool) {
        let Some(key) = e164_key(e164) else { return };
        let mut portals = self.portals.write().expect("index lock poisoned");
        let idx = portals.entry(portal_id).or_default();
        if ignored {
            idx.ignored.insert(key);
        } else {
            idx.ignored.remove(&key);
        }
    }

    /// Every record that could be the caller, with the tier each was found in. A record found
    /// in several tiers appears several times; ranking keeps its best.
    pub fn lookup(&self, portal_id: i64, caller: &CallerNumber) -> Vec<Hit> {
        use super::Tier;
        let portals = self.portals.read().expect("index lock poisoned");
        let Some(idx) = portals.get(&portal_id) else {
            return Vec::new();
        };
        if idx.ignored.contains(&caller.key) {
            return Vec::new();
        }
        let mut hits = Vec::new();
        {
            hits.extend(idx.exact.get(caller.key).iter().map(|x| {
                let posting = idx.unpack(*x);
                let tier = if posting.guessed {
                    Tier::National
                } else {
                    Tier::Exact
                };
                Hit { posting, tier }
            }));
        }
        // Only portals holding guessed numbers pay for the national-format key.
        if !idx.national.is_empty() {
            for key in [caller.national_key, caller.trunk_key()]
                .into_iter()
                .flatten()
            {
                hits.extend(idx.national.get(key).iter().map(|x| Hit {
                    posting: idx.unpack(*x),
                    tier: Tier::National,
                }));
            }
        }
        if let Some((n, map)) = &idx.suffix {
            let n = *n as usize;
            let digits = caller.e164.trim_start_matches('+');
            if digits.len() >= n
                && let Ok(key) = digits[digits.len() - n..].parse::<u64>()
            {
                hits.extend(map.get(key).iter().map(|x| Hit {
                    posting: idx.unpack(*x),
                    tier: Tier::Suffix,
                }));
            }
        }
        hits
    }

    /// The records with a stored number of this E.164 or of one of these national keys, in id
    /// order: the candidates a phone `EQ` search filter and explain evaluate. Unlike
    /// [`Self::lookup`] it reads every stored number's national key, not only the guessed
    /// ones, and ignores nothing: what SQL's `phones_e164` and `phones_national` answered
    /// before migration 0009.
    pub fn candidates(
        &self,
        portal_id: i64,
        e164: Option<&str>,
        national_keys: &[u64],
    ) -> Vec<i64> {
        let portals = self.portals.read().expect("index lock poisoned");
        let Some(idx) = portals.get(&portal_id) else {
            return Vec::new();
        };
        let exact = e164
            .and_then(e164_key)
            .map_or(&[][..], |k| idx.exact.get(k));
        let national = national_keys.iter().flat_map(|k| idx.by_national.get(*k));
        let mut ids: Vec<i64> = exact.iter().chain(national).map(|x| id_of(*x)).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    pub fn is_ignored(&self, portal_id: i64, key: u64) -> bool {
        let portals = self.portals.read().expect("index lock poisoned");
        portals
            .get(&portal_id)
            .is_some_and(|p| p.ignored.contains(&key))
    }

    /// The index's heap: every table's allocated buckets (key, value and control byte) plus
    /// the lists of shared numbers. Reported by `/switchboard/v1/info` so the memory target
    /// can be checked on a live server.
    pub fn memory_bytes(&self) -> usize {
        let portals = self.portals.read().expect("index lock poisoned");
        portals
            .values()
            .map(|p| {
                p.exact.memory_bytes()
                    + p.national.memory_bytes()
                    + p.by_national.memory_bytes()
                    + table_bytes(&p.extensions)
                    + p.suffix.as_ref().map_or(0, |(_, m)| m.memory_bytes())
                    + p.ignored.capacity() * (std::mem::size_of::<u64>() + 1)
            })
            .sum()
    }

    /// Stored numbers in the index (postings in the exact and national maps).
    pub fn numbers(&self) -> usize {
        let portals = self.portals.read().expect("index lock poisoned");
        portals
            .values()
            .map(|p| p.exact.postings() + p.national.postings())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random adds and removes against a plain map of sets: a number moves between one inline
    /// posting and a shared list and back, and slots are reused, without ever losing a posting.
    #[test]
    fn posting_map_matches_a_plain_model() {
        let mut map = PostingMap::default();
        let mut model: HashMap<u64, Vec<Packed>> = HashMap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = x % 50;
            let posting = pack(&Posting {
                object_id: (x >> 8) as i64 % 7,
                object_type: ObjectType::Contact,
                property: ((x >> 16) % 3) as u8,
                guessed: false,
                extension: None,
            });
            if x >> 60 < 9 {
                map.add(key, posting);
                let list = model.entry(key).or_default();
                if !list.contains(&posting) {
                    list.push(posting);
                }
            } else {
                map.remove(key, id_of(posting), property_of(posting));
                if let Some(list) = model.get_mut(&key) {
                    list.retain(|p| {
                        !(id_of(*p) == id_of(posting) && property_of(*p) == property_of(posting))
                    });
                    if list.is_empty() {
                        model.remove(&key);
                    }
                }
            }
        }
        for key in 0..50 {
            let mut got = map.get(key).to_vec();
            let mut want = model.get(&key).cloned().unwrap_or_default();
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "key {key}");
        }
        assert_eq!(map.postings(), model.values().map(Vec::len).sum::<usize>());
        assert!(map.0.side_lists() <= 50, "freed slots are reused");
    }

    /// Search's candidates after random writes (a record's phone rows replaced, as a record
    /// write does, or removed, as an archive does) against a brute-force pass over the rows
    /// that are live, as the SQL indexes answered: every row of that E.164 or national key,
    /// guessed or not, with or without an E.164.
    #[test]
    fn candidates_match_a_scan_of_the_live_rows() {
        let index = CallerIdIndex::default();
        let mut live: HashMap<(i64, usize), PhoneRow> = HashMap::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..5_000 {
            let r = next();
            let (id, prop) = ((r % 40) as i64 + 1, (r >> 8) as usize % 3);
            let old: Vec<PhoneRow> = live.remove(&(id, prop)).into_iter().collect();
            let mut added = Vec::new();
            if (r >> 16) % 4 != 0 {
                let row = PhoneRow {
                    object_id: id,
                    object_type: ObjectType::Contact,
                    property: PHONE_PROPERTIES[prop].to_string(),
                    raw: String::new(),
                    e164: ((r >> 20) % 3 != 0).then(|| format!("+4930{}", (r >> 24) % 6)),
                    national_key: ((r >> 28) % 4 != 0).then_some(((r >> 32) % 6) as i64),
                    extension: None,
                    source: Some(["default", "country", "number"][(r >> 36) as usize % 3].into()),
                    region: None,
                };
                live.insert((id, prop), row.clone());
                added.push(row);
            }
            index.apply(7, &old, &added);
        }
        for n in 0..6 {
            let e164 = format!("+4930{n}");
            for (e, k) in [
                (Some(e164.as_str()), None),
                (None, Some(n as u64)),
                (Some(e164.as_str()), Some(n as u64)),
            ] {
                let mut want: Vec<i64> = live
                    .values()
                    .filter(|row| {
                        (e.is_some() && row.e164.as_deref() == e)
                            || (k.is_some() && row.national_key.map(|v| v as u64) == k)
                    })
                    .map(|row| row.object_id)
                    .collect();
                want.sort_unstable();
                want.dedup();
                let keys: Vec<u64> = k.into_iter().collect();
                assert_eq!(index.candidates(7, e, &keys), want, "{e:?} {k:?}");
            }
        }
        assert!(
            index.candidates(8, Some("+49300"), &[0]).is_empty(),
            "another portal's rows"
        );
    }
}
