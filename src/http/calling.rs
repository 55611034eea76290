//! HubSpot's calling extensions: `POST /crm/v3/extensions/calling/inbound-call` and its
//! date-versioned twins (`hubspot-api.md` §1, §2).
//!
//! parse (every field error collected) → match (`callerid::find`) → log (group commit) →
//! answer with the caller-ID matches in rank order.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, FieldError};
use super::extract::{Auth, CONTACT_WRITE_SCOPES, JsonBody};
use crate::callerid::{self, CallerNumber, Match, normalize};
use crate::clock;
use crate::crm;
use crate::state::AppState;
use crate::store::{
    AssociateMode, CallAssociation, CallLog, CompanyChoice, ObjectType, Properties,
};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(inbound_call))
        .routes(routes!(inbound_call_versioned))
}

/// The date-versioned API releases that carry inbound-call; their bodies are identical (§1).
const VERSIONS: [&str; 3] = ["2025-09", "2026-03", "2026-09"];

/// HubSpot's final call statuses (§2.1).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FinalCallStatus {
    Busy,
    CallingCrmUser,
    Canceled,
    Completed,
    Connecting,
    Failed,
    Hold,
    InProgress,
    Missed,
    NoAnswer,
    Queued,
    Ringing,
    Unknown,
}

/// libphonenumber's number types, as HubSpot names them (§2.1).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PhoneNumberType {
    FixedLine,
    FixedLineOrMobile,
    Mobile,
    Pager,
    PersonalNumber,
    PremiumRate,
    SharedCost,
    TollFree,
    Uan,
    Unknown,
    Voicemail,
    Voip,
}

/// `FormattedPhoneNumber`: `{"e164Number": "+442079460958", "phoneNumberType": "FIXED_LINE", "extension": "12"}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FormattedPhoneNumber {
    /// `+`, country code, national number; or `anonymous`/`private`/`restricted`/`unknown`/
    /// `unavailable` for a withheld caller (fromNumber only).
    pub e164_number: String,
    pub phone_number_type: PhoneNumberType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
}

/// `CompletedThirdPartyCallRequest`:
///
/// ```text
/// { "createEngagement": true, "engagementProperties": {"hs_call_title": "Support"},
///   "externalCallId": "c-123", "finalCallStatus": "COMPLETED",
///   "fromNumber": {"e164Number": "+442079460958", "phoneNumberType": "FIXED_LINE"},
///   "toNumber": {"e164Number": "+14155550100", "phoneNumberType": "FIXED_LINE"},
///   "potentialRecipientUserIds": [1000001], "callStartedTimestamp": "2026-11-25T10:00:00Z",
///   "durationSeconds": 95, "userId": 1000001 }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboundCallRequest {
    pub create_engagement: bool,
    pub engagement_properties: std::collections::BTreeMap<String, String>,
    pub external_call_id: String,
    pub final_call_status: FinalCallStatus,
    pub from_number: FormattedPhoneNumber,
    pub to_number: FormattedPhoneNumber,
    pub potential_recipient_user_ids: Vec<i32>,
    /// ISO-8601 date-time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_started_timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<i32>,
}

/// `ObjectCoordinates`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectCoordinates {
    pub object_id: i64,
    pub object_type_id: String,
    pub portal_id: i64,
}

/// One caller-ID match; `callerIdType` tells contacts (`CONTACT`) from companies (`COMPANY`).
/// Fields without a value are left out, never `null`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallerIdMatch {
    pub caller_id_type: String,
    pub object_coordinates: ObjectCoordinates,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `CompletedThirdPartyCallResponse`: `{"callerIdMatches": [...]}`, best match first.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboundCallResponse {
    pub caller_id_matches: Vec<CallerIdMatch>,
}

