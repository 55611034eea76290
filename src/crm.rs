//! CRM domain rules shared by the objects API and inbound-call: which properties exist, which
//! are read-only, how a write becomes stored properties plus phone rows, and how a record looks
//! on the wire.
//!
//! Facts from `../shared/docs/hubspot-api.md` §4.2, §5.1 and §5.3.

use std::collections::BTreeMap;

use rlibphonenumber::Region;
use serde_json::{Map, Value};

use crate::callerid::normalize::{self, region_from_country};
use crate::clock;
use crate::store::{ObjectType, PhoneRow, Properties, Record, RecordWrite};

const CONTACT_WRITABLE: &[&str] = &[
    "firstname",
    "lastname",
    "email",
    "phone",
    "mobilephone",
    "hs_whatsapp_phone_number",
    "fax",
    "company",
    "website",
    "jobtitle",
    "address",
    "city",
    "state",
    "zip",
    "country",
    "lifecyclestage",
    "hs_lead_status",
    "hubspot_owner_id",
    "notes_last_updated",
    "associatedcompanyid",
];
const COMPANY_WRITABLE: &[&str] = &[
    "name",
    "domain",
    "phone",
    "website",
    "address",
    "city",
    "state",
    "zip",
    "country",
    "industry",
    "description",
    "numberofemployees",
    "annualrevenue",
    "type",
    "lifecyclestage",
    "hubspot_owner_id",
];
const CALL_WRITABLE: &[&str] = &[
    "hs_timestamp",
    "hs_call_title",
    "hs_call_body",
    "hs_call_direction",
    "hs_call_status",
    "hs_call_disposition",
    "hs_call_duration",
    "hs_call_from_number",
    "hs_call_to_number",
    "hs_call_recording_url",
    "hs_call_source",
    "hs_call_external_id",
    "hs_call_external_account_id",
    "hs_call_app_id",
    "hs_call_callee_object_id",
    "hs_call_callee_object_type_id",
    "hs_call_callee_object_type",
    "hubspot_owner_id",
    "hs_activity_type",
    "hs_attachment_ids",
];

/// Properties the CRM computes; writing one is a 400.
const CONTACT_READ_ONLY: &[&str] = &[
    "hs_object_id",
    "createdate",
    "lastmodifieddate",
    "hs_calculated_phone_number",
    "hs_calculated_phone_number_country_code",
    "hs_searchable_calculated_phone_number",
    "hs_calculated_mobile_number",
    "hs_calculated_mobile_number_country_code",
    "hs_searchable_calculated_mobile_number",
];
const COMPANY_READ_ONLY: &[&str] = &[
    "hs_object_id",
    "createdate",
    "hs_lastmodifieddate",
    "hs_calculated_phone_number",
    "hs_calculated_phone_number_country_code",
    "hs_searchable_calculated_phone_number",
];
const CALL_READ_ONLY: &[&str] = &["hs_object_id", "hs_createdate", "hs_lastmodifieddate"];

/// Properties returned when a request names none (§5.1).
pub fn default_properties(ty: ObjectType) -> &'static [&'static str] {
    match ty {
        ObjectType::Contact => &[
            "createdate",
            "email",
            "firstname",
            "hs_object_id",
            "lastmodifieddate",
            "lastname",
        ],
        ObjectType::Company => &[
            "createdate",
            "domain",
            "hs_lastmodifieddate",
            "hs_object_id",
            "name",
        ],
        ObjectType::Call => &[
            "hs_createdate",
            "hs_lastmodifieddate",
            "hs_object_id",
            "hs_timestamp",
        ],
    }
}

pub fn is_writable(ty: ObjectType, name: &str) -> bool {
    match ty {
        ObjectType::Contact => CONTACT_WRITABLE.contains(&name),
        ObjectType::Company => COMPANY_WRITABLE.contains(&name),
        ObjectType::Call => CALL_WRITABLE.contains(&name),
    }
}

pub fn is_read_only(ty: ObjectType, name: &str) -> bool {
    match ty {
        ObjectType::Contact => CONTACT_READ_ONLY.contains(&name),
        ObjectType::Company => COMPANY_READ_ONLY.contains(&name),
        ObjectType::Call => CALL_READ_ONLY.contains(&name),
    }
}

/// Why a property could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyError {
    pub property: String,
    pub message: String,
    pub code: &'static str,
}

/// Checks that a name may be written on this type.
pub fn check_writable(ty: ObjectType, name: &str) -> Result<(), PropertyError> {
    if is_writable(ty, name) {
        Ok(())
    } else if is_read_only(ty, name) {
        Err(PropertyError {
            property: name.to_string(),
            message: format!("Property \"{name}\" is read-only"),
            code: "READ_ONLY_VALUE",
        })
    } else {
        Err(PropertyError {
            property: name.to_string(),
            message: format!("Property \"{name}\" does not exist"),
            code: "PROPERTY_DOESNT_EXIST",
        })
    }
}

