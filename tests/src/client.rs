//! A small typed client of the HTTP API (SPEC §2) for end-to-end tests.
//!
//! It returns what a client sees — status, headers, JSON body, SSE events —
//! and leaves judging it to the test. SSE bodies are parsed incrementally
//! ([`EventStream`]), so a test can act in the middle of a stream.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::process::System;

/// How long [`Client::wait_running`] and [`wait_ready`] poll.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// A non-streaming answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The JSON body; `Value::Null` when empty, a string when not JSON.
    pub body: Value,
}

impl Reply {
    /// The body's `error` field, or "" (for short assertions).
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }

    /// The body's `message` field, or "".
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Panics with the whole reply unless the status is `want`.
    #[track_caller]
    pub fn expect(self, want: u16) -> Self {
        assert_eq!(self.status.as_u16(), want, "unexpected reply: {self:?}");
        self
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    /// The `event:` field (`message` when absent, as browsers do).
    pub event: String,
    /// The `data:` as JSON; a JSON string when it does not parse.
    pub data: Value,
}

/// Incremental parser of `text/event-stream` bytes.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds `bytes`; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if let Some(e) = self.line(&line) {
                out.push(e);
            }
        }
        out
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" => self.id = Some(value.to_string()),
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        let data = self.data.take();
        let id = self.id.take();
        if event.is_none() && data.is_none() {
            return None;
        }
        let data = data.unwrap_or_default();
        Some(SseEvent {
            id,
            event: event.unwrap_or_else(|| "message".into()),
            data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
        })
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// An open `text/event-stream` response, read as it arrives.
pub struct EventStream {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: ByteStream,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
    /// Every event returned so far.
    pub seen: Vec<SseEvent>,
}

impl EventStream {
    fn new(resp: reqwest::Response) -> Self {
        Self {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: Box::pin(resp.bytes_stream()),
            parser: SseParser::default(),
            ready: VecDeque::new(),
            seen: Vec::new(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The next event; `None` when the stream ended (or broke).
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                self.seen.push(e.clone());
                return Some(e);
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.ready.extend(self.parser.push(&chunk)),
                Some(Err(e)) => {
                    eprintln!("event stream broke: {e}");
                    return None;
                }
                None => return None,
            }
        }
    }

    /// Reads events until one named `name`, which it returns; panics with
    /// what it saw when the stream ends first.
    pub async fn until(&mut self, name: &str) -> SseEvent {
        while let Some(e) = self.next().await {
            if e.event == name {
                return e;
            }
        }
        panic!(
            "the stream ended without a {name:?} event; saw {:?}",
            self.seen
        );
    }

    /// Reads to the end; returns every event of the stream.
    pub async fn collect(mut self) -> Vec<SseEvent> {
        while self.next().await.is_some() {}
        self.seen
    }
}

/// What `POST /invoke` or `POST /configure` answered: a stream when 200,
/// else a [`Reply`].
pub enum Streamed {
    Stream(EventStream),
    Refused(Reply),
}

impl Streamed {
    /// The open stream; panics with the refusal otherwise.
    #[track_caller]
    pub fn stream(self) -> EventStream {
        match self {
            Streamed::Stream(s) => s,
            Streamed::Refused(r) => panic!("expected a stream, got {r:?}"),
        }
    }

    /// The refusal; panics if it is a stream.
    #[track_caller]
    pub fn refused(self) -> Reply {
        match self {
            Streamed::Refused(r) => r,
            Streamed::Stream(s) => panic!("expected a refusal, got a {} stream", s.status),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Streamed::Stream(s) => s.status,
            Streamed::Refused(r) => r.status,
        }
    }
}

/// A whole stream as a test sees it at the end.
#[derive(Debug)]
pub struct Finished {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub events: Vec<SseEvent>,
}

impl Finished {
    /// The first event named `name`; panics with all events when none.
    #[track_caller]
    pub fn event(&self, name: &str) -> &SseEvent {
        self.events
            .iter()
            .find(|e| e.event == name)
            .unwrap_or_else(|| panic!("no {name:?} event in {:?}", self.events))
    }