impl CallerIdMatch {
    pub fn from_match(m: &Match, portal_id: i64) -> Self {
        let p = |k: &str| {
            m.record
                .get(k)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let contact = m.record.object_type == ObjectType::Contact;
        CallerIdMatch {
            caller_id_type: if contact { "CONTACT" } else { "COMPANY" }.into(),
            object_coordinates: ObjectCoordinates {
                object_id: m.record.id,
                object_type_id: m.record.object_type.type_id().into(),
                portal_id,
            },
            first_name: if contact { p("firstname") } else { None },
            last_name: if contact { p("lastname") } else { None },
            email: if contact { p("email") } else { None },
            name: if contact { None } else { p("name") },
        }
    }
}

/// Report an inbound call: match the caller, log the call when asked, answer with the matches.
#[utoipa::path(
    post,
    path = "/crm/v3/extensions/calling/inbound-call",
    tag = "Calling extensions",
    request_body = InboundCallRequest,
    responses(
        (status = 200, description = "Caller-ID matches, best first; the logged call's id is in `X-Switchboard-Call-Id`", body = InboundCallResponse),
        (status = 400, description = "Validation error, with every bad field in `errors[]`"),
        (status = 401, description = "No token or an unknown token"),
        (status = 403, description = "The token lacks the contacts write scopes")
    )
)]
async fn inbound_call(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    handle(&state, &auth, body).await
}

/// The date-versioned twin of inbound-call (`2025-09`, `2026-03`, `2026-09`).
#[utoipa::path(
    post,
    path = "/crm/extensions/calling/{version}/inbound-call",
    tag = "Calling extensions",
    params(("version" = String, Path, description = "2025-09, 2026-03 or 2026-09")),
    request_body = InboundCallRequest,
    responses((status = 200, body = InboundCallResponse))
)]
async fn inbound_call_versioned(
    State(state): State<Arc<AppState>>,
    Path(version): Path<String>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    if !VERSIONS.contains(&version.as_str()) {
        return Err(ApiError::NotFound(format!(
            "Unknown API version \"{version}\"; inbound-call exists in {}",
            VERSIONS.join(", ")
        )));
    }
    handle(&state, &auth, body).await
}

async fn handle(state: &AppState, auth: &Auth, body: Value) -> Result<Response, ApiError> {
    auth.require(CONTACT_WRITE_SCOPES)?;
    let arrived = clock::now_ms();
    let catalog = state.catalog(auth.portal_id, ObjectType::Call).await?;
    let Parsed {
        request: req,
        caller,
    } = parse(&body, &catalog)?;
    let portal = state
        .portal(auth.portal_id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("token of unknown portal {}", auth.portal_id)))?;

    let matches = match &caller {
        None => Vec::new(),
        Some(caller) => {
            callerid::find(
                &state.index,
                &state.cards,
                state.store.as_ref(),
                portal.id,
                caller,
                req.from_number.extension.as_deref(),
                state.config.match_cap,
            )
            .await?
        }
    };

    let mut headers = HeaderMap::new();
    if req.create_engagement {
        let call =
            build_call_log(state, portal.id, portal.associate, &req, &matches, arrived).await?;
        let logged = state.store.log_call(call).await?;
        if let Ok(v) = HeaderValue::from_str(&logged.call_id.to_string()) {
            headers.insert("x-switchboard-call-id", v);
        }
        tracing::info!(call_id = logged.call_id, created = logged.created, external_call_id = %req.external_call_id, matches = matches.len(), "inbound call logged");
    }
    let body = InboundCallResponse {
        caller_id_matches: matches
            .iter()
            .map(|m| CallerIdMatch::from_match(m, portal.id))
            .collect(),
    };
    Ok((headers, Json(body)).into_response())
}

fn with_extension(e164: &str, ext: Option<&str>) -> String {
    match ext {
        Some(x) if !x.is_empty() => format!("{e164};ext={x}"),
        _ => e164.to_string(),
    }
}

