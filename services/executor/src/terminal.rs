//! Terminal sessions (SPEC §2.4): an interactive shell on a real PTY in the
//! sandbox, bridged to the bus.
//!
//! The shell runs in the sandbox's runtime like an exec (same environment,
//! registered with the actor so stop and delete end it), wrapped in
//! `setsid --ctty` so the PTY is its controlling terminal (job control,
//! Ctrl-C). Its output is published on `term.<id>.events` as `log` events of
//! raw bytes (numbered, retained, replayable like an invoke's), then one
//! `exit`; keystrokes, resizes and the close arrive on `term.<id>.input`.
//! Resizing uses `stty` on the PTY, so no `unsafe` ioctl is needed here.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agenttier_bus::msg::{
    EventKind, ExitData, ExitReason, LogData, Rejection, Reply, StartData, TerminalAccepted,
    TerminalInput, TerminalRequest,
};
use agenttier_bus::{Message, respond_json};
use futures::StreamExt;
use nix::pty::{Winsize, openpty};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Node;
use crate::actor::{AdmitExec, ExecEnded};
use crate::events::EventLog;
use crate::listener::{Hosted, decode, flatten, reply, watch_attached};
use crate::output::encode_line;
use crate::runtime::{Spec, WORKSPACE};

/// The longest a session may last.
const MAX_SESSION: Duration = Duration::from_secs(24 * 3600);
/// Starts a login-ish interactive shell: bash when the sandbox has it.
const SHELL: &str = "if command -v bash >/dev/null 2>&1; then exec bash -i; else exec sh -i; fi";
/// How long the output of an ended shell is drained before `exit`.
const DRAIN: Duration = Duration::from_secs(1);

