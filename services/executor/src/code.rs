//! Code mode on the bus (SPEC §2.4): `sbx.<ns>.<name>.exec` and
//! `sbx.<ns>.<name>.files`.
//!
//! An exec is a run like an invoke (the same runtime, environment, limits
//! machinery and numbered, replayable events on `exec.<id>.events`), but it
//! is admitted in both modes, counts toward no cap and publishes no
//! lifecycle events. File operations run here, on the node that holds the
//! workspace; bodies move in acknowledged chunks on `xfer.<id>.*`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agenttier_bus::msg::{
    CHUNK_BYTES, ExecAccepted, ExecRequest, FILE_MAX_BYTES, FilesOp, FilesRequest, OFFSET_HEADER,
    ReadStart, Rejection, Reply, WriteAck,
};
use agenttier_bus::{Headers, Message, Subscription, respond_json};
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::Node;
use crate::actor::{AdmitExec, AdmitFiles, ExecEnded};
use crate::events::EventLog;
use crate::files::{Target, Workspace};
use crate::launch;
use crate::listener::{Hosted, decode, flatten, reply};

/// A transfer with no chunk (or pull) for this long is abandoned.
const TRANSFER_IDLE: Duration = Duration::from_secs(30);

pub(crate) async fn exec(node: Arc<Node>, sbx: Arc<Hosted>, msg: Message) {
    let req: ExecRequest = match decode(&msg) {
        Ok(r) => r,
        Err(e) => return reply::<()>(&node, &msg, Err(e)).await,
    };
    if req.argv.is_empty() || req.stdin_len > agenttier_bus::msg::EXEC_MAX_STDIN_BYTES {
        let r = Rejection::new(400, "invalid_request").message("command: an empty command");
        return reply::<()>(&node, &msg, Err(r)).await;
    }
    let admit = AdmitExec {
        caller: req.caller.clone(),
        exec_id: req.exec_id.clone(),
        argv: req.argv.clone(),
        timeout: Duration::from_millis(req.timeout_ms),
    };
    let plan = match flatten(sbx.handle.ask(admit).await) {
        Ok(p) => p,
        Err(rej) => return reply::<()>(&node, &msg, Err(rej)).await,
    };
    let id = req.exec_id.clone();
    let log = EventLog::new(
        node.bus.clone(),
        node.subjects.exec_events(&id),
        &node.retention,
    );
    let subjects = launch::Subjects {
        replay: node.subjects.exec_replay(&id),
        replay_for: node.replay_tail,
        stdin: node.subjects.exec_stdin(&id),
        // Nobody waiting for the result (the client left) ends the run.
        attached: Some(node.subjects.exec_attached(&id)),
    };
    let launched =
        launch::prepare(&node, &id, log, subjects, req.stdin.clone(), req.stdin_len).await;

    let accepted = ExecAccepted {
        exec_id: id.clone(),
        started_at: plan.started_at,
    };
    reply(&node, &msg, Ok(accepted)).await;
    node.touch(&sbx);

    tokio::spawn(async move {
        let handle = sbx.handle.clone();
        let release = |_| async move {
            let _ = handle.ask(ExecEnded(id)).await;
        };
        launched.run(&node, &sbx, &plan, release).await;
    });
}

pub(crate) async fn files(node: Arc<Node>, sbx: Arc<Hosted>, msg: Message) {
    let req: FilesRequest = match decode(&msg) {
        Ok(r) => r,
        Err(e) => return reply::<()>(&node, &msg, Err(e)).await,
    };
    if let Err(rej) = flatten(sbx.handle.ask(AdmitFiles(req.caller.clone())).await) {
        return reply::<()>(&node, &msg, Err(rej)).await;
    }
    let root = sbx.dirs.workspace();
    match req.op {
        FilesOp::List => {
            let r = blocking(move || {
                let t = Target::parse(&req.path, true)?;
                Workspace::open(&root)?.list(&t)
            })
            .await;
            reply(&node, &msg, r).await;
        }
        FilesOp::Delete => {
            let r = blocking(move || {
                let t = Target::parse(&req.path, false)?;
                Workspace::open(&root)?.delete(&t)
            })
            .await
            .map(|()| serde_json::json!({}));
            reply(&node, &msg, r).await;
        }
        FilesOp::Read { transfer_id } => read(node, msg, root, req.path, transfer_id).await,
        FilesOp::Write { transfer_id, size } => {
            write(node, sbx, msg, root, req.path, transfer_id, size).await;
        }
    }
}

