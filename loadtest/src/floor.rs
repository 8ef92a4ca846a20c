//! The floors, measured in the same run on the same machine: what the
//! machine does with no AgentTier in the way. Spawning the entrypoint
//! directly (and under bubblewrap as the executor would), a NATS
//! request/reply round trip, and an HTTP round trip to a trivial axum
//! handler served from this process.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agenttier_bus::Bus as _;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::check::{Digest, Output};
use crate::stats::{ErrorKind, Sample};
use crate::{Error, Result};

/// Runs `argv` once with `stdin`, reads its stdout to the end and waits;
/// returns the sample and what it wrote (lines, bytes, digest).
pub async fn spawn(
    argv: &[String],
    stdin: Bytes,
) -> std::result::Result<(Sample, Output), ErrorKind> {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|_| ErrorKind::Local)?;
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

/// `argv` wrapped the way the executor runs an entrypoint under
/// isolation: `bwrap` with the host's system directories read-only,
/// `workspace` at `/workspace`, new namespaces and no network. `None`
/// without `bwrap`. (The executor also holds the sandbox's first process
/// until it has set its resource limits, a few system calls: this floor
/// leaves that out, so it is a lower bound.)
pub fn isolated(argv: &[String], workspace: &Path) -> Option<Vec<String>> {
    let on_path = |bin: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
    };
    if !on_path("bwrap") {
        return None;
    }
    let mut a: Vec<String> = Vec::new();
    a.extend(
        [
            "bwrap",
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-user",
            "--uid",
            "1000",
            "--gid",
            "1000",
            "--hostname",
            "sandbox",
            "--unshare-net",
        ]
        .map(String::from),
    );
    for link in ["/bin", "/sbin", "/lib", "/lib64"] {
        match std::fs::read_link(link) {
            Ok(target) => a.extend([
                "--symlink".into(),
                target.display().to_string(),
                link.into(),
            ]),
            Err(_) if Path::new(link).is_dir() => {
                a.extend(["--ro-bind".into(), link.into(), link.into()])
            }
            Err(_) => {}
        }
    }
    for dir in ["/usr", "/etc", "/opt"]
        .iter()
        .filter(|d| Path::new(d).is_dir())
    {
        a.extend(["--ro-bind".into(), dir.to_string(), dir.to_string()]);
    }
    a.extend(
        [
            "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--bind",
        ]
        .map(String::from),
    );
    a.extend([workspace.display().to_string(), "/workspace".into()]);
    a.extend(["--chdir", "/workspace", "--"].map(String::from));
    a.extend(argv.iter().cloned());
    Some(a)
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
