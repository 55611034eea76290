//! CRM objects: `/crm/v3/objects/{objectType}[/{objectId}]` for contacts, companies and calls
//! (`hubspot-api.md` §4.1, §5.1). The type is a name (`contacts`) or an id (`0-1`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, FieldError};
use super::extract::{Auth, JsonBody, Query};
use crate::clock;
use crate::crm;
use crate::records;
use crate::state::AppState;
use crate::store::{Association, ObjectType, Record};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_objects, create_object))
        .routes(routes!(get_object, update_object, archive_object))
}

/// `SimplePublicObject(WithAssociations)`:
/// `{"id": "51", "properties": {"email": "ada@example.com"}, "createdAt": "...", "updatedAt": "...", "archived": false}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimplePublicObject {
    pub id: String,
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
    pub created_at: String,
    pub updated_at: String,
    pub archived: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties_with_history: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub associations: Option<Map<String, Value>>,
}

/// A page of records: `{"results": [...], "paging": {"next": {"after": "52", "link": "..."}}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionResponse {
    pub results: Vec<SimplePublicObject>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub paging: Option<Value>,
}

pub(crate) fn object_type(s: &str) -> Result<ObjectType, ApiError> {
    ObjectType::from_path(s).ok_or_else(|| {
        ApiError::NotFound(format!(
            "Unknown object type \"{s}\"; Switchboard serves contacts (0-1), companies (0-2) and calls (0-48)"
        ))
    })
}

pub(crate) fn read_scopes(ty: ObjectType) -> &'static [&'static str] {
    match ty {
        ObjectType::Contact => &["crm.objects.contacts.read", "crm.objects.contacts.write"],
        ObjectType::Company => &["crm.objects.companies.read", "crm.objects.companies.write"],
        ObjectType::Call => &[
            "crm.objects.contacts.read",
            "crm.objects.contacts.write",
            "crm.objects.calls.read",
            "crm.objects.calls.write",
        ],
    }
}

pub(crate) fn write_scopes(ty: ObjectType) -> &'static [&'static str] {
    match ty {
        ObjectType::Contact => &["crm.objects.contacts.write"],
        ObjectType::Company => &["crm.objects.companies.write"],
        ObjectType::Call => &["crm.objects.contacts.write", "crm.objects.calls.write"],
    }
}

/// What a read asks to see of each record.
#[derive(Debug, Default, Clone)]
pub struct View {
    pub properties: Option<Vec<String>>,
    pub history: Option<Vec<String>>,
    pub associations: Option<Vec<String>>,
    /// Create and update responses echo every stored property.
    pub all_stored: bool,
}

impl View {
    pub fn from_query(q: &Query) -> Self {
        View {
            properties: q.list("properties"),
            history: q.list("propertiesWithHistory"),
            associations: q.list("associations"),
            all_stored: false,
        }
    }

    /// The properties a read shows, settled once per request against the type's catalog. A
    /// name no property has is left out rather than shown as null, as HubSpot does; asked only
    /// for history, HubSpot shows those properties' values instead of the defaults (a
    /// `propertiesWithHistory=is_verified` response in hubspot-api-nodejs#154).
    pub async fn settle(
        mut self,
        state: &AppState,
        portal_id: i64,
        ty: ObjectType,
    ) -> Result<Self, ApiError> {
        if self.properties.is_none() && !self.all_stored {
            self.properties = self.history.clone();
        }
        if let Some(names) = &mut self.properties {
            let catalog = state.catalog(portal_id, ty).await?;
            names.retain(|n| catalog.get(n).is_some());
        }
        Ok(self)
    }

    pub fn written() -> Self {
        View {
            all_stored: true,
            ..View::default()
        }
    }
}

