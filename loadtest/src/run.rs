//! One invoke as a client sees it: `POST /invoke`, then the event stream
//! read as it arrives and judged by a [`Check`].

use std::pin::Pin;
use std::time::Instant;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::{Method, StatusCode};

use crate::check::{Check, Expect};
use crate::client::Api;
use crate::sse::Parser;
use crate::stats::{ErrorKind, Sample};

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// An accepted invoke whose stream is being read.
pub(crate) struct Invoke {
    pub sent: Instant,
    body: Body,
    parser: Parser,
    pub check: Check,
    ended: bool,
}

/// A run that passed its checks.
pub(crate) struct Done {
    pub sample: Sample,
    /// When the `exit` event arrived.
    pub exit_at: Instant,
}

/// What a refused invoke answered.
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub retry_after: bool,
    pub body: serde_json::Value,
}

/// Sends `POST /sandboxes/{name}/invoke` with `stdin`. A 200 is an
/// [`Invoke`] to read; anything else a [`Refusal`] (body read).
pub(crate) async fn send(
    api: &Api,
    name: &str,
    stdin: Bytes,
    expect: Expect,
) -> Result<Result<Invoke, Refusal>, ErrorKind> {
    let sent = Instant::now();
    let resp = api
        .req(Method::POST, &format!("/sandboxes/{name}/invoke"))
        .header("Accept", "text/event-stream")
        .body(stdin)
        .send()
        .await
        .map_err(|e| ErrorKind::from_reqwest(&e))?;
    let status = resp.status();
    if status != StatusCode::OK {
        let retry_after = resp.headers().contains_key("retry-after");
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ErrorKind::from_reqwest(&e))?;
        return Ok(Err(Refusal {
            status,
            retry_after,
            body: serde_json::from_slice(&bytes).unwrap_or_default(),
        }));
    }
    Ok(Ok(Invoke {
        sent,
        body: Box::pin(resp.bytes_stream()),
        parser: Parser::default(),
        check: Check::new(expect),
        ended: false,
    }))
}

impl Invoke {
    /// Reads one chunk; false at the end of the stream.
    async fn read(&mut self) -> Result<bool, ErrorKind> {
        if self.ended {
            return Ok(false);
        }
        match self.body.next().await {
            Some(Ok(chunk)) => {
                let now = Instant::now();
                let check = &mut self.check;
                self.parser.feed(&chunk, |e| check.event(e, now));
                Ok(true)
            }
            Some(Err(e)) => Err(ErrorKind::from_reqwest(&e)),
            None => {
                self.ended = true;
                Ok(false)
            }
        }
    }

    /// Reads until the `start` event; returns the invoke id.
    pub async fn until_start(&mut self) -> Result<String, ErrorKind> {
        while self.check.invoke_id.is_none() {
            if !self.read().await? {
                return Err(ErrorKind::MissingStart);
            }
        }
        Ok(self.check.invoke_id.clone().unwrap_or_default())
    }

    /// Reads to the end of the stream and judges it; the sample runs from
    /// sending to the `exit` event.
    pub async fn finish(mut self) -> Result<Done, ErrorKind> {
        while self.read().await? {}
        let sent = self.sent;
        let first = self.check.first_event;
        let exit_at = self.check.exit_at;
        self.check.finish()?;
        let exit_at = exit_at.ok_or(ErrorKind::MissingExit)?;
        Ok(Done {
            sample: Sample {
                latency: exit_at - sent,
                ttfb: first.map(|f| f - sent),
            },
            exit_at,
        })
    }
}

/// One whole invoke that must be accepted and pass `expect`.
pub(crate) async fn invoke(
    api: &Api,
    name: &str,
    stdin: Bytes,
    expect: Expect,
) -> Result<Sample, ErrorKind> {
    match send(api, name, stdin, expect).await? {
        Ok(inv) => inv.finish().await.map(|d| d.sample),
        Err(refusal) => Err(ErrorKind::Http(refusal.status.as_u16())),
    }
}
