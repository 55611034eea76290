//! Owners (`/crm/v3/owners`, `hubspot-api.md` §6) and user provisioning (`/settings/v3/users`).
//!
//! A user id is what inbound-call's `userId` and `potentialRecipientUserIds` carry; an owner id
//! is what `hubspot_owner_id` holds. They are different numbers, as in HubSpot.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::extract::{Auth, JsonBody, Query};
use crate::clock;
use crate::state::AppState;
use crate::store::User;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_owners))
        .routes(routes!(list_owners_slash))
        .routes(routes!(get_owner))
        .routes(routes!(create_user))
}

const OWNER_SCOPES: &[&str] = &["crm.objects.owners.read", "automation"];
const USER_SCOPES: &[&str] = &["settings.users.write"];

/// `PublicOwner`: `{"id": "70000001", "userId": 1000001, "email": "...", "type": "PERSON", ...}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicOwner {
    pub id: String,
    pub user_id: i64,
    pub user_id_including_inactive: i64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = Vec<Object>)]
    pub teams: Vec<Value>,
    pub archived: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&User> for PublicOwner {
    fn from(u: &User) -> Self {
        PublicOwner {
            id: u.owner_id.to_string(),
            user_id: u.id,
            user_id_including_inactive: u.id,
            email: u.email.clone(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            kind: "PERSON".into(),
            teams: vec![],
            archived: u.archived,
            created_at: clock::iso(u.created_at),
            updated_at: clock::iso(u.updated_at),
        }
    }
}

/// List the portal's owners.
#[utoipa::path(
    get,
    path = "/crm/v3/owners",
    tag = "Owners",
    params(("email" = Option<String>, Query), ("limit" = Option<i64>, Query), ("after" = Option<String>, Query), ("archived" = Option<bool>, Query)),
    responses((status = 200, description = "{\"results\": [PublicOwner], \"paging\"?}"))
)]
async fn list_owners(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    auth.require(OWNER_SCOPES)?;
    let limit = query.int("limit", 100, 1, 500)?;
    let after: i64 = query.one("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let archived = query.bool("archived")?;
    let email = query.one("email").map(str::to_ascii_lowercase);
    let users: Vec<User> = state
        .store
        .users(auth.portal_id)
        .await?
        .into_iter()
        .filter(|u| u.archived == archived && u.owner_id > after)
        .filter(|u| {
            email
                .as_ref()
                .is_none_or(|e| u.email.to_ascii_lowercase() == *e)
        })
        .collect();
    let page: Vec<PublicOwner> = users
        .iter()
        .take(limit as usize)
        .map(PublicOwner::from)
        .collect();
    let mut body = json!({ "results": page });
    if users.len() > limit as usize {
        let next = users[limit as usize - 1].owner_id.to_string();
        body["paging"] = json!({ "next": { "after": next, "link": format!("/crm/v3/owners?limit={limit}&after={next}") } });
    }
    Ok(Json(body))
}

/// The same list at `/crm/v3/owners/`, the path HubSpot's spec and SDKs use.
#[utoipa::path(
    get,
    path = "/crm/v3/owners/",
    tag = "Owners",
    params(("email" = Option<String>, Query), ("limit" = Option<i64>, Query), ("after" = Option<String>, Query), ("archived" = Option<bool>, Query)),
    responses((status = 200, description = "{\"results\": [PublicOwner], \"paging\"?}"))
)]
async fn list_owners_slash(
    state: State<Arc<AppState>>,
    auth: Auth,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    list_owners(state, auth, query).await
}

/// Read an owner by owner id, or by user id with `idProperty=userId`.
#[utoipa::path(
    get,
    path = "/crm/v3/owners/{ownerId}",
    tag = "Owners",
    params(("ownerId" = String, Path), ("idProperty" = Option<String>, Query, description = "id (default) or userId")),
    responses((status = 200, body = PublicOwner), (status = 404, description = "No such owner"))
)]
async fn get_owner(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    auth: Auth,
    query: Query,
) -> Result<Json<PublicOwner>, ApiError> {
    auth.require(OWNER_SCOPES)?;
    let by_user = match query.one("idProperty") {
        None | Some("id") => false,
        Some("userId") => true,
        Some(other) => {
            return Err(ApiError::field(
                "idProperty",
                "INVALID_ID_PROPERTY",
                format!("idProperty must be id or userId, got \"{other}\""),
            ));
        }
    };
    let n: i64 = id.parse().map_err(|_| ApiError::not_found())?;
    let users = state.users(auth.portal_id).await?;
    let user = users
        .iter()
        .find(|u| if by_user { u.id == n } else { u.owner_id == n })
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(PublicOwner::from(user)))
}

/// Provision a user (HubSpot's user provisioning API); its owner is created with it.
#[utoipa::path(
    post,
    path = "/settings/v3/users",
    tag = "Users",
    request_body(content = Object, description = "{\"email\": \"...\", \"firstName\"?: \"...\", \"lastName\"?: \"...\"}"),
    responses((status = 201, description = "{\"id\": \"1000001\", \"email\": ..., \"ownerId\": ...}"))
)]
async fn create_user(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    auth.require(USER_SCOPES)?;
    let email = body
        .get("email")
        .and_then(Value::as_str)
        .filter(|e| e.contains('@'))
        .ok_or_else(|| {
            ApiError::field(
                "email",
                "REQUIRED",
                "email is required and must be an email address",
            )
        })?;
    let text = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let users = state.users(auth.portal_id).await?;
    if let Some(u) = users.iter().find(|u| u.email.eq_ignore_ascii_case(email)) {
        return Err(ApiError::Conflict(format!(
            "A user with email {email} already exists. Existing ID: {}",
            u.id
        )));
    }
    let user = state
        .create_user(auth.portal_id, email, &text("firstName"), &text("lastName"))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": user.id.to_string(),
            "email": user.email,
            "firstName": user.first_name,
            "lastName": user.last_name,
            "ownerId": user.owner_id,
            "superAdmin": false,
            "sendWelcomeEmail": false
        })),
    )
        .into_response())
}
