//! Caller ID: who is calling, in which tier, and in what order.
//!
//! Tiers (documented for users in the README, "How caller ID matches"):
//! 1. **exact**: the stored number's E.164, where its country came from the number itself or
//!    from the record's `country`, equals the caller's;
//! 2. **national**: the stored number was typed without a country code on a record with no
//!    `country`, so its region was the portal default, a guess. It matches when its national
//!    digits equal the caller's national significant number, whatever the guess was;
//! 3. **suffix**: the last N typed digits equal the caller's, for legacy data; off unless the
//!    portal sets N.
//!
//! Ranking, first difference wins: tier; the caller's extension equals the stored extension;
//! contacts before companies; most recent call; most recently modified; lowest id.
//!
//! "Most recent call" is the record's highest associated live call id (call ids grow in the
//! order calls are logged). It is read only for records that tie on the first three rules, so
//! logging a call writes nothing onto the records it is logged on.

use std::cmp::Reverse;
use std::collections::HashMap;

use crate::store::ObjectType;

pub mod cards;
pub mod countries;
pub mod doctor;
pub mod index;
pub mod normalize;

pub use cards::{Card, CardStore};
pub use index::{CallerIdIndex, Hit, PHONE_PROPERTIES, Posting};
pub use normalize::{CallerNumber, Normalized, RegionSource};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Exact = 1,
    National = 2,
    Suffix = 3,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Exact => "exact",
            Tier::National => "national",
            Tier::Suffix => "suffix",
        }
    }
}

/// A ranked match.
#[derive(Debug, Clone)]
pub struct Match {
    pub record: Card,
    pub tier: Tier,
    pub extension_match: bool,
    /// The phone property that matched.
    pub property: &'static str,
}

/// Keeps each record's best hit and orders the records by the documented ranking, with
/// `latest_call` (record id → its most recent call id) for rule 4.
///
/// `records` must hold the card of every record named by `hits`; hits on records that have
/// none (archived, or deleted by a write racing the lookup) are dropped.
pub fn rank(
    hits: &[Hit],
    records: Vec<Card>,
    caller_extension: Option<&str>,
    latest_call: &HashMap<i64, i64>,
) -> Vec<Match> {
    let caller_ext = index::parse_extension(caller_extension);
    let mut best: HashMap<i64, (Tier, bool, u8)> = HashMap::new();
    for hit in hits {
        let ext_match = caller_ext.is_some() && hit.posting.extension == caller_ext;
        let candidate = (hit.tier, ext_match, hit.posting.property);
        best.entry(hit.posting.object_id)
            .and_modify(|cur| {
                if (candidate.0, !candidate.1) < (cur.0, !cur.1) {
                    *cur = candidate;
                }
            })
            .or_insert(candidate);
    }
    let mut out: Vec<Match> = records
        .into_iter()
        .filter_map(|record| {
            let (tier, extension_match, prop) = *best.get(&record.id)?;
            Some(Match {
                record,
                tier,
                extension_match,
                property: PHONE_PROPERTIES[prop as usize],
            })
        })
        .collect();
    order(&mut out, latest_call);
    out
}

/// Rules 1–3: the part of the ranking that needs nothing but the hit and the record.
fn group(m: &Match) -> (Tier, bool, bool) {
    (
        m.tier,
        !m.extension_match,
        m.record.object_type != ObjectType::Contact,
    )
}

fn order(matches: &mut [Match], latest_call: &HashMap<i64, i64>) {
    matches.sort_by_key(|m| {
        (
            group(m),
            Reverse(latest_call.get(&m.record.id).copied().unwrap_or(0)),
            Reverse(m.record.updated_at),
            m.record.id,
        )
    });
}

/// The records that share rules 1–3 with a neighbour in `ranked`: only their order depends on
/// their calls.
fn tied(ranked: &[Match]) -> Vec<i64> {
    let mut ids = Vec::new();
    for (i, m) in ranked.iter().enumerate() {
        let same = |j: usize| ranked.get(j).is_some_and(|n| group(n) == group(m));
        if (i > 0 && same(i - 1)) || same(i + 1) {
            ids.push(m.record.id);
        }
    }
    ids
}

/// Why a match is in its tier, in words, for `caller-id/explain`.
pub fn reason(m: &Match, source: Option<&str>) -> String {
    let ext = if m.extension_match {
        " The caller's extension equals the stored extension, so it ranks first in its tier."
    } else {
        ""
    };
    let base = match m.tier {
        Tier::Exact => match source {
            Some("country") => format!(
                "`{}` was typed without a country code; the record's country resolved it to the caller's E.164 number.",
                m.property
            ),
            _ => format!(
                "`{}` carries its own country code and equals the caller's E.164 number.",
                m.property
            ),
        },
        Tier::National => format!(
            "`{}` was typed without a country code on a record with no country, so its region was only the portal default; its national number equals the caller's.",
            m.property
        ),
        Tier::Suffix => format!(
            "The last digits of `{}` equal the caller's (suffix matching is on for this portal).",
            m.property
        ),
    };
    format!("{base}{ext}")
}

/// Finds and ranks the records that carry the caller's number, capped at `cap`.
///
/// The index answers which records and their cards what to show; the store is read only for
/// a card not filed yet (a record created after start, before its first lookup).
pub async fn find(
    index: &CallerIdIndex,
    cards: &CardStore,
    store: &dyn crate::store::Store,
    portal_id: i64,
    caller: &CallerNumber,
    extension: Option<&str>,
    cap: usize,
) -> crate::store::StoreResult<Vec<Match>> {
    let hits = index.lookup(portal_id, caller);
    if hits.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<i64> = hits.iter().map(|h| h.posting.object_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let (mut records, missing) = cards.get(portal_id, &ids);
    if !missing.is_empty() {
        let epoch = cards.epoch();
        let read: Vec<Card> = store
            .records_by_ids(portal_id, &missing)
            .await?
            .iter()
            .filter_map(|r| Card::of_record(portal_id, r))
            .collect();
        cards.insert(&read, epoch);
        records.extend(read);
    }
    let mut ranked = rank(&hits, records, extension, &HashMap::new());
    let tied = tied(&ranked);
    if !tied.is_empty() {
        let latest: HashMap<i64, i64> = store
            .latest_calls(portal_id, &tied)
            .await?
            .into_iter()
            .collect();
        order(&mut ranked, &latest);
    }
    ranked.truncate(cap);
    Ok(ranked)
}
