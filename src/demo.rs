//! The demo portal `serve --demo` seeds on an empty database: users, about fifty contacts and
//! ten companies whose numbers are typed the way people type them, in several countries.
//!
//! Numbers come from libphonenumber's own example numbers, varied in their last digits, so
//! every one is valid and the data is the same on every run.

use std::collections::BTreeMap;

use rlibphonenumber::{PHONE_NUMBER_UTIL, PhoneNumberFormat, PhoneNumberType, Region};

use crate::http::ApiError;
use crate::http::extract::{hash_token, new_token};
use crate::records;
use crate::state::AppState;
use crate::store::{AssociateMode, ObjectType, Portal};

pub const DEMO_PORTAL_ID: i64 = 62515;

/// Every scope Switchboard checks.
pub const ALL_SCOPES: &[&str] = &[
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.objects.companies.read",
    "crm.objects.companies.write",
    "crm.objects.calls.read",
    "crm.objects.calls.write",
    "crm.objects.owners.read",
    "crm.schemas.contacts.read",
    "crm.schemas.contacts.write",
    "crm.schemas.companies.read",
    "crm.schemas.companies.write",
    "settings.users.read",
    "settings.users.write",
    "switchboard.admin",
];

const FIRST: &[&str] = &[
    "Ada",
    "Grace",
    "Alan",
    "Katherine",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Radia",
    "Tim",
    "Frances",
    "Edsger",
    "Hedy",
    "John",
    "Sophie",
    "Niklaus",
    "Leslie",
    "Donald",
    "Joan",
    "Bjarne",
    "Adele",
    "Guido",
    "Anita",
    "James",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Turing",
    "Johnson",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Perlman",
    "Berners-Lee",
    "Allen",
    "Dijkstra",
    "Lamarr",
    "Backus",
    "Wilson",
    "Wirth",
    "Lamport",
    "Knuth",
    "Clarke",
    "Stroustrup",
    "Goldberg",
    "van Rossum",
    "Borg",
    "Gosling",
];
const COMPANIES: &[&str] = &[
    "Analytical Engines Ltd",
    "Cobol Works Inc",
    "Enigma Partners",
    "Orbital Mechanics SARL",
    "Kernel & Co GmbH",
    "Apollo Guidance SL",
    "Unix Heritage BV",
    "Spanning Tree Pty",
    "Lambda Kabushiki",
    "Packet Switch Ltda",
];
/// (region, country property as people write it, or "" to leave it out).
const PLACES: &[(&str, &str)] = &[
    ("US", ""),
    ("GB", "United Kingdom"),
    ("FR", "france"),
    ("DE", "DE"),
    ("ES", "Spain"),
    ("IT", ""),
    ("NL", "Netherlands"),
    ("AU", "Australia"),
    ("JP", "Japan"),
    ("BR", "brazil"),
];

/// A valid number of `region`, varied by `n` in its last two digits.
fn number(region: Region, kind: PhoneNumberType, n: usize) -> Option<rlibphonenumber::PhoneNumber> {
    let base = PHONE_NUMBER_UTIL
        .get_example_number_for_type_and_region(region, kind)
        .ok()?;
    for bump in 0..100u64 {
        let mut candidate = base.clone();
        let last2 = (base.national_number % 100 + n as u64 * 7 + bump) % 100;
        candidate.national_number = base.national_number - base.national_number % 100 + last2;
        if candidate.is_valid() {
            return Some(candidate);
        }
    }
    None
}

/// Writes a number the way a person might: the style rotates with `n`.
fn typed(num: &rlibphonenumber::PhoneNumber, n: usize, with_country: bool) -> String {
    let national = num.format_as(PhoneNumberFormat::National).into_owned();
    let intl = num.format_as(PhoneNumberFormat::International).into_owned();
    let e164 = num.format_as(PhoneNumberFormat::E164).into_owned();
    match (n % 6, with_country) {
        (0, _) => intl,
        (1, _) => e164,
        (2, true) => national,
        (2, false) => intl.replace(' ', "-"),
        (3, _) => format!("00{}", &e164[1..]),
        (4, true) => national.replace(' ', "."),
        (4, false) => format!("{intl} (mobile)"),
        _ => format!("{intl} ext. {}", 10 + n),
    }
}

