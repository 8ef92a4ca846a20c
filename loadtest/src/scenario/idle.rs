//! `idle`: create `--idle` sandboxes (each create must be 201), wait until
//! all are `Running`, and read the executor's resident memory before and
//! after (`--executor-pid`): the difference per sandbox is what an idle
//! sandbox costs the executor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{Budget, Ctx};
use crate::Result;
use crate::procstat;
use crate::report::Report;
use crate::stats::{ErrorKind, Sample};

/// How long the executor is left alone before its memory is read.
const SETTLE: Duration = Duration::from_secs(2);

/// Notes a failed poll once (the poll goes on).
fn note_once(report: &mut Report, e: &crate::Error) {
    let note = format!("idle: listing sandboxes failed while waiting: {e}");
    if !report.notes.contains(&note) {
        report.notes.push(note);
    }
}

fn rss_kib(pid: Option<u32>) -> Option<u64> {
    procstat::read(pid?).map(|r| r.rss_kib)
}

pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let n = ctx.args.idle.max(1);
    let c = ctx.args.levels(&[32])[0];
    let pid = ctx.args.executor_pid;
    if pid.is_none() {
        report
            .notes
            .push("idle: no --executor-pid given: memory per sandbox not measured".into());
    }
    tokio::time::sleep(SETTLE).await;
    let before = rss_kib(pid);
    let names = Arc::new(ctx.names("idle", n));
    let (api, template) = (ctx.api.clone(), ctx.args.template.clone());
    let create = {
        let names = names.clone();
        move |_w: usize, i: u64| {
            let (api, name, template) = (api.clone(), names[i as usize].clone(), template.clone());
            async move {
                let started = Instant::now();
                let resp = api
                    .req(Method::POST, "/sandboxes")
                    .json(&json!({"name": name, "templateRef": {"name": template}}))
                    .send()
                    .await
                    .map_err(|e| ErrorKind::from_reqwest(&e))?;
                let status = resp.status();
                let _ = resp.bytes().await;
                match status {
                    StatusCode::CREATED => Ok(Sample::new(started.elapsed())),
                    s => Err(ErrorKind::Http(s.as_u16())),
                }
            }
        }
    };
    let started = Instant::now();
    let mut row = ctx
        .measure(
            "idle:create",
            &format!("n={n}"),
            c,
            Budget::Requests(n as u64),
            create,
        )
        .await;
    let bound = ctx
        .args
        .scenario_timeout
        .saturating_sub(started.elapsed() + SETTLE * 2);
    let deadline = Instant::now() + bound;
    let mut running = 0;
    while Instant::now() < deadline {
        match ctx.api.running(&names).await {
            Ok(r) if r == n => {
                running = r;
                break;
            }
            Ok(r) => running = r,
            Err(e) => note_once(report, &e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let until_running = started.elapsed().as_secs_f64();
    row = row
        .with("running", running as f64)
        .with("until_running_s", until_running)
        .with("running_per_s", running as f64 / until_running);
    if running < n {
        report.notes.push(format!(
            "idle: only {running} of {n} sandboxes were Running within {bound:?}"
        ));
    }
    tokio::time::sleep(SETTLE).await;
    if let (Some(b), Some(a)) = (before, rss_kib(pid)) {
        let delta = a as f64 - b as f64;
        row = row
            .with("rss_per_sandbox_kib", delta / n as f64)
            .with("executor_rss_delta_mib", delta / 1024.0);
    }
    report.rows.push(row);
    Ok(())
}
