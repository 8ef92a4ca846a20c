//! Asking an executor for a run's retained events: on the run's own
//! `replay` subject, or for an invoke on its sandbox's (`docs/bus.md`).

use std::time::Duration;

use bytes::Bytes;

use agenttier_bus::model::Principal;
use agenttier_bus::msg::{Event, Rejection, ReplayReply, ReplayRequest, SandboxReplayRequest};
use agenttier_bus::{Bus, Headers, Message};

/// Events asked for in one replay request (the reply stays under 1 MiB).
pub(crate) const REPLAY_LIMIT: u32 = 1000;

/// `sbx.<ns>.<name>.replay`, asked as the caller the relay serves.
pub(crate) struct SandboxReplay {
    pub subject: String,
    pub caller: Principal,
}

impl SandboxReplay {
    pub(super) async fn replay(
        &self,
        bus: &dyn Bus,
        invoke_id: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<ReplayReply, ReplayError> {
        let req = SandboxReplayRequest {
            invoke_id: invoke_id.to_string(),
            caller: self.caller.clone(),
            after,
            limit: REPLAY_LIMIT,
        };
        ask_replay(bus, &self.subject, &req, timeout).await
    }
}

/// Asks `subject` for the retained events after `after`. The reply is a
/// plain [`ReplayReply`], or a `Reply` wrapping one or a rejection.
pub(super) async fn replay(
    bus: &dyn Bus,
    subject: &str,
    after: u64,
    timeout: Duration,
) -> Result<ReplayReply, ReplayError> {
    let req = ReplayRequest {
        after,
        limit: REPLAY_LIMIT,
    };
    ask_replay(bus, subject, &req, timeout).await
}

async fn ask_replay(
    bus: &dyn Bus,
    subject: &str,
    req: &impl serde::Serialize,
    timeout: Duration,
) -> Result<ReplayReply, ReplayError> {
    let payload = Bytes::from(serde_json::to_vec(req).map_err(|e| ReplayError::Bus(e.into()))?);
    let msg = bus
        .request(subject.to_string(), Headers::new(), payload, timeout)
        .await
        .map_err(ReplayError::Bus)?;
    decode_replay(&msg)
}

#[derive(Debug)]
pub(super) enum ReplayError {
    Bus(agenttier_bus::Error),
    Rejected(Rejection),
}

fn decode_replay(msg: &Message) -> Result<ReplayReply, ReplayError> {
    /// Any of the three shapes, decoded in one pass (a `Value` tree first
    /// cost more than the events themselves on a catch-up).
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire {
        rejected: Option<Rejection>,
        ok: Option<ReplayReply>,
        events: Option<Vec<Event>>,
        finished: Option<bool>,
        first_retained: Option<u64>,
    }
    let w: Wire = msg.json().map_err(ReplayError::Bus)?;
    match w {
        Wire {
            rejected: Some(r), ..
        } => Err(ReplayError::Rejected(r)),
        Wire { ok: Some(ok), .. } => Ok(ok),
        Wire {
            events: Some(events),
            finished: Some(finished),
            first_retained: Some(first_retained),
            ..
        } => Ok(ReplayReply {
            events,
            finished,
            first_retained,
        }),
        _ => Err(ReplayError::Bus(agenttier_bus::Error::Decode(
            serde::de::Error::custom("a replay reply without events, ok or rejected"),
        ))),
    }
}
