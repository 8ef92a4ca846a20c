//! Test harness: a router on 127.0.0.1:0 over the in-process bus and a
//! temporary file store, a fake sandbox actor for `default/demo`, and a
//! small SSE reader.

#![allow(dead_code)]

pub mod fake;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agenttier_bus::memory;
use agenttier_bus::model::{Phase, Principal, Sandbox, builtin_templates};
use agenttier_bus::store::{self, Entry, FileStore, Store, WatchEvent, to_bytes};
use agenttier_bus::subject::Subjects;
use agenttier_router::{AppState, Config, ensure_api_key, generate_api_key, serve};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub struct Harness {
    pub url: String,
    pub bus: memory::Bus,
    pub store: Arc<FileStore>,
    pub http: reqwest::Client,
    pub alice: String,
    pub bob: String,
    pub admin: String,
    /// Set: the router's store watch passes nothing on (see `Freezable`).
    frozen: Arc<AtomicBool>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn user(sub: &str, admin: bool) -> Principal {
    Principal {
        sub: sub.into(),
        email: format!("{sub}@example.com"),
        name: sub.into(),
        groups: vec![],
        admin,
    }
}

/// The file store, but once `frozen` is set its watches pass nothing on:
/// the router's copy of the records then lags behind every write.
struct Freezable(Arc<FileStore>, Arc<AtomicBool>);

#[async_trait::async_trait]
impl Store for Freezable {
    async fn get(&self, key: &str) -> store::Result<Option<Entry>> {
        self.0.get(key).await
    }
    async fn list(&self, prefix: &str) -> store::Result<Vec<(String, Entry)>> {
        self.0.list(prefix).await
    }
    async fn create(&self, key: &str, value: bytes::Bytes) -> store::Result<u64> {
        self.0.create(key, value).await
    }
    async fn update(&self, key: &str, value: bytes::Bytes, rev: u64) -> store::Result<u64> {
        self.0.update(key, value, rev).await
    }
    async fn put(&self, key: &str, value: bytes::Bytes) -> store::Result<u64> {
        self.0.put(key, value).await
    }
    async fn delete(&self, key: &str) -> store::Result<()> {
        self.0.delete(key).await
    }
    async fn watch(
        &self,
        prefix: &str,
    ) -> store::Result<futures::stream::BoxStream<'static, WatchEvent>> {
        let frozen = self.1.clone();
        let events = self.0.watch(prefix).await?;
        Ok(events
            .filter(move |_| futures::future::ready(!frozen.load(Ordering::SeqCst)))
            .boxed())
    }
}

impl Harness {
    /// A router with the built-in templates, three keys, and the fake actor.
    pub async fn start() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(FileStore::open(&dir.path().join("state.redb")).expect("store"));
        for t in builtin_templates() {
            store.put(&t.key(), to_bytes(&t)).await.expect("template");
        }
        let (alice, bob, admin) = (generate_api_key(), generate_api_key(), generate_api_key());
        for (key, p) in [
            (&alice, user("alice", false)),
            (&bob, user("bob", false)),
            (&admin, user("root", true)),
        ] {
            ensure_api_key(store.as_ref(), key, p, "test")
                .await
                .expect("key");
        }
        let bus = memory::Bus::new();
        let frozen = Arc::new(AtomicBool::new(false));
        let state = AppState {
            bus: Arc::new(bus.clone()),
            store: Arc::new(Freezable(store.clone(), frozen.clone())),
            subjects: Subjects::default(),
            config: Arc::new(Config::default()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(listener, state, shutdown.clone()));
        fake::spawn(bus.clone(), "default", "demo").await;
        Harness {
            url,
            bus,
            store,
            http: reqwest::Client::new(),
            alice,
            bob,
            admin,
            frozen,
            shutdown,
            _dir: dir,
        }
    }

    /// From now on the router's copy of the records hears of no write: it
    /// lags behind the store as a copy whose watch is slow would.
    pub fn freeze_copy(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Fires the router's shutdown token.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    pub fn req(&self, method: reqwest::Method, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .header("X-API-Key", key)
    }

    /// Creates `ns/name` as alice from `python-agent` and marks it `phase`.
    pub async fn sandbox(&self, ns: &str, name: &str, phase: Phase) {
        let r = self
            .req(reqwest::Method::POST, "/api/v1/sandboxes", &self.alice)
            .json(&json!({"name": name, "namespace": ns, "templateRef": {"name": "python-agent"}}))
            .send()
            .await
            .expect("create");
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        self.set_phase(ns, name, phase).await;
    }

    pub async fn set_phase(&self, ns: &str, name: &str, phase: Phase) {
        store::modify::<Sandbox, _>(self.store.as_ref(), &Sandbox::key(ns, name), |s| {
            s.status.phase = phase;
            true
        })
        .await
        .expect("modify");
    }
}

/// Status, `Retry-After`, JSON body.
pub async fn parts(r: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, retry, body)
}

/// One SSE event as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Value,
}

/// Reads SSE events off a streaming response, ignoring comments.
pub struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl SseReader {
    pub fn new(r: reqwest::Response) -> Self {
        Self {
            body: r.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    pub async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = Sse {
                    id: None,
                    event: None,
                    data: Value::Null,
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        ev.id = Some(v.to_string());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        ev.event = Some(v.to_string());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        ev.data = serde_json::from_str(v).unwrap_or(Value::String(v.to_string()));
                        any = true;
                    }
                }
                if any {
                    return Some(ev);
                }
                continue;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// Every event until the stream ends (bounded).
    pub async fn all(mut self, within: Duration) -> Vec<Sse> {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(within, async {
            while let Some(e) = self.next().await {
                out.push(e);
            }
        })
        .await;
        out
    }
}