/// Builds the call record: HubSpot-shaped properties, then `engagementProperties` on top, and
/// the associations the portal's `associate` mode asks for.
async fn build_call_log(
    state: &AppState,
    portal_id: i64,
    mode: AssociateMode,
    req: &InboundCallRequest,
    matches: &[Match],
    arrived: i64,
) -> Result<CallLog, ApiError> {
    let mut props = Properties::new();
    let mut set = |k: &str, v: String| {
        props.insert(k.to_string(), v);
    };
    set("hs_call_direction", "INBOUND".into());
    set("hs_call_status", status_name(req.final_call_status));
    if !normalize::is_withheld(&req.from_number.e164_number) {
        set(
            "hs_call_from_number",
            with_extension(
                &req.from_number.e164_number,
                req.from_number.extension.as_deref(),
            ),
        );
    }
    set(
        "hs_call_to_number",
        with_extension(
            &req.to_number.e164_number,
            req.to_number.extension.as_deref(),
        ),
    );
    if let Some(ts) = req
        .call_started_timestamp
        .as_deref()
        .and_then(clock::parse_iso)
    {
        set("hs_timestamp", clock::iso(ts));
    }
    if let Some(d) = req.duration_seconds {
        set("hs_call_duration", (i64::from(d) * 1000).to_string());
    }
    set("hs_call_external_id", req.external_call_id.clone());
    set("hs_call_source", "INTEGRATIONS_PLATFORM".into());
    let users = state.users(portal_id).await?;
    if let Some(uid) = req.user_id {
        match users.iter().find(|u| u.id == i64::from(uid)) {
            Some(u) => set("hubspot_owner_id", u.owner_id.to_string()),
            None => tracing::warn!(
                user_id = uid,
                "inbound-call userId is not a user of this portal; call logged without an owner"
            ),
        }
    }
    let stale: Vec<i32> = req
        .potential_recipient_user_ids
        .iter()
        .copied()
        .filter(|id| !users.iter().any(|u| u.id == i64::from(*id)))
        .collect();
    if !stale.is_empty() {
        tracing::warn!(
            ?stale,
            "potentialRecipientUserIds holds ids that are not users of this portal"
        );
    }
    if let Some(first) = matches.first() {
        set("hs_call_callee_object_id", first.record.id.to_string());
        set(
            "hs_call_callee_object_type_id",
            first.record.object_type.type_id().to_string(),
        );
    }
    props.extend(req.engagement_properties.clone());
    // A repost finds its call by this property, so engagementProperties cannot move it.
    props.insert(
        "hs_call_external_id".to_string(),
        req.external_call_id.clone(),
    );
    let (associations, company) = choose_associations(mode, matches);
    let is_new_default = !props.contains_key("hs_timestamp");
    if is_new_default {
        // Only a first post sets the receipt time; a repost must not move the call in time.
        props.insert("hs_timestamp".into(), clock::iso(arrived));
    }
    Ok(CallLog {
        portal_id,
        external_call_id: req.external_call_id.clone(),
        create_only_timestamp: is_new_default,
        properties: props,
        associations,
        company,
        at: arrived,
    })
}

