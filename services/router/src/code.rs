//! `POST /sandboxes/{id}/exec` (SPEC §2.4), in both modes.
//!
//! An exec is one run on the sandbox's executor whose events travel on
//! `exec.<id>.events`, exactly like an invoke's. With `Accept:
//! text/event-stream` the router relays them as SSE (`start`, `log`…,
//! `exit`, with ids); otherwise it collects them into one JSON reply, each
//! stream capped at [`OUTPUT_CAP`]. Either way no bus message carries more
//! than one output line, so large outputs never meet the 1 MiB cap.
//!
//! Check order: 401 → 404 → 409 phase → 400 body (413 stdin too large).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use agenttier_bus::Headers;
use agenttier_bus::model::{Phase, parse_duration};
use agenttier_bus::msg::{
    CHUNK_BYTES, EXEC_DEFAULT_TIMEOUT_SECS, EXEC_MAX_STDIN_BYTES, EXEC_MAX_TIMEOUT_SECS, EventKind,
    ExecAccepted, ExecRequest, ExitReason, LogData, OFFSET_HEADER, StdinAck,
};
use agenttier_bus::subject::Verb;

use crate::actor::{RUNNING, ask};
use crate::auth::Caller;
use crate::error::{Path, Query};
use crate::relay::{Kind, Relay, Relayed};
use crate::resolve::{NsQuery, resolve};
use crate::sse::sse;
use crate::{ApiError, Ctx, new_id};

/// Captured bytes kept per stream in a JSON reply; the rest is dropped and
/// the reply says `truncated: true` (the stream ends with [`TRUNCATED`]).
pub(crate) const OUTPUT_CAP: usize = 16 * 1024 * 1024;
/// Appended to a stream cut at the cap (as v0.8's runtime did).
pub(crate) const TRUNCATED: &str = "\n[truncated]";
/// The JSON body: the stdin as JSON text (escapes can make it longer) plus room.
const BODY_LIMIT: usize = 2 * EXEC_MAX_STDIN_BYTES as usize + 1024 * 1024;

/// What to run, decoded from the body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExecSpec {
    pub argv: Vec<String>,
    pub timeout_ms: u64,
    pub stdin: Bytes,
}

#[derive(Debug, Deserialize)]
struct ExecBody {
    command: Option<Value>,
    timeout: Option<Value>,
    stdin: Option<String>,
}

/// Decodes and checks an exec body.
pub(crate) fn parse_body(body: &[u8]) -> Result<ExecSpec, ApiError> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let b: ExecBody = serde_json::from_slice(text)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid JSON body: {e}")))?;
    let bad_command = || {
        ApiError::InvalidRequest(
            "command: required, a shell string or a non-empty array of strings".into(),
        )
    };
    let argv = match b.command {
        Some(Value::String(s)) if !s.trim().is_empty() => vec!["sh".into(), "-c".into(), s],
        Some(Value::Array(items)) if !items.is_empty() => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(bad_command()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(bad_command()),
    };
    if argv[0].is_empty() {
        return Err(bad_command());
    }
    let timeout_ms = parse_timeout(b.timeout.as_ref())?;
    let stdin = Bytes::from(b.stdin.unwrap_or_default().into_bytes());
    if stdin.len() as u64 > EXEC_MAX_STDIN_BYTES {
        return Err(ApiError::PayloadTooLarge(Some(format!(
            "stdin is limited to {EXEC_MAX_STDIN_BYTES} bytes"
        ))));
    }
    Ok(ExecSpec {
        argv,
        timeout_ms,
        stdin,
    })
}

