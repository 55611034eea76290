//! Switchboard's own API under `/switchboard/v1/`: health, build info, caller-ID explain, the
//! ignore list and portal settings. Not HubSpot's; admin calls need the `switchboard.admin` scope.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::extract::{Auth, JsonBody};
use crate::callerid::{self, normalize};
use crate::clock;
use crate::state::AppState;
use crate::store::{AssociateMode, IgnoredNumber};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(info))
        .routes(routes!(echo))
        .routes(routes!(explain))
        .routes(routes!(list_ignored, add_ignored))
        .routes(routes!(remove_ignored))
        .routes(routes!(get_settings, update_settings))
}

pub const ADMIN_SCOPE: &[&str] = &["switchboard.admin"];

/// Liveness: `{"status": "ok"}`. Needs no token.
#[utoipa::path(get, path = "/switchboard/v1/health", tag = "Switchboard", responses((status = 200, description = "{\"status\":\"ok\"}")))]
async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Authenticates, reads a JSON body and answers `{"ok": true}`: a connectivity check for
/// integrators, and the baseline the benchmark compares inbound-call against (same auth,
/// same body, no caller-ID work).
#[utoipa::path(post, path = "/switchboard/v1/echo", tag = "Switchboard", request_body(content = Object), responses((status = 200, description = "{\"ok\": true, \"portalId\": N}")))]
async fn echo(auth: Auth, JsonBody(_body): JsonBody) -> Json<Value> {
    Json(json!({ "ok": true, "portalId": auth.portal_id }))
}

/// Build information, including the phone metadata version. Needs no token.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Info {
    pub version: String,
    pub phone_metadata_version: String,
    pub phone_parser: String,
    pub indexed_numbers: usize,
    /// Estimated heap of the caller-ID index, and per stored number.
    pub index_bytes: usize,
    pub index_bytes_per_number: f64,
    pub index_ready_ms: u64,
    /// Caller-ID cards filed (one per live contact and company) and their heap.
    pub cards: usize,
    pub card_bytes: usize,
    /// Time the warm-up took to file every card after the index was ready; absent until done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cards_ready_ms: Option<u64>,
    pub uptime_seconds: u64,
    /// Running totals of the call logger's transactions since start (`store::CallBatchStats`):
    /// calls per batch is `loggedCalls / callBatches`.
    pub call_batches: u64,
    pub logged_calls: u64,
    pub call_batch_statement_micros: u64,
    pub call_batch_commit_micros: u64,
    pub call_batch_wal_pages: u64,
    /// WAL syncs that made the logged calls (and import batches) durable, and their time.
    pub call_batch_syncs: u64,
    pub call_batch_sync_micros: u64,
    /// Where logged calls waited, summed over the calls (`store::CallBatchStats`): queued for
    /// the writer, in their transaction, from the commit until synced, and in all until the
    /// request had its answer.
    pub call_queue_micros: u64,
    pub call_transaction_micros: u64,
    pub call_sync_wait_micros: u64,
    pub call_total_micros: u64,
    /// Record → call links the server keeps in memory instead of as rows
    /// (`store/call_links.rs`), and their heap bytes.
    pub call_links: u64,
    pub call_link_bytes: u64,
}

#[utoipa::path(get, path = "/switchboard/v1/info", tag = "Switchboard", responses((status = 200, body = Info)))]
async fn info(State(state): State<Arc<AppState>>) -> Json<Info> {
    // Both walk every portal's tables: at 10M numbers, once each.
    let (numbers, bytes) = (state.index.numbers(), state.index.memory_bytes());
    let batches = state.store.call_batch_stats();
    let (call_links, call_link_bytes) = state.store.call_link_stats();
    Json(Info {
        version: env!("CARGO_PKG_VERSION").into(),
        phone_metadata_version: normalize::METADATA_VERSION.into(),
        phone_parser: normalize::PARSER_VERSION.into(),
        indexed_numbers: numbers,
        index_bytes: bytes,
        index_bytes_per_number: bytes as f64 / numbers.max(1) as f64,
        index_ready_ms: state.index_ready_ms as u64,
        cards: state.cards.len(),
        card_bytes: state.cards.memory_bytes(),
        cards_ready_ms: state.cards.warm_ms(),
        uptime_seconds: state.started.elapsed().as_secs(),
        call_batches: batches.batches,
        logged_calls: batches.calls,
        call_batch_statement_micros: batches.statement_micros,
        call_batch_commit_micros: batches.commit_micros,
        call_batch_wal_pages: batches.wal_pages,
        call_batch_syncs: batches.syncs,
        call_batch_sync_micros: batches.sync_micros,
        call_queue_micros: batches.call_queue_micros,
        call_transaction_micros: batches.call_transaction_micros,
        call_sync_wait_micros: batches.call_sync_wait_micros,
        call_total_micros: batches.call_total_micros,
        call_links: call_links as u64,
        call_link_bytes: call_link_bytes as u64,
    })
}

