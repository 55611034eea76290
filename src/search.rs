//! CRM search (`POST /crm/v3/objects/{type}/search`, `hubspot-api.md` §5.2): parsing the
//! request with HubSpot's limits, and evaluating filters against records.
//!
//! Filter groups are OR-ed, filters inside a group AND-ed. Comparisons follow the property's
//! type: numbers numerically, datetimes as instants, everything else as case-insensitive text.
//! Phone properties compare by normalised number, so `phone EQ +33612345678` finds
//! `06 12 34 56 78` on a French record.

use rlibphonenumber::Region;
use serde_json::Value;

use crate::callerid::normalize::{self, region_from_country};
use crate::clock;
use crate::crm::{self, Catalog};
use crate::http::FieldError;
use crate::store::{ObjectType, Record};

/// HubSpot's limits since its changelog of 2024-08-26.
pub const MAX_GROUPS: usize = 5;
pub const MAX_FILTERS_PER_GROUP: usize = 10;
pub const MAX_FILTERS: usize = 25;
pub const MAX_LIMIT: usize = 200;
pub const MAX_RESULTS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    Between,
    In,
    NotIn,
    HasProperty,
    NotHasProperty,
    ContainsToken,
    NotContainsToken,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "EQ" => Op::Eq,
            "NEQ" => Op::Neq,
            "LT" => Op::Lt,
            "LTE" => Op::Lte,
            "GT" => Op::Gt,
            "GTE" => Op::Gte,
            "BETWEEN" => Op::Between,
            "IN" => Op::In,
            "NOT_IN" => Op::NotIn,
            "HAS_PROPERTY" => Op::HasProperty,
            "NOT_HAS_PROPERTY" => Op::NotHasProperty,
            "CONTAINS_TOKEN" => Op::ContainsToken,
            "NOT_CONTAINS_TOKEN" => Op::NotContainsToken,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Filter {
    pub property: String,
    pub op: Op,
    pub value: Option<String>,
    pub values: Vec<String>,
    pub high_value: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub groups: Vec<Vec<Filter>>,
    /// (property, descending)
    pub sorts: Vec<(String, bool)>,
    pub query: Option<String>,
    pub properties: Option<Vec<String>>,
    pub limit: usize,
    pub after: usize,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parses and checks a search body; every problem becomes one field error.
pub fn parse(body: &Value) -> Result<SearchRequest, Vec<FieldError>> {
    let mut errors = Vec::new();
    let empty = serde_json::Map::new();
    let obj = body.as_object().unwrap_or(&empty);
    if !body.is_object() {
        errors.push(FieldError::new(
            "body",
            "INVALID_TYPE",
            "The search body must be a JSON object",
        ));
    }
    let mut groups = Vec::new();
    match obj.get("filterGroups") {
        None | Some(Value::Null) => {}
        Some(Value::Array(gs)) => {
            if gs.len() > MAX_GROUPS {
                errors.push(FieldError::new(
                    "filterGroups",
                    "TOO_MANY_FILTER_GROUPS",
                    format!(
                        "filterGroups has {} groups; the limit is {MAX_GROUPS}",
                        gs.len()
                    ),
                ));
            }
            let total: usize = gs
                .iter()
                .map(|g| {
                    g.get("filters")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len)
                })
                .sum();
            if total > MAX_FILTERS {
                errors.push(FieldError::new(
                    "filterGroups",
                    "TOO_MANY_FILTERS",
                    format!("filterGroups has {total} filters in all; the limit is {MAX_FILTERS}"),
                ));
            }
            for (gi, g) in gs.iter().enumerate() {
                let filters = g
                    .get("filters")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if filters.len() > MAX_FILTERS_PER_GROUP {
                    errors.push(FieldError::new(
                        format!("filterGroups[{gi}].filters"),
                        "TOO_MANY_FILTERS_IN_GROUP",
                        format!(
                            "filterGroups[{gi}] has {} filters; the limit is {MAX_FILTERS_PER_GROUP} per group",
                            filters.len()
                        ),
                    ));
                }
                let mut group = Vec::new();
                for (fi, f) in filters.iter().enumerate() {
                    let at = format!("filterGroups[{gi}].filters[{fi}]");
                    let property = f.get("propertyName").and_then(Value::as_str);
                    let op = f.get("operator").and_then(Value::as_str);
                    let (Some(property), Some(op_text)) = (property, op) else {
                        errors.push(FieldError::new(
                            &at,
                            "REQUIRED",
                            format!("{at} needs propertyName and operator"),
                        ));
                        continue;
                    };
                    let Some(op) = Op::parse(op_text) else {
                        errors.push(FieldError::new(
                            format!("{at}.operator"),
                            "INVALID_OPERATOR",
                            format!("{at}.operator \"{op_text}\" is not one of EQ, NEQ, LT, LTE, GT, GTE, BETWEEN, IN, NOT_IN, HAS_PROPERTY, NOT_HAS_PROPERTY, CONTAINS_TOKEN, NOT_CONTAINS_TOKEN"),
                        ));
                        continue;
                    };
                    let value = f.get("value").and_then(text);
                    let values: Vec<String> = f
                        .get("values")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(text).collect())
                        .unwrap_or_default();
                    let high_value = f.get("highValue").and_then(text);
                    let needs_value = !matches!(
                        op,
                        Op::HasProperty | Op::NotHasProperty | Op::In | Op::NotIn
                    );
                    if needs_value && value.is_none() {
                        errors.push(FieldError::new(
                            format!("{at}.value"),
                            "REQUIRED",
                            format!("{at}.value is required for {op_text}"),
                        ));
                    }
                    if matches!(op, Op::In | Op::NotIn) && values.is_empty() {
                        errors.push(FieldError::new(
                            format!("{at}.values"),
                            "REQUIRED",
                            format!("{at}.values is required for {op_text}"),
                        ));
                    }
                    if op == Op::Between && high_value.is_none() {
                        errors.push(FieldError::new(
                            format!("{at}.highValue"),
                            "REQUIRED",
                            format!("{at}.highValue is required for BETWEEN"),
                        ));
                    }
                    group.push(Filter {
                        property: property.to_string(),
                        op,
                        value,
                        values,
                        high_value,
                    });
                }
                groups.push(group);
            }
        }
        Some(_) => errors.push(FieldError::new(
            "filterGroups",
            "INVALID_TYPE",
            "filterGroups must be an array",
        )),
    }
    let mut sorts = Vec::new();
    if let Some(Value::Array(ss)) = obj.get("sorts") {
        for (i, s) in ss.iter().enumerate() {
            match s {
                Value::String(name) => {
                    // "-name" sorts descending, as some clients send.
                    match name.strip_prefix('-') {
                        Some(n) => sorts.push((n.to_string(), true)),
                        None => sorts.push((name.clone(), false)),
                    }
                }
                Value::Object(o) => match o.get("propertyName").and_then(Value::as_str) {
                    Some(n) => {
                        let desc = o.get("direction").and_then(Value::as_str) == Some("DESCENDING");
                        sorts.push((n.to_string(), desc));
                    }
                    None => errors.push(FieldError::new(
                        format!("sorts[{i}]"),
                        "REQUIRED",
                        format!("sorts[{i}] needs propertyName"),
                    )),
                },
                _ => errors.push(FieldError::new(
                    format!("sorts[{i}]"),
                    "INVALID_TYPE",
                    format!("sorts[{i}] must be a property name or {{propertyName, direction}}"),
                )),
            }
        }
    }
    let query = obj
        .get("query")
        .and_then(Value::as_str)
        .map(str::to_string)
        .filter(|q| !q.trim().is_empty());
    if query.as_ref().is_some_and(|q| q.len() > 3000) {
        errors.push(FieldError::new(
            "query",
            "QUERY_TOO_LONG",
            "query is longer than 3000 characters",
        ));
    }
    let properties = obj.get("properties").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    });
    let limit = match obj.get("limit") {
        None | Some(Value::Null) => 10,
        Some(v) => match v.as_u64() {
            Some(n) if n as usize <= MAX_LIMIT => n as usize,
            _ => {
                errors.push(FieldError::new(
                    "limit",
                    "INVALID_LIMIT",
                    format!("limit must be an integer from 0 to {MAX_LIMIT}, got {v}"),
                ));
                10
            }
        },
    };
    let after = match obj.get("after") {
        None | Some(Value::Null) => 0,
        Some(v) => match text(v).and_then(|t| t.parse::<usize>().ok()) {
            Some(n) => n,
            None => {
                errors.push(FieldError::new(
                    "after",
                    "INVALID_CURSOR",
                    format!("after must be a cursor from paging.next.after, got {v}"),
                ));
                0
            }
        },
    };
    if after + limit > MAX_RESULTS {
        errors.push(FieldError::new(
            "after",
            "RESULT_LIMIT_EXCEEDED",
            format!("Search returns at most {MAX_RESULTS} results; after {after} with limit {limit} goes past that"),
        ));
    }
    if errors.is_empty() {
        Ok(SearchRequest {
            groups,
            sorts,
            query,
            properties,
            limit,
            after,
        })
    } else {
        Err(errors)
    }
}