fn status_name(s: FinalCallStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// contact → company, primary.
const PRIMARY_COMPANY: i64 = 1;

/// Which records a logged call is associated with.
///
/// `best`: one best contact gets the call, with its primary company (else the best company
/// match). Several contacts tied at the best rank are a shared number: the call goes to their
/// common primary company, else to the best company match, and to none of the contacts.
/// `all`: every match. `none`: nothing. The primary company is looked up by the writer, in
/// the transaction that logs the call ([`CompanyChoice`]).
fn choose_associations(
    mode: AssociateMode,
    matches: &[Match],
) -> (Vec<CallAssociation>, Option<CompanyChoice>) {
    let assoc = |m: &Match| (m.record.object_type, m.record.id);
    match mode {
        AssociateMode::None => (Vec::new(), None),
        AssociateMode::All => (matches.iter().map(assoc).collect(), None),
        AssociateMode::Best => {
            let contacts: Vec<&Match> = matches
                .iter()
                .filter(|m| m.record.object_type == ObjectType::Contact)
                .collect();
            let best_company = matches
                .iter()
                .find(|m| m.record.object_type == ObjectType::Company)
                .map(|m| m.record.id);
            let Some(top) = contacts.first() else {
                let choice = best_company.map(|id| CompanyChoice {
                    contacts: Vec::new(),
                    fallback: Some(id),
                    primary_type: PRIMARY_COMPANY,
                });
                return (Vec::new(), choice);
            };
            let tied: Vec<i64> = contacts
                .iter()
                .filter(|m| (m.tier, m.extension_match) == (top.tier, top.extension_match))
                .map(|m| m.record.id)
                .collect();
            let out = if tied.len() == 1 {
                vec![assoc(top)]
            } else {
                Vec::new()
            };
            (
                out,
                Some(CompanyChoice {
                    contacts: tied,
                    fallback: best_company,
                    primary_type: PRIMARY_COMPANY,
                }),
            )
        }
    }
}

/// Validates the body against `CompletedThirdPartyCallRequest`, collecting every error.
/// A validated inbound call, with the caller's number already parsed (`None` when withheld),
/// so the hot path parses it once.
pub struct Parsed {
    pub request: InboundCallRequest,
    pub caller: Option<CallerNumber>,
}

pub fn parse(body: &Value, catalog: &crm::Catalog) -> Result<Parsed, ApiError> {
    let mut errors = Vec::new();
    let Some(obj) = body.as_object() else {
        return Err(ApiError::field(
            "body",
            "INVALID_TYPE",
            format!(
                "The request body must be a JSON object, not {}",
                crm::kind(body)
            ),
        ));
    };
    let create_engagement = match obj.get("createEngagement") {
        Some(Value::Bool(b)) => Some(*b),
        other => {
            errors.push(type_error("createEngagement", "a boolean", other));
            None
        }
    };
    let engagement_properties =
        parse_engagement_properties(obj.get("engagementProperties"), catalog, &mut errors);
    let external_call_id = match obj.get("externalCallId") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::String(_)) => {
            errors.push(FieldError::new(
                "externalCallId",
                "REQUIRED",
                "externalCallId must not be empty",
            ));
            None
        }
        other => {
            errors.push(type_error("externalCallId", "a string", other));
            None
        }
    };
    let final_call_status =
        parse_enum::<FinalCallStatus>(obj.get("finalCallStatus"), "finalCallStatus", &mut errors);
    let from_number = parse_number(obj.get("fromNumber"), "fromNumber", true, &mut errors);
    let to_number = parse_number(obj.get("toNumber"), "toNumber", false, &mut errors);
    let potential = match obj.get("potentialRecipientUserIds") {
        Some(Value::Array(items)) => {
            let mut ids = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                match v.as_i64().and_then(|n| i32::try_from(n).ok()) {
                    Some(n) => ids.push(n),
                    None => errors.push(FieldError::new(
                        format!("potentialRecipientUserIds[{i}]"),
                        "INVALID_TYPE",
                        format!("potentialRecipientUserIds[{i}] must be a 32-bit integer user id, not {}", describe(v)),
                    )),
                }
            }
            Some(ids)
        }
        other => {
            errors.push(type_error(
                "potentialRecipientUserIds",
                "an array of user ids",
                other,
            ));
            None
        }
    };
    let call_started_timestamp = match obj.get("callStartedTimestamp") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if clock::parse_iso(s).is_some() => Some(s.clone()),
        Some(v) => {
            errors.push(FieldError::new(
                "callStartedTimestamp",
                "INVALID_DATE_TIME",
                format!("callStartedTimestamp must be an ISO-8601 date-time such as 2023-11-07T05:31:56Z, got {}", describe(v)),
            ));
            None
        }
    };
    let duration_seconds = match obj.get("durationSeconds") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(n) if n < 0 => {
                errors.push(FieldError::new(
                    "durationSeconds",
                    "NEGATIVE_DURATION",
                    format!("durationSeconds must not be negative, got {n}"),
                ));
                None
            }
            Some(n) => match i32::try_from(n) {
                Ok(n) => Some(n),
                Err(_) => {
                    errors.push(FieldError::new(
                        "durationSeconds",
                        "INVALID_INTEGER",
                        format!("durationSeconds must fit a 32-bit integer, got {n}"),
                    ));
                    None
                }
            },
            None => {
                errors.push(type_error(
                    "durationSeconds",
                    "a whole number of seconds",
                    Some(v),
                ));
                None
            }
        },
    };
    let user_id = match obj.get("userId") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64().and_then(|n| i32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                errors.push(type_error("userId", "a 32-bit integer user id", Some(v)));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    let (from_number, caller) = from_number.expect("checked");
    let request = InboundCallRequest {
        create_engagement: create_engagement.expect("checked"),
        engagement_properties: engagement_properties.expect("checked"),
        external_call_id: external_call_id.expect("checked"),
        final_call_status: final_call_status.expect("checked"),
        from_number,
        to_number: to_number.expect("checked").0,
        potential_recipient_user_ids: potential.expect("checked"),
        call_started_timestamp,
        duration_seconds,
        user_id,
    };
    Ok(Parsed { request, caller })
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => crm::kind(other).to_string(),
    }
}

fn type_error(field: &str, expected: &str, got: Option<&Value>) -> FieldError {
    match got {
        None | Some(Value::Null) => {
            FieldError::new(field, "REQUIRED", format!("{field} is required"))
        }
        Some(v) => FieldError::new(
            field,
            "INVALID_TYPE",
            format!("{field} must be {expected}, not {}", describe(v)),
        ),
    }
}