/// Seconds (a number, v0.8's form) or a duration string (`90s`, `5m`);
/// absent, `null` or 0 mean the default. At most an hour.
fn parse_timeout(v: Option<&Value>) -> Result<u64, ApiError> {
    let bad = || {
        ApiError::InvalidRequest(format!(
            "timeout: seconds between 1 and {EXEC_MAX_TIMEOUT_SECS}, or a duration like 90s"
        ))
    };
    let ms = match v {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => {
            let secs = n.as_f64().ok_or_else(bad)?;
            if !(0.0..=EXEC_MAX_TIMEOUT_SECS as f64).contains(&secs) {
                return Err(bad());
            }
            (secs * 1000.0).round() as u64
        }
        Some(Value::String(s)) => parse_duration(s).ok_or_else(bad)?.as_millis() as u64,
        Some(_) => return Err(bad()),
    };
    if ms > EXEC_MAX_TIMEOUT_SECS * 1000 {
        return Err(bad());
    }
    Ok(if ms == 0 {
        EXEC_DEFAULT_TIMEOUT_SECS * 1000
    } else {
        ms
    })
}

/// Reads at most `cap` bytes of the body and stops there.
pub(crate) async fn read_capped(body: Body, cap: usize) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::InvalidRequest(format!("could not read the request body: {e}"))
        })?;
        let room = cap - buf.len();
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= cap {
            break;
        }
    }
    Ok(buf.freeze())
}

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

pub(crate) async fn exec(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(q): Query<NsQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_capped(body, BODY_LIMIT + 1).await?;
    let sbx = resolve(&ctx, &caller, &id, q.namespace.as_deref()).await?;
    let spec = if body.len() > BODY_LIMIT {
        Err(ApiError::PayloadTooLarge(Some(
            "request body too large".into(),
        )))
    } else {
        parse_body(&body)
    };
    let spec = match spec {
        Ok(s) => s,
        // The phase comes before the body (the record's phase; the actor
        // decides it for valid bodies).
        Err(_) if sbx.status.phase != Phase::Running => {
            return Err(ApiError::InvalidPhase(sbx.status.phase));
        }
        Err(e) => return Err(e),
    };
    let exec_id = new_id("exec-");
    // Subscribe before asking, so not even the first event can be missed.
    let events = ctx
        .bus
        .subscribe(ctx.subjects.exec_events(&exec_id))
        .await
        .map_err(|e| ApiError::Unavailable(format!("bus: {e}")))?;
    let req = ExecRequest {
        exec_id: exec_id.clone(),
        caller,
        argv: spec.argv,
        timeout_ms: spec.timeout_ms,
        stdin_len: spec.stdin.len() as u64,
        stdin: spec.stdin.slice(..spec.stdin.len().min(CHUNK_BYTES)),
    };
    let accepted: ExecAccepted = ask(&ctx, &sbx, Verb::Exec, &req, RUNNING).await?;
    tracing::info!(namespace = %sbx.namespace, name = %sbx.name, %exec_id, "exec accepted");
    if spec.stdin.len() > CHUNK_BYTES {
        let subject = ctx.subjects.exec_stdin(&exec_id);
        tokio::spawn(send_chunks(ctx.clone(), subject, spec.stdin));
    }
    let relay = Relay {
        bus: ctx.bus.clone(),
        kind: Kind::Invoke {
            replay: ctx.subjects.exec_replay(&exec_id),
            // Nothing asks after an exec's tail: the relay ends with its exit.
            sandbox: None,
            attached: Some(ctx.subjects.exec_attached(&exec_id)),
            started_at: Some(accepted.started_at),
            invoke_id: exec_id,
        },
        liveness: ctx.config.liveness_timeout,
        attach_interval: ctx.config.attach_interval,
        shutdown: ctx.shutdown.clone(),
    };
    let rx = relay.spawn(events, 0, None);
    if wants_stream(&headers) {
        return Ok(sse(rx, ctx.config.keepalive_interval));
    }
    Ok(axum::Json(collect(rx, OUTPUT_CAP).await).into_response())
}