/// Turns a `properties` JSON object into strings, checking every name. Numbers and booleans
/// are accepted as their text (the SDKs send strings; hand-written clients often do not);
/// `null` clears the property.
pub fn parse_properties(
    ty: ObjectType,
    value: &Map<String, Value>,
) -> Result<BTreeMap<String, Option<String>>, Vec<PropertyError>> {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, v) in value {
        if let Err(e) = check_writable(ty, name) {
            errors.push(e);
            continue;
        }
        let text = match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => None,
            _ => {
                errors.push(PropertyError {
                    property: name.clone(),
                    message: format!("Property \"{name}\" must be a string, not {}", kind(v)),
                    code: "INVALID_TYPE",
                });
                continue;
            }
        };
        if let Some(t) = &text
            && let Err(message) = check_value(ty, name, t)
        {
            errors.push(PropertyError {
                property: name.clone(),
                message,
                code: "INVALID_PROPERTY_VALUE",
            });
            continue;
        }
        out.insert(name.clone(), text.map(|t| normalise_value(name, t)));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_value(_ty: ObjectType, name: &str, value: &str) -> Result<(), String> {
    match name {
        "hs_timestamp" if !value.is_empty() && clock::parse_datetime(value).is_none() => {
            Err(format!(
                "Property \"{name}\" must be epoch milliseconds or an ISO-8601 date-time, got \"{value}\""
            ))
        }
        "hs_call_duration" | "numberofemployees" | "annualrevenue"
            if !value.is_empty() && value.parse::<f64>().is_err() =>
        {
            Err(format!(
                "Property \"{name}\" must be a number, got \"{value}\""
            ))
        }
        _ => Ok(()),
    }
}

/// Datetimes are stored in the ISO form HubSpot returns.
fn normalise_value(name: &str, value: String) -> String {
    if name == "hs_timestamp"
        && let Some(ms) = clock::parse_datetime(&value)
    {
        return clock::iso(ms);
    }
    value
}

/// The derived properties for one phone property: (E.164, country code, searchable digits).
fn derived_names(ty: ObjectType, property: &str) -> Option<[&'static str; 3]> {
    match (ty, property) {
        (ObjectType::Contact | ObjectType::Company, "phone") => Some([
            "hs_calculated_phone_number",
            "hs_calculated_phone_number_country_code",
            "hs_searchable_calculated_phone_number",
        ]),
        (ObjectType::Contact, "mobilephone") => Some([
            "hs_calculated_mobile_number",
            "hs_calculated_mobile_number_country_code",
            "hs_searchable_calculated_mobile_number",
        ]),
        _ => None,
    }
}

/// The phone properties caller ID reads on this type.
pub fn phone_properties(ty: ObjectType) -> &'static [&'static str] {
    match ty {
        ObjectType::Contact => &["phone", "mobilephone", "hs_whatsapp_phone_number"],
        ObjectType::Company => &["phone"],
        ObjectType::Call => &[],
    }
}

/// Applies a change to stored properties and recomputes everything derived from them: the
/// calculated phone properties and the phone rows of the caller-ID index. Recomputing on every
/// write (not only writes of `phone`) keeps them right when `country` changes.
pub fn apply_write(
    ty: ObjectType,
    mut props: Properties,
    change: BTreeMap<String, Option<String>>,
    default_region: Region,
) -> RecordWrite {
    for (k, v) in change {
        match v {
            Some(v) => {
                props.insert(k, v);
            }
            None => {
                props.remove(&k);
            }
        }
    }
    for p in phone_properties(ty) {
        if let Some(names) = derived_names(ty, p) {
            for n in names {
                props.remove(n);
            }
        }
    }
    let country = props.get("country").and_then(|c| region_from_country(c));
    let mut phones = Vec::new();
    for p in phone_properties(ty) {
        let Some(raw) = props.get(*p).filter(|v| !v.trim().is_empty()).cloned() else {
            continue;
        };
        let n = normalize::normalize(&raw, country, default_region);
        if let Some(names) = derived_names(ty, p)
            && n.valid
            && let Some(e164) = &n.e164
        {
            props.insert(names[0].to_string(), e164.clone());
            if let Some(region) = &n.region {
                props.insert(names[1].to_string(), region.clone());
            }
            if let Some(nsn) = &n.nsn {
                props.insert(names[2].to_string(), nsn.clone());
            }
        }
        phones.push(PhoneRow {
            object_id: 0,
            object_type: ty,
            property: (*p).to_string(),
            raw,
            e164: n.e164,
            national_key: n.national_key.map(|k| k as i64),
            extension: n.extension,
            source: n.source.map(|s| s.as_str().to_string()),
            region: n.region,
        });
    }
    RecordWrite {
        properties: props,
        phones,
    }
}

/// Phone rows with the record id filled in.
pub fn with_object_id(mut rows: Vec<PhoneRow>, id: i64) -> Vec<PhoneRow> {
    for r in &mut rows {
        r.object_id = id;
    }
    rows
}

/// The value of a property as the API shows it, including the ones computed from columns.
pub fn property_value(record: &Record, name: &str) -> Option<String> {
    match name {
        "hs_object_id" => Some(record.id.to_string()),
        "createdate" | "hs_createdate" => Some(clock::iso(record.created_at)),
        "lastmodifieddate" | "hs_lastmodifieddate" => Some(clock::iso(record.updated_at)),
        _ => record.properties.get(name).cloned(),
    }
}

/// The `properties` object of a record on the wire.
///
/// With `requested`, exactly those names (a missing value is `null`, as HubSpot does). Without,
/// the type's defaults plus, when `all_stored`, every stored property (create and update
/// responses echo what was written).
pub fn wire_properties(
    record: &Record,
    requested: Option<&[String]>,
    all_stored: bool,
) -> Map<String, Value> {
    let mut out = Map::new();
    let names: Vec<String> = match requested {
        Some(r) => r.to_vec(),
        None => {
            let mut n: Vec<String> = default_properties(record.object_type)
                .iter()
                .map(|s| s.to_string())
                .collect();
            if all_stored {
                n.extend(record.properties.keys().cloned());
            }
            n
        }
    };
    for name in names {
        let v = property_value(record, &name).map_or(Value::Null, Value::String);
        out.insert(name, v);
    }
    out
}
