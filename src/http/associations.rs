//! Associations (`hubspot-api.md` §4.3): the v4 API, its batch calls, and the v3 object-scoped
//! `PUT .../associations/{toObjectType}/{toObjectId}/{associationTypeId}` that HubSpot's
//! recording guide still uses. Every association is stored in both directions, so either side
//! reads it.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::extract::{Auth, JsonBody, Query};
use super::objects::{SimplePublicObject, View, object_type, read_scopes, to_wire, write_scopes};
use crate::clock;
use crate::records::{self, association_type};
use crate::state::AppState;
use crate::store::{Association, ObjectType};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create_v4, archive_v4))
        .routes(routes!(create_default_v4))
        .routes(routes!(list_v4))
        .routes(routes!(batch_create))
        .routes(routes!(batch_read))
        .routes(routes!(batch_archive))
        .routes(routes!(batch_default))
        .routes(routes!(create_v3, archive_v3))
}

/// HubSpot's default (unlabelled) association type between two object types.
fn default_type(from: ObjectType, to: ObjectType) -> Option<i64> {
    use ObjectType::*;
    Some(match (from, to) {
        (Contact, Company) => 279,
        (Company, Contact) => 280,
        (Call, Contact) => 194,
        (Contact, Call) => 193,
        (Call, Company) => 182,
        (Company, Call) => 181,
        _ => return None,
    })
}

fn label(type_id: i64) -> Value {
    if type_id == 1 || type_id == 2 {
        json!("Primary")
    } else {
        Value::Null
    }
}

fn parse_id(s: &str, field: &str) -> Result<i64, ApiError> {
    s.parse().map_err(|_| {
        ApiError::field(
            field,
            "INVALID_ID",
            format!("{field} must be a record id, got \"{s}\""),
        )
    })
}

/// Checks that a live record exists in the portal.
async fn require_record(
    state: &AppState,
    portal_id: i64,
    ty: ObjectType,
    id: i64,
) -> Result<(), ApiError> {
    match state.store.record(portal_id, ty, id).await? {
        Some(r) if !r.archived => Ok(()),
        _ => Err(ApiError::NotFound(format!(
            "No {} with id {id}",
            ty.plural()
        ))),
    }
}

/// Resolves `[{associationCategory, associationTypeId}]` for one pair of types.
fn specs(types: &Value, from: ObjectType, to: ObjectType) -> Result<Vec<(i64, String)>, ApiError> {
    let list = types.as_array().ok_or_else(|| {
        ApiError::field(
            "body",
            "INVALID_TYPE",
            "The body must be an array of {associationCategory, associationTypeId}",
        )
    })?;
    let mut out = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let type_id = t
            .get("associationTypeId")
            .and_then(Value::as_i64)
            .ok_or_else(|| {
                ApiError::field(
                    &format!("[{i}].associationTypeId"),
                    "REQUIRED",
                    "associationTypeId must be an integer",
                )
            })?;
        let category = t
            .get("associationCategory")
            .and_then(Value::as_str)
            .unwrap_or("HUBSPOT_DEFINED")
            .to_string();
        match association_type(type_id) {
            Some((_, f, tt, _, _)) if f == from && tt == to => out.push((type_id, category)),
            _ => {
                return Err(ApiError::field(
                    &format!("[{i}].associationTypeId"),
                    "INVALID_ASSOCIATION_TYPE",
                    format!(
                        "associationTypeId {type_id} does not link {} to {}",
                        from.plural(),
                        to.plural()
                    ),
                ));
            }
        }
    }
    Ok(out)
}

async fn associate(
    state: &AppState,
    portal_id: i64,
    from: (ObjectType, i64),
    to: (ObjectType, i64),
    types: &[(i64, String)],
) -> Result<(), ApiError> {
    require_record(state, portal_id, from.0, from.1).await?;
    require_record(state, portal_id, to.0, to.1).await?;
    let mut rows: Vec<Association> = Vec::new();
    for (type_id, category) in types {
        rows.extend(records::pair(from, to, *type_id, category));
    }
    state.store.associate(portal_id, &rows).await?;
    Ok(())
}

