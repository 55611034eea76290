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

/// A property definition, built in or custom (HubSpot's `Property`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyDef {
    pub name: String,
    pub label: String,
    /// `string`, `number`, `enumeration`, `datetime`, `date`, `bool` or `phone_number`.
    #[serde(rename = "type")]
    pub kind: String,
    pub field_type: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub group_name: String,
    #[serde(default)]
    pub options: Vec<PropertyOption>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub hubspot_defined: bool,
    #[serde(default)]
    pub created_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyOption {
    pub label: String,
    pub value: String,
    #[serde(default)]
    pub display_order: i64,
    #[serde(default)]
    pub hidden: bool,
}

pub const PROPERTY_TYPES: &[&str] = &[
    "string",
    "number",
    "enumeration",
    "datetime",
    "date",
    "bool",
    "phone_number",
];

/// Built-in properties: (name, type, fieldType, read-only).
type Builtin = (&'static str, &'static str, &'static str, bool);

const CONTACT_PROPERTIES: &[Builtin] = &[
    ("firstname", "string", "text", false),
    ("lastname", "string", "text", false),
    ("email", "string", "text", false),
    ("phone", "string", "phonenumber", false),
    ("mobilephone", "string", "phonenumber", false),
    ("hs_whatsapp_phone_number", "string", "phonenumber", false),
    ("fax", "string", "phonenumber", false),
    ("company", "string", "text", false),
    ("website", "string", "text", false),
    ("jobtitle", "string", "text", false),
    ("address", "string", "text", false),
    ("city", "string", "text", false),
    ("state", "string", "text", false),
    ("zip", "string", "text", false),
    ("country", "string", "text", false),
    ("lifecyclestage", "enumeration", "radio", false),
    ("hs_lead_status", "enumeration", "radio", false),
    ("hubspot_owner_id", "string", "text", false),
    ("associatedcompanyid", "number", "number", false),
    ("hs_object_id", "number", "number", true),
    ("createdate", "datetime", "date", true),
    ("lastmodifieddate", "datetime", "date", true),
    ("hs_calculated_phone_number", "string", "text", true),
    (
        "hs_calculated_phone_number_country_code",
        "string",
        "text",
        true,
    ),
    (
        "hs_searchable_calculated_phone_number",
        "string",
        "text",
        true,
    ),
    ("hs_calculated_mobile_number", "string", "text", true),
    (
        "hs_calculated_mobile_number_country_code",
        "string",
        "text",
        true,
    ),
    (
        "hs_searchable_calculated_mobile_number",
        "string",
        "text",
        true,
    ),
];
const COMPANY_PROPERTIES: &[Builtin] = &[
    ("name", "string", "text", false),
    ("domain", "string", "text", false),
    ("phone", "string", "phonenumber", false),
    ("website", "string", "text", false),
    ("address", "string", "text", false),
    ("city", "string", "text", false),
    ("state", "string", "text", false),
    ("zip", "string", "text", false),
    ("country", "string", "text", false),
    ("industry", "string", "text", false),
    ("description", "string", "textarea", false),
    ("numberofemployees", "number", "number", false),
    ("annualrevenue", "number", "number", false),
    ("type", "enumeration", "select", false),
    ("lifecyclestage", "enumeration", "radio", false),
    ("hubspot_owner_id", "string", "text", false),
    ("hs_object_id", "number", "number", true),
    ("createdate", "datetime", "date", true),
    ("hs_lastmodifieddate", "datetime", "date", true),
    ("hs_calculated_phone_number", "string", "text", true),
    (
        "hs_calculated_phone_number_country_code",
        "string",
        "text",
        true,
    ),
    (
        "hs_searchable_calculated_phone_number",
        "string",
        "text",
        true,
    ),
];
const CALL_PROPERTIES: &[Builtin] = &[
    ("hs_timestamp", "datetime", "date", false),
    ("hs_call_title", "string", "text", false),
    ("hs_call_body", "string", "html", false),
    ("hs_call_direction", "string", "text", false),
    ("hs_call_status", "string", "text", false),
    ("hs_call_disposition", "string", "text", false),
    ("hs_call_duration", "number", "number", false),
    ("hs_call_from_number", "string", "text", false),
    ("hs_call_to_number", "string", "text", false),
    ("hs_call_recording_url", "string", "text", false),
    ("hs_call_source", "string", "text", false),
    ("hs_call_external_id", "string", "text", false),
    ("hs_call_external_account_id", "string", "text", false),
    ("hs_call_app_id", "number", "number", false),
    ("hs_call_callee_object_id", "number", "number", false),
    ("hs_call_callee_object_type_id", "string", "text", false),
    ("hs_call_callee_object_type", "string", "text", false),
    ("hubspot_owner_id", "string", "text", false),
    ("hs_activity_type", "string", "text", false),
    ("hs_attachment_ids", "string", "text", false),
    ("hs_object_id", "number", "number", true),
    ("hs_createdate", "datetime", "date", true),
    ("hs_lastmodifieddate", "datetime", "date", true),
];

fn builtins(ty: ObjectType) -> &'static [Builtin] {
    match ty {
        ObjectType::Contact => CONTACT_PROPERTIES,
        ObjectType::Company => COMPANY_PROPERTIES,
        ObjectType::Call => CALL_PROPERTIES,
    }
}

