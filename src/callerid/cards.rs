//! Caller-ID cards: the few fields caller ID shows and ranks for each live contact and
//! company, packed into one byte arena, so that a lookup while the phone rings reads no
//! database page at any CRM size.
//!
//! Why not a cache of whole records: at 1M and 10M contacts a bounded record cache missed on
//! most lookups, and every miss was a B-tree walk through SQLite (lookups fell from 0.71 of the
//! baseline at 100k to 0.28 at 10M). A card is the record's id, portal, type, `updatedAt` and
//! [`fields`] only: about 60 bytes for a contact, so every record fits.
//!
//! Layout: a card is varint-encoded into `arena`; `pages` maps a record id to the card's
//! offset through 4 KiB pages of slots, so ids (dense, from SQLite's rowid) cost 8 bytes each
//! and a lookup is two dependent loads. A changed record's old bytes stay in the arena as
//! garbage until garbage outweighs live bytes; then the arena is rewritten once.
//!
//! Exactness: every code path that changes a record (`records.rs`) calls
//! [`CardStore::invalidate`], which drops the card and bumps an epoch. Whoever reads records
//! from the store to fill cards (a lookup that missed, or the warm-up at start) notes the
//! epoch first and files what it read only if nothing was invalidated meanwhile, so a read
//! that raced a write can never put the old version back. Logging a call changes nothing on
//! the records it is logged on, so calls leave cards alone.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::store::{ObjectType, Record};

/// The properties a card keeps, by type: what the inbound-call answer and `caller-id/explain`
/// show. Nothing else on a record changes a caller-ID answer.
pub fn fields(object_type: ObjectType) -> &'static [&'static str] {
    match object_type {
        ObjectType::Contact => &["firstname", "lastname", "email", "country"],
        _ => &["name", "domain", "country"],
    }
}

const MAX_FIELDS: usize = 4;

/// One record as caller ID sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub id: i64,
    pub portal_id: i64,
    pub object_type: ObjectType,
    pub updated_at: i64,
    values: [Option<Box<str>>; MAX_FIELDS],
}

impl Card {
    /// The card of a live contact or company; `None` for anything caller ID never shows.
    pub fn of_record(portal_id: i64, r: &Record) -> Option<Card> {
        if r.archived || r.object_type == ObjectType::Call {
            return None;
        }
        let mut values: [Option<Box<str>>; MAX_FIELDS] = Default::default();
        for (slot, name) in values.iter_mut().zip(fields(r.object_type)) {
            *slot = r.properties.get(*name).map(|v| v.as_str().into());
        }
        Some(Card {
            id: r.id,
            portal_id,
            object_type: r.object_type,
            updated_at: r.updated_at,
            values,
        })
    }

    /// A card from a stored row, reading only [`fields`] out of the properties JSON.
    pub fn from_json(
        id: i64,
        portal_id: i64,
        object_type: ObjectType,
        updated_at: i64,
        properties: &str,
    ) -> Result<Card, serde_json::Error> {
        let values = pick(properties, fields(object_type))?;
        Ok(Card {
            id,
            portal_id,
            object_type,
            updated_at,
            values,
        })
    }