fn labelled(from: (ObjectType, i64), to: (ObjectType, i64), types: &[(i64, String)]) -> Value {
    let labels: Vec<Value> = types
        .iter()
        .map(|(t, _)| label(*t))
        .filter(|l| !l.is_null())
        .collect();
    json!({
        "fromObjectTypeId": from.0.type_id(),
        "fromObjectId": from.1,
        "toObjectTypeId": to.0.type_id(),
        "toObjectId": to.1,
        "labels": labels,
    })
}

/// Associate two records with the given types.
#[utoipa::path(put, path = "/crm/v4/objects/{objectType}/{objectId}/associations/{toObjectType}/{toObjectId}", tag = "Associations",
    params(("objectType" = String, Path), ("objectId" = String, Path), ("toObjectType" = String, Path), ("toObjectId" = String, Path)),
    request_body(content = Object, description = "[{\"associationCategory\": \"HUBSPOT_DEFINED\", \"associationTypeId\": 194}]"),
    responses((status = 201, description = "LabelsBetweenObjectPair")))]
async fn create_v4(
    State(state): State<Arc<AppState>>,
    Path((ft, fid, tt, tid)): Path<(String, String, String, String)>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (from, to) = (object_type(&ft)?, object_type(&tt)?);
    auth.require(write_scopes(from))?;
    let (fid, tid) = (parse_id(&fid, "objectId")?, parse_id(&tid, "toObjectId")?);
    let types = specs(&body, from, to)?;
    associate(&state, auth.portal_id, (from, fid), (to, tid), &types).await?;
    Ok((
        StatusCode::CREATED,
        Json(labelled((from, fid), (to, tid), &types)),
    ))
}

/// Remove every association between two records.
#[utoipa::path(delete, path = "/crm/v4/objects/{objectType}/{objectId}/associations/{toObjectType}/{toObjectId}", tag = "Associations",
    params(("objectType" = String, Path), ("objectId" = String, Path), ("toObjectType" = String, Path), ("toObjectId" = String, Path)),
    responses((status = 204, description = "Removed")))]
