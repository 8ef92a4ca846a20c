use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Event;
use crate::model::Principal;

/// `sbx.<ns>.<name>.invoke`: run the entrypoint once.
///
/// The router picks `invoke_id` and subscribes to the invoke's events before
/// it sends this, so no event can be missed. Stdin up to [`super::CHUNK_BYTES`]
/// travels here; the rest follows as raw chunks on `inv.<id>.stdin`, each
/// acknowledged, with its offset in the [`super::OFFSET_HEADER`] header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokeRequest {
    pub invoke_id: String,
    pub caller: Principal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Requested limit; it can only lower the template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub detach: bool,
    /// Total stdin length; over the limit is answered 413 in check order.
    pub stdin_len: u64,
    /// The client's `Idempotency-Key`: a retry with the same key (same caller,
    /// same sandbox, within 10 minutes) attaches to the first invoke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(with = "super::b64")]
    pub stdin: Bytes,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokeAccepted {
    /// The invoke that runs: the requested id, or for a retried
    /// `Idempotency-Key` the id of the invoke it started first.
    pub invoke_id: String,
    /// Unix milliseconds.
    pub started_at: u64,
}

/// The answer to one stdin chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StdinAck {
    /// Bytes received so far.
    pub received: u64,
}

/// `inv.<id>.attached` (and `exec.<id>.attached`): a router still relays the
/// run to a client. An empty payload says only that.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attached {
    /// Every event up to this seq has been handed to the client; the
    /// executor holds the run's output back when it gets too far ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<u64>,
}

/// `inv.<id>.replay` (while the run lives and for a short tail after its
/// end): the retained events with `seq > after`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayRequest {
    pub after: u64,
    /// At most this many events in one reply (the reply stays under 1 MiB).
    pub limit: u32,
}

/// `sbx.<ns>.<name>.replay`: as [`ReplayRequest`], for one of the sandbox's
/// invokes, running or finished within the retention, asked by a caller who
/// may see it. Answered with `Reply<ReplayReply>`; an invoke the sandbox does
/// not know (or not the caller's) is refused with 404.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxReplayRequest {
    pub invoke_id: String,
    pub caller: Principal,
    pub after: u64,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayReply {
    pub events: Vec<Event>,
    /// Whether the run has ended (its last event is retained).
    pub finished: bool,
    /// The oldest seq still retained.
    pub first_retained: u64,
}