/// The options of HubSpot's built-in dropdowns, as (label, internal value) in HubSpot's order:
/// records store the value, and an export (so an import) gives the label.
const LIFECYCLE_STAGES: &[(&str, &str)] = &[
    ("Subscriber", "subscriber"),
    ("Lead", "lead"),
    ("Marketing Qualified Lead", "marketingqualifiedlead"),
    ("Sales Qualified Lead", "salesqualifiedlead"),
    ("Opportunity", "opportunity"),
    ("Customer", "customer"),
    ("Evangelist", "evangelist"),
    ("Other", "other"),
];
const LEAD_STATUSES: &[(&str, &str)] = &[
    ("New", "NEW"),
    ("Open", "OPEN"),
    ("In Progress", "IN_PROGRESS"),
    ("Open Deal", "OPEN_DEAL"),
    ("Unqualified", "UNQUALIFIED"),
    ("Attempted to Contact", "ATTEMPTED_TO_CONTACT"),
    ("Connected", "CONNECTED"),
    ("Bad Timing", "BAD_TIMING"),
];
const COMPANY_TYPES: &[(&str, &str)] = &[
    ("Prospect", "PROSPECT"),
    ("Partner", "PARTNER"),
    ("Reseller", "RESELLER"),
    ("Vendor", "VENDOR"),
    ("Other", "OTHER"),
];

fn builtin_options(ty: ObjectType, name: &str) -> &'static [(&'static str, &'static str)] {
    match (ty, name) {
        (ObjectType::Contact | ObjectType::Company, "lifecyclestage") => LIFECYCLE_STAGES,
        (ObjectType::Contact, "hs_lead_status") => LEAD_STATUSES,
        (ObjectType::Company, "type") => COMPANY_TYPES,
        _ => &[],
    }
}

fn builtin_def(b: &Builtin, ty: ObjectType) -> PropertyDef {
    PropertyDef {
        name: b.0.to_string(),
        label: b.0.replace('_', " "),
        kind: b.1.to_string(),
        field_type: b.2.to_string(),
        description: String::new(),
        group_name: match ty {
            ObjectType::Contact => "contactinformation",
            ObjectType::Company => "companyinformation",
            ObjectType::Call => "callinformation",
        }
        .to_string(),
        options: builtin_options(ty, b.0)
            .iter()
            .enumerate()
            .map(|(i, (label, value))| PropertyOption {
                label: label.to_string(),
                value: value.to_string(),
                display_order: i as i64,
                hidden: false,
            })
            .collect(),
        read_only: b.3,
        hubspot_defined: true,
        created_at: None,
    }
}

/// The properties of one object type in one portal: HubSpot's built-ins plus custom ones.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub object_type: ObjectType,
    pub custom: Vec<PropertyDef>,
}

