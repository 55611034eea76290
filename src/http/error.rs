//! The one error type of the API, rendered as HubSpot's error body (`hubspot-api.md` §8.1):
//!
//! ```text
//! { "status": "error", "message": "...", "correlationId": "uuid",
//!   "category": "VALIDATION_ERROR", "errors": [ { "message": "...", "in": "field", "code": "..." } ] }
//! ```
//!
//! Handlers return `Result<_, ApiError>` and never build error JSON by hand. Internal errors are
//! logged with the request's correlation id and shown to the client only as that id.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::store::StoreError;

tokio::task_local! {
    /// The correlation id of the request being served; set by the request middleware.
    pub static CORRELATION_ID: String;
}

/// The current request's correlation id (a fresh one outside a request).
pub fn correlation_id() -> String {
    CORRELATION_ID
        .try_with(|c| c.clone())
        .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string())
}

/// One entry of `errors[]`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub message: String,
    /// The field the error is about, as a dotted path (`fromNumber.e164Number`).
    #[serde(rename = "in")]
    pub in_: String,
    pub code: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &str, message: impl Into<String>) -> Self {
        FieldError {
            message: message.into(),
            in_: field.into(),
            code: code.to_string(),
        }
    }
}

#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is wrong; `errors` names each field.
    Validation {
        message: String,
        errors: Vec<FieldError>,
    },
    /// 401: no token, or a token we do not know.
    Unauthenticated,
    /// 403: the token lacks every one of the scopes that would allow this.
    MissingScopes(Vec<&'static str>),
    /// 404 `OBJECT_NOT_FOUND`.
    NotFound(String),
    /// 409 `CONFLICT`.
    Conflict(String),
    /// 500; the cause is logged, never sent.
    Internal(String),
}

impl ApiError {
    /// A 400 about one field.
    pub fn field(field: &str, code: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::Validation {
            message: message.clone(),
            errors: vec![FieldError::new(field, code, message)],
        }
    }

    /// A 400 from several field errors; the top message lists them all.
    pub fn fields(errors: Vec<FieldError>) -> Self {
        let message = if errors.len() == 1 {
            errors[0].message.clone()
        } else {
            format!(
                "{} validation errors: {}",
                errors.len(),
                errors
                    .iter()
                    .map(|e| e.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        };
        ApiError::Validation { message, errors }
    }

    pub fn not_found() -> Self {
        ApiError::NotFound("resource not found".into())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found(),
            StoreError::Conflict(what) => ApiError::Conflict(format!("{what} already exists")),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let correlation_id = correlation_id();
        let (status, category, message, errors, extra): (_, _, _, _, Map<String, Value>) =
            match self {
                ApiError::Validation { message, errors } => (
                    StatusCode::BAD_REQUEST,
                    "VALIDATION_ERROR",
                    message,
                    errors,
                    Map::new(),
                ),
                ApiError::Unauthenticated => (
                    StatusCode::UNAUTHORIZED,
                    "INVALID_AUTHENTICATION",
                    "Authentication credentials not found. This API supports OAuth 2.0 and private app access tokens: send `Authorization: Bearer <token>`.".to_string(),
                    vec![],
                    Map::new(),
                ),
                ApiError::MissingScopes(scopes) => {
                    let message = format!(
                        "This app hasn't been granted all required scopes to make this call. It needs one of: {}",
                        scopes.join(", ")
                    );
                    let mut extra = Map::new();
                    extra.insert(
                        "errors".into(),
                        json!([{ "message": message, "context": { "requiredGranularScopes": scopes } }]),
                    );
                    (StatusCode::FORBIDDEN, "MISSING_SCOPES", message, vec![], extra)
                }
                ApiError::NotFound(message) => (
                    StatusCode::NOT_FOUND,
                    "OBJECT_NOT_FOUND",
                    message,
                    vec![],
                    Map::new(),
                ),
                ApiError::Conflict(message) => {
                    (StatusCode::CONFLICT, "CONFLICT", message, vec![], Map::new())
                }
                ApiError::Internal(cause) => {
                    tracing::error!(correlation_id = %correlation_id, %cause, "internal error");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "INTERNAL_ERROR",
                        format!("Internal error; quote correlationId {correlation_id} when reporting it"),
                        vec![],
                        Map::new(),
                    )
                }
            };
        let mut body = Map::new();
        body.insert("status".into(), json!("error"));
        body.insert("message".into(), json!(message));
        body.insert("correlationId".into(), json!(correlation_id));
        body.insert("category".into(), json!(category));
        body.insert("errors".into(), json!(errors));
        body.extend(extra);
        (status, axum::Json(Value::Object(body))).into_response()
    }
}