/// Seeds the demo portal and returns its all-scopes token, or `None` when the database is not
/// empty (a demo never writes over real data).
pub async fn seed(state: &AppState) -> Result<Option<String>, ApiError> {
    if !state.store.portals().await?.is_empty() {
        return Ok(None);
    }
    state
        .store
        .create_portal(&Portal {
            id: DEMO_PORTAL_ID,
            default_region: "US".into(),
            associate: AssociateMode::Best,
            suffix_digits: None,
        })
        .await?;
    for (first, last) in [("Riley", "Operator"), ("Sam", "Support"), ("Jo", "Sales")] {
        let email = format!("{}@switchboard.example", first.to_lowercase());
        state
            .create_user(DEMO_PORTAL_ID, &email, first, last)
            .await?;
    }
    let mut company_ids = Vec::new();
    for (i, name) in COMPANIES.iter().enumerate() {
        let (code, country) = PLACES[i % PLACES.len()];
        let region: Region = code.parse().expect("known region");
        let mut props = BTreeMap::new();
        props.insert("name".to_string(), Some(name.to_string()));
        let slug: String = name
            .to_lowercase()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        props.insert("domain".to_string(), Some(format!("{slug}.example")));
        if !country.is_empty() {
            props.insert("country".to_string(), Some(country.to_string()));
        }
        if let Some(num) = number(region, PhoneNumberType::FixedLine, i + 50) {
            props.insert(
                "phone".to_string(),
                Some(typed(&num, i, !country.is_empty())),
            );
        }
        let rec =
            records::create(state, DEMO_PORTAL_ID, ObjectType::Company, props, vec![]).await?;
        company_ids.push(rec.id);
    }
    for i in 0..50 {
        let (code, country) = PLACES[i % PLACES.len()];
        let region: Region = code.parse().expect("known region");
        let first = FIRST[i % FIRST.len()];
        let last = LAST[(i * 7) % LAST.len()];
        let mut props = BTreeMap::new();
        props.insert("firstname".to_string(), Some(first.to_string()));
        props.insert("lastname".to_string(), Some(last.to_string()));
        props.insert(
            "email".to_string(),
            Some(format!(
                "{}.{}{i}@example.com",
                first.to_lowercase(),
                last.to_lowercase().replace(' ', "")
            )),
        );
        if !country.is_empty() {
            props.insert("country".to_string(), Some(country.to_string()));
        }
        if let Some(num) = number(region, PhoneNumberType::FixedLine, i) {
            props.insert(
                "phone".to_string(),
                Some(typed(&num, i, !country.is_empty())),
            );
        }
        if i % 3 == 0
            && let Some(num) = number(region, PhoneNumberType::Mobile, i)
        {
            props.insert(
                "mobilephone".to_string(),
                Some(typed(&num, i + 2, !country.is_empty())),
            );
        }
        let company = company_ids[i % company_ids.len()];
        let assocs = records::pair(
            (ObjectType::Contact, 0),
            (ObjectType::Company, company),
            1,
            "HUBSPOT_DEFINED",
        )
        .to_vec();
        records::create(state, DEMO_PORTAL_ID, ObjectType::Contact, props, assocs).await?;
    }
    let token = new_token();
    let scopes: Vec<String> = ALL_SCOPES.iter().map(|s| s.to_string()).collect();
    state
        .store
        .create_token(DEMO_PORTAL_ID, &hash_token(&token), &scopes)
        .await?;
    Ok(Some(token))
}

/// The E.164 number of the first demo contact, for the printed example call.
pub fn example_caller() -> String {
    let num = number(Region::US, PhoneNumberType::FixedLine, 0).expect("US example number");
    num.format_as(PhoneNumberFormat::E164).into_owned()
}
