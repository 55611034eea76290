//! `POST /crm/v3/objects/{objectType}/search` (`hubspot-api.md` §5.2). Rules live in
//! `crate::search`; this file chooses the candidates and pages the answer.
//!
//! A filter group with an `EQ` on a phone property reads its candidates from the in-memory
//! caller-ID index (`CallerIdIndex::candidates`) instead of scanning every record; groups
//! without one scan. Search here is strongly consistent: a record is searchable as soon as its
//! write returns, because a write updates the index before it answers.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::extract::{Auth, JsonBody};
use super::objects::{SimplePublicObject, View, object_type, read_scopes, to_wire};
use crate::records;
use crate::search::{self, Evaluator};
use crate::state::AppState;
use crate::store::Record;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(search_objects))
}

/// `{"total": 1, "results": [...], "paging": {"next": {"after": "10"}}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    pub total: usize,
    pub results: Vec<SimplePublicObject>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub paging: Option<Value>,
}

/// Search records with filter groups, sorts and free text.
#[utoipa::path(
    post,
    path = "/crm/v3/objects/{objectType}/search",
    tag = "CRM objects",
    params(("objectType" = String, Path)),
    request_body(content = Object, description = "PublicObjectSearchRequest: {filterGroups, sorts, query, properties, limit, after}"),
    responses((status = 200, body = SearchResponse), (status = 400, description = "A limit was exceeded or a filter is malformed"))
)]
async fn search_objects(
    State(state): State<Arc<AppState>>,
    Path(ty): Path<String>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<Json<SearchResponse>, ApiError> {
    let ty = object_type(&ty)?;
    auth.require(read_scopes(ty))?;
    let req = search::parse(&body).map_err(ApiError::fields)?;
    let catalog = state.catalog(auth.portal_id, ty).await?;
    let region = records::default_region(&state, auth.portal_id).await?;
    let eval = Evaluator {
        catalog: &catalog,
        default_region: region,
    };
    let candidates = candidates(&state, auth.portal_id, ty, &req, region).await?;
    let mut hits: Vec<Record> = candidates
        .into_iter()
        .filter(|r| r.object_type == ty && !r.archived && eval.matches(r, &req))
        .collect();
    eval.sort(&mut hits, &req.sorts);
    let total = hits.len();
    let view = View {
        properties: req.properties.clone().filter(|p| !p.is_empty()),
        ..View::default()
    }
    .settle(&state, auth.portal_id, ty)
    .await?;
    let mut results = Vec::new();
    for r in hits.iter().skip(req.after).take(req.limit) {
        results.push(to_wire(&state, auth.portal_id, r, &view).await?);
    }
    let next = req.after + req.limit;
    let paging = (next < total && next < search::MAX_RESULTS && req.limit > 0)
        .then(|| json!({ "next": { "after": next.to_string() } }));
    Ok(Json(SearchResponse {
        total,
        results,
        paging,
    }))
}

/// The records worth evaluating: the union of each group's phone-index candidates, or every
/// record of the type when some group (or a bare query) cannot be narrowed.
async fn candidates(
    state: &AppState,
    portal_id: i64,
    ty: crate::store::ObjectType,
    req: &search::SearchRequest,
    region: rlibphonenumber::Region,
) -> Result<Vec<Record>, ApiError> {
    let probes: Option<Vec<_>> = if req.groups.is_empty() {
        None
    } else {
        req.groups
            .iter()
            .map(|g| search::phone_probe(g, region))
            .collect()
    };
    let Some(probes) = probes else {
        return Ok(state.store.all_records(portal_id, ty, false).await?);
    };
    let mut ids = BTreeSet::new();
    for probe in probes {
        ids.extend(
            state
                .index
                .candidates(portal_id, probe.e164.as_deref(), &probe.national_keys),
        );
    }
    let ids: Vec<i64> = ids.into_iter().collect();
    Ok(state.store.records_by_ids(portal_id, &ids).await?)
}
