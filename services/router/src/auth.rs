//! Authentication: the first check on every `/api/v1` route.
//!
//! API keys are looked up by their SHA-256 under `apikeys.<hex>`; a lookup is
//! cached for at most `Config::key_cache_ttl` (2 s), so a revoked key stops
//! working on every router well within the SPEC's 5 s. Keys are never logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use agenttier_bus::model::{ApiKeyRecord, Principal};

use crate::{ApiError, Ctx};

/// Lowercase hex SHA-256 of an API key: its store key and stored hash.
pub(crate) fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

pub(crate) fn key_store_key(hash: &str) -> String {
    format!("apikeys.{hash}")
}

/// Cached lookups by key hash. Only found keys are cached, so the map holds
/// at most one entry per real key; expired entries are swept as it grows.
pub(crate) struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, ApiKeyRecord)>>,
}

const SWEEP_AT: usize = 1024;

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, hash: &str) -> Option<ApiKeyRecord> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(hash)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, r)| r.clone())
    }

    fn put(&self, hash: String, record: ApiKeyRecord) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= SWEEP_AT {
                let ttl = self.ttl;
                entries.retain(|_, (at, _)| at.elapsed() < ttl);
            }
            entries.insert(hash, (Instant::now(), record));
        }
    }

    /// Forgets a key at once on this router (others forget it within the TTL).
    pub fn forget(&self, hash: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(hash);
        }
    }
}

/// What the request's headers ask for.
#[derive(Debug, PartialEq)]
enum Credential<'a> {
    ApiKey(&'a str),
    Bearer,
}

fn credential(headers: &HeaderMap) -> Result<Credential<'_>, ApiError> {
    if let Some(v) = headers.get("x-api-key") {
        let key = v.to_str().map_err(|_| ApiError::InvalidApiKey)?.trim();
        return if key.is_empty() {
            Err(ApiError::InvalidApiKey)
        } else {
            Ok(Credential::ApiKey(key))
        };
    }
    let Some(v) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(ApiError::MissingAuthorization);
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::InvalidAuthorizationFormat)?;
    match v.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Credential::Bearer)
        }
        _ => Err(ApiError::InvalidAuthorizationFormat),
    }
}

/// Whether an RFC 3339 expiry lies in the past (an unreadable one counts as past).
pub(crate) fn expired(expires_at: Option<&str>) -> bool {
    use time::format_description::well_known::Rfc3339;
    match expires_at {
        None => false,
        Some(s) => time::OffsetDateTime::parse(s, &Rfc3339)
            .map(|t| t <= time::OffsetDateTime::now_utc())
            .unwrap_or(true),
    }
}

async fn lookup(ctx: &Ctx, key: &str) -> Result<Principal, ApiError> {
    let hash = key_hash(key);
    let record = match ctx.keys.get(&hash) {
        Some(r) => r,
        None => {
            let Some((record, _)) = agenttier_bus::store::get_json::<ApiKeyRecord>(
                ctx.store.as_ref(),
                &key_store_key(&hash),
            )
            .await?
            else {
                return Err(ApiError::InvalidApiKey);
            };
            ctx.keys.put(hash.clone(), record.clone());
            record
        }
    };
    let same: bool = record.key_hash.as_bytes().ct_eq(hash.as_bytes()).into();
    if !same || expired(record.expires_at.as_deref()) {
        return Err(ApiError::InvalidApiKey);
    }
    Ok(record.principal)
}

/// Middleware: authenticates, then hands the [`Principal`] to the handler.
pub(crate) async fn require(State(ctx): State<Ctx>, mut req: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    let principal = match credential(req.headers()) {
        Ok(Credential::ApiKey(key)) => lookup(&ctx, key).await,
        Ok(Credential::Bearer) => Err(ApiError::InvalidToken("OIDC is not configured".into())),
        Err(e) => Err(e),
    };
    match principal {
        Ok(p) => {
            req.extensions_mut().insert(Caller(p));
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// The authenticated caller of an `/api/v1` route.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("route without authentication".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, axum::http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn credentials_are_told_apart() {
        assert!(matches!(
            credential(&headers(&[])),
            Err(ApiError::MissingAuthorization)
        ));
        assert_eq!(
            credential(&headers(&[("x-api-key", "atk_1")])).ok(),
            Some(Credential::ApiKey("atk_1"))
        );
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer abc")])).ok(),
            Some(Credential::Bearer)
        );
        assert!(matches!(
            credential(&headers(&[("authorization", "Basic abc")])),
            Err(ApiError::InvalidAuthorizationFormat)
        ));
        assert!(matches!(
            credential(&headers(&[("authorization", "Bearer")])),
            Err(ApiError::InvalidAuthorizationFormat)
        ));
        assert!(matches!(
            credential(&headers(&[("x-api-key", " ")])),
            Err(ApiError::InvalidApiKey)
        ));
    }

    #[test]
    fn expiry_is_checked() {
        assert!(!expired(None));
        assert!(expired(Some("2001-01-01T00:00:00Z")));
        assert!(!expired(Some("2999-01-01T00:00:00Z")));
        assert!(expired(Some("not a time")));
    }

    #[test]
    fn cache_entries_expire() {
        let c = KeyCache::new(Duration::from_millis(0));
        let r = ApiKeyRecord {
            id: "x".into(),
            name: "x".into(),
            key_hash: "h".into(),
            principal: Principal::default(),
            created_at: String::new(),
            expires_at: None,
        };
        c.put("h".into(), r.clone());
        assert!(c.get("h").is_none());
        let c = KeyCache::new(Duration::from_secs(60));
        c.put("h".into(), r);
        assert!(c.get("h").is_some());
        c.forget("h");
        assert!(c.get("h").is_none());
    }
}
