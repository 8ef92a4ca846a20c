//! Sandboxes (SPEC §2.2): create, get, list, delete, stop, resume.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use agenttier_bus::model::{
    AgentConfigure, Mode, Owner, Phase, Principal, Sandbox, SandboxStatus, Template, TemplateRef,
    is_dns_label, now_rfc3339,
};
use agenttier_bus::msg::{LifecycleEvent, SimpleRequest};
use agenttier_bus::store::{self, get_json, to_bytes};
use agenttier_bus::subject::Verb;

use crate::actor::{RUNNING_OR_STOPPED, ask};
use crate::auth::Caller;
use crate::error::{Json, Path, Query};
use crate::resolve::{DEFAULT_NAMESPACE, NsQuery, check_namespace, resolve};
use crate::{ApiError, Ctx};

/// `templateRef` as clients send it: `{name, kind?, namespace?}` or a name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum TemplateRefBody {
    Name(String),
    Full {
        name: String,
        kind: Option<String>,
        namespace: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateBody {
    name: Option<String>,
    namespace: Option<String>,
    mode: Option<String>,
    #[serde(alias = "template")]
    template_ref: Option<TemplateRefBody>,
    image: Option<String>,
    env: Option<BTreeMap<String, String>>,
}

fn invalid(field: &str, value: &str) -> ApiError {
    ApiError::InvalidRequest(format!(
        "{field}: {value:?} is not a DNS-1123 label (lowercase letters, digits and '-', at most 63 characters)"
    ))
}

fn parse_mode(s: &str) -> Result<Mode, ApiError> {
    match s {
        "code" => Ok(Mode::Code),
        "agent" => Ok(Mode::Agent),
        _ => Err(ApiError::InvalidRequest(format!(
            "mode: {s:?} must be \"code\" or \"agent\""
        ))),
    }
}

/// Checks the body and says which template it names (ref, store key).
fn validate(body: &CreateBody) -> Result<(String, String, TemplateRef), ApiError> {
    let name = body
        .name
        .clone()
        .ok_or_else(|| ApiError::InvalidRequest("name: required".into()))?;
    if !is_dns_label(&name) {
        return Err(invalid("name", &name));
    }
    let namespace = body
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    if !is_dns_label(&namespace) {
        return Err(invalid("namespace", &namespace));
    }
    let (tname, kind, tns) = match &body.template_ref {
        None => return Err(ApiError::InvalidRequest("templateRef: required".into())),
        Some(TemplateRefBody::Name(n)) => (n.clone(), None, None),
        Some(TemplateRefBody::Full {
            name,
            kind,
            namespace,
        }) => (name.clone(), kind.clone(), namespace.clone()),
    };
    if !is_dns_label(&tname) {
        return Err(invalid("templateRef.name", &tname));
    }
    let kind = kind.unwrap_or_else(|| TemplateRef::CLUSTER.into());
    let tns = match kind.as_str() {
        TemplateRef::CLUSTER => None,
        TemplateRef::NAMESPACED => Some(tns.unwrap_or_else(|| namespace.clone())),
        other => {
            return Err(ApiError::InvalidRequest(format!(
                "templateRef.kind: {other:?} must be ClusterSandboxTemplate or SandboxTemplate"
            )));
        }
    };
    if let Some(ns) = &tns
        && !is_dns_label(ns)
    {
        return Err(invalid("templateRef.namespace", ns));
    }
    Ok((
        name,
        namespace,
        TemplateRef {
            name: tname,
            kind,
            namespace: tns,
        },
    ))
}

fn display_name(p: &Principal) -> String {
    if p.name.is_empty() {
        p.email.clone()
    } else {
        p.name.clone()
    }
}

pub(crate) async fn create(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
    Json(body): Json<CreateBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (name, namespace, tref) = validate(&body)?;
    let mode = body.mode.as_deref().map(parse_mode).transpose()?;
    let tkey = match &tref.namespace {
        Some(ns) => Template::namespaced_key(ns, &tref.name),
        None => Template::cluster_key(&tref.name),
    };
    let Some((template, _)) = get_json::<Template>(ctx.store.as_ref(), &tkey).await? else {
        return Err(ApiError::TemplateNotFound(tref.name));
    };
    let spec = template.spec;
    let mut env = spec.env;
    env.extend(body.env.unwrap_or_default());
    let record = Sandbox {
        name: name.clone(),
        namespace: namespace.clone(),
        mode: mode.unwrap_or(spec.mode),
        template_ref: tref,
        image: body.image.filter(|i| !i.is_empty()).unwrap_or(spec.image),
        env,
        agent: spec.agent,
        network: spec.network,
        created_at: now_rfc3339(),
        created_by: Owner {
            sub: caller.sub.clone(),
            email: caller.email.clone(),
            display_name: display_name(&caller),
        },
        status: SandboxStatus {
            phase: Phase::Creating,
            ..Default::default()
        },
    };
    match ctx
        .store
        .create(&Sandbox::key(&namespace, &name), to_bytes(&record))
        .await
    {
        Ok(_) => {}
        Err(store::Error::Exists(_)) => {
            return Err(ApiError::AlreadyExists(format!(
                "sandbox {name:?} already exists in namespace {namespace:?}"
            )));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(%namespace, %name, template = %record.template_ref.name, "sandbox created");
    let ev = LifecycleEvent {
        details: json!({"template": record.template_ref.name, "mode": record.mode}),
        ..LifecycleEvent::now("SandboxCreated", &namespace, &name, &caller.sub)
    };
    let subject = ctx.subjects.sandbox_events(&namespace, &name);
    if let Err(e) = agenttier_bus::publish_json(ctx.bus.as_ref(), subject, &ev).await {
        tracing::warn!(error = %e, "publishing SandboxCreated failed");
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "sandboxId": record.name,
            "name": record.name,
            "namespace": record.namespace,
            "status": Phase::Creating.as_str(),
            "mode": record.mode.as_str(),
            "templateRef": record.template_ref.name,
        })),
    ))
}

