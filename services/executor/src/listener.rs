//! The bus side of a hosted sandbox: requests on `sbx.<ns>.<name>.*` become
//! actor messages; admitted runs and configures become tokio tasks.

use std::sync::Arc;
use std::time::Duration;

use agenttier_bus::model::{Phase, Sandbox};
use agenttier_bus::msg::{
    Attached, CancelRequest, ConfigureAccepted, ConfigureRequest, EventKind, ExitReason,
    InvokeAccepted, InvokeRequest, OFFSET_HEADER, Rejection, Reply, SandboxReplayRequest,
    SimpleRequest, StdinAck,
};
use agenttier_bus::subject::Verb;
use agenttier_bus::{Message, Subscription, respond_json, store};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Node;
use crate::actor::{
    Admission, Admit, BeginConfigure, Cancel, EndConfigure, Handle, Query, ReplayOf, RunEnded,
    SetPhase,
};
use crate::configure;
use crate::events::EventLog;
use crate::launch;
use crate::state::Dirs;

/// One sandbox hosted here.
pub struct Hosted {
    pub namespace: String,
    pub name: String,
    pub dirs: Dirs,
    /// Where its finished invokes are kept ([`crate::persist`]).
    pub runs: Arc<crate::persist::Journal>,
    pub handle: Handle,
    /// When `lastActivityAt` was last written (Unix ms).
    pub last_touch_ms: std::sync::atomic::AtomicU64,
}

pub async fn serve(
    node: Arc<Node>,
    sbx: Arc<Hosted>,
    mut sub: Subscription,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            msg = sub.next() => match msg {
                Some(msg) => { tokio::spawn(dispatch(node.clone(), sbx.clone(), msg)); }
                None => break,
            },
        }
    }
}

pub(crate) async fn reply<T: Serialize>(node: &Node, msg: &Message, r: Result<T, Rejection>) {
    if let Err(e) = respond_json(node.bus.as_ref(), msg, &Reply::from(r)).await {
        tracing::warn!(error = %e, subject = %msg.subject, "reply failed");
    }
}

pub(crate) fn decode<T: DeserializeOwned>(msg: &Message) -> Result<T, Rejection> {
    msg.json().map_err(|e| {
        Rejection::new(400, "invalid_request").message(format!("malformed bus message: {e}"))
    })
}

async fn dispatch(node: Arc<Node>, sbx: Arc<Hosted>, msg: Message) {
    let verb = msg.subject.rsplit('.').next().and_then(Verb::parse);
    let r: Result<serde_json::Value, Rejection> = match verb {
        Some(Verb::Invoke) => return invoke(node, sbx, msg).await,
        Some(Verb::Exec) => return crate::code::exec(node, sbx, msg).await,
        Some(Verb::Files) => return crate::code::files(node, sbx, msg).await,
        Some(Verb::Terminal) => return crate::terminal::open(node, sbx, msg).await,
        Some(Verb::Configure) => return configure(node, sbx, msg).await,
        Some(Verb::Replay) => return replay(node, sbx, msg).await,
        Some(Verb::Cancel) => match decode::<CancelRequest>(&msg) {
            Ok(c) => flatten(
                sbx.handle
                    .ask(Cancel {
                        caller: c.caller,
                        invoke_id: c.invoke_id,
                    })
                    .await,
            )
            .map(|()| serde_json::json!({})),
            Err(e) => Err(e),
        },
        Some(v @ (Verb::Stop | Verb::Resume)) => match decode::<SimpleRequest>(&msg) {
            Ok(r) => {
                let stop = v == Verb::Stop;
                let res = flatten(
                    sbx.handle
                        .ask(SetPhase {
                            caller: r.caller,
                            stop,
                        })
                        .await,
                );
                if res.is_ok() {
                    let phase = if stop { Phase::Stopped } else { Phase::Running };
                    node.set_phase(&sbx.namespace, &sbx.name, phase).await;
                }
                res
            }
            Err(e) => Err(e),
        },
        Some(v @ (Verb::Status | Verb::InstallLog | Verb::Invokes)) => {
            match decode::<SimpleRequest>(&msg) {
                Ok(r) => {
                    let q = match v {
                        Verb::Status => Query::Status(r.caller),
                        Verb::InstallLog => Query::InstallLog(r.caller),
                        _ => Query::Invokes(r.caller, r.invoke_id),
                    };
                    flatten(sbx.handle.ask(q).await)
                }
                Err(e) => Err(e),
            }
        }
        None => Err(Rejection::new(501, "not_implemented")
            .message("this operation is not implemented by this executor")),
    };
    reply(&node, &msg, r).await;
}

