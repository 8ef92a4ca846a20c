//! `GET /sandboxes/{id}/terminal` (SPEC §2.4): a WebSocket onto a shell on
//! a real PTY in the sandbox.
//!
//! Frames are JSON text: `{type: input, data}`, `{type: resize, cols,
//! rows}`, `{type: ping}` in; `{type: output, data}`, `{type: exit,
//! exitCode, reason}`, `{type: error, message}`, `{type: pong}` out. The
//! session's output is relayed from `term.<id>.events` like an invoke's
//! (ordered, healed by replay, ended when the executor goes silent);
//! input goes to `term.<id>.input` one acknowledged request at a time.
//!
//! Check order: 401 → 404 → 409 phase → 400 (not a WebSocket upgrade).

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use agenttier_bus::model::Phase;
use agenttier_bus::msg::{EventKind, Reply, TerminalAccepted, TerminalInput, TerminalRequest};
use agenttier_bus::request_json;
use agenttier_bus::subject::Verb;

use crate::actor::{RUNNING, ask};
use crate::auth::Caller;
use crate::code::line_bytes;
use crate::error::{Path, Query};
use crate::relay::{Kind, Relay, Relayed};
use crate::resolve::resolve;
use crate::{ApiError, Ctx, new_id};

#[derive(Debug, Deserialize)]
pub(crate) struct TerminalQuery {
    namespace: Option<String>,
    /// Initial size; v0.8's terminal started at 120x40.
    cols: Option<u16>,
    rows: Option<u16>,
}

pub(crate) async fn terminal(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(q): Query<TerminalQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let sbx = resolve(&ctx, &caller, &id, q.namespace.as_deref()).await?;
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) if sbx.status.phase != Phase::Running => {
            return Err(ApiError::InvalidPhase(sbx.status.phase));
        }
        Err(e) => {
            return Err(ApiError::InvalidRequest(format!(
                "the terminal is a WebSocket: {}",
                e.body_text()
            )));
        }
    };
    let session_id = new_id("term-");
    let events = ctx
        .bus
        .subscribe(ctx.subjects.terminal_events(&session_id))
        .await
        .map_err(|e| ApiError::Unavailable(format!("bus: {e}")))?;
    let req = TerminalRequest {
        session_id: session_id.clone(),
        caller,
        cols: q.cols.unwrap_or(120),
        rows: q.rows.unwrap_or(40),
    };
    let accepted: TerminalAccepted = ask(&ctx, &sbx, Verb::Terminal, &req, RUNNING).await?;
    tracing::info!(namespace = %sbx.namespace, name = %sbx.name, %session_id, "terminal opened");
    let relay = Relay {
        bus: ctx.bus.clone(),
        kind: Kind::Invoke {
            replay: ctx.subjects.terminal_replay(&session_id),
            // Nothing asks after a session's tail: the relay ends with its exit.
            sandbox: None,
            attached: Some(ctx.subjects.terminal_attached(&session_id)),
            started_at: Some(accepted.started_at),
            invoke_id: session_id.clone(),
        },
        liveness: ctx.config.liveness_timeout,
        attach_interval: ctx.config.attach_interval,
        shutdown: ctx.shutdown.clone(),
    };
    let rx = relay.spawn(events, 0, None);
    Ok(ws.on_upgrade(move |socket| bridge(ctx, session_id, socket, rx)))
}

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientFrame {
    Input { data: String },
    Resize { cols: u16, rows: u16 },
    Ping,
}

fn frame(v: Value) -> WsMessage {
    WsMessage::Text(v.to_string().into())
}

/// Takes the longest prefix of `pending` that is whole UTF-8 (invalid bytes
/// become U+FFFD); an incomplete character at the end waits for more.
pub(crate) fn take_utf8(pending: &mut Vec<u8>) -> String {
    let mut out = String::new();
    let mut rest: &[u8] = pending;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                rest = &[];
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{fffd}');
                        rest = &bad[n..];
                    }
                    None => {
                        rest = bad;
                        break;
                    }
                }
            }
        }
    }
    let keep = rest.to_vec();
    *pending = keep;
    out
}