fn winsize(cols: u16, rows: u16) -> Winsize {
    Winsize {
        ws_row: rows.clamp(1, 1000),
        ws_col: cols.clamp(1, 1000),
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn start_failed(e: impl std::fmt::Display) -> Rejection {
    Rejection::new(500, "terminal_failed").message(format!("could not start a terminal: {e}"))
}

pub(crate) async fn open(node: Arc<Node>, sbx: Arc<Hosted>, msg: Message) {
    let req: TerminalRequest = match decode(&msg) {
        Ok(r) => r,
        Err(e) => return reply::<()>(&node, &msg, Err(e)).await,
    };
    let argv: Vec<String> = ["setsid", "--ctty", "--wait", "sh", "-c", SHELL]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let admit = AdmitExec {
        caller: req.caller.clone(),
        exec_id: req.session_id.clone(),
        argv,
        timeout: MAX_SESSION,
    };
    let mut plan = match flatten(sbx.handle.ask(admit).await) {
        Ok(p) => p,
        Err(rej) => return reply::<()>(&node, &msg, Err(rej)).await,
    };
    let id = req.session_id.clone();
    let ended = || sbx.handle.tell(ExecEnded(id.clone()));
    let pty = match openpty(&winsize(req.cols, req.rows), None) {
        Ok(p) => p,
        Err(e) => {
            ended();
            return reply::<()>(&node, &msg, Err(start_failed(e))).await;
        }
    };
    plan.env.insert("TERM".into(), "xterm-256color".into());
    let workspace = sbx.dirs.workspace();
    let spec = Spec {
        workspace: &workspace,
        argv: &plan.argv,
        env: &plan.env,
        network: plan.network,
        cwd: WORKSPACE,
    };
    let slave = |s: &OwnedFd| s.try_clone().map(Stdio::from);
    let child = match (
        node.runtime.command(&spec),
        slave(&pty.slave),
        slave(&pty.slave),
        slave(&pty.slave),
    ) {
        (Ok(mut launch), Ok(i), Ok(o), Ok(e)) => {
            launch.cmd.stdin(i).stdout(o).stderr(e);
            launch.spawn().await
        }
        (Err(e), ..) => Err(e),
        _ => Err(std::io::Error::other("cannot share the PTY")),
    };
    let (mut child, reader, writer) = match (child, pty.master.try_clone()) {
        (Ok(c), Ok(w)) => (c, File::from(pty.master), File::from(w)),
        (Err(e), _) | (_, Err(e)) => {
            ended();
            return reply::<()>(&node, &msg, Err(start_failed(e))).await;
        }
    };
    // Our copy of the slave: for resizes; dropped when the shell ends so the
    // reader sees the end of the output.
    let mut slave_fd = Some(pty.slave);

    let bus = node.bus.clone();
    let log = EventLog::new(
        bus.clone(),
        node.subjects.terminal_events(&id),
        &node.retention,
    );
    let done = CancellationToken::new();
    if let Err(e) = log
        .serve_replay(
            node.subjects.terminal_replay(&id),
            done.clone(),
            node.replay_tail,
        )
        .await
    {
        tracing::warn!(error = %e, "replay unavailable for {id}");
    }
    let inputs = match bus.subscribe(node.subjects.terminal_input(&id)).await {
        Ok(s) => s,
        Err(e) => {
            let _ = child.start_kill();
            ended();
            let r = Rejection::new(503, "bus_unavailable")
                .message(e.to_string())
                .retry_after(1);
            return reply::<()>(&node, &msg, Err(r)).await;
        }
    };
    let abandoned = CancellationToken::new();
    match bus.subscribe(node.subjects.terminal_attached(&id)).await {
        Ok(sub) => {
            tokio::spawn(watch_attached(
                bus.clone(),
                sub,
                node.client_grace,
                abandoned.clone(),
                done.clone(),
                None,
            ));
        }
        Err(e) => tracing::warn!(error = %e, "attached subscription failed for {id}"),
    }
    reply(
        &node,
        &msg,
        Ok(TerminalAccepted {
            session_id: id.clone(),
            started_at: plan.started_at,
        }),
    )
    .await;
    node.touch(&sbx);

    // Output: a blocking reader thread, events published in order here.
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    std::thread::spawn(move || read_pty(reader, out_tx));
    // A resize is applied before the next keystroke is written: the input
    // task waits for the session to say it is done.
    let (resize_tx, mut resize_rx) = mpsc::channel::<Resized>(8);
    let closed = CancellationToken::new();
    tokio::spawn(serve_input(
        node.clone(),
        inputs,
        writer,
        resize_tx,
        closed.clone(),
        done.clone(),
    ));

    tokio::spawn(async move {
        log.emit(EventKind::Start(StartData {
            invoke_id: id.clone(),
            started_at: plan.started_at,
        }))
        .await;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + plan.timeout;
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        let mut end: Option<(ExitReason, Option<&str>)> = None;
        let mut output_open = true;
        let status = loop {
            tokio::select! {
                s = child.wait() => break s.ok(),
                chunk = out_rx.recv(), if output_open => match chunk {
                    Some(bytes) => emit_output(&log, &bytes).await,
                    None => output_open = false,
                },
                Some((cols, rows, applied)) = resize_rx.recv() => {
                    if let Some(s) = &slave_fd {
                        resize(s, cols, rows).await;
                    }
                    let _ = applied.send(());
                }
                _ = beat.tick() => log.heartbeat().await,
                _ = plan.cancel.cancelled(), if end.is_none() => {
                    end = Some((ExitReason::Canceled, None));
                    let _ = child.start_kill();
                }
                _ = closed.cancelled(), if end.is_none() => {
                    end = Some((ExitReason::Canceled, Some("client_closed")));
                    let _ = child.start_kill();
                }
                _ = abandoned.cancelled(), if end.is_none() => {
                    end = Some((ExitReason::Canceled, Some("client_gone")));
                    let _ = child.start_kill();
                }
                _ = tokio::time::sleep_until(deadline), if end.is_none() => {
                    end = Some((ExitReason::Timeout, Some("max")));
                    let _ = child.start_kill();
                }
            }
        };
        // The shell is gone (under bubblewrap its whole PID namespace with
        // it): drain what it wrote, then report.
        drop(slave_fd.take());
        let drain_until = tokio::time::Instant::now() + DRAIN;
        while output_open {
            match tokio::time::timeout_at(drain_until, out_rx.recv()).await {
                Ok(Some(bytes)) => emit_output(&log, &bytes).await,
                _ => output_open = false,
            }
        }
        let _ = sbx.handle.ask(ExecEnded(id.clone())).await;
        let (reason, cause) = end.unwrap_or((ExitReason::Completed, None));
        let exit_code = match (reason, status) {
            (ExitReason::Completed, Some(s)) => exit_code(s),
            _ => -1,
        };
        log.emit(EventKind::Exit(ExitData {
            invoke_id: id,
            exit_code,
            duration_ms: started.elapsed().as_millis() as u64,
            reason,
            cause: cause.map(str::to_string),
            message: None,
        }))
        .await;
        done.cancel();
    });
}

fn exit_code(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code()
        .or_else(|| s.signal().map(|n| 128 + n))
        .unwrap_or(-1)
}

async fn emit_output(log: &EventLog, bytes: &[u8]) {
    let (data, encoding) = encode_line(bytes);
    log.emit(EventKind::Log(LogData {
        stream: "stdout".into(),
        data,
        encoding,
        partial: true,
    }))
    .await;
}

/// Reads the PTY until it reports the end (every slave closed: EIO).
fn read_pty(mut master: File, tx: mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.blocking_send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        }
    }
}