/// `sbx.<ns>.<name>.replay`: the retained events of one of the sandbox's
/// invokes, for as long as the actor remembers it (its own `inv.<id>.replay`
/// is answered only while it runs and for the tail after).
async fn replay(node: Arc<Node>, sbx: Arc<Hosted>, msg: Message) {
    let req: SandboxReplayRequest = match decode(&msg) {
        Ok(r) => r,
        Err(e) => return reply::<()>(&node, &msg, Err(e)).await,
    };
    let found = sbx.handle.ask(ReplayOf {
        caller: req.caller,
        invoke_id: req.invoke_id,
    });
    let log = match flatten(found.await) {
        Ok(log) => log,
        Err(e) => return reply::<()>(&node, &msg, Err(e)).await,
    };
    // `{"ok": <ReplayReply>}`, around the retained JSON as it was published.
    let events = log.replay(req.after, req.limit);
    let mut body = Vec::with_capacity(events.len() + 8);
    body.extend_from_slice(b"{\"ok\":");
    body.extend_from_slice(&events);
    body.push(b'}');
    if let Err(e) = agenttier_bus::respond_encoded(node.bus.as_ref(), &msg, body.into()).await {
        tracing::warn!(error = %e, subject = %msg.subject, "reply failed");
    }
}

pub(crate) fn flatten<T>(r: Result<Result<T, Rejection>, Rejection>) -> Result<T, Rejection> {
    r.and_then(|r| r)
}

async fn invoke(node: Arc<Node>, sbx: Arc<Hosted>, msg: Message) {
    let req: InvokeRequest = match decode(&msg) {
        Ok(r) => r,
        Err(e) => return reply::<()>(&node, &msg, Err(e)).await,
    };
    let id = req.invoke_id.clone();
    let log = EventLog::new(
        node.bus.clone(),
        node.subjects.invoke_events(&id),
        &node.retention,
    );
    let admit = Admit {
        log: log.clone(),
        caller: req.caller.clone(),
        invoke_id: req.invoke_id.clone(),
        prompt: req.prompt.clone(),
        timeout: req.timeout_ms.map(Duration::from_millis),
        stdin_len: req.stdin_len,
        idempotency_key: req.idempotency_key.clone(),
    };
    let plan = match flatten(sbx.handle.ask(admit).await) {
        Ok(Admission::Run(p)) => p,
        Ok(Admission::Existing {
            invoke_id,
            started_at,
        }) => {
            // A retry: the router follows the first invoke instead.
            return reply(
                &node,
                &msg,
                Ok(InvokeAccepted {
                    invoke_id,
                    started_at,
                }),
            )
            .await;
        }
        Err(rej) => {
            // The caller first; integrations hear of it right after.
            let throttled = rej.status == 429;
            reply::<()>(&node, &msg, Err(rej)).await;
            if throttled {
                node.lifecycle(
                    &sbx,
                    "AgentInvokeThrottled",
                    &req.caller.sub,
                    Some(&req.invoke_id),
                    serde_json::json!({}),
                )
                .await;
            }
            return;
        }
    };
    // The prompt is the stdin when the body is empty.
    let (first, total) = match req.prompt.as_ref().filter(|_| req.stdin_len == 0) {
        Some(p) => (Bytes::from(p.clone().into_bytes()), p.len() as u64),
        None => (req.stdin.clone(), req.stdin_len),
    };
    let subjects = launch::Subjects {
        replay: node.subjects.invoke_replay(&id),
        replay_for: node.replay_tail,
        stdin: node.subjects.invoke_stdin(&id),
        attached: (!req.detach).then(|| node.subjects.invoke_attached(&id)),
    };
    let launched = launch::prepare(&node, &id, log, subjects, first, total)
        .await
        .kept_for(req.caller.sub.clone());

    let accepted = InvokeAccepted {
        invoke_id: id.clone(),
        started_at: plan.started_at,
    };
    reply(&node, &msg, Ok(accepted)).await;
    node.touch(&sbx);
    node.lifecycle(
        &sbx,
        "AgentInvokeStarted",
        &req.caller.sub,
        Some(&id),
        serde_json::json!({}),
    )
    .await;

    tokio::spawn(async move {
        let handle = sbx.handle.clone();
        // Queued, not awaited: the actor's mailbox is FIFO, so anything a
        // client sends after seeing the `exit` (a new invoke, a list)
        // reaches the actor after the slot is free, without a round trip
        // to the actor's thread before every `exit`.
        let release = |reason| async move {
            handle.tell(RunEnded {
                invoke_id: id.clone(),
                reason,
            });
        };
        let out = launched.run(&node, &sbx, &plan, release).await;
        let kind = match (out.reason, out.exit_code) {
            (ExitReason::Completed, 0) => "AgentInvokeCompleted",
            (ExitReason::Canceled, _) => "AgentInvokeCanceled",
            _ => "AgentInvokeFailed",
        };
        let details = serde_json::json!({"exitCode": out.exit_code, "durationMs": out.duration.as_millis() as u64, "reason": out.reason, "cause": out.cause});
        node.lifecycle(&sbx, kind, &req.caller.sub, Some(&req.invoke_id), details)
            .await;
    });
}

