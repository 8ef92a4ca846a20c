//! The HTTP side: one connection pool over every router URL, used
//! round-robin, and the setup calls scenarios share (create, configure,
//! wait, delete).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::sse::Parser;
use crate::{Error, Result};

/// How often setup polls for sandboxes to be `Running`.
const POLL: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub(crate) struct Api {
    pub http: reqwest::Client,
    urls: Arc<[String]>,
    key: Arc<str>,
    next: Arc<AtomicUsize>,
}

impl Api {
    pub fn new(urls: &[String], key: &str, request_timeout: Duration) -> Result<Self> {
        if urls.is_empty() {
            return Err(Error::Setup("no --url given".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(request_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        Ok(Self {
            http,
            urls: urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            key: key.into(),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The next router, round-robin.
    pub fn base(&self) -> &str {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.urls[i % self.urls.len()]
    }

    /// `METHOD <next router>/api/v1{path}` with the key.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}/api/v1{path}", self.base()))
            .header("X-API-Key", &*self.key)
    }

    /// Sends `rb`, requiring `want`; returns the JSON body (`Null` if empty).
    pub async fn expect(&self, rb: RequestBuilder, want: StatusCode, what: &str) -> Result<Value> {
        let resp = rb.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status != want {
            return Err(Error::Setup(format!(
                "{what}: {status} {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// The template `name`, or `None` when the server has none by that name.
    pub async fn template(&self, name: &str) -> Result<Option<Value>> {
        let resp = self
            .req(Method::GET, &format!("/templates/{name}"))
            .send()
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(Some(resp.json().await?)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(Error::Setup(format!("GET /templates/{name}: {s}"))),
        }
    }

    pub async fn create(&self, name: &str, template: &str) -> Result<()> {
        let body = json!({"name": name, "templateRef": {"name": template}});
        let rb = self.req(Method::POST, "/sandboxes").json(&body);
        self.expect(rb, StatusCode::CREATED, &format!("create {name}"))
            .await
            .map(drop)
    }

    /// Waits until every sandbox in `names` is `Running`. A failed list
    /// (a 503 under load) is polled through until the deadline.
    pub async fn wait_running(&self, names: &[String], timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match self.running(names).await {
                Ok(n) if n == names.len() => return Ok(()),
                Ok(n) => format!("{n} of {} sandboxes Running", names.len()),
                Err(e) => format!("the last list failed: {e}"),
            };
            if tokio::time::Instant::now() > deadline {
                return Err(Error::TimedOut(timeout, last));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// How many of `names` are `Running` (one list request).
    pub async fn running(&self, names: &[String]) -> Result<usize> {
        let rb = self.req(Method::GET, "/sandboxes?status=Running");
        let list = self.expect(rb, StatusCode::OK, "list sandboxes").await?;
        let wanted: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
        Ok(list["sandboxes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|s| s["name"].as_str().is_some_and(|n| wanted.contains(n)))
                    .count()
            })
            .unwrap_or(0))
    }

    /// Creates `names` from `template` (at most 16 at a time) and waits
    /// until they run.
    pub async fn create_running(&self, names: &[String], template: &str) -> Result<()> {
        futures::stream::iter(names)
            .map(|n| self.create(n, template))
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<()>>>()?;
        let bound = Duration::from_secs(30) + Duration::from_millis(20 * names.len() as u64);
        self.wait_running(names, bound).await
    }

    /// Configures `name` with `body`; returns the `result` event's data.
    pub async fn configure(&self, name: &str, body: &Value) -> Result<Value> {
        let rb = self
            .req(Method::POST, &format!("/sandboxes/{name}/configure"))
            .header("Accept", "text/event-stream")
            .json(body);
        let resp = rb.send().await?;
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(Error::Setup(format!("configure {name}: {status} {text}")));
        }
        let mut parser = Parser::default();
        let mut result = None;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            parser.feed(&chunk?, |e| {
                if e.name == b"result" {
                    result = serde_json::from_slice(e.data).ok();
                }
            });
        }
        result.ok_or_else(|| Error::Setup(format!("configure {name}: no result event")))
    }

    /// Configures every sandbox in `names` with `body`.
    pub async fn configure_all(&self, names: &[String], body: &Value) -> Result<()> {
        futures::stream::iter(names)
            .map(|n| self.configure(n, body))
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()
            .map(drop)
    }

    /// Deletes `names` (at most `concurrency` at a time); returns how many
    /// were answered 204.
    pub async fn delete_all(&self, names: &[String], concurrency: usize) -> usize {
        futures::stream::iter(names)
            .map(|n| async move {
                self.req(Method::DELETE, &format!("/sandboxes/{n}"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::NO_CONTENT)
            })
            .buffer_unordered(concurrency.max(1))
            .filter(|ok| futures::future::ready(*ok))
            .count()
            .await
    }
}
