//! Following one run's events to its `exit`: output as it arrives, the
//! exit status, Ctrl-C as a cancel on the server, and transparent resumes
//! of a lost stream (`Last-Event-ID`), never showing an event twice.

use std::io::IsTerminal;
use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::signal::unix::Signal;
use tokio::time::Instant;

use super::invoke::cancel;
use super::output::{self, Format, outln, s};
use super::sse::{Event, EventStream};
use super::{Api, Error, Result};

/// Silence (no event, no keepalive) after which the connection counts as lost.
pub const IDLE: Duration = Duration::from_secs(45);
/// How long Ctrl-C waits for the canceled run's `exit`.
const CANCEL_WAIT: Duration = Duration::from_secs(15);
/// Delays before each consecutive attempt to resume a lost stream.
const BACKOFF_MS: [u64; 8] = [0, 250, 500, 1000, 2000, 4000, 4000, 4000];

/// One run being followed.
pub struct Run<'a> {
    api: &'a Api,
    out: Format,
    sandbox: String,
    namespace: Option<String>,
    invoke_id: Option<String>,
    /// The id of the last event shown; resuming asks for what follows it.
    last_seq: u64,
    /// Stop at `start` (after printing the invoke id).
    detach: bool,
    /// Set by Ctrl-C: when to give up waiting for the run's `exit`.
    canceling: Option<Instant>,
    cancel_sent: bool,
}

impl<'a> Run<'a> {
    /// A run of `sandbox`; `invoke_id` when attaching to a known one.
    pub fn new(
        api: &'a Api,
        out: Format,
        sandbox: &str,
        namespace: Option<&str>,
        invoke_id: Option<&str>,
        detach: bool,
    ) -> Self {
        Self {
            api,
            out,
            sandbox: sandbox.to_string(),
            namespace: namespace.map(str::to_string),
            invoke_id: invoke_id.map(str::to_string),
            last_seq: 0,
            detach,
            canceling: None,
            cancel_sent: false,
        }
    }
}

