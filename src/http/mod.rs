//! The HTTP API. Each API family owns its routes in its own file; this module only merges the
//! routers, adds the request middleware and serves the OpenAPI document.
//!
//! Routes are registered through `utoipa_axum::routes!`, which takes the path and the schemas
//! from each handler's `#[utoipa::path]`: a route cannot be served without being documented, so
//! `/openapi.json` cannot drift from the server.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub mod admin;
pub mod associations;
pub mod batch;
pub mod calling;
pub mod error;
pub mod extract;
pub mod objects;
pub mod owners;
pub mod properties;
pub mod search;

pub use error::{ApiError, FieldError};

/// The whole application: every API family, the OpenAPI document and the middleware.
pub fn app(state: Arc<AppState>) -> axum::Router {
    let (router, openapi) = api_router().split_for_parts();
    let openapi = Arc::new(finish_openapi(openapi));
    router
        .route(
            "/openapi.json",
            get(move || {
                let doc = openapi.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(not_found)
        .layer(middleware::from_fn(request_context))
        .with_state(state)
}

/// The documented routes of every API family.
pub fn api_router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .merge(calling::router())
        .merge(objects::router())
        .merge(batch::router())
        .merge(search::router())
        .merge(properties::router())
        .merge(associations::router())
        .merge(owners::router())
        .merge(admin::router())
}

fn finish_openapi(mut doc: OpenApi) -> OpenApi {
    doc.info.title = "Switchboard".into();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.info.description = Some(
        "A self-hostable calling backend that speaks HubSpot's calling API: inbound-call caller ID, call logging and the CRM objects behind them.".into(),
    );
    doc
}

async fn not_found() -> ApiError {
    ApiError::NotFound("No route matches this method and path".into())
}

/// Gives every request a correlation id, logs one structured line per request with it, and
/// makes it available to the error body through a task-local.
async fn request_context(req: Request, next: Next) -> Response {
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let start = Instant::now();
    let mut response = error::CORRELATION_ID
        .scope(correlation_id.clone(), next.run(req))
        .await;
    let status = response.status().as_u16();
    let micros = start.elapsed().as_micros() as u64;
    if status >= 500 {
        tracing::error!(correlation_id = %correlation_id, %method, %path, status, micros, "request");
    } else if status >= 400 {
        tracing::warn!(correlation_id = %correlation_id, %method, %path, status, micros, "request");
    } else {
        tracing::info!(correlation_id = %correlation_id, %method, %path, status, micros, "request");
    }
    if let Ok(v) = HeaderValue::from_str(&correlation_id) {
        response.headers_mut().insert("x-hubspot-correlation-id", v);
    }
    response
}
