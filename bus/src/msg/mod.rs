//! Wire messages between routers, executors and the controller (JSON).
//!
//! Version 1. A change that old peers cannot read bumps [`WIRE_VERSION`];
//! adding an optional field does not. Every message here is documented in
//! `docs/bus.md`.

mod code;
mod configure;
mod control;
mod event;
mod invoke;
pub mod json;

pub use code::{
    EXEC_DEFAULT_TIMEOUT_SECS, EXEC_MAX_STDIN_BYTES, EXEC_MAX_TIMEOUT_SECS, ExecAccepted,
    ExecRequest, FILE_MAX_BYTES, FileEntry, FileList, FileWritten, FilesOp, FilesRequest,
    ReadStart, TerminalAccepted, TerminalInput, TerminalRequest, WriteAck,
};
pub use configure::{
    CONFIGURE_LIMITS, ConfigureAccepted, ConfigureLimits, ConfigureRequest, FileMeta, UploadAck,
    configure_hash,
};
pub use control::{CancelRequest, Heartbeat, LifecycleEvent, SimpleRequest, StatusReply};
pub use event::{Event, EventKind, ExitData, ExitReason, GapData, LogData, StartData};
pub use invoke::{
    Attached, InvokeAccepted, InvokeRequest, ReplayReply, ReplayRequest, SandboxReplayRequest,
    StdinAck,
};

use serde::{Deserialize, Serialize};

pub const WIRE_VERSION: u32 = 1;

/// Header naming the byte offset of a raw chunk (stdin, configure files,
/// file transfers).
pub const OFFSET_HEADER: &str = "Agenttier-Offset";
/// Header naming the file index of a configure chunk.
pub const FILE_HEADER: &str = "Agenttier-File";

/// Largest raw chunk sent in one message; far below the 1 MiB NATS default.
pub const CHUNK_BYTES: usize = 512 * 1024;

/// A refusal from the owner of a resource, in HTTP terms, so that the owner
/// (not the router) decides the check order, status and body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    pub status: u16,
    /// The body's `error` code.
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Seconds, for 429 and 409 `configure_in_progress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// More body fields (`inflight`, `limit`, ...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Rejection {
    pub fn new(status: u16, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            message: None,
            retry_after: None,
            extra: Default::default(),
        }
    }

    pub fn message(mut self, m: impl Into<String>) -> Self {
        self.message = Some(m.into());
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    pub fn field(mut self, k: &str, v: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(k.to_string(), v.into());
        self
    }

    pub fn not_found() -> Self {
        Self::new(404, "not_found").message("sandbox not found")
    }

    /// 400 for agent-mode operations (`what`: configure, invoke) on a sandbox
    /// in mode: code.
    pub fn wrong_mode(what: &str) -> Self {
        Self::new(400, "invalid_mode").message(format!(
            "{what} needs a sandbox in mode: agent; this sandbox is in mode: code. \
             Use POST /sandboxes/{{id}}/exec and the files API instead"
        ))
    }
}

/// The reply to every request to a sandbox actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Reply<T> {
    Ok(T),
    Rejected(Rejection),
}

impl<T> From<Result<T, Rejection>> for Reply<T> {
    fn from(r: Result<T, Rejection>) -> Self {
        match r {
            Ok(t) => Reply::Ok(t),
            Err(e) => Reply::Rejected(e),
        }
    }
}

impl<T> From<Reply<T>> for Result<T, Rejection> {
    fn from(r: Reply<T>) -> Self {
        match r {
            Reply::Ok(t) => Ok(t),
            Reply::Rejected(e) => Err(e),
        }
    }
}

/// Serde helper: bytes as standard base64 strings.
pub mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(s.as_bytes())
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}