/// Builds the wire form of a record, reading history and associations when asked.
pub async fn to_wire(
    state: &AppState,
    portal_id: i64,
    record: &Record,
    view: &View,
) -> Result<SimplePublicObject, ApiError> {
    let assoc = match &view.associations {
        None => None,
        Some(names) => {
            let mut out = Map::new();
            for name in names {
                let Some(to) = ObjectType::from_path(name) else {
                    continue;
                };
                let rows = state.store.associations(portal_id, record.id, to).await?;
                if rows.is_empty() {
                    continue;
                }
                let results: Vec<Value> = rows
                    .iter()
                    .map(|a| {
                        let name = records::association_type(a.type_id)
                            .map_or_else(|| a.type_id.to_string(), |t| t.4.to_string());
                        json!({ "id": a.to_id.to_string(), "type": name })
                    })
                    .collect();
                out.insert(to.plural().into(), json!({ "results": results }));
            }
            Some(out)
        }
    };
    let history = match &view.history {
        None => None,
        Some(names) => {
            let mut out = Map::new();
            for name in names {
                out.insert(name.clone(), json!([]));
            }
            for h in state.store.history(portal_id, &[record.id], names).await? {
                if let Some(Value::Array(list)) = out.get_mut(&h.name) {
                    list.push(json!({
                        "value": h.value,
                        "timestamp": clock::iso(h.timestamp),
                        "sourceType": h.source_type,
                    }));
                }
            }
            Some(out)
        }
    };
    Ok(SimplePublicObject {
        id: record.id.to_string(),
        properties: crm::wire_properties(record, view.properties.as_deref(), view.all_stored),
        properties_with_history: history,
        created_at: clock::iso(record.created_at),
        updated_at: clock::iso(record.updated_at),
        archived: record.archived,
        archived_at: record.archived_at.map(clock::iso),
        associations: assoc,
    })
}

/// List records, oldest first, with cursor paging.
#[utoipa::path(
    get,
    path = "/crm/v3/objects/{objectType}",
    tag = "CRM objects",
    params(
        ("objectType" = String, Path, description = "contacts, companies, calls or 0-1, 0-2, 0-48"),
        ("limit" = Option<i64>, Query, description = "1 to 100, default 10"),
        ("after" = Option<String>, Query, description = "Cursor from paging.next.after"),
        ("properties" = Option<Vec<String>>, Query),
        ("associations" = Option<Vec<String>>, Query),
        ("archived" = Option<bool>, Query)
    ),
    responses((status = 200, body = CollectionResponse))
)]
async fn list_objects(
    State(state): State<Arc<AppState>>,
    Path(ty): Path<String>,
    auth: Auth,
    query: Query,
) -> Result<Json<CollectionResponse>, ApiError> {
    let ty = object_type(&ty)?;
    auth.require(read_scopes(ty))?;
    let limit = query.int("limit", 10, 1, 100)?;
    let after = match query.one("after") {
        None | Some("") => 0,
        Some(a) => a.parse::<i64>().map_err(|_| {
            ApiError::field(
                "after",
                "INVALID_CURSOR",
                format!("after must be a cursor from paging.next.after, got \"{a}\""),
            )
        })?,
    };
    let archived = query.bool("archived")?;
    let view = View::from_query(&query)
        .settle(&state, auth.portal_id, ty)
        .await?;
    let mut rows = state
        .store
        .list_records(auth.portal_id, ty, after, limit + 1, archived)
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let mut results = Vec::with_capacity(rows.len());
    for r in &rows {
        results.push(to_wire(&state, auth.portal_id, r, &view).await?);
    }
    let paging = match (more, rows.last()) {
        (true, Some(last)) => {
            let next = last.id.to_string();
            Some(json!({ "next": {
                "after": next,
                "link": format!("/crm/v3/objects/{}?limit={limit}&after={next}", ty.plural())
            }}))
        }
        _ => None,
    };
    Ok(Json(CollectionResponse { results, paging }))
}

/// A property change: `None` clears the property.
pub(crate) type Change = BTreeMap<String, Option<String>>;
/// An inline association: (to id, association type id, category).
pub(crate) type AssociationSpec = (i64, i64, String);