    /// A property's value, `None` when unset or not on the card.
    pub fn get(&self, name: &str) -> Option<&str> {
        let i = fields(self.object_type).iter().position(|f| *f == name)?;
        self.values[i].as_deref()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.portal_id as u64);
        out.push(type_code(self.object_type));
        put_varint(out, self.updated_at as u64);
        for v in &self.values[..fields(self.object_type).len()] {
            match v {
                None => put_varint(out, 0),
                Some(s) => {
                    put_varint(out, s.len() as u64 + 1);
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
    }

    fn decode(id: i64, bytes: &[u8]) -> Card {
        let mut at = 0;
        let portal_id = get_varint(bytes, &mut at) as i64;
        let object_type = from_code(bytes[at]);
        at += 1;
        let updated_at = get_varint(bytes, &mut at) as i64;
        let mut values: [Option<Box<str>>; MAX_FIELDS] = Default::default();
        for slot in values.iter_mut().take(fields(object_type).len()) {
            let n = get_varint(bytes, &mut at) as usize;
            if n > 0 {
                let s = &bytes[at..at + n - 1];
                at += n - 1;
                // Written from a `str` by `encode`, so always UTF-8.
                *slot = Some(String::from_utf8_lossy(s).into());
            }
        }
        Card {
            id,
            portal_id,
            object_type,
            updated_at,
            values,
        }
    }
}

fn type_code(t: ObjectType) -> u8 {
    match t {
        ObjectType::Contact => 0,
        ObjectType::Company => 1,
        ObjectType::Call => 2,
    }
}

fn from_code(c: u8) -> ObjectType {
    match c {
        0 => ObjectType::Contact,
        1 => ObjectType::Company,
        _ => ObjectType::Call,
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = bytes[*at];
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return v;
        }
        shift += 7;
    }
}

/// Reads the values of `names` out of a JSON object of strings, skipping every other property
/// without allocating for it: a record's JSON holds dozens of properties and a card needs four.
fn pick(json: &str, names: &[&str]) -> Result<[Option<Box<str>>; MAX_FIELDS], serde_json::Error> {
    struct Pick<'a>(&'a [&'a str]);
    impl<'de> Visitor<'de> for Pick<'_> {
        type Value = [Option<Box<str>>; MAX_FIELDS];
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object of properties")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out: Self::Value = Default::default();
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                match self.0.iter().position(|n| *n == key) {
                    Some(i) => out[i] = Some(map.next_value::<String>()?.into()),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(json);
    de.deserialize_map(Pick(names))
}

/// The length of the card that starts `bytes`.
fn encoded_len(bytes: &[u8]) -> usize {
    let mut at = 0;
    get_varint(bytes, &mut at);
    let ty = from_code(bytes[at]);
    at += 1;
    get_varint(bytes, &mut at);
    for _ in fields(ty) {
        let n = get_varint(bytes, &mut at) as usize;
        at += n.saturating_sub(1);
    }
    at
}

/// Slots per page: 512 × 8 bytes, one 4 KiB page.
const PAGE: usize = 512;

#[derive(Default)]
struct Table {
    /// Record id / PAGE → that page's slots; a slot is the card's arena offset + 1, or 0.
    pages: HashMap<i64, Box<[u64; PAGE]>>,
    arena: Vec<u8>,
    cards: usize,
    garbage: usize,
}

impl Table {
    fn offset(&self, id: i64) -> Option<usize> {
        let slot =
            self.pages.get(&id.div_euclid(PAGE as i64))?[id.rem_euclid(PAGE as i64) as usize];
        (slot != 0).then(|| slot as usize - 1)
    }

    fn slot_mut(&mut self, id: i64) -> &mut u64 {
        let page = self
            .pages
            .entry(id.div_euclid(PAGE as i64))
            .or_insert_with(|| Box::new([0; PAGE]));
        &mut page[id.rem_euclid(PAGE as i64) as usize]
    }

    fn put(&mut self, card: &Card) {
        // Grow by a sixteenth, not by doubling: at 10M cards a doubled arena would leave
        // hundreds of MiB allocated and unused. A large Vec reallocates with `mremap`, without
        // a copy.
        if self.arena.capacity() - self.arena.len() < 1024 {
            self.arena
                .reserve_exact((self.arena.len() / 16).max(64 << 10));
        }
        let offset = self.arena.len();
        card.encode(&mut self.arena);
        let slot = self.slot_mut(card.id);
        let old = std::mem::replace(slot, offset as u64 + 1);
        if old == 0 {
            self.cards += 1;
        } else {
            self.garbage += encoded_len(&self.arena[old as usize - 1..]);
        }
    }

    fn remove(&mut self, id: i64) {
        let Some(page) = self.pages.get_mut(&id.div_euclid(PAGE as i64)) else {
            return;
        };
        let old = std::mem::take(&mut page[id.rem_euclid(PAGE as i64) as usize]);
        if old != 0 {
            self.cards -= 1;
            self.garbage += encoded_len(&self.arena[old as usize - 1..]);
        }
    }

    /// Rewrites the arena without garbage, once garbage outweighs live cards.
    fn maybe_compact(&mut self) {
        if self.garbage < (1 << 20) || self.garbage < self.arena.len() / 2 {
            return;
        }
        let mut arena = Vec::with_capacity(self.arena.len() - self.garbage);
        let mut keys: Vec<i64> = self.pages.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
            let page = self.pages.get_mut(&key).expect("key from the map");
            for slot in page.iter_mut().filter(|s| **s != 0) {
                let start = *slot as usize - 1;
                let len = encoded_len(&self.arena[start..]);
                *slot = arena.len() as u64 + 1;
                arena.extend_from_slice(&self.arena[start..start + len]);
            }
        }
        self.pages.retain(|_, p| p.iter().any(|s| *s != 0));
        self.arena = arena;
        self.garbage = 0;
    }
}

/// Every live contact's and company's card, filled by the warm-up at start (`state.rs`)
/// and on any lookup that finds a card missing.
#[derive(Default)]
pub struct CardStore {
    table: RwLock<Table>,
    epoch: AtomicU64,
    warm: AtomicBool,
    /// How long the warm-up took, in ms, once done.
    warm_ms: AtomicU64,
}

impl CardStore {
    /// The epoch to pass to [`CardStore::insert`] after reading the store.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The cards of `ids` in `portal_id`, and the ids that have none.
    pub fn get(&self, portal_id: i64, ids: &[i64]) -> (Vec<Card>, Vec<i64>) {
        let table = self.table.read().expect("card lock");
        let mut found = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for &id in ids {
            match table.offset(id) {
                Some(at) => {
                    let card = Card::decode(id, &table.arena[at..]);
                    // Ids are global, so a card of another portal is a bug upstream; never show it.
                    if card.portal_id == portal_id {
                        found.push(card);
                    }
                }
                None => missing.push(id),
            }
        }
        (found, missing)
    }

    /// Files cards read from the store, unless something was invalidated since `epoch`.
    /// Returns whether they were filed.
    pub fn insert(&self, cards: &[Card], epoch: u64) -> bool {
        let mut table = self.table.write().expect("card lock");
        if self.epoch.load(Ordering::Acquire) != epoch {
            return false;
        }
        for c in cards {
            table.put(c);
        }
        table.maybe_compact();
        true
    }

    /// Drops the cards of records that changed.
    pub fn invalidate(&self, ids: &[i64]) {
        let mut table = self.table.write().expect("card lock");
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for &id in ids {
            table.remove(id);
        }
        table.maybe_compact();
    }

    /// Marks the warm-up done and returns the arena's unused tail to the allocator.
    pub fn set_warm(&self, took: std::time::Duration) {
        self.table.write().expect("card lock").arena.shrink_to_fit();
        self.warm_ms
            .store(took.as_millis() as u64, Ordering::Release);
        self.warm.store(true, Ordering::Release);
    }

    /// How long the warm-up at start took to file every record's card, once it has.
    pub fn warm_ms(&self) -> Option<u64> {
        self.warm
            .load(Ordering::Acquire)
            .then(|| self.warm_ms.load(Ordering::Acquire))
    }

    pub fn len(&self) -> usize {
        self.table.read().expect("card lock").cards
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes: the arena's allocation, the slot pages and the page map.
    pub fn memory_bytes(&self) -> usize {
        let t = self.table.read().expect("card lock");
        t.arena.capacity()
            + t.pages.len() * std::mem::size_of::<[u64; PAGE]>()
            + t.pages.capacity() * (std::mem::size_of::<(i64, Box<[u64; PAGE]>)>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(id: i64, first: Option<&str>, updated_at: i64) -> Card {
        let mut r = Record {
            id,
            object_type: ObjectType::Contact,
            properties: Default::default(),
            created_at: 1,
            updated_at,
            archived: false,
            archived_at: None,
        };
        if let Some(f) = first {
            r.properties.insert("firstname".into(), f.into());
        }
        r.properties
            .insert("email".into(), format!("c{id}@example.com"));
        r.properties
            .insert("jobtitle".into(), "not on a card".into());
        Card::of_record(7, &r).expect("live contact")
    }

    #[test]
    fn cards_round_trip_through_the_arena_and_json() {
        let store = CardStore::default();
        let cards: Vec<Card> = (0..2000)
            .map(|i| {
                card(
                    i * 3,
                    (i % 2 == 0).then_some("Ünïcode name"),
                    1_700_000_000_000 + i,
                )
            })
            .collect();
        assert!(store.insert(&cards, store.epoch()));
        let ids: Vec<i64> = (0..6000).collect();
        let (found, missing) = store.get(7, &ids);
        assert_eq!(found, cards);
        assert_eq!(missing.len(), 4000);
        assert!(
            store.get(8, &[3]).0.is_empty(),
            "another portal's card is never shown"
        );
        let json = r#"{"jobtitle":"x","firstname":"Ünïcode name","email":"c0@example.com","nested":{"a":[1,2]}}"#;
        let parsed = Card::from_json(0, 7, ObjectType::Contact, 1_700_000_000_000, json).unwrap();
        assert_eq!(parsed, cards[0]);
        assert_eq!(parsed.get("jobtitle"), None);
    }

    #[test]
    fn invalidation_wins_over_a_racing_fill_and_garbage_is_compacted() {
        let store = CardStore::default();
        let before = store.epoch();
        store.invalidate(&[1]);
        assert!(!store.insert(&[card(1, Some("old"), 1)], before));
        assert!(store.get(7, &[1]).0.is_empty());
        // Rewrite the same cards until garbage forces compaction; answers never change.
        for round in 0..40 {
            let cards: Vec<Card> = (0..2000).map(|i| card(i, Some("x"), round)).collect();
            assert!(store.insert(&cards, store.epoch()));
            let (found, _) = store.get(7, &[0, 1999]);
            assert_eq!(found[1].updated_at, round);
        }
        let t = store.table.read().unwrap();
        assert!(t.garbage <= t.arena.len() / 2 + (1 << 20));
        drop(t);
        store.invalidate(&[5]);
        assert_eq!(store.len(), 1999);
    }
}