async fn archive_v4(
    State(state): State<Arc<AppState>>,
    Path((ft, fid, tt, tid)): Path<(String, String, String, String)>,
    auth: Auth,
) -> Result<StatusCode, ApiError> {
    let (from, _to) = (object_type(&ft)?, object_type(&tt)?);
    auth.require(write_scopes(from))?;
    let (fid, tid) = (parse_id(&fid, "objectId")?, parse_id(&tid, "toObjectId")?);
    state
        .store
        .remove_associations(auth.portal_id, fid, tid, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn default_pair(
    state: &AppState,
    portal_id: i64,
    from: (ObjectType, i64),
    to: (ObjectType, i64),
) -> Result<Value, ApiError> {
    let type_id = default_type(from.0, to.0).ok_or_else(|| {
        ApiError::field(
            "toObjectType",
            "INVALID_ASSOCIATION_TYPE",
            format!(
                "There is no default association from {} to {}",
                from.0.plural(),
                to.0.plural()
            ),
        )
    })?;
    associate(
        state,
        portal_id,
        from,
        to,
        &[(type_id, "HUBSPOT_DEFINED".into())],
    )
    .await?;
    Ok(json!({
        "from": { "id": from.1.to_string() },
        "to": { "id": to.1.to_string() },
        "associationSpec": { "associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id },
    }))
}

/// Associate two records with their default (unlabelled) type.
#[utoipa::path(put, path = "/crm/v4/objects/{fromObjectType}/{fromObjectId}/associations/default/{toObjectType}/{toObjectId}", tag = "Associations",
    params(("fromObjectType" = String, Path), ("fromObjectId" = String, Path), ("toObjectType" = String, Path), ("toObjectId" = String, Path)),
    responses((status = 200, description = "BatchResponsePublicDefaultAssociation")))]
async fn create_default_v4(
    State(state): State<Arc<AppState>>,
    Path((ft, fid, tt, tid)): Path<(String, String, String, String)>,
    auth: Auth,
) -> Result<Json<Value>, ApiError> {
    let (from, to) = (object_type(&ft)?, object_type(&tt)?);
    auth.require(write_scopes(from))?;
    let started = clock::now_ms();
    let (fid, tid) = (
        parse_id(&fid, "fromObjectId")?,
        parse_id(&tid, "toObjectId")?,
    );
    let result = default_pair(&state, auth.portal_id, (from, fid), (to, tid)).await?;
    Ok(Json(json!({
        "status": "COMPLETE",
        "results": [result],
        "startedAt": clock::iso(started),
        "completedAt": clock::iso(clock::now_ms()),
    })))
}

/// `[{toObjectId, associationTypes: [{category, typeId, label}]}]` for one record.
async fn associated(
    state: &AppState,
    portal_id: i64,
    id: i64,
    to: ObjectType,
) -> Result<Vec<Value>, ApiError> {
    let rows = state.store.associations(portal_id, id, to).await?;
    let mut out: Vec<Value> = Vec::new();
    for a in rows {
        let t = json!({ "category": a.category, "typeId": a.type_id, "label": label(a.type_id) });
        match out.last_mut() {
            Some(last) if last["toObjectId"] == json!(a.to_id) => {
                last["associationTypes"]
                    .as_array_mut()
                    .expect("array")
                    .push(t);
            }
            _ => out.push(json!({ "toObjectId": a.to_id, "associationTypes": [t] })),
        }
    }
    Ok(out)
}

/// A record's associations to one object type, paged.
#[utoipa::path(get, path = "/crm/v4/objects/{objectType}/{objectId}/associations/{toObjectType}", tag = "Associations",
    params(("objectType" = String, Path), ("objectId" = String, Path), ("toObjectType" = String, Path), ("limit" = Option<i64>, Query), ("after" = Option<String>, Query)),
    responses((status = 200, description = "{\"results\": [{toObjectId, associationTypes}], \"paging\"?}")))]
async fn list_v4(
    State(state): State<Arc<AppState>>,
    Path((ft, fid, tt)): Path<(String, String, String)>,
    auth: Auth,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    let (from, to) = (object_type(&ft)?, object_type(&tt)?);
    auth.require(read_scopes(from))?;
    let fid = parse_id(&fid, "objectId")?;
    let limit = query.int("limit", 500, 1, 500)? as usize;
    let after: i64 = query.one("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let all: Vec<Value> = associated(&state, auth.portal_id, fid, to)
        .await?
        .into_iter()
        .filter(|v| v["toObjectId"].as_i64().unwrap_or(0) > after)
        .collect();
    let page: Vec<Value> = all.iter().take(limit).cloned().collect();
    let mut body = json!({ "results": page });
    if all.len() > limit
        && let Some(last) = page.last()
    {
        body["paging"] =
            json!({ "next": { "after": last["toObjectId"].as_i64().unwrap_or(0).to_string() } });
    }
    Ok(Json(body))
}

fn id_at(v: &Value, pointer: &str) -> Option<i64> {
    let x = v.pointer(pointer)?;
    x.as_i64()
        .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
}

fn failed(e: ApiError, at: &str) -> Value {
    let (category, message) = match e {
        ApiError::NotFound(m) => ("OBJECT_NOT_FOUND", m),
        ApiError::Validation { message, .. } => ("VALIDATION_ERROR", message),
        other => ("INTERNAL_ERROR", format!("{other:?}")),
    };
    json!({ "status": "error", "category": category, "message": format!("{at}: {message}"), "errors": [], "context": {}, "links": {} })
}

/// Associate many pairs: `{"inputs": [{"from": {"id"}, "to": {"id"}, "types": [...]}]}`.
#[utoipa::path(post, path = "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/create", tag = "Associations",
    params(("fromObjectType" = String, Path), ("toObjectType" = String, Path)), request_body(content = Object),
    responses((status = 201, description = "BatchResponseLabelsBetweenObjectPair"), (status = 207, description = "Some inputs failed")))]