impl Catalog {
    pub fn builtin(object_type: ObjectType) -> Self {
        Catalog {
            object_type,
            custom: Vec::new(),
        }
    }

    /// Every property, built-ins first.
    pub fn all(&self) -> Vec<PropertyDef> {
        builtins(self.object_type)
            .iter()
            .map(|b| builtin_def(b, self.object_type))
            .chain(self.custom.iter().cloned())
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<PropertyDef> {
        builtins(self.object_type)
            .iter()
            .find(|b| b.0 == name)
            .map(|b| builtin_def(b, self.object_type))
            .or_else(|| self.custom.iter().find(|p| p.name == name).cloned())
    }

    /// The value type of a property (`string` when unknown).
    pub fn kind(&self, name: &str) -> String {
        builtins(self.object_type)
            .iter()
            .find(|b| b.0 == name)
            .map(|b| b.1.to_string())
            .or_else(|| {
                self.custom
                    .iter()
                    .find(|p| p.name == name)
                    .map(|p| p.kind.clone())
            })
            .unwrap_or_else(|| "string".into())
    }

    /// Checks that a name may be written on this type.
    pub fn check_writable(&self, name: &str) -> Result<PropertyDef, PropertyError> {
        match self.get(name) {
            Some(p) if !p.read_only => Ok(p),
            Some(_) => Err(PropertyError {
                property: name.to_string(),
                message: format!("Property \"{name}\" is read-only"),
                code: "READ_ONLY_VALUE",
            }),
            None => Err(PropertyError {
                property: name.to_string(),
                message: format!(
                    "Property \"{name}\" does not exist on {}",
                    self.object_type.plural()
                ),
                code: "PROPERTY_DOESNT_EXIST",
            }),
        }
    }
}

/// Loads a portal's custom property definitions from the store.
pub async fn custom_definitions(
    store: &dyn crate::store::Store,
    portal_id: i64,
) -> crate::store::StoreResult<Vec<(ObjectType, PropertyDef)>> {
    let mut all = Vec::new();
    for (t, json) in store.custom_properties(portal_id).await? {
        let def: PropertyDef = serde_json::from_str(&json)
            .map_err(|e| crate::store::StoreError::Corrupt(format!("custom property: {e}")))?;
        all.push((t, def));
    }
    Ok(all)
}

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

/// Properties every read returns, asked for or not: HubSpot calls them basic system fields that
/// cannot be left out (hubspot-api-python#357, a maintainer's answer; its example responses
/// show them beside the properties asked for).
pub fn system_properties(ty: ObjectType) -> &'static [&'static str] {
    match ty {
        ObjectType::Contact => &["createdate", "hs_object_id", "lastmodifieddate"],
        ObjectType::Company => &["createdate", "hs_lastmodifieddate", "hs_object_id"],
        ObjectType::Call => &["hs_createdate", "hs_lastmodifieddate", "hs_object_id"],
    }
}

/// Why a property could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyError {
    pub property: String,
    pub message: String,
    pub code: &'static str,
}