/// Sends `data` after its first chunk as acknowledged raw chunks, in order
/// (stdin of invokes and execs).
pub(crate) async fn send_chunks(ctx: Ctx, subject: String, data: Bytes) {
    let mut offset = CHUNK_BYTES;
    while offset < data.len() {
        let end = (offset + CHUNK_BYTES).min(data.len());
        let headers = Headers::new().with(OFFSET_HEADER, offset.to_string());
        let r = ctx
            .bus
            .request(
                subject.clone(),
                headers,
                data.slice(offset..end),
                ctx.config.request_timeout,
            )
            .await;
        match r.and_then(|m| m.json::<StdinAck>()) {
            // `received` is where the executor wants the next chunk from.
            Ok(ack) if ack.received as usize != offset => offset = ack.received as usize,
            Ok(_) => {
                tracing::warn!(%subject, offset, "stdin chunk not taken; giving up");
                return;
            }
            Err(e) => {
                tracing::warn!(%subject, offset, error = %e, "stdin chunk not acknowledged; giving up");
                return;
            }
        }
    }
}

/// One output stream of an exec, rebuilt byte for byte from its `log`
/// events and cut at a cap.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Captured {
    fn push(&mut self, cap: usize, line: &[u8], newline: bool) {
        for part in [line, if newline { b"\n" } else { b"" }] {
            let room = cap.saturating_sub(self.bytes.len());
            if part.len() > room {
                self.truncated = true;
            }
            self.bytes.extend_from_slice(&part[..part.len().min(room)]);
        }
    }

    fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.bytes).into_owned();
        if self.truncated {
            s.push_str(TRUNCATED);
        }
        s
    }
}

pub(crate) fn line_bytes(l: &LogData) -> Vec<u8> {
    match l.encoding.as_deref() {
        Some("base64") => STANDARD
            .decode(l.data.as_bytes())
            .unwrap_or_else(|_| l.data.clone().into_bytes()),
        _ => l.data.clone().into_bytes(),
    }
}