/// Runs a filesystem operation on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::files::Error> + Send + 'static,
) -> Result<T, Rejection> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Rejection::from),
        Err(e) => {
            Err(Rejection::new(500, "file_error").message(format!("file operation failed: {e}")))
        }
    }
}

/// Reads at most `n` bytes, fewer only at the end of the file.
async fn read_up_to(f: &mut tokio::fs::File, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match f.read(&mut buf[got..]).await? {
            0 => break,
            k => got += k,
        }
    }
    buf.truncate(got);
    Ok(buf)
}

async fn read(node: Arc<Node>, msg: Message, root: PathBuf, path: String, transfer_id: String) {
    let opened = blocking(move || {
        let t = Target::parse(&path, false)?;
        Workspace::open(&root)?.open_read(&t)
    })
    .await;
    let (file, size) = match opened {
        Ok(o) => o,
        Err(rej) => return reply::<()>(&node, &msg, Err(rej)).await,
    };
    let mut file = tokio::fs::File::from_std(file);
    let first = match read_up_to(&mut file, CHUNK_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            let r = Rejection::new(500, "file_error").message(format!("read: {e}"));
            return reply::<()>(&node, &msg, Err(r)).await;
        }
    };
    let eof = first.len() < CHUNK_BYTES;
    if !eof {
        // Subscribed before the reply, so the first pull finds us.
        match node
            .bus
            .subscribe(node.subjects.transfer_download(&transfer_id))
            .await
        {
            Ok(sub) => {
                tokio::spawn(serve_download(node.clone(), sub, file));
            }
            Err(e) => {
                let r = Rejection::new(503, "bus_unavailable")
                    .message(e.to_string())
                    .retry_after(1);
                return reply::<()>(&node, &msg, Err(r)).await;
            }
        }
    }
    let start = ReadStart {
        size,
        data: Bytes::from(first),
        eof,
    };
    reply(&node, &msg, Ok(start)).await;
}