    /// The `data` of every `log` event from `stream` (`stdout`/`stderr`).
    pub fn lines(&self, stream: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e.event == "log" && e.data["stream"] == stream)
            .map(|e| e.data["data"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The names of the events, in order.
    pub fn names(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.event.as_str()).collect()
    }
}

/// One router, one API key.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    /// A client of the router at `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: &str, key: Option<&str>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("build the HTTP client");
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            key: key.map(str::to_string),
        }
    }

    /// The same router with another key (or none).
    pub fn with_key(&self, key: Option<&str>) -> Self {
        Self {
            key: key.map(str::to_string),
            ..self.clone()
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `/api/v1{path}` carrying the key.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base));
        match &self.key {
            Some(k) => rb.header("X-API-Key", k),
            None => rb,
        }
    }

    /// Sends `rb` and reads a JSON (or empty) answer.
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Reply {
        let resp = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("request to {} failed: {e}", self.base));
        reply(resp).await
    }

    pub async fn get_json(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// `POST /sandboxes` `{name, templateRef: {name: template}}`.
    pub async fn create_sandbox(&self, name: &str, template: &str) -> Reply {
        self.post_json(
            "/sandboxes",
            &json!({"name": name, "templateRef": {"name": template}}),
        )
        .await
    }

    pub async fn get_sandbox(&self, name: &str) -> Reply {
        self.get_json(&format!("/sandboxes/{name}")).await
    }

    pub async fn list_sandboxes(&self) -> Reply {
        self.get_json("/sandboxes").await
    }

    /// Polls `GET /sandboxes/{name}` until its status is `want`; returns the
    /// sandbox, or panics with the last answer after 30 s.
    pub async fn wait_status(&self, name: &str, want: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT_TIMEOUT;
        loop {
            let r = self.get_sandbox(name).await;
            if r.status == StatusCode::OK && r.body["status"] == want {
                return r.body;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("sandbox {name} not {want} within {WAIT_TIMEOUT:?}; last answer: {r:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn wait_running(&self, name: &str) -> Value {
        self.wait_status(name, "Running").await
    }

    /// Creates `name` from `template` (201 expected) and waits until it runs.
    pub async fn create_running(&self, name: &str, template: &str) -> Value {
        self.create_sandbox(name, template).await.expect(201);
        self.wait_running(name).await
    }

    /// `POST /sandboxes/{name}/configure` with `body`.
    pub async fn configure_stream(&self, name: &str, body: &Value) -> Streamed {
        let rb = self
            .request(Method::POST, &format!("/sandboxes/{name}/configure"))
            .json(body);
        self.streamed(rb).await
    }

    /// Configures and reads the stream to its end (200 expected).
    pub async fn configure(&self, name: &str, body: &Value) -> Finished {
        finish(self.configure_stream(name, body).await.stream()).await
    }

    /// `POST /sandboxes/{name}/invoke?query` with `body` as stdin.
    pub async fn invoke_stream(
        &self,
        name: &str,
        body: impl Into<reqwest::Body>,
        query: &[(&str, &str)],
    ) -> Streamed {
        let rb = self
            .request(Method::POST, &format!("/sandboxes/{name}/invoke"))
            .query(query)
            .body(body);
        self.streamed(rb).await
    }

    /// Invokes and reads the stream to its end (200 expected).
    pub async fn invoke(
        &self,
        name: &str,
        body: impl Into<reqwest::Body>,
        query: &[(&str, &str)],
    ) -> Finished {
        finish(self.invoke_stream(name, body, query).await.stream()).await
    }

    /// `GET /sandboxes/{name}/invokes/{invoke_id}/events` with `Last-Event-ID: after`.
    pub async fn events_stream(&self, name: &str, invoke_id: &str, after: u64) -> Streamed {
        let rb = self
            .request(
                Method::GET,
                &format!("/sandboxes/{name}/invokes/{invoke_id}/events"),
            )
            .header("Last-Event-ID", after.to_string());
        self.streamed(rb).await
    }

    /// `POST /sandboxes/{name}/invoke/cancel`; `None` sends `{}`.
    pub async fn cancel(&self, name: &str, invoke_id: Option<&str>) -> Reply {
        let body = match invoke_id {
            Some(id) => json!({ "invokeId": id }),
            None => json!({}),
        };
        self.post_json(&format!("/sandboxes/{name}/invoke/cancel"), &body)
            .await
    }

    pub async fn stop(&self, name: &str) -> Reply {
        self.post_json(&format!("/sandboxes/{name}/stop"), &json!({}))
            .await
    }

    pub async fn resume(&self, name: &str) -> Reply {
        self.post_json(&format!("/sandboxes/{name}/resume"), &json!({}))
            .await
    }

    pub async fn delete(&self, name: &str) -> Reply {
        self.send(self.request(Method::DELETE, &format!("/sandboxes/{name}")))
            .await
    }

    pub async fn install_log(&self, name: &str) -> Reply {
        self.get_json(&format!("/sandboxes/{name}/configure/install-log"))
            .await
    }

    /// As an admin, mints a non-admin key for `sub` and returns it.
    pub async fn mint_user_key(&self, sub: &str, email: &str) -> String {
        let r = self
            .post_json(
                "/user/api-keys",
                &json!({"name": "u", "sub": sub, "email": email, "admin": false}),
            )
            .await
            .expect(201);
        r.body["key"]
            .as_str()
            .unwrap_or_else(|| panic!("no key in {r:?}"))
            .to_string()
    }

    /// Sends any request whose answer is a stream when 200.
    pub async fn send_stream(&self, rb: reqwest::RequestBuilder) -> Streamed {
        self.streamed(rb).await
    }

    async fn streamed(&self, rb: reqwest::RequestBuilder) -> Streamed {
        let resp = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("request to {} failed: {e}", self.base));
        if resp.status() == StatusCode::OK {
            Streamed::Stream(EventStream::new(resp))
        } else {
            Streamed::Refused(reply(resp).await)
        }
    }
}

async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// Reads an open stream to its end.
pub async fn finish(s: EventStream) -> Finished {
    let status = s.status;
    let headers = s.headers.clone();
    let events = s.collect().await;
    Finished {
        status,
        headers,
        events,
    }
}

/// One admin client per router of `sys`.
pub fn admin_clients(sys: &dyn System) -> Vec<Client> {
    sys.urls()
        .iter()
        .map(|u| Client::new(u, Some(sys.admin_key())))
        .collect()
}

/// Admin clients of two routers: A and B, which are the same router when
/// `sys` has only one.
pub fn router_pair(sys: &dyn System) -> (Client, Client) {
    let mut all = admin_clients(sys);
    let a = all.remove(0);
    let b = all.into_iter().next().unwrap_or_else(|| a.clone());
    (a, b)
}

/// Waits until every router of `sys` answers and serves the harness's
/// templates (so the controller has published them); panics after 30 s.
pub async fn wait_ready(sys: &dyn System) {
    let deadline = tokio::time::Instant::now() + WAIT_TIMEOUT;
    for c in admin_clients(sys) {
        loop {
            let r = match c.request(Method::GET, "/templates/capped").send().await {
                Ok(resp) => Some(reply(resp).await),
                Err(_) => None,
            };
            if r.as_ref().is_some_and(|r| r.status == StatusCode::OK) {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "{} router {} not ready within {WAIT_TIMEOUT:?}; last answer: {r:?}",
                    sys.shape(),
                    c.base()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Code mode (SPEC §2.4): exec and the file API. File paths are absolute
/// (`/workspace/a.txt`) and go in the URL without their leading `/`, as
/// v0.8 clients send them.
impl Client {
    /// `POST /sandboxes/{name}/exec` with `body`, answered as JSON.
    pub async fn exec(&self, name: &str, body: &Value) -> Reply {
        self.post_json(&format!("/sandboxes/{name}/exec"), body)
            .await
    }

    /// `POST /sandboxes/{name}/exec` with `Accept: text/event-stream`.
    pub async fn exec_stream(&self, name: &str, body: &Value) -> Streamed {
        let rb = self
            .request(Method::POST, &format!("/sandboxes/{name}/exec"))
            .header("Accept", "text/event-stream")
            .json(body);
        self.streamed(rb).await
    }

    /// `GET /sandboxes/{name}/files/?path=<dir>` (v0.8's spelling).
    pub async fn list_files(&self, name: &str, dir: &str) -> Reply {
        self.send(
            self.request(Method::GET, &format!("/sandboxes/{name}/files/"))
                .query(&[("path", dir)]),
        )
        .await
    }

    /// `GET /sandboxes/{name}/files/<path>`: the status and the raw body.
    pub async fn read_file(&self, name: &str, path: &str) -> (StatusCode, Bytes) {
        let resp = self
            .request(Method::GET, &file_url(name, path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("request to {} failed: {e}", self.base));
        let status = resp.status();
        (status, resp.bytes().await.unwrap_or_default())
    }

    /// `PUT /sandboxes/{name}/files/<path>` with `data` as the raw body.
    pub async fn write_file(
        &self,
        name: &str,
        path: &str,
        data: impl Into<reqwest::Body>,
    ) -> Reply {
        self.send(
            self.request(Method::PUT, &file_url(name, path))
                .header("Content-Type", "application/octet-stream")
                .body(data),
        )
        .await
    }

    /// `DELETE /sandboxes/{name}/files/<path>`.
    pub async fn delete_file(&self, name: &str, path: &str) -> Reply {
        self.send(self.request(Method::DELETE, &file_url(name, path)))
            .await
    }

    /// Sends `METHOD <raw path>` as written, over a plain TCP connection,
    /// so that `..` and `%2e%2e` reach the server unnormalized (HTTP client
    /// libraries resolve them first); returns the status and the body.
    pub async fn raw_request(&self, method: &str, raw_path: &str, body: &[u8]) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://").to_string();
        let mut conn = tokio::net::TcpStream::connect(&addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let key = self
            .key
            .as_deref()
            .map(|k| format!("X-API-Key: {k}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {raw_path} HTTP/1.1\r\nHost: {addr}\r\n{key}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes())
            .await
            .expect("send the request");
        conn.write_all(body).await.expect("send the body");
        let mut out = Vec::new();
        conn.read_to_end(&mut out).await.expect("read the answer");
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

/// `/sandboxes/{name}/files/<path without its leading />`.
fn file_url(name: &str, path: &str) -> String {
    format!("/sandboxes/{name}/files/{}", path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks_and_comments_are_skipped() {
        let mut p = SseParser::default();
        assert!(p.push(b": keepalive\n\nid: 1\nevent: st").is_empty());
        let e = p.push(b"art\ndata: {\"a\":1}\r\n\r\nid:2\ndata: x\ndata: y\n\n");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].id.as_deref(), Some("1"));
        assert_eq!(e[0].event, "start");
        assert_eq!(e[0].data, json!({"a": 1}));
        assert_eq!(e[1].event, "message");
        assert_eq!(e[1].data, json!("x\ny"));
    }
}
