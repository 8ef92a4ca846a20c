//! `POST /sandboxes/{id}/configure` and its install log (SPEC §2.3).
//!
//! The router checks the body's shape and sizes, computes the
//! `installCommandHash`, sends the manifest to the actor (which validates
//! paths and answers the check order), uploads the files as acknowledged
//! chunks, and relays the configure's events until `result`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use agenttier_bus::Headers;
use agenttier_bus::msg::{
    CHUNK_BYTES, CONFIGURE_LIMITS, ConfigureAccepted, ConfigureRequest, FILE_HEADER, FileMeta,
    OFFSET_HEADER, SimpleRequest, UploadAck, configure_hash,
};
use agenttier_bus::subject::Verb;

use crate::actor::{RUNNING, RUNNING_OR_STOPPED, ask};
use crate::auth::Caller;
use crate::error::{Json, Path, Query};
use crate::relay::{Kind, Relay};
use crate::resolve::{NsQuery, resolve};
use crate::sse::sse;
use crate::{ApiError, Ctx, new_id};

/// The JSON body may carry 128 MiB as base64 (4/3 larger) plus paths and
/// argv. The SPEC's limits (files, per file, total) are the actor's to
/// answer, in check order.
pub(crate) const BODY_LIMIT: usize =
    (CONFIGURE_LIMITS.total_bytes as usize / 3) * 4 + 4 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConfigureBody {
    #[serde(default)]
    files: Vec<FileBody>,
    install_command: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FileBody {
    path: String,
    content: Option<String>,
    content_base64: Option<String>,
    /// A number (`493`) or an octal string (`"0755"`).
    mode: Option<Value>,
}

/// The files ready to send: metadata for the manifest, decoded bytes to upload.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub metas: Vec<FileMeta>,
    pub bodies: Vec<Bytes>,
    pub hash: String,
}

fn parse_mode(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|m| u32::try_from(m).ok()),
        Value::String(s) => {
            let s = s.trim_start_matches("0o");
            u32::from_str_radix(if s.is_empty() { "0" } else { s }, 8).ok()
        }
        _ => None,
    }
    .filter(|m| *m <= 0o7777)
}

/// Checks shapes, decodes, and hashes as the SPEC says (over the
/// `contentBase64` text when given, else `content`).
pub(crate) fn prepare(files: Vec<FileBody>, install: &[String]) -> Result<Prepared, ApiError> {
    let hash = configure_hash(
        install,
        files.iter().map(|f| {
            let text = f
                .content_base64
                .as_deref()
                .or(f.content.as_deref())
                .unwrap_or_default();
            (f.path.as_str(), text.as_bytes())
        }),
    );
    let mut metas = Vec::with_capacity(files.len());
    let mut bodies = Vec::with_capacity(files.len());
    for (i, f) in files.into_iter().enumerate() {
        let name = format!("files[{i}] ({:?})", f.path);
        let mode = match &f.mode {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                parse_mode(v)
                    .ok_or_else(|| ApiError::InvalidRequest(format!("{name}: invalid mode {v}")))?,
            ),
        };
        let bytes = match (f.content, f.content_base64) {
            (Some(text), None) => Bytes::from(text.into_bytes()),
            (None, Some(b64)) => {
                let decoded = STANDARD
                    .decode(b64.as_bytes())
                    .or_else(|_| STANDARD.decode(b64.split_ascii_whitespace().collect::<String>()))
                    .map_err(|_| {
                        ApiError::InvalidRequest(format!(
                            "{name}: contentBase64 is not valid base64"
                        ))
                    })?;
                Bytes::from(decoded)
            }
            _ => {
                return Err(ApiError::InvalidRequest(format!(
                    "{name}: give exactly one of content and contentBase64"
                )));
            }
        };
        let size = bytes.len() as u64;
        metas.push(FileMeta {
            path: f.path,
            size,
            mode,
        });
        bodies.push(bytes);
    }
    Ok(Prepared {
        metas,
        bodies,
        hash,
    })
}