/// Reads an exec's events to its `exit` and builds the JSON reply.
pub(crate) async fn collect(mut rx: mpsc::Receiver<Relayed>, cap: usize) -> Value {
    let (mut out, mut err) = (Captured::default(), Captured::default());
    while let Some(ev) = rx.recv().await {
        let Some(ev) = ev.into_event() else { continue };
        match ev.kind {
            EventKind::Log(l) => {
                let c = if l.stream == "stderr" {
                    &mut err
                } else {
                    &mut out
                };
                c.push(cap, &line_bytes(&l), !l.partial);
            }
            EventKind::Gap(g) => {
                let note = format!(
                    "[agenttier] output was lost here (events {} to {})\n",
                    g.from, g.to
                );
                err.push(cap, note.as_bytes(), false);
            }
            EventKind::Exit(x) => {
                let mut body = json!({
                    "stdout": out.text(),
                    "stderr": err.text(),
                    "exitCode": x.exit_code,
                    "durationMs": x.duration_ms,
                    "timedOut": x.reason == ExitReason::Timeout,
                    "truncated": out.truncated || err.truncated,
                    "reason": x.reason,
                });
                if let Some(c) = x.cause {
                    body["cause"] = json!(c);
                }
                if let Some(m) = x.message {
                    body["message"] = json!(m);
                }
                return body;
            }
            _ => {}
        }
    }
    // The relay always ends with `exit`; this is only reached on shutdown.
    json!({
        "stdout": out.text(),
        "stderr": err.text(),
        "exitCode": -1,
        "durationMs": 0,
        "timedOut": false,
        "truncated": out.truncated || err.truncated,
        "reason": "error",
        "cause": "router_shutdown",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agenttier_bus::msg::{Event, ExitData, GapData};

    fn bad(r: Result<ExecSpec, ApiError>) -> String {
        match r {
            Err(ApiError::InvalidRequest(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn commands_are_shell_strings_or_argv() {
        let s =
            parse_body(br#"{"command": "echo hi | wc -c"}"#).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s.argv, ["sh", "-c", "echo hi | wc -c"]);
        assert_eq!(s.timeout_ms, 30_000);
        let s = parse_body(br#"{"command": ["ls", "-l"], "timeout": 5, "stdin": "x"}"#)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s.argv, ["ls", "-l"]);
        assert_eq!((s.timeout_ms, s.stdin.as_ref()), (5_000, &b"x"[..]));
        assert_eq!(
            parse_body(br#"{"command": "x", "timeout": "2m"}"#)
                .map(|s| s.timeout_ms)
                .ok(),
            Some(120_000)
        );
        assert_eq!(
            parse_body(br#"{"command": "x", "timeout": 0}"#)
                .map(|s| s.timeout_ms)
                .ok(),
            Some(30_000)
        );
        for body in [
            &br#"{}"#[..],
            br#"{"command": ""}"#,
            br#"{"command": []}"#,
            br#"{"command": [1]}"#,
            br#"{"command": [""]}"#,
            br#"{"command": {"a": 1}}"#,
            b"",
        ] {
            assert!(bad(parse_body(body)).starts_with("command:"), "{body:?}");
        }
        for t in ["3601", "-1", "\"forever\"", "true"] {
            let body = format!(r#"{{"command": "x", "timeout": {t}}}"#);
            assert!(
                bad(parse_body(body.as_bytes())).starts_with("timeout:"),
                "{t}"
            );
        }
        assert!(bad(parse_body(b"{not json")).contains("invalid JSON"));
    }

    fn log(seq: u64, stream: &str, data: &str, partial: bool) -> Event {
        Event {
            seq,
            kind: EventKind::Log(LogData {
                stream: stream.into(),
                data: data.into(),
                encoding: None,
                partial,
            }),
        }
    }

    fn exit(seq: u64, reason: ExitReason) -> Event {
        Event {
            seq,
            kind: EventKind::Exit(ExitData {
                invoke_id: "exec-1".into(),
                exit_code: if reason == ExitReason::Completed {
                    3
                } else {
                    -1
                },
                duration_ms: 7,
                reason,
                cause: None,
                message: None,
            }),
        }
    }

    async fn run(events: Vec<Event>, cap: usize) -> Value {
        let (tx, rx) = mpsc::channel(events.len() + 1);
        for e in events {
            let _ = tx.send(e.into()).await;
        }
        drop(tx);
        collect(rx, cap).await
    }

    #[tokio::test]
    async fn output_is_rebuilt_exactly() {
        let v = run(
            vec![
                log(1, "stdout", "a", false),
                log(2, "stderr", "oops", false),
                log(3, "stdout", "", false),
                log(4, "stdout", "no newline", true),
                Event {
                    seq: 5,
                    kind: EventKind::Log(LogData {
                        stream: "stderr".into(),
                        data: STANDARD.encode([0xffu8, b'x']),
                        encoding: Some("base64".into()),
                        partial: true,
                    }),
                },
                exit(6, ExitReason::Completed),
            ],
            OUTPUT_CAP,
        )
        .await;
        assert_eq!(v["stdout"], "a\n\nno newline");
        assert_eq!(v["stderr"], "oops\n\u{fffd}x");
        assert_eq!(v["exitCode"], 3);
        assert_eq!(v["timedOut"], false);
        assert_eq!(v["truncated"], false);
    }

    #[tokio::test]
    async fn output_is_capped_per_stream_with_a_note() {
        let v = run(
            vec![
                log(1, "stdout", "0123456789", false),
                log(2, "stdout", "more", false),
                log(3, "stderr", "short", false),
                exit(4, ExitReason::Timeout),
            ],
            8,
        )
        .await;
        assert_eq!(v["stdout"], format!("01234567{TRUNCATED}"));
        assert_eq!(v["stderr"], "short\n");
        assert_eq!(v["truncated"], true);
        assert_eq!(
            (v["timedOut"].clone(), v["exitCode"].clone()),
            (json!(true), json!(-1))
        );
    }

    #[tokio::test]
    async fn gaps_are_said_not_hidden() {
        let v = run(
            vec![
                log(1, "stdout", "a", false),
                Event {
                    seq: 3,
                    kind: EventKind::Gap(GapData { from: 2, to: 3 }),
                },
                exit(4, ExitReason::Completed),
            ],
            OUTPUT_CAP,
        )
        .await;
        assert!(
            v["stderr"].as_str().unwrap_or_default().contains("lost"),
            "{v}"
        );
    }
}
