//! `agenttier invoke`: run the entrypoint, stream its output as it arrives,
//! exit with its exit code. Ctrl-C cancels the run on the server; a dropped
//! connection is resumed from the last event seen (`Last-Event-ID`), so no
//! line is lost or printed twice.

use std::io::{IsTerminal, Read as _};
use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use super::output::{self, Format, outln, s};
use super::sse::{Event, EventStream};
use super::{Api, Error, Result};

pub const EXAMPLES: &str = "Examples:
  agenttier invoke demo-agent --prompt \"summarize this PR\"
  agenttier invoke demo-agent --input @request.json && echo ok
  echo world | agenttier invoke demo-agent --input -
  id=$(agenttier invoke demo-agent --detach)      # start it, print the invoke id
  agenttier invoke demo-agent --attach \"$id\"      # follow it from the start
  agenttier invoke demo-agent --cancel \"$id\"

Exit status: the entrypoint's exit code; 124 when the run timed out; 130 when
it was canceled (Ctrl-C cancels it on the server, waits up to 15 s for it to
end, then exits); 1 when it failed (reason error) or the request failed.";

/// Silence (no event, no keepalive) after which the connection counts as lost.
const IDLE: Duration = Duration::from_secs(45);
/// How long Ctrl-C waits for the canceled run's `exit`.
const CANCEL_WAIT: Duration = Duration::from_secs(15);
/// Delays before each consecutive attempt to resume a lost stream.
const BACKOFF_MS: [u64; 8] = [0, 250, 500, 1000, 2000, 4000, 4000, 4000];

#[derive(Debug, clap::Args)]
pub struct InvokeArgs {
    /// The agent sandbox.
    pub sandbox: String,
    /// Its namespace [default: `default`, else the one of your sandboxes with that name].
    #[arg(short = 'n', long, env = "AGENTTIER_NAMESPACE")]
    pub namespace: Option<String>,
    /// Passed to the entrypoint as `--prompt=<TEXT>` (and as its stdin when there is no --input).
    #[arg(short = 'p', long)]
    pub prompt: Option<String>,
    /// The entrypoint's stdin: TEXT, @FILE, or - for this command's stdin.
    #[arg(short = 'i', long, value_name = "TEXT|@FILE|-")]
    pub input: Option<String>,
    /// A shorter limit for this run than the template's (`30s`, `5m`).
    #[arg(long, value_name = "DUR", value_parser = duration_text)]
    pub timeout: Option<String>,
    /// Start the run, print its invoke id and exit 0; the run goes on to its timeout.
    #[arg(long, conflicts_with_all = ["attach", "cancel"])]
    pub detach: bool,
    /// Follow a run started earlier: its output from the start, then its exit status.
    #[arg(long, value_name = "INVOKE_ID", conflicts_with_all = ["prompt", "input", "timeout", "cancel"])]
    pub attach: Option<String>,
    /// Cancel a run, and exit 0.
    #[arg(long, value_name = "INVOKE_ID", conflicts_with_all = ["prompt", "input", "timeout"])]
    pub cancel: Option<String>,
}

fn duration_text(s: &str) -> Result<String, String> {
    super::duration_arg(s).map(|_| s.to_string())
}

pub async fn run(api: &Api, out: Format, a: InvokeArgs) -> Result<i32> {
    let ns = a.namespace.as_deref();
    if let Some(id) = &a.cancel {
        cancel(api, &a.sandbox, ns, id).await?;
        match out {
            Format::Json => output::json(&json!({"invokeId": id, "canceled": true})),
            Format::Human => outln!("canceled {id}"),
        }
        return Ok(0);
    }
    let mut run = Run {
        api,
        out,
        sandbox: a.sandbox.clone(),
        namespace: a.namespace.clone(),
        invoke_id: a.attach.clone(),
        last_seq: 0,
        detach: a.detach,
        canceling: None,
        cancel_sent: false,
    };
    if a.attach.is_some() {
        return run.follow(None).await;
    }
    let (body, content_type) = input(a.input.as_deref())?;
    let detach = a.detach.then_some("true");
    let url = Api::with_query(
        api.url(&["sandboxes", &a.sandbox, "invoke"]),
        &[
            ("namespace", ns),
            ("prompt", a.prompt.as_deref()),
            ("timeout", a.timeout.as_deref()),
            ("detach", detach),
        ],
    );
    let rb = api
        .request(Method::POST, url)
        .header("Accept", "text/event-stream")
        .header("Content-Type", content_type)
        .body(body);
    let resp = api.send(rb).await?;
    run.follow(Some(EventStream::new(resp, IDLE))).await
}

/// The request body and its type for `--input`.
fn input(spec: Option<&str>) -> Result<(Vec<u8>, &'static str)> {
    const BYTES: &str = "application/octet-stream";
    match spec {
        None => Ok((Vec::new(), BYTES)),
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Error::Failed(format!("reading stdin: {e}")))?;
            Ok((buf, BYTES))
        }
        Some(s) if s.starts_with('@') => {
            let path = &s[1..];
            let buf =
                std::fs::read(path).map_err(|e| Error::Failed(format!("reading {path}: {e}")))?;
            Ok((buf, BYTES))
        }
        Some(text) => Ok((text.as_bytes().to_vec(), "text/plain; charset=utf-8")),
    }
}

async fn cancel(api: &Api, sandbox: &str, ns: Option<&str>, id: &str) -> Result<()> {
    let url = Api::with_query(
        api.url(&["sandboxes", sandbox, "invoke", "cancel"]),
        &[("namespace", ns)],
    );
    api.call(Method::POST, url, Some(&json!({ "invokeId": id })))
        .await
        .map(drop)
}

/// One run being followed.
struct Run<'a> {
    api: &'a Api,
    out: Format,
    sandbox: String,
    namespace: Option<String>,
    invoke_id: Option<String>,
    /// The id of the last event shown; resuming asks for what follows it.
    last_seq: u64,
    detach: bool,
    /// Set by Ctrl-C: when to give up waiting for the run's `exit`.
    canceling: Option<Instant>,
    cancel_sent: bool,
}

impl Run<'_> {
    /// Shows the run's events until its `exit`, resuming lost streams and
    /// canceling on Ctrl-C; returns the exit status.
    async fn follow(&mut self, mut stream: Option<EventStream>) -> Result<i32> {
        let mut sigint = signal(SignalKind::interrupt())
            .map_err(|e| Error::Failed(format!("installing the Ctrl-C handler: {e}")))?;
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
