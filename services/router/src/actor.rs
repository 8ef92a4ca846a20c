//! Requests to a sandbox's owning actor, and what their failures mean in HTTP.

use serde::Serialize;
use serde::de::DeserializeOwned;

use agenttier_bus::model::{Mode, Phase, Sandbox};
use agenttier_bus::msg::{Rejection, Reply};
use agenttier_bus::request_json;
use agenttier_bus::subject::Verb;

use crate::{ApiError, Ctx};

/// Phases in which an actor should be answering for its sandbox.
pub(crate) const RUNNING: &[Phase] = &[Phase::Running];
pub(crate) const RUNNING_OR_STOPPED: &[Phase] = &[Phase::Running, Phase::Stopped];

/// A failed bus request about `sbx`: nobody answering a sandbox whose record
/// says it should be served means its executor is down (503, retry);
/// otherwise the phase does not allow the operation (409).
pub(crate) fn bus_error(e: agenttier_bus::Error, sbx: &Sandbox, serving: &[Phase]) -> ApiError {
    match e {
        agenttier_bus::Error::NoResponders if serving.contains(&sbx.status.phase) => {
            ApiError::ExecutorUnavailable
        }
        agenttier_bus::Error::NoResponders => ApiError::InvalidPhase(sbx.status.phase),
        agenttier_bus::Error::TimedOut => ApiError::ExecutorTimeout,
        agenttier_bus::Error::Decode(e) => {
            ApiError::Internal(format!("unreadable actor reply: {e}"))
        }
        other => ApiError::Unavailable(format!("bus: {other}")),
    }
}

/// Sends `req` to `sbx`'s actor as `verb` and unwraps its [`Reply`].
pub(crate) async fn ask<Req: Serialize, T: DeserializeOwned>(
    ctx: &Ctx,
    sbx: &Sandbox,
    verb: Verb,
    req: &Req,
    serving: &[Phase],
) -> Result<T, ApiError> {
    // With no actor to ask (sandbox not placed, executor down), the mode
    // check still comes before the phase check.
    if sbx.mode == Mode::Code && matches!(verb, Verb::Invoke | Verb::Configure) {
        return Err(ApiError::Rejected(Rejection::wrong_mode(verb.as_str())));
    }
    let subject = ctx.subjects.sandbox(&sbx.namespace, &sbx.name, verb);
    let reply: Reply<T> =
        match request_json(ctx.bus.as_ref(), subject, req, ctx.config.request_timeout).await {
            Ok(reply) => reply,
            Err(e @ agenttier_bus::Error::NoResponders) => {
                // What that means depends on the phase: the record as the
                // store has it now, not this router's copy, says which (the
                // copy's, if the store cannot be read).
                let key = Sandbox::key(&sbx.namespace, &sbx.name);
                return Err(match ctx.records.fresh(&key).await {
                    Ok(Some(now)) => bus_error(e, &now, serving),
                    Ok(None) => ApiError::sandbox_not_found(),
                    Err(_) => bus_error(e, sbx, serving),
                });
            }
            Err(e) => return Err(bus_error(e, sbx, serving)),
        };
    match reply {
        Reply::Ok(t) => Ok(t),
        Reply::Rejected(r) => Err(ApiError::Rejected(r)),
    }
}