async fn send_input(ctx: &Ctx, subject: &str, input: &TerminalInput) -> Result<(), String> {
    let r: Result<Reply<Value>, _> = request_json(
        ctx.bus.as_ref(),
        subject.to_string(),
        input,
        ctx.config.request_timeout,
    )
    .await;
    match r {
        Ok(Reply::Ok(_)) => Ok(()),
        Ok(Reply::Rejected(rej)) => Err(rej.message.unwrap_or(rej.error)),
        Err(e) => Err(format!("the session did not take the input: {e}")),
    }
}

/// Bridges one client's socket and the session until either ends.
async fn bridge(ctx: Ctx, session_id: String, socket: WebSocket, mut rx: mpsc::Receiver<Relayed>) {
    let input = ctx.subjects.terminal_input(&session_id);
    let (mut out, mut inc) = socket.split();
    let mut pending = Vec::new();
    loop {
        tokio::select! {
            ev = rx.recv() => match ev.map(|e| e.into_event().map(|e| e.kind)) {
                Some(Some(EventKind::Log(l))) => {
                    pending.extend(line_bytes(&l));
                    let text = take_utf8(&mut pending);
                    if !text.is_empty() && out.send(frame(json!({"type": "output", "data": text}))).await.is_err() {
                        break;
                    }
                }
                Some(Some(EventKind::Gap(g))) => {
                    let m = format!("output was lost (events {} to {})", g.from, g.to);
                    let _ = out.send(frame(json!({"type": "error", "message": m}))).await;
                }
                Some(Some(EventKind::Exit(x))) => {
                    if !pending.is_empty() {
                        let text = String::from_utf8_lossy(&pending).into_owned();
                        let _ = out.send(frame(json!({"type": "output", "data": text}))).await;
                    }
                    let mut exit = json!({"type": "exit", "exitCode": x.exit_code, "reason": x.reason});
                    if let Some(c) = x.cause {
                        exit["cause"] = json!(c);
                    }
                    let _ = out.send(frame(exit)).await;
                    let _ = out.send(WsMessage::Close(None)).await;
                    return;
                }
                // Other events, and a line that does not decode (skipped).
                Some(_) => {}
                None => {
                    let m = "the session ended without an exit";
                    let _ = out.send(frame(json!({"type": "error", "message": m}))).await;
                    let _ = out.send(WsMessage::Close(None)).await;
                    return;
                }
            },
            m = inc.next() => {
                let parsed = match m {
                    Some(Ok(WsMessage::Text(t))) => serde_json::from_str::<ClientFrame>(t.as_str())
                        .map_err(|e| format!("unreadable frame: {e}")),
                    Some(Ok(WsMessage::Binary(b))) => Ok(ClientFrame::Input {
                        data: String::from_utf8_lossy(&b).into_owned(),
                    }),
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                    Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                };
                let result = match parsed {
                    Ok(ClientFrame::Ping) => {
                        let _ = out.send(frame(json!({"type": "pong"}))).await;
                        Ok(())
                    }
                    Ok(ClientFrame::Input { data }) => {
                        send_input(&ctx, &input, &TerminalInput::Input { data }).await
                    }
                    Ok(ClientFrame::Resize { cols, rows }) => {
                        send_input(&ctx, &input, &TerminalInput::Resize { cols, rows }).await
                    }
                    Err(e) => Err(e),
                };
                if let Err(m) = result {
                    let _ = out.send(frame(json!({"type": "error", "message": m}))).await;
                }
            }
        }
    }
    // The client left: end the session now rather than after the grace period.
    if let Err(e) = send_input(&ctx, &input, &TerminalInput::Close).await {
        tracing::debug!(%session_id, error = %e, "closing a terminal session");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_whole_or_waits() {
        let mut p = "héllo".as_bytes().to_vec();
        let tail = p.split_off(2); // inside the é
        let mut pending = p;
        assert_eq!(take_utf8(&mut pending), "h");
        assert_eq!(pending, vec![0xc3]);
        pending.extend(tail);
        assert_eq!(take_utf8(&mut pending), "éllo");
        assert!(pending.is_empty());
        let mut bad = vec![b'a', 0xff, b'b'];
        assert_eq!(take_utf8(&mut bad), "a\u{fffd}b");
    }

    #[test]
    fn client_frames_parse() {
        let f: ClientFrame = serde_json::from_str(r#"{"type":"resize","cols":100,"rows":30}"#)
            .unwrap_or(ClientFrame::Ping);
        assert!(matches!(
            f,
            ClientFrame::Resize {
                cols: 100,
                rows: 30
            }
        ));
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"nope"}"#).is_err());
    }
}