/// Properties compared as phone numbers.
pub fn is_phone_property(name: &str) -> bool {
    matches!(name, "phone" | "mobilephone" | "hs_whatsapp_phone_number")
}

/// Derived digit properties compared by national digits.
pub fn is_searchable_phone(name: &str) -> bool {
    name.starts_with("hs_searchable_calculated_")
        || (name.starts_with("hs_calculated_") && !name.ends_with("country_code"))
}

fn digits(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_digit()).collect()
}

/// Evaluates search filters and free text against records of one portal.
pub struct Evaluator<'a> {
    pub catalog: &'a Catalog,
    pub default_region: Region,
}

impl Evaluator<'_> {
    /// Whether the record passes the request's groups and query.
    pub fn matches(&self, r: &Record, req: &SearchRequest) -> bool {
        let groups_ok = req.groups.is_empty()
            || req
                .groups
                .iter()
                .any(|g| g.iter().all(|f| self.filter(r, f)));
        groups_ok && req.query.as_deref().is_none_or(|q| self.query(r, q))
    }

    fn phone_equal(&self, r: &Record, property: &str, stored: &str, wanted: &str) -> bool {
        if stored.trim().eq_ignore_ascii_case(wanted.trim()) {
            return true;
        }
        let country = r
            .properties
            .get("country")
            .and_then(|c| region_from_country(c));
        let a = normalize::normalize(stored, country, self.default_region);
        let b = normalize::normalize(wanted, country, self.default_region);
        if let (Some(x), Some(y)) = (&a.e164, &b.e164)
            && x == y
        {
            return true;
        }
        if is_searchable_phone(property)
            || a.source == Some(normalize::RegionSource::Default)
            || b.source == Some(normalize::RegionSource::Default)
        {
            let (x, y) = (digits(stored), digits(wanted));
            let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            if !x.is_empty() && x == y {
                return true;
            }
            if let (Some(k), Some(n)) = (
                a.national_key,
                b.nsn.as_deref().and_then(normalize::national_key_of),
            ) {
                return k == n;
            }
        }
        false
    }

    fn compare(&self, property: &str, stored: &str, wanted: &str) -> Option<std::cmp::Ordering> {
        match self.catalog.kind(property).as_str() {
            "number" => stored
                .trim()
                .parse::<f64>()
                .ok()?
                .partial_cmp(&wanted.trim().parse::<f64>().ok()?),
            "datetime" => Some(clock::parse_datetime(stored)?.cmp(&clock::parse_datetime(wanted)?)),
            "date" => Some(clock::parse_date(stored)?.cmp(&clock::parse_date(wanted)?)),
            _ => Some(stored.to_lowercase().cmp(&wanted.to_lowercase())),
        }
    }

    fn equal(&self, r: &Record, property: &str, stored: &str, wanted: &str) -> bool {
        if is_phone_property(property) || is_searchable_phone(property) {
            return self.phone_equal(r, property, stored, wanted);
        }
        self.compare(property, stored, wanted) == Some(std::cmp::Ordering::Equal)
    }

    fn filter(&self, r: &Record, f: &Filter) -> bool {
        use std::cmp::Ordering::*;
        let stored = crm::property_value(r, &f.property).filter(|v| !v.is_empty());
        let value = f.value.as_deref().unwrap_or("");
        match (f.op, stored.as_deref()) {
            (Op::HasProperty, s) => s.is_some(),
            (Op::NotHasProperty, s) => s.is_none(),
            (Op::Neq, None) | (Op::NotIn, None) | (Op::NotContainsToken, None) => true,
            (_, None) => false,
            (Op::Eq, Some(s)) => self.equal(r, &f.property, s, value),
            (Op::Neq, Some(s)) => !self.equal(r, &f.property, s, value),
            (Op::In, Some(s)) => f.values.iter().any(|v| self.equal(r, &f.property, s, v)),
            (Op::NotIn, Some(s)) => !f.values.iter().any(|v| self.equal(r, &f.property, s, v)),
            (Op::Lt, Some(s)) => self.compare(&f.property, s, value) == Some(Less),
            (Op::Lte, Some(s)) => matches!(self.compare(&f.property, s, value), Some(Less | Equal)),
            (Op::Gt, Some(s)) => self.compare(&f.property, s, value) == Some(Greater),
            (Op::Gte, Some(s)) => {
                matches!(self.compare(&f.property, s, value), Some(Greater | Equal))
            }
            (Op::Between, Some(s)) => {
                let high = f.high_value.as_deref().unwrap_or("");
                matches!(self.compare(&f.property, s, value), Some(Greater | Equal))
                    && matches!(self.compare(&f.property, s, high), Some(Less | Equal))
            }
            (Op::ContainsToken, Some(s)) => contains_token(s, value),
            (Op::NotContainsToken, Some(s)) => !contains_token(s, value),
        }
    }

    fn query(&self, r: &Record, q: &str) -> bool {
        let fields: &[&str] = match r.object_type {
            ObjectType::Contact => &[
                "firstname",
                "lastname",
                "email",
                "phone",
                "mobilephone",
                "company",
                "hs_whatsapp_phone_number",
            ],
            ObjectType::Company => &["name", "domain", "website", "phone"],
            ObjectType::Call => &[
                "hs_call_title",
                "hs_call_body",
                "hs_call_from_number",
                "hs_call_to_number",
            ],
        };
        let q_digits = digits(q);
        q.split_whitespace().all(|word| {
            let word = word.to_lowercase();
            fields.iter().any(|f| {
                let Some(v) = r.properties.get(*f) else {
                    return false;
                };
                if is_phone_property(f) && q_digits.len() >= 4 {
                    let d = digits(v);
                    let e164 = normalize::normalize(v, None, self.default_region)
                        .e164
                        .map(|e| digits(&e))
                        .unwrap_or_default();
                    if d.contains(q_digits.trim_start_matches('0')) || e164.contains(&q_digits) {
                        return true;
                    }
                }
                v.to_lowercase()
                    .split(|c: char| !c.is_alphanumeric() && c != '@' && c != '.')
                    .any(|t| t.starts_with(&word))
                    || v.to_lowercase().starts_with(&word)
            })
        })
    }

    /// Orders records by the request's sorts, then by id.
    pub fn sort(&self, records: &mut [Record], sorts: &[(String, bool)]) {
        records.sort_by(|a, b| {
            for (prop, desc) in sorts {
                let x = crm::property_value(a, prop);
                let y = crm::property_value(b, prop);
                let ord = match (x.as_deref(), y.as_deref()) {
                    (Some(x), Some(y)) => self
                        .compare(prop, x, y)
                        .unwrap_or(std::cmp::Ordering::Equal),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                };
                let ord = if *desc { ord.reverse() } else { ord };
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
            a.id.cmp(&b.id)
        });
    }
}

