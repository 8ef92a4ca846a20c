//! `GET /templates` and `GET /templates/{name}` (SPEC §2.5), read from the store.

use axum::extract::State;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use agenttier_bus::model::{Template, is_dns_label};
use agenttier_bus::store::get_json;

use crate::error::{Path, Query};
use crate::resolve::{NsQuery, check_namespace};
use crate::{ApiError, Ctx};

fn view(t: &Template) -> Value {
    let mut v = json!({
        "name": t.metadata.name,
        "kind": t.kind,
        "description": t.spec.description,
        "mode": t.spec.mode.as_str(),
        "image": t.spec.image,
        "spec": serde_json::to_value(&t.spec).unwrap_or(Value::Null),
    });
    if let Some(ns) = &t.metadata.namespace {
        v["namespace"] = json!(ns);
    }
    v
}

pub(crate) async fn list(
    State(ctx): State<Ctx>,
    Query(q): Query<NsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(ns) = &q.namespace {
        check_namespace(ns)?;
    }
    let mut out = Vec::new();
    for (key, entry) in ctx.store.list(Template::KEY_PREFIX).await? {
        match entry.decode::<Template>(&key) {
            Ok(t)
                if q.namespace.is_none()
                    || t.metadata.namespace.is_none()
                    || t.metadata.namespace == q.namespace =>
            {
                out.push(view(&t))
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "skipping unreadable template"),
        }
    }
    Ok(axum::Json(json!({ "templates": out })))
}

/// A cluster template, or with `?namespace=` that namespace's template of
/// the name (falling back to the cluster one).
pub(crate) async fn get(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    Query(q): Query<NsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    if !is_dns_label(&name) {
        return Err(ApiError::TemplateNotFound(name));
    }
    let mut keys = Vec::new();
    if let Some(ns) = &q.namespace {
        check_namespace(ns)?;
        keys.push(Template::namespaced_key(ns, &name));
    }
    keys.push(Template::cluster_key(&name));
    for key in keys {
        if let Some((t, _)) = get_json::<Template>(ctx.store.as_ref(), &key).await? {
            return Ok(axum::Json(view(&t)));
        }
    }
    Err(ApiError::TemplateNotFound(name))
}