/// Parses `{"properties": {...}, "associations": [...]}` of a create or update.
pub(crate) fn parse_write_body(
    catalog: &crm::Catalog,
    body: &Value,
    allow_associations: bool,
) -> Result<(Change, Vec<AssociationSpec>), ApiError> {
    let obj = body.as_object().ok_or_else(|| {
        ApiError::field(
            "body",
            "INVALID_TYPE",
            "The request body must be a JSON object with \"properties\"",
        )
    })?;
    let props = match obj.get("properties") {
        Some(Value::Object(m)) => crm::parse_properties(catalog, m).map_err(|errs| {
            ApiError::fields(
                errs.into_iter()
                    .map(|e| {
                        FieldError::new(format!("properties.{}", e.property), e.code, e.message)
                    })
                    .collect(),
            )
        })?,
        None => BTreeMap::new(),
        Some(v) => {
            return Err(ApiError::field(
                "properties",
                "INVALID_TYPE",
                format!(
                    "properties must be an object of strings, not {}",
                    crm::kind(v)
                ),
            ));
        }
    };
    let mut assocs = Vec::new();
    if allow_associations && let Some(list) = obj.get("associations") {
        let Value::Array(items) = list else {
            return Err(ApiError::field(
                "associations",
                "INVALID_TYPE",
                "associations must be an array",
            ));
        };
        for (i, item) in items.iter().enumerate() {
            let to = item
                .pointer("/to/id")
                .and_then(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .or_else(|| v.as_i64().map(|n| n.to_string()))
                })
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::field(
                        &format!("associations[{i}].to.id"),
                        "REQUIRED",
                        format!("associations[{i}].to.id must be a record id"),
                    )
                })?;
            let types = item.get("types").and_then(Value::as_array).ok_or_else(|| {
                ApiError::field(
                    &format!("associations[{i}].types"),
                    "REQUIRED",
                    format!("associations[{i}].types must be an array"),
                )
            })?;
            for (j, t) in types.iter().enumerate() {
                let type_id = t
                    .get("associationTypeId")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| {
                        ApiError::field(
                            &format!("associations[{i}].types[{j}].associationTypeId"),
                            "REQUIRED",
                            "associationTypeId must be an integer",
                        )
                    })?;
                let category = t
                    .get("associationCategory")
                    .and_then(Value::as_str)
                    .unwrap_or("HUBSPOT_DEFINED")
                    .to_string();
                assocs.push((to, type_id, category));
            }
        }
    }
    Ok((props, assocs))
}

/// Resolves inline associations of a new record (id 0) to rows in both directions.
pub(crate) async fn resolve_associations(
    state: &AppState,
    portal_id: i64,
    ty: ObjectType,
    specs: &[AssociationSpec],
) -> Result<Vec<Association>, ApiError> {
    let mut out = Vec::new();
    for (i, (to_id, type_id, category)) in specs.iter().enumerate() {
        let Some((_, from, to, _, _)) = records::association_type(*type_id).filter(|t| t.1 == ty)
        else {
            return Err(ApiError::field(
                &format!("associations[{i}]"),
                "INVALID_ASSOCIATION_TYPE",
                format!(
                    "associationTypeId {type_id} does not start at {}",
                    ty.plural()
                ),
            ));
        };
        let exists = state
            .store
            .record(portal_id, to, *to_id)
            .await?
            .is_some_and(|r| !r.archived);
        if !exists {
            return Err(ApiError::field(
                &format!("associations[{i}].to.id"),
                "OBJECT_NOT_FOUND",
                format!("No {} with id {to_id}", to.plural()),
            ));
        }
        out.extend(records::pair((from, 0), (to, *to_id), *type_id, category));
    }
    Ok(out)
}

/// Create a record; answers 201.
#[utoipa::path(
    post,
    path = "/crm/v3/objects/{objectType}",
    tag = "CRM objects",
    params(("objectType" = String, Path)),
    request_body(content = Object, description = "{\"properties\": {...}, \"associations\": [...]}"),
    responses((status = 201, body = SimplePublicObject), (status = 409, description = "A contact with this email exists"))
)]
async fn create_object(
    State(state): State<Arc<AppState>>,
    Path(ty): Path<String>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let ty = object_type(&ty)?;
    auth.require(write_scopes(ty))?;
    let catalog = state.catalog(auth.portal_id, ty).await?;
    let (props, specs) = parse_write_body(&catalog, &body, true)?;
    let assocs = resolve_associations(&state, auth.portal_id, ty, &specs).await?;
    let record = records::create(&state, auth.portal_id, ty, props, assocs).await?;
    let wire = to_wire(&state, auth.portal_id, &record, &View::written()).await?;
    Ok((StatusCode::CREATED, Json(wire)).into_response())
}