/// Why a number matches what it matches: `{"number": "+442079460958", "extension": "12"}`.
#[utoipa::path(
    post,
    path = "/switchboard/v1/caller-id/explain",
    tag = "Switchboard",
    request_body(content = Object, description = "{\"number\": \"...\", \"extension\"?: \"...\"}"),
    responses((status = 200, description = "Ranked matches with the property, stored value, normalised form, tier and reason; plus near misses"))
)]
async fn explain(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    auth.require(&[
        "switchboard.admin",
        "crm.objects.contacts.read",
        "crm.objects.contacts.write",
    ])?;
    let number = body.get("number").and_then(Value::as_str).ok_or_else(|| {
        ApiError::field(
            "number",
            "REQUIRED",
            "number is required: the caller's number, E.164 or as typed",
        )
    })?;
    let extension = match body.get("extension") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::field(
                "extension",
                "INVALID_TYPE",
                "extension must be a string of digits",
            ));
        }
    };
    let region = crate::records::default_region(&state, auth.portal_id).await?;
    // A caller number may be given as typed; normalise it the way a stored number would be.
    let typed = normalize::normalize(number, None, region);
    let e164 = if number.starts_with('+') && normalize::parse_caller(number).is_ok() {
        number.to_string()
    } else {
        typed.e164.clone().ok_or_else(|| {
            ApiError::field(
                "number",
                "INVALID_NUMBER",
                format!("\"{number}\" is not a phone number Switchboard can parse"),
            )
        })?
    };
    let caller = normalize::parse_caller(&e164).map_err(|_| {
        ApiError::field(
            "number",
            "INVALID_NUMBER",
            format!("\"{number}\" is not a possible phone number"),
        )
    })?;
    let extension = extension.or(typed.extension.clone());
    let ignored = state.index.is_ignored(auth.portal_id, caller.key);
    let matches = callerid::find(
        &state.index,
        &state.cards,
        state.store.as_ref(),
        auth.portal_id,
        &caller,
        extension.as_deref(),
        state.config.match_cap,
    )
    .await?;
    // Only the rows explain shows: the matches' and those sharing the national number
    // (the indexed `national_key`), never the whole portal.
    let mut ids: Vec<i64> = matches.iter().map(|m| m.record.id).collect();
    if let Some(key) = caller.national_key {
        ids.extend(state.index.candidates(auth.portal_id, None, &[key]));
    }
    let phones = state.store.phones_of_records(auth.portal_id, &ids).await?;
    let mut out = Vec::new();
    for (rank, m) in matches.iter().enumerate() {
        let row = phones
            .iter()
            .find(|p| p.object_id == m.record.id && p.property == m.property);
        out.push(json!({
            "rank": rank + 1,
            "record": {
                "objectId": m.record.id,
                "objectTypeId": m.record.object_type.type_id(),
                "properties": display_props(&m.record),
            },
            "property": m.property,
            "storedValue": row.map(|r| r.raw.clone()),
            "normalized": {
                "e164": row.and_then(|r| r.e164.clone()),
                "extension": row.and_then(|r| r.extension.clone()),
                "region": row.and_then(|r| r.region.clone()),
                "regionSource": row.and_then(|r| r.source.clone()),
            },
            "tier": m.tier.as_str(),
            "extensionMatch": m.extension_match,
            "reason": callerid::reason(m, row.and_then(|r| r.source.as_deref())),
        }));
    }
    let matched: std::collections::HashSet<i64> = matches.iter().map(|m| m.record.id).collect();
    let near: Vec<Value> = phones
        .iter()
        .filter(|p| !matched.contains(&p.object_id))
        .filter(|p| caller.national_key.is_some() && p.national_key.map(|k| k as u64) == caller.national_key)
        .filter(|p| p.e164.as_deref() != Some(caller.e164.as_str()))
        .map(|p| json!({
            "objectId": p.object_id,
            "objectTypeId": p.object_type.type_id(),
            "property": p.property,
            "storedValue": p.raw,
            "normalized": { "e164": p.e164, "region": p.region, "regionSource": p.source },
            "reason": format!(
                "Same national number {} but stored as {} ({}), so it is another country's number and does not match.",
                caller.nsn,
                p.e164.as_deref().unwrap_or("an unparsable value"),
                p.region.as_deref().unwrap_or("unknown region"),
            ),
        }))
        .collect();
    Ok(Json(json!({
        "number": caller.e164,
        "extension": extension,
        "region": caller.region(),
        "nationalNumber": caller.nsn,
        "ignored": ignored,
        "matches": out,
        "nearMisses": near,
    })))
}

fn display_props(r: &callerid::Card) -> Value {
    let mut m = serde_json::Map::new();
    for k in callerid::cards::fields(r.object_type) {
        if let Some(v) = r.get(k) {
            m.insert((*k).into(), json!(v));
        }
    }
    Value::Object(m)
}

