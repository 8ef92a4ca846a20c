//! Agent-mode invokes (SPEC §2.3): start one and stream it, resume a stream,
//! cancel, list. Admission (mode, phase, entrypoint, cap, size) is the
//! actor's; the router maps its answer and relays the events.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use agenttier_bus::model::{Principal, Sandbox, parse_duration};
use agenttier_bus::msg::{
    CHUNK_BYTES, CancelRequest, InvokeAccepted, InvokeRequest, ReplayReply, SandboxReplayRequest,
    SimpleRequest,
};
use agenttier_bus::subject::Verb;

use crate::actor::{RUNNING, RUNNING_OR_STOPPED, ask};
use crate::auth::Caller;
use crate::code::{read_capped, send_chunks};
use crate::error::{Json, Path, Query};
use crate::relay::{self, Kind, Relay, SandboxReplay};
use crate::resolve::{NsQuery, resolve};
use crate::sse::sse;
use crate::{ApiError, Ctx, is_id, new_id};

fn bus_unavailable(e: agenttier_bus::Error) -> ApiError {
    ApiError::Unavailable(format!("bus: {e}"))
}

#[derive(Debug, Deserialize)]
pub(crate) struct InvokeQuery {
    namespace: Option<String>,
    prompt: Option<String>,
    timeout: Option<String>,
    detach: Option<String>,
}

fn parse_bool(name: &str, v: Option<&str>) -> Result<bool, ApiError> {
    match v {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ApiError::InvalidRequest(format!(
            "{name}: {other:?} must be true or false"
        ))),
    }
}

