//! API keys and `/user`: minting (only the hash is stored), listing, revoking.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use agenttier_bus::model::{ApiKeyRecord, Principal, now_rfc3339, parse_duration};
use agenttier_bus::store::{self, Store, to_bytes};

use crate::auth::{Caller, key_hash, key_store_key};
use crate::error::{Json, Path};
use crate::{ApiError, Ctx, Error};

const KEYS_PREFIX: &str = "apikeys.";

/// A new API key: `atk_` + 48 lowercase hex (192 bits from the thread CSPRNG).
pub fn generate_api_key() -> String {
    format!("atk_{}", hex::encode(rand::random::<[u8; 24]>()))
}

/// Stores `key` (as its hash) for `principal`, unless it is already stored for
/// that principal; a stored key with another principal is overwritten. For
/// `AGENTTIER_BOOTSTRAP_API_KEY` and the admin key of `agenttier up`.
pub async fn ensure_api_key(
    store: &dyn Store,
    key: &str,
    principal: Principal,
    name: &str,
) -> Result<(), Error> {
    let hash = key_hash(key);
    let skey = key_store_key(&hash);
    let record = ApiKeyRecord {
        id: hash[..12].to_string(),
        name: name.to_string(),
        key_hash: hash.clone(),
        principal,
        created_at: now_rfc3339(),
        expires_at: None,
    };
    match store.create(&skey, to_bytes(&record)).await {
        Ok(_) => Ok(()),
        Err(store::Error::Exists(_)) => {
            let existing = store::get_json::<ApiKeyRecord>(store, &skey).await?;
            if let Some((old, _)) = existing
                && old.principal == record.principal
                && old.name == record.name
                && old.expires_at.is_none()
            {
                return Ok(());
            }
            store.put(&skey, to_bytes(&record)).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn me(Caller(p): Caller) -> impl IntoResponse {
    axum::Json(json!({
        "sub": p.sub,
        "email": p.email,
        "name": p.name,
        "groups": p.groups,
        "isAdmin": p.admin,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateBody {
    name: Option<String>,
    expires_in: Option<Value>,
    /// Admins only: mint the key for another principal.
    sub: Option<String>,
    email: Option<String>,
    admin: Option<bool>,
    /// v0.8 sandbox-scoped keys: refused rather than ignored, since ignoring
    /// them would mint a full-access key where a restricted one was asked for.
    sandbox_id: Option<Value>,
    action_groups: Option<Value>,
}

/// Fields asking for a restriction this server cannot enforce.
fn refuse_scopes(body: &CreateBody) -> Result<(), ApiError> {
    let set = |v: &Option<Value>| match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    };
    for (field, v) in [
        ("sandboxId", &body.sandbox_id),
        ("actionGroups", &body.action_groups),
    ] {
        if set(v) {
            return Err(ApiError::InvalidRequest(format!(
                "{field}: scoped API keys are not supported by this server"
            )));
        }
    }
    Ok(())
}

/// `expiresIn`: seconds as a number, or `30s`, `12h`, `90d`.
fn parse_expires_in(v: &Value) -> Option<Duration> {
    match v {
        Value::Number(n) => n.as_u64().filter(|s| *s > 0).map(Duration::from_secs),
        Value::String(s) => match s.strip_suffix('d') {
            Some(days) => days
                .parse::<u64>()
                .ok()
                .filter(|d| *d > 0)
                .and_then(|d| d.checked_mul(86_400))
                .map(Duration::from_secs),
            None => parse_duration(s),
        },
        _ => None,
    }
}

fn rfc3339_after(d: Duration) -> Option<String> {
    let d = time::Duration::try_from(d).ok()?;
    let t = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()?
        .checked_add(d)?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// The principal a new key is for: the caller, or (admins only) another one.
fn key_principal(caller: &Principal, body: &CreateBody) -> Result<Principal, ApiError> {
    let other = body.sub.as_deref().is_some_and(|s| s != caller.sub);
    if !other && body.admin.is_none_or(|a| a == caller.admin) && body.email.is_none() {
        return Ok(caller.clone());
    }
    if !caller.admin {
        return Err(ApiError::Forbidden(
            "only admins may create keys for another principal".into(),
        ));
    }
    let sub = body.sub.clone().unwrap_or_else(|| caller.sub.clone());
    if sub.is_empty() {
        return Err(ApiError::InvalidRequest("sub must not be empty".into()));
    }
    let email = body.email.clone().unwrap_or_default();
    Ok(Principal {
        name: if email.is_empty() {
            sub.clone()
        } else {
            email.clone()
        },
        sub,
        email,
        groups: Vec::new(),
        admin: body.admin.unwrap_or(false),
    })
}

pub(crate) async fn create(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
    Json(body): Json<CreateBody>,
) -> Result<impl IntoResponse, ApiError> {
    refuse_scopes(&body)?;
    let principal = key_principal(&caller, &body)?;
    let expires_at = match &body.expires_in {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_expires_in(v).and_then(rfc3339_after).ok_or_else(|| {
            ApiError::InvalidRequest("expiresIn must be like 3600, 12h or 90d".into())
        })?),
    };
    let key = generate_api_key();
    let hash = key_hash(&key);
    let record = ApiKeyRecord {
        id: hash[..12].to_string(),
        name: body.name.unwrap_or_else(|| "default".into()),
        key_hash: hash.clone(),
        principal,
        created_at: now_rfc3339(),
        expires_at,
    };
    ctx.store
        .create(&key_store_key(&hash), to_bytes(&record))
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "id": record.id,
            "key": key,
            "name": record.name,
            "createdAt": record.created_at,
            "expiresAt": record.expires_at,
        })),
    ))
}

async fn records(ctx: &Ctx) -> Result<Vec<ApiKeyRecord>, ApiError> {
    let mut out = Vec::new();
    for (key, entry) in ctx.store.list(KEYS_PREFIX).await? {
        match entry.decode::<ApiKeyRecord>(&key) {
            Ok(r) => out.push(r),
            Err(e) => tracing::warn!(error = %e, "skipping unreadable API key record"),
        }
    }
    Ok(out)
}

pub(crate) async fn list(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
) -> Result<impl IntoResponse, ApiError> {
    let keys: Vec<Value> = records(&ctx)
        .await?
        .into_iter()
        .filter(|r| r.principal.sub == caller.sub)
        .map(|r| {
            json!({
                "id": r.id,
                "userId": r.principal.sub,
                "name": r.name,
                "createdAt": r.created_at,
                "expiresAt": r.expires_at,
            })
        })
        .collect();
    // `apiKeys` is SPEC's name; v0.8 clients read `keys`.
    Ok(axum::Json(json!({ "apiKeys": keys, "keys": keys })))
}

/// Revokes one of the caller's keys (admins: any key).
pub(crate) async fn revoke(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let found = records(&ctx)
        .await?
        .into_iter()
        .find(|r| r.id == id && caller.may_access(&r.principal.sub));
    let Some(record) = found else {
        return Err(ApiError::NotFound("api key not found"));
    };
    ctx.store.delete(&key_store_key(&record.key_hash)).await?;
    ctx.keys.forget(&record.key_hash);
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_atk_and_48_hex() {
        let k = generate_api_key();
        assert_eq!(k.len(), 52);
        let hex = k.strip_prefix("atk_").unwrap_or_default();
        assert!(
            hex.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_ne!(k, generate_api_key());
    }

    #[test]
    fn expires_in_accepts_numbers_durations_and_days() {
        assert_eq!(parse_expires_in(&json!(60)), Some(Duration::from_secs(60)));
        assert_eq!(
            parse_expires_in(&json!("12h")),
            Some(Duration::from_secs(43_200))
        );
        assert_eq!(
            parse_expires_in(&json!("90d")),
            Some(Duration::from_secs(90 * 86_400))
        );
        for bad in [json!(0), json!(-5), json!("0d"), json!("soon"), json!(true)] {
            assert_eq!(parse_expires_in(&bad), None, "{bad}");
        }
    }

    #[test]
    fn only_admins_mint_for_others() {
        let user = Principal {
            sub: "u1".into(),
            ..Default::default()
        };
        let admin = Principal {
            sub: "root".into(),
            admin: true,
            ..Default::default()
        };
        let for_other = CreateBody {
            sub: Some("u2".into()),
            ..Default::default()
        };
        assert!(matches!(
            key_principal(&user, &for_other),
            Err(ApiError::Forbidden(_))
        ));
        let escalate = CreateBody {
            admin: Some(true),
            ..Default::default()
        };
        assert!(matches!(
            key_principal(&user, &escalate),
            Err(ApiError::Forbidden(_))
        ));
        assert_eq!(
            key_principal(&user, &CreateBody::default()).ok(),
            Some(user.clone())
        );
        let p = key_principal(&admin, &for_other).ok().unwrap_or_default();
        assert_eq!((p.sub.as_str(), p.admin), ("u2", false));
    }

    #[test]
    fn scoped_key_requests_are_refused_not_ignored() {
        let body: CreateBody =
            serde_json::from_value(json!({"sandboxId": "demo"})).unwrap_or_default();
        assert!(
            matches!(refuse_scopes(&body), Err(ApiError::InvalidRequest(m)) if m.starts_with("sandboxId"))
        );
        let body: CreateBody =
            serde_json::from_value(json!({"actionGroups": ["invoke"]})).unwrap_or_default();
        assert!(refuse_scopes(&body).is_err());
        let body: CreateBody =
            serde_json::from_value(json!({"actionGroups": [], "sandboxId": null}))
                .unwrap_or_default();
        assert!(refuse_scopes(&body).is_ok());
    }
}
