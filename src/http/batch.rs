//! Batch, merge and GDPR delete on CRM objects (`hubspot-api.md` §4.1, §5.1):
//! `/crm/v3/objects/{objectType}/batch/{create,read,update,upsert,archive}`,
//! `/crm/v3/objects/{objectType}/merge`, `/crm/v3/objects/contacts/gdpr-delete`.
//!
//! A batch holds at most 100 inputs. Invalid property names or values fail the whole batch
//! with a 400; inputs that fail on their own (an unknown id, a duplicate email) are reported
//! in `errors[]` with `numErrors`, and the answer is 207.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, FieldError};
use super::extract::{Auth, JsonBody, Query};
use super::objects::{
    SimplePublicObject, View, lookup, object_type, parse_write_body, read_scopes,
    resolve_associations, to_wire, write_scopes,
};
use crate::clock;
use crate::records;
use crate::state::AppState;
use crate::store::ObjectType;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(batch_create))
        .routes(routes!(batch_read))
        .routes(routes!(batch_update))
        .routes(routes!(batch_upsert))
        .routes(routes!(batch_archive))
        .routes(routes!(merge))
        .routes(routes!(gdpr_delete))
}

pub const MAX_INPUTS: usize = 100;

/// The `inputs` array of a batch body, with the 100-input limit.
pub(crate) fn inputs(body: &Value) -> Result<&Vec<Value>, ApiError> {
    let inputs = body
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ApiError::field(
                "inputs",
                "REQUIRED",
                "inputs is required and must be an array",
            )
        })?;
    if inputs.len() > MAX_INPUTS {
        return Err(ApiError::field(
            "inputs",
            "TOO_MANY_INPUTS",
            format!(
                "inputs has {} items; a batch takes at most {MAX_INPUTS}",
                inputs.len()
            ),
        ));
    }
    Ok(inputs)
}

fn input_id(v: &Value) -> Option<String> {
    match v.get("id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One failed input in a batch answer (HubSpot's `StandardError`).
fn batch_error(category: &str, message: String, id: Option<&str>) -> Value {
    let mut e = json!({
        "status": "error",
        "category": category,
        "message": message,
        "errors": [],
        "context": {},
        "links": {},
    });
    if let Some(id) = id {
        e["context"] = json!({ "ids": [id] });
    }
    e
}

fn error_of(e: ApiError, id: Option<&str>) -> Value {
    match e {
        ApiError::NotFound(m) => batch_error("OBJECT_NOT_FOUND", m, id),
        ApiError::Conflict(m) => batch_error("CONFLICT", m, id),
        ApiError::Validation { message, .. } => batch_error("VALIDATION_ERROR", message, id),
        other => batch_error("INTERNAL_ERROR", format!("{other:?}"), id),
    }
}

/// `{status, results, startedAt, completedAt}` plus `errors`/`numErrors`; 207 when any failed.
pub(crate) fn batch_response(
    ok: StatusCode,
    started: i64,
    results: Vec<Value>,
    errors: Vec<Value>,
) -> Response {
    let mut body = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": clock::iso(started),
        "completedAt": clock::iso(clock::now_ms()),
    });
    let status = if errors.is_empty() {
        ok
    } else {
        body["numErrors"] = json!(errors.len());
        body["errors"] = Value::Array(errors);
        StatusCode::MULTI_STATUS
    };
    (status, Json(body)).into_response()
}

fn wire(o: SimplePublicObject) -> Value {
    serde_json::to_value(o).expect("record serialises")
}

/// Create up to 100 records.
#[utoipa::path(post, path = "/crm/v3/objects/{objectType}/batch/create", tag = "CRM objects",
    params(("objectType" = String, Path)), request_body(content = Object, description = "{\"inputs\": [{\"properties\": {...}, \"associations\"?: [...]}]}"),
    responses((status = 201, description = "BatchResponse"), (status = 207, description = "Some inputs failed")))]
async fn batch_create(
    State(state): State<Arc<AppState>>,
    Path(ty): Path<String>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let ty = object_type(&ty)?;
    auth.require(write_scopes(ty))?;
    let started = clock::now_ms();
    let catalog = state.catalog(auth.portal_id, ty).await?;
    let mut parsed = Vec::new();
    for (i, input) in inputs(&body)?.iter().enumerate() {
        parsed.push(
            parse_write_body(&catalog, input, true)
                .map_err(|e| prefix(e, &format!("inputs[{i}]")))?,
        );
    }
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for (props, specs) in parsed {
        let created = async {
            let assocs = resolve_associations(&state, auth.portal_id, ty, &specs).await?;
            records::create(&state, auth.portal_id, ty, props, assocs).await
        }
        .await;
        match created {
            Ok(r) => results.push(wire(
                to_wire(&state, auth.portal_id, &r, &View::written()).await?,
            )),
            Err(e) => errors.push(error_of(e, None)),
        }
    }
    Ok(batch_response(
        StatusCode::CREATED,
        started,
        results,
        errors,
    ))
}