/// A sandbox as `GET /sandboxes/{id}` shows it, serialized straight from
/// the record (keys in the order a JSON map would sort them).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct View<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_configure: Option<&'a AgentConfigure>,
    created_at: &'a str,
    created_by: CreatedBy<'a>,
    image: &'a str,
    last_activity_at: &'a str,
    message: &'a str,
    mode: &'static str,
    name: &'a str,
    namespace: &'a str,
    sandbox_id: &'a str,
    status: &'static str,
    template_ref: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedBy<'a> {
    display_name: &'a str,
    email: &'a str,
}

pub(crate) fn view(s: &Sandbox) -> View<'_> {
    View {
        agent_configure: s.status.agent_configure.as_ref(),
        created_at: &s.created_at,
        created_by: CreatedBy {
            display_name: &s.created_by.display_name,
            email: &s.created_by.email,
        },
        image: &s.image,
        last_activity_at: s
            .status
            .last_activity_at
            .as_deref()
            .unwrap_or(&s.created_at),
        message: &s.status.message,
        mode: s.mode.as_str(),
        name: &s.name,
        namespace: &s.namespace,
        sandbox_id: &s.name,
        status: s.status.phase.as_str(),
        template_ref: &s.template_ref.name,
    }
}

pub(crate) async fn get(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(q): Query<NsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let s = resolve(&ctx, &caller, &id, q.namespace.as_deref()).await?;
    Ok(axum::Json(view(&s)).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    namespace: Option<String>,
    status: Option<String>,
}

pub(crate) async fn list(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
    Query(q): Query<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let prefix = match q.namespace.as_deref().filter(|n| !n.is_empty()) {
        Some(ns) => {
            check_namespace(ns)?;
            format!("{}{ns}.", Sandbox::KEY_PREFIX)
        }
        None => Sandbox::KEY_PREFIX.to_string(),
    };
    let status = q.status.filter(|s| !s.is_empty());
    let records = ctx.records.list(&prefix).await?;
    let sandboxes: Vec<View<'_>> = records
        .iter()
        .filter(|s| {
            status
                .as_deref()
                .is_none_or(|st| st.eq_ignore_ascii_case(s.status.phase.as_str()))
                && caller.may_access(&s.created_by.sub)
        })
        .map(|s| view(s))
        .collect();
    #[derive(Serialize)]
    struct Listed<'a> {
        sandboxes: Vec<View<'a>>,
    }
    Ok(axum::Json(Listed { sandboxes }).into_response())
}

