//! Record writes that keep the caller-ID index exact.
//!
//! Every create, update and archive goes through here: it takes the write gate, commits to
//! the store, then applies the committed phone-row diff to the index. The HTTP layer, the demo
//! seed and the CLI all call these, so there is one path by which numbers enter caller ID.

use std::collections::BTreeMap;

use crate::callerid::normalize::region_code;
use crate::clock;
use crate::crm;
use crate::http::ApiError;
use crate::state::AppState;
use crate::store::{Association, ObjectType, Properties, Record};

/// HubSpot association types this server knows: (type id, from, to, inverse type id, name).
pub const ASSOCIATION_TYPES: &[(i64, ObjectType, ObjectType, i64, &str)] = &[
    (
        194,
        ObjectType::Call,
        ObjectType::Contact,
        193,
        "call_to_contact",
    ),
    (
        193,
        ObjectType::Contact,
        ObjectType::Call,
        194,
        "contact_to_call",
    ),
    (
        182,
        ObjectType::Call,
        ObjectType::Company,
        181,
        "call_to_company",
    ),
    (
        181,
        ObjectType::Company,
        ObjectType::Call,
        182,
        "company_to_call",
    ),
    (
        1,
        ObjectType::Contact,
        ObjectType::Company,
        2,
        "contact_to_company",
    ),
    (
        2,
        ObjectType::Company,
        ObjectType::Contact,
        1,
        "company_to_contact",
    ),
    (
        279,
        ObjectType::Contact,
        ObjectType::Company,
        280,
        "contact_to_company_unlabeled",
    ),
    (
        280,
        ObjectType::Company,
        ObjectType::Contact,
        279,
        "company_to_contact_unlabeled",
    ),
];

pub fn association_type(type_id: i64) -> Option<(i64, ObjectType, ObjectType, i64, &'static str)> {
    ASSOCIATION_TYPES.iter().copied().find(|t| t.0 == type_id)
}

/// Both directions of an association from `from` to `to` with `type_id`.
pub fn pair(
    from: (ObjectType, i64),
    to: (ObjectType, i64),
    type_id: i64,
    category: &str,
) -> [Association; 2] {
    let inverse = association_type(type_id).map_or(type_id, |t| t.3);
    [
        Association {
            from_id: from.1,
            from_type: from.0,
            to_id: to.1,
            to_type: to.0,
            category: category.to_string(),
            type_id,
        },
        Association {
            from_id: to.1,
            from_type: to.0,
            to_id: from.1,
            to_type: from.0,
            category: category.to_string(),
            type_id: inverse,
        },
    ]
}

/// The portal's default region, for numbers typed without a country code.
pub async fn default_region(
    state: &AppState,
    portal_id: i64,
) -> Result<rlibphonenumber::Region, ApiError> {
    let portal = state
        .portal(portal_id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("unknown portal {portal_id}")))?;
    Ok(region_code(&portal.default_region).unwrap_or(rlibphonenumber::Region::US))
}

/// Creates a record. `associations` use 0 for the new record's id.
pub async fn create(
    state: &AppState,
    portal_id: i64,
    ty: ObjectType,
    change: BTreeMap<String, Option<String>>,
    associations: Vec<Association>,
) -> Result<Record, ApiError> {
    let region = default_region(state, portal_id).await?;
    let write = crm::apply_write(ty, Properties::new(), change, region);
    let _gate = state.write_gate.lock().await;
    if ty == ObjectType::Contact
        && let Some(email) = write.properties.get("email").filter(|e| !e.is_empty())
        && let Some(existing) = state
            .store
            .record_by_property(portal_id, ty, "email", email)
            .await?
    {
        return Err(ApiError::Conflict(format!(
            "Contact already exists. Existing ID: {}",
            existing.id
        )));
    }
    let record = state
        .store
        .insert_record(portal_id, ty, write.clone(), &associations, clock::now_ms())
        .await?;
    state.index.apply(
        portal_id,
        &[],
        &crm::with_object_id(write.phones, record.id),
    );
    Ok(record)
}

/// Applies a property change to an existing record.
pub async fn update(
    state: &AppState,
    portal_id: i64,
    ty: ObjectType,
    id: i64,
    change: BTreeMap<String, Option<String>>,
) -> Result<Record, ApiError> {
    let region = default_region(state, portal_id).await?;
    let _gate = state.write_gate.lock().await;
    let current = state
        .store
        .record(portal_id, ty, id)
        .await?
        .filter(|r| !r.archived)
        .ok_or_else(ApiError::not_found)?;
    if ty == ObjectType::Contact
        && let Some(Some(email)) = change.get("email")
        && !email.is_empty()
        && let Some(existing) = state
            .store
            .record_by_property(portal_id, ty, "email", email)
            .await?
        && existing.id != id
    {
        return Err(ApiError::Conflict(format!(
            "Contact already exists. Existing ID: {}",
            existing.id
        )));
    }
    let write = crm::apply_write(ty, current.properties, change, region);
    let phones = crm::with_object_id(write.phones.clone(), id);
    let (record, old) = state
        .store
        .update_record(portal_id, ty, id, write, clock::now_ms())
        .await?;
    state.index.apply(portal_id, &old, &phones);
    state.cards.invalidate(&[id]);
    Ok(record)
}