/// Sets the PTY's window size (the shell gets SIGWINCH) with `stty` on it.
async fn resize(slave: &OwnedFd, cols: u16, rows: u16) {
    let Ok(fd) = slave.try_clone() else { return };
    let ws = winsize(cols, rows);
    let mut stty = tokio::process::Command::new("stty");
    stty.args([
        "cols",
        &ws.ws_col.to_string(),
        "rows",
        &ws.ws_row.to_string(),
    ])
    .stdin(Stdio::from(fd))
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let r = match crate::limits::spawn(&mut stty) {
        Ok(mut child) => child.wait().await,
        Err(e) => Err(e),
    };
    if !r.is_ok_and(|s| s.success()) {
        tracing::debug!("resizing a terminal failed");
    }
}

/// A resize for the session task, and how it says the PTY has the new size.
type Resized = (u16, u16, tokio::sync::oneshot::Sender<()>);

/// Answers `term.<id>.input` until the session ends.
async fn serve_input(
    node: Arc<Node>,
    mut inputs: agenttier_bus::Subscription,
    writer: File,
    resizes: mpsc::Sender<Resized>,
    closed: CancellationToken,
    done: CancellationToken,
) {
    let writer = Arc::new(std::sync::Mutex::new(writer));
    loop {
        let msg = tokio::select! {
            _ = done.cancelled() => return,
            m = inputs.next() => match m {
                Some(m) => m,
                None => return,
            },
        };
        let r: Result<serde_json::Value, Rejection> = match msg.json::<TerminalInput>() {
            Err(e) => Err(Rejection::new(400, "invalid_request").message(e.to_string())),
            Ok(TerminalInput::Input { data }) => {
                let w = writer.clone();
                let wrote = tokio::task::spawn_blocking(move || match w.lock() {
                    Ok(mut f) => f.write_all(data.as_bytes()),
                    Err(_) => Err(std::io::Error::other("writer poisoned")),
                })
                .await;
                match wrote {
                    Ok(Ok(())) => Ok(serde_json::json!({})),
                    _ => {
                        Err(Rejection::new(409, "terminal_closed").message("the session has ended"))
                    }
                }
            }
            Ok(TerminalInput::Resize { cols, rows }) => {
                let (applied, done_resizing) = tokio::sync::oneshot::channel();
                if resizes.send((cols, rows, applied)).await.is_ok() {
                    // Gone (the session ended) counts as done.
                    let _ = done_resizing.await;
                }
                Ok(serde_json::json!({}))
            }
            Ok(TerminalInput::Close) => {
                closed.cancel();
                Ok(serde_json::json!({}))
            }
        };
        let _ = respond_json(node.bus.as_ref(), &msg, &Reply::from(r)).await;
    }
}