async fn batch_create(
    State(state): State<Arc<AppState>>,
    Path((ft, tt)): Path<(String, String)>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let (from, to) = (object_type(&ft)?, object_type(&tt)?);
    auth.require(write_scopes(from))?;
    let started = clock::now_ms();
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for (i, input) in super::batch::inputs(&body)?.iter().enumerate() {
        let at = format!("inputs[{i}]");
        let outcome = async {
            let fid = id_at(input, "/from/id").ok_or_else(|| {
                ApiError::field(&format!("{at}.from.id"), "REQUIRED", "from.id is required")
            })?;
            let tid = id_at(input, "/to/id").ok_or_else(|| {
                ApiError::field(&format!("{at}.to.id"), "REQUIRED", "to.id is required")
            })?;
            let types = specs(input.get("types").unwrap_or(&Value::Null), from, to)?;
            associate(&state, auth.portal_id, (from, fid), (to, tid), &types).await?;
            Ok::<_, ApiError>(labelled((from, fid), (to, tid), &types))
        }
        .await;
        match outcome {
            Ok(v) => results.push(v),
            Err(e) => errors.push(failed(e, &at)),
        }
    }
    Ok(super::batch::batch_response(
        StatusCode::CREATED,
        started,
        results,
        errors,
    ))
}

/// Associate many pairs with their default type: `{"inputs": [{"from": {"id"}, "to": {"id"}}]}`.
#[utoipa::path(post, path = "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/associate/default", tag = "Associations",
    params(("fromObjectType" = String, Path), ("toObjectType" = String, Path)), request_body(content = Object),
    responses((status = 200, description = "BatchResponsePublicDefaultAssociation")))]
async fn batch_default(
    State(state): State<Arc<AppState>>,
    Path((ft, tt)): Path<(String, String)>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let (from, to) = (object_type(&ft)?, object_type(&tt)?);
    auth.require(write_scopes(from))?;
    let started = clock::now_ms();
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for (i, input) in super::batch::inputs(&body)?.iter().enumerate() {
        let at = format!("inputs[{i}]");
        let (Some(fid), Some(tid)) = (id_at(input, "/from/id"), id_at(input, "/to/id")) else {
            errors.push(failed(
                ApiError::field(&at, "REQUIRED", "from.id and to.id are required"),
                &at,
            ));
            continue;
        };
        match default_pair(&state, auth.portal_id, (from, fid), (to, tid)).await {
            Ok(v) => results.push(v),
            Err(e) => errors.push(failed(e, &at)),
        }
    }
    Ok(super::batch::batch_response(
        StatusCode::OK,
        started,
        results,
        errors,
    ))
}

/// Read the associations of many records: `{"inputs": [{"id": "1"}]}`.
#[utoipa::path(post, path = "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/read", tag = "Associations",
    params(("fromObjectType" = String, Path), ("toObjectType" = String, Path)), request_body(content = Object),
    responses((status = 200, description = "BatchResponsePublicAssociationMultiWithLabel"), (status = 207, description = "Some ids were not found")))]
async fn batch_read(
    State(state): State<Arc<AppState>>,
    Path((ft, tt)): Path<(String, String)>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let (from, to) = (object_type(&ft)?, object_type(&tt)?);
    auth.require(read_scopes(from))?;
    let started = clock::now_ms();
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for (i, input) in super::batch::inputs(&body)?.iter().enumerate() {
        let at = format!("inputs[{i}]");
        let Some(id) = id_at(input, "/id") else {
            errors.push(failed(
                ApiError::field(&at, "REQUIRED", "id is required"),
                &at,
            ));
            continue;
        };
        if let Err(e) = require_record(&state, auth.portal_id, from, id).await {
            errors.push(failed(e, &at));
            continue;
        }
        let to_list = associated(&state, auth.portal_id, id, to).await?;
        results.push(json!({ "from": { "id": id.to_string() }, "to": to_list }));
    }
    Ok(super::batch::batch_response(
        StatusCode::OK,
        started,
        results,
        errors,
    ))
}