/// Turns a `properties` JSON object into strings, checking every name and value against the
/// catalog. Numbers and booleans are accepted as their text (the SDKs send strings;
/// hand-written clients often do not); `null` clears the property.
pub fn parse_properties(
    catalog: &Catalog,
    value: &Map<String, Value>,
) -> Result<BTreeMap<String, Option<String>>, Vec<PropertyError>> {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, v) in value {
        let def = match catalog.check_writable(name) {
            Ok(d) => d,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
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
        match text.map(|t| coerce_value(&def, t)).transpose() {
            Ok(v) => {
                out.insert(name.clone(), v);
            }
            Err(message) => errors.push(PropertyError {
                property: name.clone(),
                message,
                code: value_error_code(&def),
            }),
        }
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

/// Checks a value against its property's type and returns it in stored form: datetimes as
/// ISO-8601, dates as `YYYY-MM-DD`, booleans lower-case. An empty string clears any type.
pub fn coerce_value(def: &PropertyDef, value: String) -> Result<String, String> {
    let name = &def.name;
    if value.is_empty() {
        return Ok(value);
    }
    if name == "email" {
        return check_email(&value);
    }
    match def.kind.as_str() {
        "number" => value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|_| value.trim().to_string())
            .ok_or_else(|| format!("Property \"{name}\" is a number; \"{value}\" is not")),
        "bool" => match value.to_ascii_lowercase().as_str() {
            "true" | "false" => Ok(value.to_ascii_lowercase()),
            _ => Err(format!("Property \"{name}\" is a bool; it takes true or false, not \"{value}\"")),
        },
        "datetime" => clock::parse_datetime(&value).map(clock::iso).ok_or_else(|| {
            format!("Property \"{name}\" is a datetime; it takes epoch milliseconds or ISO-8601, not \"{value}\"")
        }),
        "date" => clock::parse_date(&value).ok_or_else(|| {
            format!("Property \"{name}\" is a date; it takes YYYY-MM-DD or epoch milliseconds at midnight UTC, not \"{value}\"")
        }),
        "enumeration" => {
            let parts: Vec<&str> = value.split(';').collect();
            match parts.iter().find(|p| !def.options.iter().any(|o| o.value == **p)) {
                None => Ok(value),
                Some(bad) => Err(format!(
                    "Property \"{name}\" has no option \"{bad}\"; its options are {}",
                    def.options.iter().map(|o| o.value.as_str()).collect::<Vec<_>>().join(", ")
                )),
            }
        }
        _ => Ok(value),
    }
}

/// The `errors[].code` of a value [`coerce_value`] refused: HubSpot's own code for a malformed
/// email, which integrations match on, and a generic one for the rest.
pub fn value_error_code(def: &PropertyDef) -> &'static str {
    if def.name == "email" {
        "INVALID_EMAIL"
    } else {
        "INVALID_PROPERTY_VALUE"
    }
}

/// A contact's email as HubSpot takes it, or why not: HubSpot refuses a malformed address
/// (`INVALID_EMAIL`) rather than store a contact nobody can email or find by it. The check is
/// the shape, not deliverability: one `@`, a name before it, and a domain of dot-separated
/// labels after it. Surrounding spaces are dropped, as a pasted cell often has them.
pub fn check_email(value: &str) -> Result<String, String> {
    let email = value.trim();
    let invalid = |why: &str| Err(format!("Email address \"{value}\" is invalid: {why}"));
    let Some((local, domain)) = email.split_once('@') else {
        return invalid("it has no @");
    };
    if domain.contains('@') {
        return invalid("it has more than one @");
    }
    if let Some(c) = email.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return invalid(&format!("it contains {c:?}"));
    }
    if local.is_empty() {
        return invalid("nothing comes before the @");
    }
    if local.len() > 64 {
        return invalid("the part before the @ is longer than 64 characters");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return invalid("the part before the @ starts or ends with a dot, or has two in a row");
    }
    // Bytes, not chars: every forbidden character is ASCII, and no byte of a multi-byte character
    // is (an import checks a million of these in a row).
    if let Some(&b) = local
        .as_bytes()
        .iter()
        .find(|b| b"()<>[]\\,;:\"".contains(b))
    {
        return invalid(&format!("{:?} is not allowed before the @", b as char));
    }
    if !domain.contains('.') {
        return invalid("the domain after the @ has no dot, as in example.com");
    }
    for label in domain.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-');
        if !ok {
            return invalid(&format!(
                "\"{label}\" is not a domain label (letters, digits and inner hyphens)"
            ));
        }
    }
    Ok(email.to_string())
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
        source: "API",
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
/// With `requested`, those names (a defined property without a value is `null`, as HubSpot
/// does; the caller leaves out names no property has) and the type's system fields. Without,
/// the type's defaults plus, when `all_stored`, every stored property (create and update
/// responses echo what was written).
pub fn wire_properties(
    record: &Record,
    requested: Option<&[String]>,
    all_stored: bool,
) -> Map<String, Value> {
    let mut out = Map::new();
    let names: Vec<String> = match requested {
        Some(r) => system_properties(record.object_type)
            .iter()
            .map(|s| s.to_string())
            .chain(r.iter().cloned())
            .collect(),
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