pub(crate) async fn configure(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(q): Query<NsQuery>,
    Json(body): Json<ConfigureBody>,
) -> Result<Response, ApiError> {
    let sbx = resolve(&ctx, &caller, &id, q.namespace.as_deref()).await?;
    if body.files.is_empty()
        && body.install_command.is_none()
        && body.entrypoint.is_none()
        && body.env.is_none()
    {
        return Err(ApiError::InvalidRequest(
            "at least one of files, installCommand, entrypoint or env is required".into(),
        ));
    }
    let install = body.install_command.clone().unwrap_or_default();
    let Prepared {
        metas,
        bodies,
        hash,
    } = prepare(body.files, &install)?;
    let configure_id = new_id("cfg-");
    let events = ctx
        .bus
        .subscribe(ctx.subjects.configure_events(&configure_id))
        .await
        .map_err(|e| ApiError::Unavailable(format!("bus: {e}")))?;
    let req = ConfigureRequest {
        configure_id: configure_id.clone(),
        caller: caller.clone(),
        files: metas,
        install_command: body.install_command,
        entrypoint: body.entrypoint,
        env: body.env,
        hash,
    };
    let accepted: ConfigureAccepted = ask(&ctx, &sbx, Verb::Configure, &req, RUNNING).await?;
    tracing::info!(namespace = %sbx.namespace, name = %sbx.name, %configure_id, skipped = accepted.skipped, "configure accepted");
    if !accepted.skipped {
        tokio::spawn(upload(ctx.clone(), configure_id.clone(), bodies));
    }
    let relay = Relay {
        bus: ctx.bus.clone(),
        kind: Kind::Configure {
            replay: ctx.subjects.configure_replay(&configure_id),
        },
        liveness: ctx.config.liveness_timeout,
        attach_interval: ctx.config.attach_interval,
        shutdown: ctx.shutdown.clone(),
    };
    Ok(sse(
        relay.spawn(events, 0, None),
        ctx.config.keepalive_interval,
    ))
}

/// Sends every file as acknowledged chunks of at most [`CHUNK_BYTES`], in
/// order; an empty file is one empty chunk.
async fn upload(ctx: Ctx, configure_id: String, bodies: Vec<Bytes>) {
    let subject = ctx.subjects.configure_upload(&configure_id);
    for (index, data) in bodies.into_iter().enumerate() {
        let mut offset = 0;
        loop {
            let end = (offset + CHUNK_BYTES).min(data.len());
            let headers = Headers::new()
                .with(FILE_HEADER, index.to_string())
                .with(OFFSET_HEADER, offset.to_string());
            let r = ctx
                .bus
                .request(
                    subject.clone(),
                    headers,
                    data.slice(offset..end),
                    ctx.config.request_timeout,
                )
                .await;
            if let Err(e) = r.and_then(|m| m.json::<UploadAck>()) {
                tracing::warn!(%configure_id, index, offset, error = %e, "upload chunk not acknowledged; giving up");
                return;
            }
            offset = end;
            if offset >= data.len() {
                break;
            }
        }
    }
}

pub(crate) async fn install_log(
    State(ctx): State<Ctx>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(q): Query<NsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let sbx = resolve(&ctx, &caller, &id, q.namespace.as_deref()).await?;
    let v: Value = ask(
        &ctx,
        &sbx,
        Verb::InstallLog,
        &SimpleRequest {
            caller,
            invoke_id: None,
        },
        RUNNING_OR_STOPPED,
    )
    .await?;
    Ok(axum::Json(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn files(v: Value) -> Vec<FileBody> {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    fn bad_request(r: Result<Prepared, ApiError>) -> String {
        match r {
            Err(ApiError::InvalidRequest(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hash_is_over_the_text_as_sent() {
        let p = prepare(
            files(json!([
                {"path":"/workspace/b.bin","contentBase64":"AAE="},
                {"path":"/workspace/a.py","content":"print(1)\n","mode":"0755"}
            ])),
            &["pip".into(), "install".into()],
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let want = configure_hash(
            &["pip".into(), "install".into()],
            [
                ("/workspace/a.py", &b"print(1)\n"[..]),
                ("/workspace/b.bin", &b"AAE="[..]),
            ],
        );
        assert_eq!(p.hash, want);
        assert_eq!(p.bodies[0].as_ref(), &[0u8, 1][..]);
        assert_eq!(p.metas[0].size, 2);
        assert_eq!(p.metas[1].mode, Some(0o755));
    }

    #[test]
    fn malformed_entries_are_named() {
        let m = bad_request(prepare(
            files(
                json!([{"path":"/workspace/ok","content":""},{"path":"/workspace/x","content":"a","contentBase64":"YQ=="}]),
            ),
            &[],
        ));
        assert!(m.starts_with("files[1] (\"/workspace/x\")"), "{m}");
        let m = bad_request(prepare(files(json!([{"path":"/workspace/y"}])), &[]));
        assert!(m.starts_with("files[0]"), "{m}");
        let m = bad_request(prepare(
            files(json!([{"path":"/workspace/z","contentBase64":"!!"}])),
            &[],
        ));
        assert!(m.contains("not valid base64"), "{m}");
    }

    #[test]
    fn the_body_limit_fits_the_largest_configure_as_base64() {
        assert!(BODY_LIMIT > (CONFIGURE_LIMITS.total_bytes as usize) * 4 / 3);
    }

    #[test]
    fn modes_parse_as_numbers_or_octal_text() {
        assert_eq!(parse_mode(&json!(493)), Some(0o755));
        assert_eq!(parse_mode(&json!("644")), Some(0o644));
        assert_eq!(parse_mode(&json!("0o600")), Some(0o600));
        assert_eq!(parse_mode(&json!("9")), None);
        assert_eq!(parse_mode(&json!(0o10000)), None);
    }
}