/// Remove associations: `{"inputs": [{"from": {"id"}, "to": [{"id"}]}]}`.
#[utoipa::path(post, path = "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/archive", tag = "Associations",
    params(("fromObjectType" = String, Path), ("toObjectType" = String, Path)), request_body(content = Object),
    responses((status = 204, description = "Removed")))]
async fn batch_archive(
    State(state): State<Arc<AppState>>,
    Path((ft, tt)): Path<(String, String)>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<StatusCode, ApiError> {
    let (from, _to) = (object_type(&ft)?, object_type(&tt)?);
    auth.require(write_scopes(from))?;
    for (i, input) in super::batch::inputs(&body)?.iter().enumerate() {
        let fid = id_at(input, "/from/id").ok_or_else(|| {
            ApiError::field(
                &format!("inputs[{i}].from.id"),
                "REQUIRED",
                "from.id is required",
            )
        })?;
        let tos = input
            .get("to")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for t in tos {
            if let Some(tid) = id_at(&t, "/id") {
                state
                    .store
                    .remove_associations(auth.portal_id, fid, tid, None)
                    .await?;
            }
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The v3 object-scoped association (used by HubSpot's recording guide for calls).
#[utoipa::path(put, path = "/crm/v3/objects/{objectType}/{objectId}/associations/{toObjectType}/{toObjectId}/{associationTypeId}", tag = "Associations",
    params(("objectType" = String, Path), ("objectId" = String, Path), ("toObjectType" = String, Path), ("toObjectId" = String, Path), ("associationTypeId" = String, Path)),
    responses((status = 200, body = SimplePublicObject)))]
async fn create_v3(
    State(state): State<Arc<AppState>>,
    Path((ft, fid, tt, tid, type_id)): Path<(String, String, String, String, String)>,
    auth: Auth,
) -> Result<Json<SimplePublicObject>, ApiError> {
    let (from, to) = (object_type(&ft)?, object_type(&tt)?);
    auth.require(write_scopes(from))?;
    let (fid, tid) = (parse_id(&fid, "objectId")?, parse_id(&tid, "toObjectId")?);
    let type_id = parse_id(&type_id, "associationTypeId")?;
    let types = specs(
        &json!([{ "associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id }]),
        from,
        to,
    )?;
    associate(&state, auth.portal_id, (from, fid), (to, tid), &types).await?;
    let record = state
        .store
        .record(auth.portal_id, from, fid)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let view = View {
        associations: Some(vec![to.plural().to_string()]),
        ..View::default()
    };
    Ok(Json(to_wire(&state, auth.portal_id, &record, &view).await?))
}

/// Remove one v3 association.
#[utoipa::path(delete, path = "/crm/v3/objects/{objectType}/{objectId}/associations/{toObjectType}/{toObjectId}/{associationTypeId}", tag = "Associations",
    params(("objectType" = String, Path), ("objectId" = String, Path), ("toObjectType" = String, Path), ("toObjectId" = String, Path), ("associationTypeId" = String, Path)),
    responses((status = 204, description = "Removed")))]
async fn archive_v3(
    State(state): State<Arc<AppState>>,
    Path((ft, fid, tt, tid, type_id)): Path<(String, String, String, String, String)>,
    auth: Auth,
) -> Result<StatusCode, ApiError> {
    let (from, _to) = (object_type(&ft)?, object_type(&tt)?);
    auth.require(write_scopes(from))?;
    let (fid, tid) = (parse_id(&fid, "objectId")?, parse_id(&tid, "toObjectId")?);
    let type_id = parse_id(&type_id, "associationTypeId")?;
    let inverse = association_type(type_id).map_or(type_id, |t| t.3);
    state
        .store
        .remove_associations(auth.portal_id, fid, tid, Some((type_id, inverse)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