/// Marks the sandbox `Deleting`; its executor (or the controller, for one
/// never placed) cancels its runs, removes the workspace and the record.
pub(crate) async fn delete(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(q): Query<NsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let s = resolve(&ctx, &caller, &id, q.namespace.as_deref()).await?;
    let key = Sandbox::key(&s.namespace, &s.name);
    let marked = store::modify::<Sandbox, _>(ctx.store.as_ref(), &key, |r| {
        if r.status.phase == Phase::Deleting {
            return false;
        }
        r.status.phase = Phase::Deleting;
        r.status.message = "deletion requested".into();
        true
    })
    .await?;
    // So that this router's next read of it says `Deleting`.
    if let Some((record, revision)) = marked {
        ctx.records.wrote(&key, revision, record);
    }
    tracing::info!(namespace = %s.namespace, name = %s.name, "sandbox deletion requested");
    Ok(StatusCode::NO_CONTENT)
}

async fn lifecycle(
    ctx: Ctx,
    caller: Principal,
    id: String,
    ns: Option<String>,
    verb: Verb,
) -> Result<Value, ApiError> {
    let s = resolve(&ctx, &caller, &id, ns.as_deref()).await?;
    let _: Value = ask(
        &ctx,
        &s,
        verb,
        &SimpleRequest {
            caller,
            invoke_id: None,
        },
        RUNNING_OR_STOPPED,
    )
    .await?;
    let status = if verb == Verb::Stop {
        "stopping"
    } else {
        "resuming"
    };
    Ok(json!({ "status": status }))
}

pub(crate) async fn stop(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(q): Query<NsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    lifecycle(ctx, caller, id, q.namespace, Verb::Stop)
        .await
        .map(axum::Json)
}

pub(crate) async fn resume(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(q): Query<NsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    lifecycle(ctx, caller, id, q.namespace, Verb::Resume)
        .await
        .map(axum::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> CreateBody {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    fn message(r: Result<(String, String, TemplateRef), ApiError>) -> String {
        match r {
            Err(ApiError::InvalidRequest(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_fields_are_named() {
        assert!(
            message(validate(&body(
                json!({"name":"Bad","templateRef":{"name":"t"}})
            )))
            .starts_with("name:")
        );
        assert!(
            message(validate(&body(
                json!({"name":"a","namespace":"a.b","templateRef":"t"})
            )))
            .starts_with("namespace:")
        );
        assert!(message(validate(&body(json!({"name":"a"})))).starts_with("templateRef:"));
        assert!(
            message(validate(&body(
                json!({"name":"a","templateRef":{"name":"t","kind":"Pod"}})
            )))
            .starts_with("templateRef.kind:")
        );
        assert!(parse_mode("shell").is_err());
    }

    #[test]
    fn template_refs_default_to_cluster_and_namespaced_ones_to_the_sandbox_namespace() {
        let (_, _, r) = validate(&body(json!({"name":"a","templateRef":"python-agent"})))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((r.kind.as_str(), r.namespace), (TemplateRef::CLUSTER, None));
        let (_, ns, r) =
            validate(&body(json!({"name":"a","namespace":"team","templateRef":{"name":"t","kind":"SandboxTemplate"}})))
                .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(ns, "team");
        assert_eq!(r.namespace.as_deref(), Some("team"));
    }
}