pub(crate) async fn invoke(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(q): Query<InvokeQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let sbx = resolve(&ctx, &caller, &id, q.namespace.as_deref()).await?;
    let idempotency_key = idempotency_key(&headers)?;
    let timeout_ms = match q.timeout.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(
            parse_duration(t)
                .ok_or(ApiError::InvalidTimeout)?
                .as_millis() as u64,
        ),
    };
    let detach = parse_bool("detach", q.detach.as_deref())?;
    // One byte past the limit is enough for the actor to answer 413 in order.
    let cap = usize::try_from(ctx.config.max_stdin_bytes.saturating_add(1)).unwrap_or(usize::MAX);
    let stdin = read_capped(body, cap).await?;
    let invoke_id = new_id("inv-");
    // Subscribe before asking, so not even the first event can be missed.
    let events = ctx
        .bus
        .subscribe(ctx.subjects.invoke_events(&invoke_id))
        .await
        .map_err(bus_unavailable)?;
    let req = InvokeRequest {
        invoke_id: invoke_id.clone(),
        caller: caller.clone(),
        prompt: q.prompt,
        timeout_ms,
        detach,
        stdin_len: stdin.len() as u64,
        stdin: stdin.slice(..stdin.len().min(CHUNK_BYTES)),
        idempotency_key,
    };
    let accepted: InvokeAccepted = ask(&ctx, &sbx, Verb::Invoke, &req, RUNNING).await?;
    if accepted.invoke_id != invoke_id {
        // A retry of an earlier request: follow the invoke it started.
        tracing::info!(namespace = %sbx.namespace, name = %sbx.name, invoke_id = %accepted.invoke_id, "invoke retried with its Idempotency-Key");
        return follow(&ctx, &sbx, caller, accepted.invoke_id, 0, detach).await;
    }
    tracing::info!(namespace = %sbx.namespace, name = %sbx.name, %invoke_id, "invoke accepted");
    if stdin.len() > CHUNK_BYTES {
        tokio::spawn(send_chunks(
            ctx.clone(),
            ctx.subjects.invoke_stdin(&invoke_id),
            stdin,
        ));
    }
    let relay = Relay {
        bus: ctx.bus.clone(),
        kind: Kind::Invoke {
            replay: ctx.subjects.invoke_replay(&invoke_id),
            sandbox: Some(sandbox_replay(&ctx, &sbx, caller)),
            attached: (!detach).then(|| ctx.subjects.invoke_attached(&invoke_id)),
            started_at: Some(accepted.started_at),
            invoke_id,
        },
        liveness: ctx.config.liveness_timeout,
        attach_interval: ctx.config.attach_interval,
        shutdown: ctx.shutdown.clone(),
    };
    Ok(sse(
        relay.spawn(events, 0, None),
        ctx.config.keepalive_interval,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CancelBody {
    invoke_id: Option<String>,
}

pub(crate) async fn cancel(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(q): Query<NsQuery>,
    Json(body): Json<CancelBody>,
) -> Result<StatusCode, ApiError> {
    let sbx = resolve(&ctx, &caller, &id, q.namespace.as_deref()).await?;
    let Some(invoke_id) = body.invoke_id.filter(|i| !i.is_empty()) else {
        return Err(ApiError::InvalidRequest("invokeId: required".into()));
    };
    let req = CancelRequest { caller, invoke_id };
    let _: serde_json::Value = ask(&ctx, &sbx, Verb::Cancel, &req, RUNNING_OR_STOPPED).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn invokes(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(q): Query<NsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let sbx = resolve(&ctx, &caller, &id, q.namespace.as_deref()).await?;
    let v: serde_json::Value = ask(
        &ctx,
        &sbx,
        Verb::Invokes,
        &SimpleRequest {
            caller,
            invoke_id: None,
        },
        RUNNING_OR_STOPPED,
    )
    .await?;
    Ok(axum::Json(v))
}

#[derive(Debug, Deserialize)]
pub(crate) struct EventsQuery {
    namespace: Option<String>,
    after: Option<String>,
}

fn invoke_not_found() -> ApiError {
    ApiError::NotFound("invoke not found")
}

/// Resume: replays the events after `Last-Event-ID` (or `?after=`), then
/// follows live, on any router.
pub(crate) async fn events(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
    Path((id, invoke_id)): Path<(String, String)>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let sbx = resolve(&ctx, &caller, &id, q.namespace.as_deref()).await?;
    if !is_id(&invoke_id, "inv-") {
        return Err(invoke_not_found());
    }
    let after = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("x").trim().to_string())
        .or(q.after)
        .filter(|s| !s.is_empty());
    let after = match after {
        None => 0,
        Some(s) => s.parse::<u64>().map_err(|_| {
            ApiError::InvalidRequest(
                "Last-Event-ID (or after) must be a non-negative integer".into(),
            )
        })?,
    };
    tracing::debug!(namespace = %sbx.namespace, name = %sbx.name, %invoke_id, after, "invoke stream resumed");
    follow(&ctx, &sbx, caller, invoke_id, after, false).await
}

fn sandbox_replay(ctx: &Ctx, sbx: &Sandbox, caller: Principal) -> SandboxReplay {
    SandboxReplay {
        subject: ctx
            .subjects
            .sandbox(&sbx.namespace, &sbx.name, Verb::Replay),
        caller,
    }
}

/// Streams an existing invoke from after `after`: subscribe, replay what is
/// retained, then follow live (resume, and retries with an Idempotency-Key).
/// The replay goes to the sandbox's actor, which answers only for an invoke
/// of this sandbox that the caller may see, running or finished within the
/// retention: invoke ids alone are no capability.
async fn follow(
    ctx: &Ctx,
    sbx: &Sandbox,
    caller: Principal,
    invoke_id: String,
    after: u64,
    detach: bool,
) -> Result<Response, ApiError> {
    let sub = ctx
        .bus
        .subscribe(ctx.subjects.invoke_events(&invoke_id))
        .await
        .map_err(bus_unavailable)?;
    let req = SandboxReplayRequest {
        invoke_id: invoke_id.clone(),
        caller: caller.clone(),
        after,
        limit: relay::REPLAY_LIMIT,
    };
    let initial: ReplayReply = ask(ctx, sbx, Verb::Replay, &req, RUNNING_OR_STOPPED).await?;
    let relay = Relay {
        bus: ctx.bus.clone(),
        kind: Kind::Invoke {
            replay: ctx.subjects.invoke_replay(&invoke_id),
            sandbox: Some(sandbox_replay(ctx, sbx, caller)),
            attached: (!detach).then(|| ctx.subjects.invoke_attached(&invoke_id)),
            invoke_id,
            started_at: None,
        },
        liveness: ctx.config.liveness_timeout,
        attach_interval: ctx.config.attach_interval,
        shutdown: ctx.shutdown.clone(),
    };
    Ok(sse(
        relay.spawn(sub, after, Some(initial)),
        ctx.config.keepalive_interval,
    ))
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_string()))
        }
        _ => Err(ApiError::InvalidRequest(
            "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn body_reading_stops_one_past_the_cap() {
        let b = read_capped(Body::from(vec![7u8; 100]), 11)
            .await
            .unwrap_or_default();
        assert_eq!(b.len(), 11);
        let b = read_capped(Body::from(vec![7u8; 5]), 11)
            .await
            .unwrap_or_default();
        assert_eq!(b.len(), 5);
    }

    #[test]
    fn detach_is_a_strict_bool() {
        assert_eq!(parse_bool("detach", Some("true")).ok(), Some(true));
        assert_eq!(parse_bool("detach", None).ok(), Some(false));
        assert!(parse_bool("detach", Some("yes please")).is_err());
    }
}