/// Puts a path before every field of a validation error (`inputs[3].properties.email`).
fn prefix(e: ApiError, at: &str) -> ApiError {
    match e {
        ApiError::Validation { errors, .. } => ApiError::fields(
            errors
                .into_iter()
                .map(|f| {
                    FieldError::new(
                        format!("{at}.{}", f.in_),
                        &f.code,
                        format!("{at}: {}", f.message),
                    )
                })
                .collect(),
        ),
        other => other,
    }
}

fn string_list(body: &Value, key: &str) -> Option<Vec<String>> {
    body.get(key)?.as_array().map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    })
}

/// Read up to 100 records by id or `idProperty`.
#[utoipa::path(post, path = "/crm/v3/objects/{objectType}/batch/read", tag = "CRM objects",
    params(("objectType" = String, Path), ("archived" = Option<bool>, Query)),
    request_body(content = Object, description = "{\"inputs\": [{\"id\": \"1\"}], \"properties\": [], \"propertiesWithHistory\": [], \"idProperty\"?: \"email\"}"),
    responses((status = 200, description = "BatchResponse"), (status = 207, description = "Some ids were not found")))]
async fn batch_read(
    State(state): State<Arc<AppState>>,
    Path(ty): Path<String>,
    auth: Auth,
    query: Query,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let ty = object_type(&ty)?;
    auth.require(read_scopes(ty))?;
    let started = clock::now_ms();
    let archived = query.bool("archived")?;
    let id_property = body.get("idProperty").and_then(Value::as_str);
    let view = View {
        properties: string_list(&body, "properties").filter(|p| !p.is_empty()),
        history: string_list(&body, "propertiesWithHistory").filter(|p| !p.is_empty()),
        associations: None,
        all_stored: false,
    }
    .settle(&state, auth.portal_id, ty)
    .await?;
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for (i, input) in inputs(&body)?.iter().enumerate() {
        let Some(id) = input_id(input) else {
            return Err(ApiError::field(
                &format!("inputs[{i}].id"),
                "REQUIRED",
                format!("inputs[{i}].id is required"),
            ));
        };
        match lookup(&state, auth.portal_id, ty, &id, id_property).await?.filter(|r| r.archived == archived) {
            Some(r) => results.push(wire(to_wire(&state, auth.portal_id, &r, &view).await?)),
            None => errors.push(batch_error("OBJECT_NOT_FOUND", format!("Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.", ty.plural()), Some(&id))),
        }
    }
    Ok(batch_response(StatusCode::OK, started, results, errors))
}

/// Update up to 100 records.
#[utoipa::path(post, path = "/crm/v3/objects/{objectType}/batch/update", tag = "CRM objects",
    params(("objectType" = String, Path)), request_body(content = Object, description = "{\"inputs\": [{\"id\": \"1\", \"properties\": {...}, \"idProperty\"?: \"email\"}]}"),
    responses((status = 200, description = "BatchResponse"), (status = 207, description = "Some inputs failed")))]
async fn batch_update(
    State(state): State<Arc<AppState>>,
    Path(ty): Path<String>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    upsert_or_update(state, ty, auth, body, false).await
}

/// Create or update up to 100 records by a unique `idProperty`; results carry `new`.
#[utoipa::path(post, path = "/crm/v3/objects/{objectType}/batch/upsert", tag = "CRM objects",
    params(("objectType" = String, Path)), request_body(content = Object, description = "{\"inputs\": [{\"id\": \"ada@example.com\", \"idProperty\": \"email\", \"properties\": {...}}]}"),
    responses((status = 200, description = "BatchResponse with `new` on each result"), (status = 207, description = "Some inputs failed")))]
async fn batch_upsert(
    State(state): State<Arc<AppState>>,
    Path(ty): Path<String>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    upsert_or_update(state, ty, auth, body, true).await
}