/// Answers pulls on `xfer.<id>.download`: each names an offset
/// (`Agenttier-Offset`) and gets the next chunk from there, raw, with the
/// same header; an empty chunk is the end. A pull may repeat an offset (a
/// lost reply is asked for again).
async fn serve_download(node: Arc<Node>, mut sub: Subscription, mut file: tokio::fs::File) {
    loop {
        let msg = match tokio::time::timeout(TRANSFER_IDLE, sub.next()).await {
            Ok(Some(m)) => m,
            _ => return,
        };
        let Some(reply_to) = msg.reply.clone() else {
            continue;
        };
        let offset: u64 = msg
            .headers
            .get(OFFSET_HEADER)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let chunk = match file.seek(std::io::SeekFrom::Start(offset)).await {
            Ok(_) => read_up_to(&mut file, CHUNK_BYTES).await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let end = chunk.is_empty();
        let headers = Headers::new().with(OFFSET_HEADER, offset.to_string());
        if let Err(e) = node
            .bus
            .publish(reply_to, headers, Bytes::from(chunk))
            .await
        {
            tracing::warn!(error = %e, "download chunk not sent");
        }
        if end {
            return;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn write(
    node: Arc<Node>,
    sbx: Arc<Hosted>,
    msg: Message,
    root: PathBuf,
    path: String,
    transfer_id: String,
    size: u64,
) {
    let check_root = root.clone();
    let checked = blocking(move || {
        let t = Target::parse(&path, false)?;
        Workspace::open(&check_root)?.check_write(&check_root, &t)?;
        Ok(t)
    })
    .await;
    let target = match checked {
        Ok(t) => t,
        Err(rej) => return reply::<()>(&node, &msg, Err(rej)).await,
    };
    if size > FILE_MAX_BYTES {
        let r = Rejection::new(413, "payload_too_large")
            .message(format!("a file is limited to {FILE_MAX_BYTES} bytes"));
        return reply::<()>(&node, &msg, Err(r)).await;
    }
    let staging = sbx.dirs.staging(&transfer_id);
    let file = match tokio::fs::create_dir_all(&staging).await {
        Ok(()) => tokio::fs::File::create(staging.join("data")).await,
        Err(e) => Err(e),
    };
    let file = match file {
        Ok(f) => f,
        Err(e) => {
            let r = Rejection::new(500, "file_error").message(format!("staging: {e}"));
            return reply::<()>(&node, &msg, Err(r)).await;
        }
    };
    let uploads = match node
        .bus
        .subscribe(node.subjects.transfer_upload(&transfer_id))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            let r = Rejection::new(503, "bus_unavailable")
                .message(e.to_string())
                .retry_after(1);
            return reply::<()>(&node, &msg, Err(r)).await;
        }
    };
    reply(&node, &msg, Ok(serde_json::json!({}))).await;
    tokio::spawn(async move {
        receive_file(&node, uploads, file, size, &root, &staging, &target).await;
        let _ = tokio::fs::remove_dir_all(&staging).await;
    });
}

/// Receives a write's chunks into the staged file, acknowledging each; the
/// answer to the last one says whether the file is in place.
async fn receive_file(
    node: &Node,
    mut uploads: Subscription,
    mut file: tokio::fs::File,
    size: u64,
    root: &std::path::Path,
    staging: &std::path::Path,
    target: &Target,
) {
    let mut received = 0u64;
    loop {
        let msg = match tokio::time::timeout(TRANSFER_IDLE, uploads.next()).await {
            Ok(Some(m)) => m,
            _ => return,
        };
        let offset: Option<u64> = msg.headers.get(OFFSET_HEADER).and_then(|v| v.parse().ok());
        if offset != Some(received) {
            // Not the next chunk (a resend of one already taken): say where we are.
            let ack: Reply<WriteAck> = Reply::Ok(WriteAck {
                received,
                written: None,
            });
            let _ = respond_json(node.bus.as_ref(), &msg, &ack).await;
            continue;
        }
        if received + msg.payload.len() as u64 > size {
            let r: Reply<WriteAck> = Reply::Rejected(
                Rejection::new(400, "invalid_request").message("more bytes than announced"),
            );
            let _ = respond_json(node.bus.as_ref(), &msg, &r).await;
            return;
        }
        if let Err(e) = file.write_all(&msg.payload).await {
            let r: Reply<WriteAck> =
                Reply::Rejected(Rejection::new(500, "file_error").message(format!("staging: {e}")));
            let _ = respond_json(node.bus.as_ref(), &msg, &r).await;
            return;
        }
        received += msg.payload.len() as u64;
        if received < size {
            let ack: Reply<WriteAck> = Reply::Ok(WriteAck {
                received,
                written: None,
            });
            let _ = respond_json(node.bus.as_ref(), &msg, &ack).await;
            continue;
        }
        let flushed = file.flush().await.and(file.sync_all().await);
        drop(file);
        let r = match flushed {
            Err(e) => Err(Rejection::new(500, "file_error").message(format!("staging: {e}"))),
            Ok(()) => {
                let (root, staging, target) =
                    (root.to_path_buf(), staging.to_path_buf(), target.clone());
                blocking(move || Workspace::open(&root)?.commit(&target, &staging, "data", size))
                    .await
            }
        };
        let ack: Reply<WriteAck> = r
            .map(|w| WriteAck {
                received,
                written: Some(w),
            })
            .into();
        let _ = respond_json(node.bus.as_ref(), &msg, &ack).await;
        return;
    }
}
