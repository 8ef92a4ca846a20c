//! `agenttier invoke`: start a run (or attach to one, or cancel one) and
//! follow it (`follow.rs`): its output as it arrives, then its exit status.

use std::io::Read as _;

use reqwest::Method;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use super::follow::{IDLE, Run};
use super::output::{self, Format, outln};
use super::sse::EventStream;
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
    // Taken over before the request: a Ctrl-C while it is sent is seen (and
    // acted on) as soon as the run's id is known.
    let sigint = signal(SignalKind::interrupt())
        .map_err(|e| Error::Failed(format!("installing the Ctrl-C handler: {e}")))?;
    let mut run = Run::new(api, out, &a.sandbox, ns, a.attach.as_deref(), a.detach);
    if a.attach.is_some() {
        return run.follow(None, sigint).await;
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
    run.follow(Some(EventStream::new(resp, IDLE)), sigint).await
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

pub async fn cancel(api: &Api, sandbox: &str, ns: Option<&str>, id: &str) -> Result<()> {
    let url = Api::with_query(
        api.url(&["sandboxes", sandbox, "invoke", "cancel"]),
        &[("namespace", ns)],
    );
    api.call(Method::POST, url, Some(&json!({ "invokeId": id })))
        .await
        .map(drop)
}
