//! The file API (SPEC §2.4): list, read, write and delete inside the
//! sandbox's `/workspace`, on its executor.
//!
//! `{path}` in the URL is the absolute path without its leading `/` (what
//! v0.8 clients send: `/files/workspace/a.txt`), percent-decoded; the
//! executor confines it to `/workspace` (400 `invalid_path` otherwise).
//! Bodies move over the bus in acknowledged chunks of at most 512 KiB:
//! a write is uploaded chunk by chunk, a read is pulled chunk by chunk as
//! the client takes it.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use agenttier_bus::Headers;
use agenttier_bus::model::Sandbox;
use agenttier_bus::msg::{
    CHUNK_BYTES, FILE_MAX_BYTES, FileList, FilesOp, FilesRequest, OFFSET_HEADER, ReadStart, Reply,
    WriteAck,
};
use agenttier_bus::subject::Verb;

use crate::actor::{RUNNING, ask};
use crate::auth::Caller;
use crate::code::read_capped;
use crate::error::{Path, Query};
use crate::resolve::{NsQuery, resolve};
use crate::{ApiError, Ctx, Principal, new_id};

/// Tries of one chunk before a transfer gives up.
const CHUNK_TRIES: usize = 3;

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    namespace: Option<String>,
    path: Option<String>,
}

async fn files_op<T: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    sbx: &Sandbox,
    caller: Principal,
    path: String,
    op: FilesOp,
) -> Result<T, ApiError> {
    let req = FilesRequest { caller, path, op };
    ask(ctx, sbx, Verb::Files, &req, RUNNING).await
}

/// The absolute path a URL tail names (`workspace/a.txt` → `/workspace/a.txt`).
fn absolute(tail: &str) -> String {
    format!("/{}", tail.trim_start_matches('/'))
}

/// `GET /sandboxes/{id}/files/?path=/workspace/dir` (also without the
/// trailing slash); `path` defaults to `/workspace`.
pub(crate) async fn list(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let sbx = resolve(&ctx, &caller, &id, q.namespace.as_deref()).await?;
    let path = q
        .path
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/workspace".into());
    let list: FileList = files_op(&ctx, &sbx, caller, path, FilesOp::List).await?;
    Ok(axum::Json(list))
}