async fn upsert_or_update(
    state: Arc<AppState>,
    ty: String,
    auth: Auth,
    body: Value,
    upsert: bool,
) -> Result<Response, ApiError> {
    let ty = object_type(&ty)?;
    auth.require(write_scopes(ty))?;
    let started = clock::now_ms();
    let catalog = state.catalog(auth.portal_id, ty).await?;
    let mut parsed = Vec::new();
    for (i, input) in inputs(&body)?.iter().enumerate() {
        let at = format!("inputs[{i}]");
        let id = input_id(input).ok_or_else(|| {
            ApiError::field(
                &format!("{at}.id"),
                "REQUIRED",
                format!("{at}.id is required"),
            )
        })?;
        let (props, _) = parse_write_body(&catalog, input, false).map_err(|e| prefix(e, &at))?;
        let id_property = input
            .get("idProperty")
            .and_then(Value::as_str)
            .map(str::to_string);
        parsed.push((id, id_property, props));
    }
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for (id, id_property, mut props) in parsed {
        let outcome = async {
            match lookup(&state, auth.portal_id, ty, &id, id_property.as_deref())
                .await?
                .filter(|r| !r.archived)
            {
                Some(r) => records::update(&state, auth.portal_id, ty, r.id, props)
                    .await
                    .map(|r| (r, false)),
                None if upsert => {
                    if let Some(p) = id_property.as_deref().filter(|p| *p != "hs_object_id") {
                        // The id becomes the new record's value of that property, so it is
                        // checked as one (an upsert by email must not store a malformed email).
                        let value = match catalog.get(p) {
                            Some(def) => {
                                crate::crm::coerce_value(&def, id.clone()).map_err(|m| {
                                    ApiError::field("id", crate::crm::value_error_code(&def), m)
                                })?
                            }
                            None => id.clone(),
                        };
                        props.insert(p.to_string(), Some(value));
                        records::create(&state, auth.portal_id, ty, props, vec![])
                            .await
                            .map(|r| (r, true))
                    } else {
                        Err(ApiError::NotFound(format!(
                            "No {} with id {id}; upsert creates only by a unique idProperty",
                            ty.plural()
                        )))
                    }
                }
                None => Err(ApiError::NotFound(format!(
                    "No {} with id {id}",
                    ty.plural()
                ))),
            }
        }
        .await;
        match outcome {
            Ok((r, new)) => {
                let mut v = wire(to_wire(&state, auth.portal_id, &r, &View::written()).await?);
                if upsert {
                    v["new"] = json!(new);
                }
                results.push(v);
            }
            Err(e) => errors.push(error_of(e, Some(&id))),
        }
    }
    Ok(batch_response(StatusCode::OK, started, results, errors))
}

/// Archive up to 100 records; answers 204 (ids that do not exist are ignored, as in HubSpot).
#[utoipa::path(post, path = "/crm/v3/objects/{objectType}/batch/archive", tag = "CRM objects",
    params(("objectType" = String, Path)), request_body(content = Object, description = "{\"inputs\": [{\"id\": \"1\"}]}"),
    responses((status = 204, description = "Archived")))]
async fn batch_archive(
    State(state): State<Arc<AppState>>,
    Path(ty): Path<String>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<StatusCode, ApiError> {
    let ty = object_type(&ty)?;
    auth.require(write_scopes(ty))?;
    let mut ids = Vec::new();
    for (i, input) in inputs(&body)?.iter().enumerate() {
        let id = input_id(input)
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| {
                ApiError::field(
                    &format!("inputs[{i}].id"),
                    "REQUIRED",
                    format!("inputs[{i}].id must be a record id"),
                )
            })?;
        ids.push(id);
    }
    for id in ids {
        match records::archive(&state, auth.portal_id, ty, id).await {
            Ok(()) | Err(ApiError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Merge two contacts or two companies: `{"primaryObjectId": "1", "objectIdToMerge": "2"}`.
#[utoipa::path(post, path = "/crm/v3/objects/{objectType}/merge", tag = "CRM objects",
    params(("objectType" = String, Path)), request_body(content = Object),
    responses((status = 200, body = SimplePublicObject)))]
async fn merge(
    State(state): State<Arc<AppState>>,
    Path(ty): Path<String>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<Json<SimplePublicObject>, ApiError> {
    let ty = object_type(&ty)?;
    auth.require(write_scopes(ty))?;
    if ty == ObjectType::Call {
        return Err(ApiError::field(
            "objectType",
            "MERGE_NOT_SUPPORTED",
            "Calls cannot be merged; merge contacts or companies",
        ));
    }
    let id = |k: &str| -> Result<i64, ApiError> {
        body.get(k)
            .and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| v.as_i64().map(|n| n.to_string()))
            })
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                ApiError::field(
                    k,
                    "REQUIRED",
                    format!("{k} is required and must be a record id"),
                )
            })
    };
    let (primary, other) = (id("primaryObjectId")?, id("objectIdToMerge")?);
    let record = records::merge(&state, auth.portal_id, ty, primary, other).await?;
    Ok(Json(
        to_wire(&state, auth.portal_id, &record, &View::written()).await?,
    ))
}

/// Permanently delete a contact (GDPR): `{"objectId": "1"}` or `{"objectId": "a@b.c", "idProperty": "email"}`.
#[utoipa::path(post, path = "/crm/v3/objects/contacts/gdpr-delete", tag = "CRM objects",
    request_body(content = Object), responses((status = 204, description = "Deleted")))]
async fn gdpr_delete(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<StatusCode, ApiError> {
    auth.require(write_scopes(ObjectType::Contact))?;
    let id = body
        .get("objectId")
        .and_then(|v| {
            v.as_str()
                .map(str::to_string)
                .or_else(|| v.as_i64().map(|n| n.to_string()))
        })
        .ok_or_else(|| ApiError::field("objectId", "REQUIRED", "objectId is required"))?;
    let id_property = body.get("idProperty").and_then(Value::as_str);
    let record = lookup(
        &state,
        auth.portal_id,
        ObjectType::Contact,
        &id,
        id_property,
    )
    .await?
    .ok_or_else(ApiError::not_found)?;
    records::gdpr_delete(&state, auth.portal_id, record.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
