//! Extractors that answer bad input with HubSpot's error body instead of axum's plain text.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::state::AppState;

/// Scopes that allow inbound-call and other contact writes (§2.3).
pub const CONTACT_WRITE_SCOPES: &[&str] = &[
    "crm.objects.contacts.write",
    "crm.objects.contacts.sensitive.write.v2",
    "crm.objects.contacts.highly_sensitive.write.v2",
    "crm.schemas.contacts.write",
];

/// The caller's token, resolved to its portal and scopes.
#[derive(Debug, Clone)]
pub struct Auth {
    pub portal_id: i64,
    pub scopes: Vec<String>,
}

impl Auth {
    /// Passes when the token holds at least one of `any`.
    pub fn require(&self, any: &[&'static str]) -> Result<(), ApiError> {
        if any.iter().any(|s| self.scopes.iter().any(|h| h == s)) {
            Ok(())
        } else {
            Err(ApiError::MissingScopes(any.to_vec()))
        }
    }
}

/// Runs on every request: hex digits are pushed, not formatted (a `format!` per byte was 3.5 %
/// of the workers' time).
pub fn hash_token(token: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(digest.len() * 2);
    for b in digest {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out
}

impl FromRequestParts<Arc<AppState>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .ok_or(ApiError::Unauthenticated)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthenticated)?;
        let info = state
            .token(&hash_token(token))
            .await?
            .ok_or(ApiError::Unauthenticated)?;
        Ok(Auth {
            portal_id: info.portal_id,
            scopes: info.scopes,
        })
    }
}

/// A JSON body: `Content-Type: application/json`, within the size limit, well-formed.
pub struct JsonBody(pub Value);

impl FromRequest<Arc<AppState>> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mime = content_type.split(';').next().unwrap_or("").trim();
        if mime != "application/json" && !mime.ends_with("+json") {
            return Err(ApiError::field(
                "body",
                "INVALID_CONTENT_TYPE",
                format!(
                    "Content-Type must be application/json, got \"{}\"",
                    if mime.is_empty() { "nothing" } else { mime }
                ),
            ));
        }
        let limit = state.config.body_limit;
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| {
                ApiError::field(
                    "body",
                    "BODY_TOO_LARGE",
                    format!("The request body is larger than the limit of {limit} bytes"),
                )
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn parse_json(bytes: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::field(
            "body",
            "MALFORMED_JSON",
            format!("The request body is not valid JSON: {e}"),
        )
    })
}

/// Query parameters with repeated keys kept, as HubSpot's SDKs send arrays
/// (`?properties=a&properties=b`); comma-separated values are split too.
#[derive(Debug, Default, Clone)]
pub struct Query(pub HashMap<String, Vec<String>>);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        if let Some(q) = parts.uri.query() {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                map.entry(k.into_owned()).or_default().push(v.into_owned());
            }
        }
        Ok(Query(map))
    }
}

impl Query {
    pub fn one(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.last()).map(String::as_str)
    }

    /// An array parameter, repeated and/or comma-separated; `None` when absent.
    pub fn list(&self, key: &str) -> Option<Vec<String>> {
        let values = self.0.get(key)?;
        Some(
            values
                .iter()
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    pub fn bool(&self, key: &str) -> Result<bool, ApiError> {
        match self.one(key) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(ApiError::field(
                key,
                "INVALID_BOOLEAN",
                format!("Query parameter \"{key}\" must be true or false, got \"{v}\""),
            )),
        }
    }

    /// An integer parameter within `min..=max`, or `default` when absent.
    pub fn int(&self, key: &str, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
        match self.one(key) {
            None => Ok(default),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::field(
                    key,
                    "INVALID_INTEGER",
                    format!(
                        "Query parameter \"{key}\" must be an integer from {min} to {max}, got \"{v}\""
                    ),
                )),
            },
        }
    }
}

/// A new private-app style token (`pat-local-<uuid>`); shown once, stored only as its hash.
pub fn new_token() -> String {
    format!("pat-local-{}", uuid::Uuid::new_v4())
}

#[cfg(test)]
mod tests {
    /// Stored tokens are SHA-256 hex: the encoding must not change under existing databases.
    #[test]
    fn token_hash_is_lowercase_sha256_hex() {
        assert_eq!(
            super::hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