/// The portal's ignore list.
#[utoipa::path(get, path = "/switchboard/v1/ignored-numbers", tag = "Switchboard", responses((status = 200, description = "{\"results\": [{\"number\", \"note\", \"createdAt\"}]}")))]
async fn list_ignored(
    State(state): State<Arc<AppState>>,
    auth: Auth,
) -> Result<Json<Value>, ApiError> {
    auth.require(ADMIN_SCOPE)?;
    let list = state.store.ignored_numbers(Some(auth.portal_id)).await?;
    let results: Vec<Value> = list
        .iter()
        .map(|n| json!({ "number": n.e164, "note": n.note, "createdAt": clock::iso(n.created_at) }))
        .collect();
    Ok(Json(json!({ "results": results })))
}

/// Add a number that never matches: `{"number": "+14155550100", "note": "main line"}`.
#[utoipa::path(post, path = "/switchboard/v1/ignored-numbers", tag = "Switchboard", request_body(content = Object), responses((status = 201, description = "Added")))]
async fn add_ignored(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    auth.require(ADMIN_SCOPE)?;
    let number = body
        .get("number")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::field("number", "REQUIRED", "number is required"))?;
    let region = crate::records::default_region(&state, auth.portal_id).await?;
    let e164 = normalize::normalize(number, None, region)
        .e164
        .ok_or_else(|| {
            ApiError::field(
                "number",
                "INVALID_NUMBER",
                format!("\"{number}\" is not a phone number Switchboard can parse"),
            )
        })?;
    let note = body
        .get("note")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    add_ignored_number(&state, auth.portal_id, &e164, &note).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "number": e164, "note": note })),
    ))
}

/// Adds a number to a portal's ignore list (shared by the API and the CLI).
pub async fn add_ignored_number(
    state: &AppState,
    portal_id: i64,
    e164: &str,
    note: &str,
) -> Result<(), ApiError> {
    state
        .store
        .ignore_number(&IgnoredNumber {
            portal_id,
            e164: e164.to_string(),
            note: note.to_string(),
            created_at: clock::now_ms(),
        })
        .await?;
    state.index.set_ignored(portal_id, e164, true);
    Ok(())
}

/// Remove a number from the ignore list.
#[utoipa::path(delete, path = "/switchboard/v1/ignored-numbers/{number}", tag = "Switchboard", params(("number" = String, Path)), responses((status = 204, description = "Removed"), (status = 404, description = "Not on the list")))]
async fn remove_ignored(
    State(state): State<Arc<AppState>>,
    Path(number): Path<String>,
    auth: Auth,
) -> Result<StatusCode, ApiError> {
    auth.require(ADMIN_SCOPE)?;
    let region = crate::records::default_region(&state, auth.portal_id).await?;
    let e164 = normalize::normalize(&number, None, region)
        .e164
        .unwrap_or(number);
    if !state.store.unignore_number(auth.portal_id, &e164).await? {
        return Err(ApiError::not_found());
    }
    state.index.set_ignored(auth.portal_id, &e164, false);
    Ok(StatusCode::NO_CONTENT)
}

fn settings_json(p: &crate::store::Portal) -> Value {
    json!({
        "portalId": p.id,
        "defaultRegion": p.default_region,
        "associate": p.associate.as_str(),
        "suffixDigits": p.suffix_digits,
    })
}

/// The portal's caller-ID settings.
#[utoipa::path(get, path = "/switchboard/v1/settings", tag = "Switchboard", responses((status = 200, description = "{\"portalId\", \"defaultRegion\", \"associate\", \"suffixDigits\"}")))]
async fn get_settings(
    State(state): State<Arc<AppState>>,
    auth: Auth,
) -> Result<Json<Value>, ApiError> {
    auth.require(ADMIN_SCOPE)?;
    let p = state
        .portal(auth.portal_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(settings_json(&p)))
}

/// Change caller-ID settings: `{"associate": "best"|"all"|"none", "suffixDigits": 7|null}`.
#[utoipa::path(patch, path = "/switchboard/v1/settings", tag = "Switchboard", request_body(content = Object), responses((status = 200, description = "The new settings")))]
async fn update_settings(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    auth.require(ADMIN_SCOPE)?;
    let mut p = state
        .portal(auth.portal_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if let Some(v) = body.get("associate") {
        p.associate = v.as_str().and_then(AssociateMode::parse).ok_or_else(|| {
            ApiError::field(
                "associate",
                "INVALID_ENUM",
                format!("associate must be best, all or none, got {v}"),
            )
        })?;
    }
    if let Some(v) = body.get("suffixDigits") {
        p.suffix_digits = match v {
            Value::Null => None,
            v => Some(v.as_u64().filter(|n| (4..=15).contains(n)).ok_or_else(|| {
                ApiError::field(
                    "suffixDigits",
                    "INVALID_INTEGER",
                    format!("suffixDigits must be null (off) or 4 to 15, got {v}"),
                )
            })? as u8),
        };
    }
    if let Some(v) = body.get("defaultRegion") {
        let code = v.as_str().and_then(normalize::region_code).ok_or_else(|| {
            ApiError::field(
                "defaultRegion",
                "INVALID_REGION",
                format!("defaultRegion must be an ISO-3166 alpha-2 region, got {v}"),
            )
        })?;
        p.default_region = code.to_string();
    }
    state.update_portal(p.clone()).await?;
    Ok(Json(settings_json(&p)))
}