fn parse_enum<T: for<'de> Deserialize<'de>>(
    v: Option<&Value>,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    match v {
        Some(Value::String(s)) => match serde_json::from_value::<T>(Value::String(s.clone())) {
            Ok(t) => Some(t),
            Err(_) => {
                errors.push(FieldError::new(
                    field,
                    "INVALID_ENUM",
                    format!("{field} has an unknown value \"{s}\""),
                ));
                None
            }
        },
        other => {
            errors.push(type_error(field, "a string", other));
            None
        }
    }
}

fn parse_engagement_properties(
    v: Option<&Value>,
    catalog: &crm::Catalog,
    errors: &mut Vec<FieldError>,
) -> Option<std::collections::BTreeMap<String, String>> {
    let Some(Value::Object(map)) = v else {
        errors.push(type_error(
            "engagementProperties",
            "an object of strings",
            v,
        ));
        return None;
    };
    let mut out = std::collections::BTreeMap::new();
    let before = errors.len();
    for (k, val) in map {
        let field = format!("engagementProperties.{k}");
        let Value::String(s) = val else {
            errors.push(FieldError::new(
                &field,
                "INVALID_TYPE",
                format!("{field} must be a string, not {}", crm::kind(val)),
            ));
            continue;
        };
        let def = match catalog.check_writable(k) {
            Ok(d) => d,
            Err(e) => {
                errors.push(FieldError::new(
                    &field,
                    e.code,
                    format!("{field}: {}", e.message),
                ));
                continue;
            }
        };
        match crm::coerce_value(&def, s.clone()) {
            Ok(v) => {
                out.insert(k.clone(), v);
            }
            Err(message) => {
                errors.push(FieldError::new(
                    &field,
                    "INVALID_PROPERTY_VALUE",
                    format!("{field}: {message}"),
                ));
            }
        }
    }
    (errors.len() == before).then_some(out)
}

/// `is_caller`: the fromNumber, which may be withheld and is parsed for matching.
fn parse_number(
    v: Option<&Value>,
    field: &str,
    is_caller: bool,
    errors: &mut Vec<FieldError>,
) -> Option<(FormattedPhoneNumber, Option<CallerNumber>)> {
    let Some(Value::Object(obj)) = v else {
        errors.push(type_error(
            field,
            "an object with e164Number and phoneNumberType",
            v,
        ));
        return None;
    };
    let before = errors.len();
    let e164_field = format!("{field}.e164Number");
    let mut caller = None;
    let e164 = match obj.get("e164Number") {
        Some(Value::String(s)) => {
            if is_caller && normalize::is_withheld(s) {
                Some(s.clone())
            } else {
                // The caller's number is parsed for matching; the callee's is only checked.
                let checked = if is_caller {
                    normalize::parse_caller(s).map(|c| caller = Some(c))
                } else {
                    normalize::check_e164(s)
                };
                match checked {
                    Ok(()) => Some(s.clone()),
                    Err(normalize::CallerNumberError::NotE164) => {
                        errors.push(FieldError::new(&e164_field, "INVALID_E164", format!("{e164_field} must be an E.164 number: +, a country code and up to 15 digits with no spaces, such as +442079460958; got \"{s}\"")));
                        None
                    }
                    Err(normalize::CallerNumberError::Impossible) => {
                        errors.push(FieldError::new(&e164_field, "INVALID_E164", format!("{e164_field} \"{s}\" is not a possible phone number for its country code")));
                        None
                    }
                }
            }
        }
        other => {
            errors.push(type_error(&e164_field, "a string", other));
            None
        }
    };
    let kind = parse_enum::<PhoneNumberType>(
        obj.get("phoneNumberType"),
        &format!("{field}.phoneNumberType"),
        errors,
    );
    let extension = match obj.get("extension") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) if s.len() <= 40 && s.bytes().all(|b| b.is_ascii_digit()) => {
            Some(s.clone())
        }
        Some(v) => {
            let f = format!("{field}.extension");
            errors.push(FieldError::new(
                &f,
                "INVALID_EXTENSION",
                format!("{f} must be a string of digits, got {}", describe(v)),
            ));
            None
        }
    };
    if errors.len() > before {
        return None;
    }
    Some((
        FormattedPhoneNumber {
            e164_number: e164?,
            phone_number_type: kind?,
            extension,
        },
        caller,
    ))
}