impl Run<'_> {
    /// Shows the run's events until its `exit`, resuming lost streams and
    /// canceling on Ctrl-C; returns the exit status.
    pub async fn follow(
        &mut self,
        mut stream: Option<EventStream>,
        mut sigint: Signal,
    ) -> Result<i32> {
        let mut attempts = 0usize;
        let mut cause = String::new();
        let mut connected = stream.is_some();
        loop {
            let deadline = self.canceling;
            tokio::select! {
                got = next(&mut stream, attempts) => match got {
                    Ok(Some(e)) => {
                        attempts = 0;
                        match self.handle(e) {
                            Ok(Some(code)) => return Ok(code),
                            Ok(None) => {}
                            Err(c) => {
                                cause = c;
                                stream = None;
                            }
                        }
                        if self.canceling.is_some() && !self.cancel_sent {
                            self.send_cancel().await;
                        }
                    }
                    Ok(None) if stream.is_none() => {
                        // Time to (re)connect.
                        let Some(_) = &self.invoke_id else {
                            return Err(Error::Failed(format!(
                                "the connection was lost before the run started ({cause})"
                            )));
                        };
                        attempts += 1;
                        match self.resume().await {
                            Ok(s) => {
                                stream = Some(s);
                                connected = true;
                            }
                            Err(e) if !connected => return Err(e),
                            Err(e) if retryable(&e) && attempts < BACKOFF_MS.len() => cause = e.to_string(),
                            Err(e) => {
                                return Err(Error::Failed(format!(
                                    "lost the connection to the run ({cause}) and could not resume it: {e}"
                                )));
                            }
                        }
                    }
                    Ok(None) => {
                        cause = "the stream ended before the run's exit".into();
                        stream = None;
                    }
                    Err(c) => {
                        cause = c;
                        stream = None;
                    }
                },
                _ = sigint.recv() => {
                    if self.canceling.is_some() {
                        eprintln!("agenttier: exiting without waiting for the run to end");
                        return Ok(130);
                    }
                    self.canceling = Some(Instant::now() + CANCEL_WAIT);
                    eprintln!("agenttier: canceling the run (Ctrl-C again to exit at once)");
                    if self.invoke_id.is_some() {
                        self.send_cancel().await;
                    }
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    eprintln!(
                        "agenttier: the run did not end within {}s of the cancel",
                        CANCEL_WAIT.as_secs()
                    );
                    return Ok(130);
                }
            }
        }
    }

    /// Shows one event; `Some(code)` when the command is done, `Err` with
    /// the cause when the stream must be resumed.
    fn handle(&mut self, e: Event) -> Result<Option<i32>, String> {
        let data = e.json();
        if e.name == "exit" && data["cause"] == "router_shutdown" {
            // The router went away, not the run: resume elsewhere.
            return Err("the router shut down".into());
        }
        if let Some(seq) = e.seq() {
            if seq <= self.last_seq {
                return Ok(None);
            }
            self.last_seq = seq;
        }
        if self.out == Format::Json {
            output::json_line(&json!({"id": e.seq(), "event": e.name, "data": data}));
        }
        let human = self.out == Format::Human;
        match e.name.as_str() {
            "start" => {
                let id = s(&data, "invokeId");
                if self.detach {
                    if human {
                        outln!("{id}");
                    }
                    return Ok(Some(0));
                }
                if human && std::io::stderr().is_terminal() {
                    eprintln!("invoke started: {id}");
                }
                self.invoke_id = Some(id);
            }
            "log" if human => {
                let text = s(&data, "data");
                let bytes = if data["encoding"] == "base64" {
                    base64::engine::general_purpose::STANDARD
                        .decode(text.as_bytes())
                        .unwrap_or_else(|_| text.clone().into_bytes())
                } else {
                    text.into_bytes()
                };
                output::write_line(&s(&data, "stream"), &bytes);
            }
            "gap" if human => eprintln!(
                "agenttier: events {} to {} of this run are no longer available",
                s(&data, "from"),
                s(&data, "to")
            ),
            "exit" => return Ok(Some(self.exit(&data))),
            _ => {}
        }
        Ok(None)
    }

    /// The exit status for the run's `exit` event (and a line saying why
    /// when it did not simply complete).
    fn exit(&self, d: &Value) -> i32 {
        let reason = d["reason"].as_str().unwrap_or("completed");
        let id = s(d, "invokeId");
        let code = if self.canceling.is_some() {
            130
        } else {
            match reason {
                "completed" => d["exitCode"]
                    .as_i64()
                    .filter(|c| (0..=255).contains(c))
                    .unwrap_or(1) as i32,
                "timeout" => 124,
                "canceled" => 130,
                _ => 1,
            }
        };
        if self.out == Format::Human {
            if reason != "completed" {
                let cause = d["cause"]
                    .as_str()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default();
                let msg = d["message"]
                    .as_str()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                eprintln!("agenttier: invoke {id} {reason}{cause}{msg}");
            } else if std::io::stderr().is_terminal() {
                eprintln!(
                    "invoke completed: exit {} ({} ms)",
                    s(d, "exitCode"),
                    s(d, "durationMs")
                );
            }
        }
        code
    }

    async fn send_cancel(&mut self) {
        let Some(id) = self.invoke_id.clone() else {
            return;
        };
        self.cancel_sent = true;
        let ns = self.namespace.as_deref();
        let call = cancel(self.api, &self.sandbox, ns, &id);
        match tokio::time::timeout(Duration::from_secs(5), call).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("agenttier: canceling {id}: {e}"),
            Err(_) => eprintln!("agenttier: canceling {id}: no answer within 5s"),
        }
    }

    /// The run's events after the last one shown.
    async fn resume(&self) -> Result<EventStream> {
        let id = self.invoke_id.as_deref().unwrap_or_default();
        let url = Api::with_query(
            self.api
                .url(&["sandboxes", &self.sandbox, "invokes", id, "events"]),
            &[("namespace", self.namespace.as_deref())],
        );
        let rb = self
            .api
            .request(Method::GET, url)
            .header("Accept", "text/event-stream")
            .header("Last-Event-ID", self.last_seq.to_string());
        let resp = self.api.send(rb).await?;
        Ok(EventStream::new(resp, IDLE))
    }
}

/// The next event of `stream`; `Ok(None)` after the backoff delay when
/// there is no stream (the caller reconnects) or at its end.
async fn next(stream: &mut Option<EventStream>, attempts: usize) -> Result<Option<Event>, String> {
    match stream {
        Some(s) => s.next().await,
        None => {
            let ms = BACKOFF_MS[attempts.min(BACKOFF_MS.len() - 1)];
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(None)
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Whether resuming may work on a later try: the server was unreachable or
/// busy, not a refusal.
fn retryable(e: &Error) -> bool {
    match e {
        Error::Unreachable { .. } => true,
        Error::Api { status, .. } => *status >= 500,
        _ => false,
    }
}