pub(crate) async fn receive_stdin(
    node: Arc<Node>,
    mut sub: Subscription,
    mut received: u64,
    total: u64,
    tx: mpsc::Sender<Bytes>,
) {
    while received < total {
        let msg = match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
            Ok(Some(m)) => m,
            _ => break,
        };
        let offset: Option<u64> = msg.headers.get(OFFSET_HEADER).and_then(|v| v.parse().ok());
        if offset == Some(received) {
            received += msg.payload.len() as u64;
            if tx.send(msg.payload.clone()).await.is_err() {
                break;
            }
        }
        let _ = respond_json(node.bus.as_ref(), &msg, &StdinAck { received }).await;
    }
}

/// Cancels the run (`abandoned`) once no router has said `attached` for the
/// grace period. Time while this executor's own bus connection is down does
/// not count: it could not have heard anyone. Delivery reports go to `log`
/// (flow control).
pub(crate) async fn watch_attached(
    bus: Arc<dyn agenttier_bus::Bus>,
    mut sub: Subscription,
    grace: Duration,
    abandoned: CancellationToken,
    done: CancellationToken,
    log: Option<EventLog>,
) {
    let mut heard = tokio::time::Instant::now();
    let mut check = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = done.cancelled() => return,
            m = sub.next() => match m {
                Some(m) => {
                    heard = tokio::time::Instant::now();
                    let delivered = m.json::<Attached>().ok().and_then(|a| a.delivered);
                    if let (Some(seq), Some(log)) = (delivered, &log) {
                        log.delivered(seq);
                    }
                }
                None => return,
            },
            _ = check.tick() => {
                if !bus.is_connected() {
                    heard = tokio::time::Instant::now();
                } else if heard.elapsed() >= grace {
                    abandoned.cancel();
                    return;
                }
            }
        }
    }
}