/// `GET /sandboxes/{id}/files/{*path}` → the file's bytes.
pub(crate) async fn read(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
    Path((id, tail)): Path<(String, String)>,
    Query(q): Query<NsQuery>,
) -> Result<Response, ApiError> {
    let sbx = resolve(&ctx, &caller, &id, q.namespace.as_deref()).await?;
    let transfer_id = new_id("xfer-");
    let op = FilesOp::Read {
        transfer_id: transfer_id.clone(),
    };
    let start: ReadStart = files_op(&ctx, &sbx, caller, absolute(&tail), op).await?;
    let size = start.size;
    let body = if start.eof {
        Body::from(start.data)
    } else {
        Body::from_stream(pull(ctx.clone(), transfer_id, start.data, size))
    };
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if !start.eof {
        // The file's size when it was opened: a file that shrinks meanwhile
        // ends the response early, which the client sees as an error.
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    Ok(resp)
}

/// The body of a large read: the first chunk, then each next one pulled
/// from the executor when the client has taken the last, up to `size`.
fn pull(
    ctx: Ctx,
    transfer_id: String,
    first: Bytes,
    size: u64,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let subject = ctx.subjects.transfer_download(&transfer_id);
    let state = (Some(first), 0u64);
    futures::stream::unfold(state, move |(first, offset)| {
        let (ctx, subject) = (ctx.clone(), subject.clone());
        async move {
            if let Some(b) = first {
                let next = offset + b.len() as u64;
                return Some((Ok(b), (None, next)));
            }
            if offset >= size {
                return None;
            }
            let mut last_err = String::new();
            for _ in 0..CHUNK_TRIES {
                let headers = Headers::new().with(OFFSET_HEADER, offset.to_string());
                match ctx
                    .bus
                    .request(
                        subject.clone(),
                        headers,
                        Bytes::new(),
                        ctx.config.request_timeout,
                    )
                    .await
                {
                    Ok(m) if m.payload.is_empty() => return None,
                    Ok(m) => {
                        let room = (size - offset).min(m.payload.len() as u64) as usize;
                        let chunk = m.payload.slice(..room);
                        let next = offset + chunk.len() as u64;
                        return Some((Ok(chunk), (None, next)));
                    }
                    Err(e) => last_err = e.to_string(),
                }
            }
            tracing::warn!(%subject, offset, error = %last_err, "file read abandoned");
            let e = std::io::Error::other(format!("reading the file failed: {last_err}"));
            Some((Err(e), (None, u64::MAX)))
        }
    })
}

/// `PUT /sandboxes/{id}/files/{*path}` with the raw body → 201 `{path, bytes}`.
pub(crate) async fn write(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
    Path((id, tail)): Path<(String, String)>,
    Query(q): Query<NsQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    // One byte past the limit is enough for the executor to answer 413 in order.
    let data = read_capped(body, FILE_MAX_BYTES as usize + 1).await?;
    let sbx = resolve(&ctx, &caller, &id, q.namespace.as_deref()).await?;
    let transfer_id = new_id("xfer-");
    let op = FilesOp::Write {
        transfer_id: transfer_id.clone(),
        size: data.len() as u64,
    };
    let _: serde_json::Value = files_op(&ctx, &sbx, caller, absolute(&tail), op).await?;
    let subject = ctx.subjects.transfer_upload(&transfer_id);
    let mut offset = 0;
    loop {
        let end = (offset + CHUNK_BYTES).min(data.len());
        let ack = upload_chunk(&ctx, &subject, offset, data.slice(offset..end)).await?;
        if let Some(written) = ack.written {
            return Ok((StatusCode::CREATED, axum::Json(written)).into_response());
        }
        let next = ack.received as usize;
        if next <= offset && end > offset {
            return Err(ApiError::Internal(format!(
                "upload stuck at {offset} of {}",
                data.len()
            )));
        }
        offset = next;
        if offset >= data.len() {
            return Err(ApiError::Internal("upload ended without a result".into()));
        }
    }
}

/// Sends one chunk (tries again when its answer is lost) and reads its answer.
async fn upload_chunk(
    ctx: &Ctx,
    subject: &str,
    offset: usize,
    chunk: Bytes,
) -> Result<WriteAck, ApiError> {
    let mut last = None;
    for _ in 0..CHUNK_TRIES {
        let headers = Headers::new().with(OFFSET_HEADER, offset.to_string());
        let r = ctx
            .bus
            .request(
                subject.to_string(),
                headers,
                chunk.clone(),
                ctx.config.request_timeout,
            )
            .await;
        match r.and_then(|m| m.json::<Reply<WriteAck>>()) {
            Ok(Reply::Ok(ack)) => return Ok(ack),
            Ok(Reply::Rejected(rej)) => return Err(ApiError::Rejected(rej)),
            Err(agenttier_bus::Error::TimedOut) => last = Some(ApiError::ExecutorTimeout),
            Err(e) => return Err(ApiError::Unavailable(format!("bus: {e}"))),
        }
    }
    Err(last.unwrap_or(ApiError::ExecutorTimeout))
}

/// `DELETE /sandboxes/{id}/files/{*path}` → 204.
pub(crate) async fn delete(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
    Path((id, tail)): Path<(String, String)>,
    Query(q): Query<NsQuery>,
) -> Result<StatusCode, ApiError> {
    let sbx = resolve(&ctx, &caller, &id, q.namespace.as_deref()).await?;
    let _: serde_json::Value =
        files_op(&ctx, &sbx, caller, absolute(&tail), FilesOp::Delete).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_tails_are_absolute_paths() {
        assert_eq!(absolute("workspace/a/b.txt"), "/workspace/a/b.txt");
        assert_eq!(absolute("/workspace/x"), "/workspace/x");
        assert_eq!(absolute("etc/passwd"), "/etc/passwd");
    }
}