/// The record named by an id, or by the value of a unique `idProperty`.
pub(crate) async fn lookup(
    state: &AppState,
    portal_id: i64,
    ty: ObjectType,
    id: &str,
    id_property: Option<&str>,
) -> Result<Option<Record>, ApiError> {
    match id_property.filter(|p| *p != "hs_object_id") {
        Some(prop) => {
            let allowed = matches!(
                (ty, prop),
                (ObjectType::Contact, "email")
                    | (ObjectType::Company, "domain")
                    | (ObjectType::Call, "hs_call_external_id")
            );
            if !allowed {
                return Err(ApiError::field(
                    "idProperty",
                    "INVALID_ID_PROPERTY",
                    format!(
                        "idProperty \"{prop}\" is not a unique property of {}",
                        ty.plural()
                    ),
                ));
            }
            Ok(state
                .store
                .record_by_property(portal_id, ty, prop, id)
                .await?)
        }
        None => match id.parse::<i64>() {
            Ok(n) => Ok(state.store.record(portal_id, ty, n).await?),
            Err(_) => Ok(None),
        },
    }
}

/// Finds the record named by the path id, or by `idProperty`, honouring `archived`.
pub(crate) async fn find_record(
    state: &AppState,
    portal_id: i64,
    ty: ObjectType,
    id: &str,
    query: &Query,
) -> Result<Record, ApiError> {
    let archived = query.bool("archived")?;
    lookup(state, portal_id, ty, id, query.one("idProperty"))
        .await?
        .filter(|r| r.archived == archived)
        .ok_or_else(ApiError::not_found)
}

/// Read one record by id or `idProperty`.
#[utoipa::path(
    get,
    path = "/crm/v3/objects/{objectType}/{objectId}",
    tag = "CRM objects",
    params(
        ("objectType" = String, Path), ("objectId" = String, Path),
        ("properties" = Option<Vec<String>>, Query), ("associations" = Option<Vec<String>>, Query),
        ("archived" = Option<bool>, Query), ("idProperty" = Option<String>, Query)
    ),
    responses((status = 200, body = SimplePublicObject), (status = 404, description = "No such record"))
)]
async fn get_object(
    State(state): State<Arc<AppState>>,
    Path((ty, id)): Path<(String, String)>,
    auth: Auth,
    query: Query,
) -> Result<Json<SimplePublicObject>, ApiError> {
    let ty = object_type(&ty)?;
    auth.require(read_scopes(ty))?;
    let record = find_record(&state, auth.portal_id, ty, &id, &query).await?;
    let view = View::from_query(&query)
        .settle(&state, auth.portal_id, ty)
        .await?;
    Ok(Json(to_wire(&state, auth.portal_id, &record, &view).await?))
}

/// Update a record's properties.
#[utoipa::path(
    patch,
    path = "/crm/v3/objects/{objectType}/{objectId}",
    tag = "CRM objects",
    params(("objectType" = String, Path), ("objectId" = String, Path), ("idProperty" = Option<String>, Query)),
    request_body(content = Object, description = "{\"properties\": {...}}"),
    responses((status = 200, body = SimplePublicObject))
)]
async fn update_object(
    State(state): State<Arc<AppState>>,
    Path((ty, id)): Path<(String, String)>,
    auth: Auth,
    query: Query,
    JsonBody(body): JsonBody,
) -> Result<Json<SimplePublicObject>, ApiError> {
    let ty = object_type(&ty)?;
    auth.require(write_scopes(ty))?;
    let catalog = state.catalog(auth.portal_id, ty).await?;
    let (props, _) = parse_write_body(&catalog, &body, false)?;
    let record = find_record(&state, auth.portal_id, ty, &id, &query).await?;
    let record = records::update(&state, auth.portal_id, ty, record.id, props).await?;
    Ok(Json(
        to_wire(&state, auth.portal_id, &record, &View::written()).await?,
    ))
}

/// Archive a record; answers 204.
#[utoipa::path(
    delete,
    path = "/crm/v3/objects/{objectType}/{objectId}",
    tag = "CRM objects",
    params(("objectType" = String, Path), ("objectId" = String, Path)),
    responses((status = 204, description = "Archived"))
)]
async fn archive_object(
    State(state): State<Arc<AppState>>,
    Path((ty, id)): Path<(String, String)>,
    auth: Auth,
) -> Result<StatusCode, ApiError> {
    let ty = object_type(&ty)?;
    auth.require(write_scopes(ty))?;
    let id = id.parse::<i64>().map_err(|_| ApiError::not_found())?;
    records::archive(&state, auth.portal_id, ty, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