async fn configure(node: Arc<Node>, sbx: Arc<Hosted>, msg: Message) {
    let req: ConfigureRequest = match decode(&msg) {
        Ok(r) => r,
        Err(e) => return reply::<()>(&node, &msg, Err(e)).await,
    };
    let bus = node.bus.clone();
    let uploads = match bus
        .subscribe(node.subjects.configure_upload(&req.configure_id))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            let r = Rejection::new(503, "bus_unavailable")
                .message(e.to_string())
                .retry_after(1);
            return reply::<()>(&node, &msg, Err(r)).await;
        }
    };
    let begin = BeginConfigure {
        caller: req.caller.clone(),
        files: req.files.clone(),
        hash: req.hash.clone(),
        entrypoint: req.entrypoint.clone(),
        env: req.env.clone(),
    };
    let plan = match flatten(sbx.handle.ask(begin).await) {
        Ok(p) => p,
        Err(rej) => {
            if rej.status == 400 || rej.status == 409 {
                node.lifecycle(
                    &sbx,
                    "ConfigureDenied",
                    &req.caller.sub,
                    None,
                    serde_json::json!({"error": rej.error}),
                )
                .await;
            }
            return reply::<()>(&node, &msg, Err(rej)).await;
        }
    };
    let log = EventLog::new(
        bus.clone(),
        node.subjects.configure_events(&req.configure_id),
        &node.retention,
    );
    let done = CancellationToken::new();
    if let Err(e) = log
        .serve_replay(
            node.subjects.configure_replay(&req.configure_id),
            done.clone(),
            node.replay_tail,
        )
        .await
    {
        tracing::warn!(error = %e, "replay unavailable for {}", req.configure_id);
    }
    reply(
        &node,
        &msg,
        Ok(ConfigureAccepted {
            skipped: plan.skipped,
        }),
    )
    .await;
    // Events stay replayable for the tail after the end (nothing resumes a
    // configure later: its relay ends with the `result`).
    let done = done.drop_guard();
    if plan.skipped {
        log.emit(EventKind::Result(result_json(&plan.current, true)))
            .await;
        return;
    }
    tokio::spawn(async move {
        let _done = done;
        // Liveness for the router while files upload and the install runs.
        let beating = CancellationToken::new();
        let _stop_beating = beating.clone().drop_guard();
        let beat_log = log.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = beating.cancelled() => return,
                    _ = t.tick() => beat_log.heartbeat().await,
                }
            }
        });
        let staging = sbx.dirs.staging(&req.configure_id);
        let workspace = sbx.dirs.workspace();
        let mut files_ok = true;
        let mut install_exit_code = None;
        let files = configure::receive(bus.as_ref(), uploads, &req.files, &staging)
            .await
            .and_then(|()| configure::install_files(&workspace, &staging, &req.files, &plan.paths));
        let _ = std::fs::remove_dir_all(&staging);
        match files {
            Ok(()) => {
                for f in &req.files {
                    configure::say(&log, format!("[configure] uploading {}", f.path)).await;
                }
            }
            Err(why) => {
                files_ok = false;
                // Not an install result, but a failure all the same: clients
                // that only read `installExitCode` must not see success.
                install_exit_code = Some(-1);
                log.emit(EventKind::Error(
                    serde_json::json!({"phase": "files", "message": why}),
                ))
                .await;
            }
        }
        if let (true, Some(install)) = (
            files_ok,
            req.install_command.as_ref().filter(|a| !a.is_empty()),
        ) {
            configure::say(
                &log,
                format!(
                    "[configure] running install: {}",
                    configure::render_argv(install)
                ),
            )
            .await;
            let mut env = plan.env.clone();
            env.extend(req.env.clone().unwrap_or_default());
            let (code, why, output) = configure::run_install(
                &node.runtime,
                &sbx.dirs,
                install,
                &env,
                plan.network,
                plan.cancel.clone(),
                &log,
            )
            .await;
            if let Err(e) = sbx.dirs.write_install_log(&output) {
                tracing::warn!(error = %e, "writing install log failed");
            }
            // A non-zero exit is reported by `installExitCode` alone (v0.8
            // clients stop reading at `error`); `error` means it could not run.
            if let Some(message) = why.filter(|_| code < 0) {
                log.emit(EventKind::Error(
                    serde_json::json!({"phase": "install", "message": message}),
                ))
                .await;
            }
            install_exit_code = Some(code);
        }
        let status = sbx
            .handle
            .ask(EndConfigure {
                hash: req.hash.clone(),
                install_exit_code,
                files_ok,
                entrypoint: req.entrypoint.clone(),
                env: req.env.clone(),
            })
            .await
            .unwrap_or_default();
        log.emit(EventKind::Result(result_json(&status, false)))
            .await;
        let ok = files_ok && install_exit_code.is_none_or(|c| c == 0);
        let kind = if ok {
            "AgentConfigured"
        } else {
            "ConfigureDenied"
        };
        node.lifecycle(
            &sbx,
            kind,
            &req.caller.sub,
            None,
            serde_json::json!({"installExitCode": install_exit_code, "files": req.files.len()}),
        )
        .await;
    });
}

/// The configure `result` event: the status in force, and whether it was skipped.
fn result_json(status: &agenttier_bus::model::AgentConfigure, skipped: bool) -> serde_json::Value {
    serde_json::json!({
        "lastConfiguredAt": status.last_configured_at,
        "installCommandHash": status.install_command_hash,
        "entrypoint": status.entrypoint,
        "installExitCode": status.install_exit_code,
        "skipped": skipped,
    })
}

/// Writes a sandbox's phase into its record.
pub async fn write_phase(store: &dyn store::Store, ns: &str, name: &str, phase: Phase) {
    let r = store::modify::<Sandbox, _>(store, &Sandbox::key(ns, name), |s| {
        let changed = s.status.phase != phase && s.status.phase != Phase::Deleting;
        if changed {
            s.status.phase = phase;
            s.status.message = String::new();
        }
        changed
    })
    .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "writing phase of {ns}/{name} failed");
    }
}