/// HubSpot's CONTAINS_TOKEN: a whole-word match, with `*` as a wildcard.
fn contains_token(stored: &str, token: &str) -> bool {
    let token = token.to_lowercase();
    let stored = stored.to_lowercase();
    if token.contains('*') {
        let pattern = token.replace('*', "");
        return if token.starts_with('*') && token.ends_with('*') {
            stored.contains(&pattern)
        } else if token.starts_with('*') {
            stored.split_whitespace().any(|w| w.ends_with(&pattern)) || stored.ends_with(&pattern)
        } else {
            stored.split_whitespace().any(|w| w.starts_with(&pattern))
        };
    }
    stored
        .split(|c: char| !c.is_alphanumeric() && c != '@' && c != '.' && c != '+')
        .any(|w| w == token)
}

/// The index probes a phone `EQ` filter allows: the records that could pass it are among those
/// holding a number of this E.164 or of one of these national keys.
#[derive(Debug, Default, PartialEq)]
pub struct PhoneProbe {
    pub e164: Option<String>,
    pub national_keys: Vec<u64>,
}

/// For a group, the probe its first phone `EQ` filter allows; `None` when the group needs a
/// scan.
///
/// The national keys are every reading of the wanted digits that [`Evaluator::phone_equal`]
/// may compare a record's key with: the key normalising gives, the key of its national
/// significant number, and the typed digits with trunk zeros dropped. They differ when the
/// default region reads a country code into the digits: in a US portal `15123456780` is
/// +1 512-345-6780 (key 5123456780), and also a German mobile's national digits (key
/// 15123456780), which a derived `hs_searchable_calculated_*` value matches digit for digit.
pub fn phone_probe(group: &[Filter], region: Region) -> Option<PhoneProbe> {
    group.iter().find_map(|f| {
        if f.op != Op::Eq || !(is_phone_property(&f.property) || is_searchable_phone(&f.property)) {
            return None;
        }
        let v = f.value.as_deref()?;
        let n = normalize::normalize(v, None, region);
        let mut national_keys: Vec<u64> = [
            n.national_key,
            n.nsn.as_deref().and_then(normalize::national_key_of),
            normalize::national_key_of(&digits(v)),
        ]
        .into_iter()
        .flatten()
        .collect();
        national_keys.sort_unstable();
        national_keys.dedup();
        (n.e164.is_some() || !national_keys.is_empty()).then_some(PhoneProbe {
            e164: n.e164,
            national_keys,
        })
    })
}
