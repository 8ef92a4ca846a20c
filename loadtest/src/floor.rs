//! The floors, measured in the same run on the same machine: what the
//! machine does with no AgentTier in the way. Spawning the entrypoint
//! directly (and under bubblewrap as the executor would), a NATS
//! request/reply round trip, and an HTTP round trip to a trivial axum
//! handler served from this process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agenttier_bus::Bus as _;
use agenttier_executor::runtime::{Caps, Isolation, Runtime, Spec, WORKSPACE};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::check::{Digest, Output};
use crate::stats::{ErrorKind, Sample};
use crate::{Error, Result};

/// How a floor starts the entrypoint.
pub enum Spawner {
    /// Directly (`floor:spawn`, `floor:stream`).
    Plain,
    /// With the executor's own runtime (`floor:spawn-bwrap`): the same
    /// bubblewrap arguments, host view, environment and resource limits as
    /// a run, and nothing of the executor around it (no actor, no bus, no
    /// events).
    Isolated {
        runtime: Runtime,
        workspace: PathBuf,
    },
}

impl Spawner {
    /// The executor's runtime with `workspace` at `/workspace`; `None`
    /// where bubblewrap is not usable.
    pub async fn isolated(workspace: &Path) -> Option<Self> {
        // The executor's default caps (only the process budget reaches a
        // spawn: it sets `RLIMIT_NPROC`).
        let caps = Caps {
            max_processes: 256,
            max_memory_bytes: 1 << 30,
            max_disk_bytes: 10 << 30,
        };
        let runtime = Runtime::new(Isolation::Bwrap, workspace, &[], caps)
            .await
            .ok()?;
        Some(Self::Isolated {
            runtime,
            workspace: workspace.to_path_buf(),
        })
    }

    async fn start(&self, argv: &[String]) -> std::io::Result<tokio::process::Child> {
        match self {
            Spawner::Plain => tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn(),
            Spawner::Isolated { runtime, workspace } => {
                let env = BTreeMap::new();
                let spec = Spec {
                    workspace,
                    argv,
                    env: &env,
                    network: false,
                    cwd: WORKSPACE,
                };
                let mut launch = runtime.command(&spec)?;
                launch.cmd.stderr(Stdio::null());
                launch.spawn().await
            }
        }
    }
}

/// Runs `argv` once with `stdin`, reads its stdout to the end and waits;
/// returns the sample and what it wrote (lines, bytes, digest).
pub async fn spawn(
    how: &Spawner,
    argv: &[String],
    stdin: Bytes,
) -> std::result::Result<(Sample, Output), ErrorKind> {
    let started = Instant::now();
    let mut child = how.start(argv).await.map_err(|_| ErrorKind::Local)?;
    let mut input = child.stdin.take().ok_or(ErrorKind::Local)?;
    let writer = tokio::spawn(async move {
        let _ = input.write_all(&stdin).await;
    });
    let mut stdout = child.stdout.take().ok_or(ErrorKind::Local)?;
    let mut out = Output::default();
    let mut digest = Digest::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut first = None;
    loop {
        let n = stdout.read(&mut buf).await.map_err(|_| ErrorKind::Local)?;
        if n == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        digest.update(&buf[..n]);
        out.bytes += n as u64;
        out.lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
    }
    let status = child.wait().await.map_err(|_| ErrorKind::Local)?;
    let _ = writer.await;
    if !status.success() {
        return Err(ErrorKind::WrongExit);
    }
    out.digest = digest.value();
    Ok((
        Sample {
            latency: started.elapsed(),
            ttfb: first.map(|f| f - started),
        },
        out,
    ))
}

/// A trivial axum app on 127.0.0.1:0 in this process; returns its URL.
/// It stops when the returned handle is dropped.
pub async fn http_server() -> Result<(String, AbortOnDrop)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, AbortOnDrop(task)))
}

/// One `GET url` that must answer 200.
pub async fn http_get(http: &reqwest::Client, url: &str) -> std::result::Result<Sample, ErrorKind> {
    let started = Instant::now();
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| ErrorKind::from_reqwest(&e))?;
    let status = resp.status();
    resp.bytes()
        .await
        .map_err(|e| ErrorKind::from_reqwest(&e))?;
    if status != reqwest::StatusCode::OK {
        return Err(ErrorKind::Http(status.as_u16()));
    }
    Ok(Sample::new(started.elapsed()))
}

/// [`http_get`] of `url` as a request function for the drivers.
pub fn http_round_trip(
    http: reqwest::Client,
    url: String,
) -> impl Fn(usize, u64) -> BoxFuture<'static, std::result::Result<Sample, ErrorKind>> + Clone {
    move |_, _| {
        let (http, url) = (http.clone(), url.clone());
        Box::pin(async move { http_get(&http, &url).await })
    }
}

/// [`NatsPair::round_trip`] as a request function for the drivers.
pub fn nats_round_trip(
    pair: Arc<NatsPair>,
) -> impl Fn(usize, u64) -> BoxFuture<'static, std::result::Result<Sample, ErrorKind>> + Clone {
    move |_, _| {
        let pair = pair.clone();
        Box::pin(async move { pair.round_trip().await })
    }
}

pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A responder on its own NATS connection that echoes every request, and
/// a requester on another, as a router and an executor would be.
pub struct NatsPair {
    requester: Arc<agenttier_bus::nats::Bus>,
    subject: String,
    _responder: AbortOnDrop,
}

impl NatsPair {
    pub async fn connect(url: &str, tag: &str) -> Result<Self> {
        use agenttier_bus::nats::{Bus, ConnectOptions};
        let opts = |name: &str| ConnectOptions {
            name: name.into(),
            ..Default::default()
        };
        let responder = Bus::connect(url, opts("loadtest-floor-responder")).await?;
        let requester = Bus::connect(url, opts("loadtest-floor-requester")).await?;
        let subject = format!("loadtest.floor.{tag}");
        let mut sub = responder.subscribe(subject.clone()).await?;
        responder.flush().await?;
        let task = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Some(reply) = m.reply {
                    let _ = responder
                        .publish(reply, Default::default(), m.payload)
                        .await;
                }
            }
        });
        Ok(Self {
            requester: Arc::new(requester),
            subject,
            _responder: AbortOnDrop(task),
        })
    }

    /// One request/reply round trip with a small JSON-sized payload.
    pub async fn round_trip(&self) -> std::result::Result<Sample, ErrorKind> {
        let payload =
            Bytes::from_static(br#"{"invokeId":"inv-000000000000000000000000","stdin":""}"#);
        let started = Instant::now();
        let r = self
            .requester
            .request(
                self.subject.clone(),
                Default::default(),
                payload.clone(),
                Duration::from_secs(10),
            )
            .await;
        match r {
            Ok(m) if m.payload == payload => Ok(Sample::new(started.elapsed())),
            Ok(_) => Err(ErrorKind::WrongOutput),
            Err(agenttier_bus::Error::TimedOut) => Err(ErrorKind::Timeout),
            Err(_) => Err(ErrorKind::Transport),
        }
    }
}

impl From<ErrorKind> for Error {
    fn from(e: ErrorKind) -> Self {
        Error::Setup(format!("floor failed: {}", e.key()))
    }
}
