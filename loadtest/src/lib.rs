//! `agenttier-loadtest`: drives one or more AgentTier routers with
//! scenarios (invoke, stream, throttle, cancel, api, configure, idle),
//! checks every answer, and measures the results against floors taken in the
//! same run on the same machine (a direct spawn of the same entrypoint, a
//! NATS request/reply, an HTTP round trip to a trivial axum handler).
//!
//! A load test that does not check its answers measures nothing: every run
//! must end with exactly one `exit`, in `seq` order, with the output the
//! entrypoint wrote (line counts and digests); anything else is counted as
//! an error by kind and reported beside the latencies.
//!
//! It is not a test suite: nothing here asserts on timing. It reports (a
//! terminal table, JSON, Markdown, an SVG chart), and says which of the
//! targets of issue #5 a run met; deciding what to do about it is left to
//! people. It creates the sandboxes it needs (named `lt-<run>-...`) and
//! deletes them afterwards, unless told not to.

mod args;
pub mod check;
mod client;
pub mod floor;
pub mod procstat;
mod progress;
pub mod report;
mod run;
mod scenario;
pub mod sse;
pub mod stats;
mod svg;
pub mod targets;

use std::time::Duration;

pub use args::{Args, Scenario};
pub use report::Report;

/// What stops a scenario from running at all (its setup failed, the server
/// is unreachable). Failed requests during a scenario are not errors here:
/// they are counted in the report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Setup(String),
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("NATS: {0}")]
    Bus(#[from] agenttier_bus::Error),
    #[error("timed out after {0:?}: {1}")]
    TimedOut(Duration, String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs the scenarios `args` names, in order, and returns the report (also
/// written to `--json`, `--markdown` and `--svg` when given).
pub async fn run(args: Args) -> Result<Report> {
    if let Some(path) = &args.render {
        let report: Report = serde_json::from_slice(&std::fs::read(path)?)?;
        write_outputs(&args, &report)?;
        return Ok(report);
    }
    let ctx = scenario::Ctx::new(args)?;
    let mut report = Report::new(&ctx.args);
    for s in ctx.args.expanded_scenarios() {
        let bound = ctx.args.scenario_timeout;
        let name = format!("{s:?}").to_lowercase();
        match tokio::time::timeout(bound, scenario::run(s, &ctx, &mut report)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => report.notes.push(format!("{name}: not run: {e}")),
            Err(_) => report.notes.push(format!(
                "{name}: stopped after {bound:?} (--scenario-timeout)"
            )),
        }
        if !ctx.args.no_cleanup {
            ctx.cleanup().await;
        }
    }
    report.targets = targets::evaluate(&report);
    report.ratios = targets::ratios(&report);
    write_outputs(&ctx.args, &report)?;
    Ok(report)
}

/// Writes the report where `args` asks (`--json`, `--markdown`, `--svg`).
fn write_outputs(args: &Args, report: &Report) -> Result<()> {
    if let Some(p) = args.json.as_ref().filter(|_| args.render.is_none()) {
        std::fs::write(p, serde_json::to_vec_pretty(report)?)?;
    }
    if let Some(p) = &args.markdown {
        std::fs::write(p, report.markdown())?;
    }
    if let Some(p) = &args.svg {
        std::fs::write(p, svg::chart(report))?;
    }
    Ok(())
}
