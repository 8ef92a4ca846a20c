use serde::{Deserialize, Serialize};

/// One event of an invoke or a configure, as published on its events subject.
///
/// `seq` counts 1, 2, 3, ... per invoke and becomes the SSE `id:`; the other
/// fields are exactly the SSE event name and `data` JSON a client sees.
/// Heartbeats repeat the last `seq` and are never shown to clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "lowercase")]
pub enum EventKind {
    Start(StartData),
    Log(LogData),
    Exit(ExitData),
    Gap(GapData),
    /// Configure: a failure in a phase (`files` or `install`).
    Error(serde_json::Value),
    /// Configure: the outcome.
    Result(serde_json::Value),
    /// Liveness of the run; not an SSE event.
    Heartbeat,
}

impl EventKind {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Start(_) => "start",
            EventKind::Log(_) => "log",
            EventKind::Exit(_) => "exit",
            EventKind::Gap(_) => "gap",
            EventKind::Error(_) => "error",
            EventKind::Result(_) => "result",
            EventKind::Heartbeat => "heartbeat",
        }
    }

    /// Whether this event ends the stream.
    pub fn is_terminal(&self) -> bool {
        matches!(self, EventKind::Exit(_) | EventKind::Result(_))
    }

    /// The SSE `data` JSON.
    pub fn data_json(&self) -> String {
        let r = match self {
            EventKind::Start(d) => serde_json::to_string(d),
            EventKind::Log(d) => serde_json::to_string(d),
            EventKind::Exit(d) => serde_json::to_string(d),
            EventKind::Gap(d) => serde_json::to_string(d),
            EventKind::Error(v) | EventKind::Result(v) => serde_json::to_string(v),
            EventKind::Heartbeat => Ok("{}".to_string()),
        };
        r.unwrap_or_else(|_| "{}".to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartData {
    pub invoke_id: String,
    /// Unix milliseconds.
    pub started_at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogData {
    /// `stdout` or `stderr`.
    pub stream: String,
    pub data: String,
    /// `base64` when the line was not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// The output did not end with a newline here: a piece of a line longer
    /// than the split size, or the last bytes of a stream without a final
    /// newline. Absent (false) for a whole line, whose newline was removed.
    /// With it a client can rebuild the output byte for byte.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitReason {
    Completed,
    Canceled,
    Timeout,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitData {
    pub invoke_id: String,
    pub exit_code: i32,
    pub duration_ms: u64,
    pub reason: ExitReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GapData {
    pub from: u64,
    pub to: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape_is_event_plus_data() {
        let e = Event {
            seq: 3,
            kind: EventKind::Log(LogData {
                stream: "stdout".into(),
                data: "hello world".into(),
                encoding: None,
                partial: false,
            }),
        };
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"seq":3,"event":"log","data":{"stream":"stdout","data":"hello world"}})
        );
        assert_eq!(serde_json::from_value::<Event>(j).unwrap(), e);
        assert_eq!(
            e.kind.data_json(),
            r#"{"stream":"stdout","data":"hello world"}"#
        );
    }
}