/// Archives a record; its numbers leave caller ID at once.
pub async fn archive(
    state: &AppState,
    portal_id: i64,
    ty: ObjectType,
    id: i64,
) -> Result<(), ApiError> {
    let _gate = state.write_gate.lock().await;
    let old = state
        .store
        .archive_record(portal_id, ty, id, clock::now_ms())
        .await?;
    state.index.apply(portal_id, &old, &[]);
    state.cards.invalidate(&[id]);
    Ok(())
}

/// Merges `other` into `primary` (same type): the primary keeps its values and takes the
/// other's where it has none; the other's associations move to the primary; the other is
/// archived. Both records' numbers are re-indexed.
pub async fn merge(
    state: &AppState,
    portal_id: i64,
    ty: ObjectType,
    primary: i64,
    other: i64,
) -> Result<Record, ApiError> {
    if primary == other {
        return Err(ApiError::field(
            "objectIdToMerge",
            "INVALID_MERGE",
            "objectIdToMerge must differ from primaryObjectId",
        ));
    }
    let region = default_region(state, portal_id).await?;
    let _gate = state.write_gate.lock().await;
    let load = |id: i64, field: &'static str| async move {
        state
            .store
            .record(portal_id, ty, id)
            .await?
            .filter(|r| !r.archived)
            .ok_or_else(|| {
                ApiError::field(
                    field,
                    "OBJECT_NOT_FOUND",
                    format!("{field}: no {} with id {id}", ty.plural()),
                )
            })
    };
    let keep = load(primary, "primaryObjectId").await?;
    let gone = load(other, "objectIdToMerge").await?;
    let change: BTreeMap<String, Option<String>> = gone
        .properties
        .iter()
        .filter(|(k, _)| {
            !keep.properties.contains_key(*k)
                && !k.starts_with("hs_calculated_")
                && !k.starts_with("hs_searchable_")
        })
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    let write = crm::apply_write(ty, keep.properties.clone(), change, region);
    let phones = crm::with_object_id(write.phones.clone(), primary);
    let now = clock::now_ms();
    let (record, old) = state
        .store
        .update_record(portal_id, ty, primary, write, now)
        .await?;
    state.index.apply(portal_id, &old, &phones);
    let mut moved = Vec::new();
    for to in ObjectType::ALL {
        for a in state.store.associations(portal_id, other, to).await? {
            if a.to_id != primary {
                moved.extend(pair(
                    (ty, primary),
                    (a.to_type, a.to_id),
                    a.type_id,
                    &a.category,
                ));
            }
        }
    }
    state.store.associate(portal_id, &moved).await?;
    let gone_phones = state
        .store
        .archive_record(portal_id, ty, other, now)
        .await?;
    state.index.apply(portal_id, &gone_phones, &[]);
    state.cards.invalidate(&[primary, other]);
    Ok(record)
}

/// GDPR delete: the contact is removed for good, its numbers leave caller ID, and the calls
/// that matched it lose the caller's number.
pub async fn gdpr_delete(state: &AppState, portal_id: i64, id: i64) -> Result<(), ApiError> {
    let _gate = state.write_gate.lock().await;
    let contact = state
        .store
        .record(portal_id, ObjectType::Contact, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let mut calls: Vec<i64> = state
        .store
        .associations(portal_id, contact.id, ObjectType::Call)
        .await?
        .iter()
        .map(|a| a.to_id)
        .collect();
    let id_text = id.to_string();
    calls.extend(
        state
            .store
            .all_records(portal_id, ObjectType::Call, false)
            .await?
            .iter()
            .filter(|c| {
                c.properties.get("hs_call_callee_object_id") == Some(&id_text)
                    && c.properties
                        .get("hs_call_callee_object_type_id")
                        .map(String::as_str)
                        != Some("0-2")
            })
            .map(|c| c.id),
    );
    calls.sort_unstable();
    calls.dedup();
    let now = clock::now_ms();
    for call in calls {
        let Some(rec) = state
            .store
            .record(portal_id, ObjectType::Call, call)
            .await?
        else {
            continue;
        };
        let mut props = rec.properties;
        for k in [
            "hs_call_from_number",
            "hs_call_callee_object_id",
            "hs_call_callee_object_type_id",
        ] {
            props.remove(k);
        }
        let write = crate::store::RecordWrite {
            properties: props,
            source: "GDPR_DELETE",
            phones: vec![],
        };
        match state
            .store
            .update_record(portal_id, ObjectType::Call, call, write, now)
            .await
        {
            Ok(_) | Err(crate::store::StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let old = state.store.delete_record(portal_id, id).await?;
    state.index.apply(portal_id, &old, &[]);
    state.cards.invalidate(&[id]);
    Ok(())
}
