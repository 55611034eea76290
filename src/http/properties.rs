//! The properties API: `GET /crm/v3/properties/{objectType}[/{propertyName}]` and `POST` to
//! create a custom property. Custom properties can then be written and searched like built-in
//! ones, with values checked against their type.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, FieldError};
use super::extract::{Auth, JsonBody};
use super::objects::object_type;
use crate::clock;
use crate::crm::{self, PropertyDef, PropertyOption};
use crate::state::AppState;
use crate::store::ObjectType;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_properties, create_property))
        .routes(routes!(get_property))
}

fn scopes(ty: ObjectType, write: bool) -> &'static [&'static str] {
    match (ty, write) {
        (ObjectType::Company, false) => &[
            "crm.schemas.companies.read",
            "crm.schemas.companies.write",
            "crm.objects.companies.read",
            "crm.objects.companies.write",
        ],
        (ObjectType::Company, true) => &["crm.schemas.companies.write"],
        (_, false) => &[
            "crm.schemas.contacts.read",
            "crm.schemas.contacts.write",
            "crm.objects.contacts.read",
            "crm.objects.contacts.write",
        ],
        (_, true) => &["crm.schemas.contacts.write"],
    }
}

/// HubSpot's `Property` on the wire.
fn wire(p: &PropertyDef, order: usize) -> Value {
    let mut v = json!({
        "name": p.name,
        "label": p.label,
        "type": p.kind,
        "fieldType": p.field_type,
        "description": p.description,
        "groupName": p.group_name,
        "options": p.options,
        "displayOrder": order as i64,
        "calculated": p.read_only && p.hubspot_defined,
        "externalOptions": false,
        "hasUniqueValue": matches!(p.name.as_str(), "email" | "domain" | "hs_call_external_id"),
        "hidden": false,
        "hubspotDefined": p.hubspot_defined,
        "modificationMetadata": {
            "archivable": !p.hubspot_defined,
            "readOnlyDefinition": p.hubspot_defined,
            "readOnlyValue": p.read_only,
        },
        "formField": !p.read_only,
        "archived": false,
    });
    if let Some(at) = p.created_at {
        v["createdAt"] = json!(clock::iso(at));
        v["updatedAt"] = json!(clock::iso(at));
    }
    v
}

/// Every property of an object type: HubSpot's built-ins and the portal's custom ones.
#[utoipa::path(get, path = "/crm/v3/properties/{objectType}", tag = "Properties",
    params(("objectType" = String, Path)), responses((status = 200, description = "{\"results\": [Property]}")))]
async fn list_properties(
    State(state): State<Arc<AppState>>,
    Path(ty): Path<String>,
    auth: Auth,
) -> Result<Json<Value>, ApiError> {
    let ty = object_type(&ty)?;
    auth.require(scopes(ty, false))?;
    let catalog = state.catalog(auth.portal_id, ty).await?;
    let results: Vec<Value> = catalog
        .all()
        .iter()
        .enumerate()
        .map(|(i, p)| wire(p, i))
        .collect();
    Ok(Json(json!({ "results": results })))
}

/// One property by name.
#[utoipa::path(get, path = "/crm/v3/properties/{objectType}/{propertyName}", tag = "Properties",
    params(("objectType" = String, Path), ("propertyName" = String, Path)),
    responses((status = 200, description = "Property"), (status = 404, description = "No such property")))]
async fn get_property(
    State(state): State<Arc<AppState>>,
    Path((ty, name)): Path<(String, String)>,
    auth: Auth,
) -> Result<Json<Value>, ApiError> {
    let ty = object_type(&ty)?;
    auth.require(scopes(ty, false))?;
    let catalog = state.catalog(auth.portal_id, ty).await?;
    let all = catalog.all();
    let (i, p) = all
        .iter()
        .enumerate()
        .find(|(_, p)| p.name == name)
        .ok_or_else(|| {
            ApiError::NotFound(format!("Property {name} does not exist on {}", ty.plural()))
        })?;
    Ok(Json(wire(p, i)))
}

/// Create a custom property: `{"name": "tier", "label": "Tier", "type": "enumeration",
/// "fieldType": "select", "groupName": "contactinformation", "options": [{"label": "Gold", "value": "gold"}]}`.
#[utoipa::path(post, path = "/crm/v3/properties/{objectType}", tag = "Properties",
    params(("objectType" = String, Path)), request_body(content = Object),
    responses((status = 201, description = "Property"), (status = 409, description = "A property with this name exists")))]
async fn create_property(
    State(state): State<Arc<AppState>>,
    Path(ty): Path<String>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ty = object_type(&ty)?;
    auth.require(scopes(ty, true))?;
    let mut errors = Vec::new();
    let text = |k: &str, errors: &mut Vec<FieldError>| -> String {
        match body.get(k).and_then(Value::as_str) {
            Some(s) if !s.trim().is_empty() => s.to_string(),
            _ => {
                errors.push(FieldError::new(
                    k,
                    "REQUIRED",
                    format!("{k} is required and must be a non-empty string"),
                ));
                String::new()
            }
        }
    };
    let name = text("name", &mut errors);
    let label = text("label", &mut errors);
    let kind = text("type", &mut errors);
    let field_type = text("fieldType", &mut errors);
    let valid_name = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !name.is_empty() && !valid_name {
        errors.push(FieldError::new(
            "name",
            "INVALID_PROPERTY_NAME",
            format!(
                "name \"{name}\" must start with a lower-case letter and hold only a-z, 0-9 and _"
            ),
        ));
    }
    if !kind.is_empty() && !crm::PROPERTY_TYPES.contains(&kind.as_str()) {
        errors.push(FieldError::new(
            "type",
            "INVALID_ENUM",
            format!(
                "type \"{kind}\" is not one of {}",
                crm::PROPERTY_TYPES.join(", ")
            ),
        ));
    }
    let options: Vec<PropertyOption> = match body.get("options") {
        None | Some(Value::Null) => vec![],
        Some(v) => match serde_json::from_value(v.clone()) {
            Ok(o) => o,
            Err(e) => {
                errors.push(FieldError::new(
                    "options",
                    "INVALID_TYPE",
                    format!("options must be [{{label, value}}]: {e}"),
                ));
                vec![]
            }
        },
    };
    if kind == "enumeration" && options.is_empty() {
        errors.push(FieldError::new(
            "options",
            "REQUIRED",
            "an enumeration property needs options",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    let catalog = state.catalog(auth.portal_id, ty).await?;
    if catalog.get(&name).is_some() {
        return Err(ApiError::Conflict(format!(
            "A property named \"{name}\" already exists on {}",
            ty.plural()
        )));
    }
    let def = PropertyDef {
        name,
        label,
        kind,
        field_type,
        description: body
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        group_name: body
            .get("groupName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        options,
        read_only: false,
        hubspot_defined: false,
        created_at: Some(clock::now_ms()),
    };
    state.create_property(auth.portal_id, ty, &def).await?;
    let order = catalog.all().len();
    Ok((StatusCode::CREATED, Json(wire(&def, order))))
}
