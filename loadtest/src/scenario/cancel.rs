//! `cancel`: start a long run, wait for its `start` event and then
//! `--cancel-after`, ask to cancel it (round-robin, so often through another
//! router than the stream's) and
//! time from the cancel request to the `exit` event at the client, which
//! must say `canceled`. The time to the cancel's own 204 is the row's ttfb.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::Ctx;
use crate::check::Expect;
use crate::report::Report;
use crate::stats::{ErrorKind, Sample};
use crate::{Result, run as call};

pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let per = ctx.args.per_sandbox.max(1);
    let after = ctx.args.cancel_after;
    for c in ctx.args.levels(&[1]) {
        let body = json!({ "entrypoint": ["sleep", "300"] });
        let names = Arc::new(
            ctx.sandboxes(
                &format!("cancel{c}"),
                c.div_ceil(per),
                &ctx.args.template,
                Some(&body),
            )
            .await?,
        );
        let api = ctx.api.clone();
        let one = move |w: usize, _i: u64| {
            let (api, name) = (api.clone(), names[w / per].clone());
            async move {
                let mut inv = match call::send(&api, &name, Bytes::new(), Expect::Canceled).await? {
                    Ok(inv) => inv,
                    Err(r) => return Err(ErrorKind::Http(r.status.as_u16())),
                };
                let id = inv.until_start().await?;
                tokio::time::sleep(after).await;
                let asked = Instant::now();
                // The stream is read while the cancel is sent, so the exit
                // is timed when it arrives, even before the 204.
                let cancel = async {
                    let resp = api
                        .req(Method::POST, &format!("/sandboxes/{name}/invoke/cancel"))
                        .json(&json!({ "invokeId": id }))
                        .send()
                        .await
                        .map_err(|e| ErrorKind::from_reqwest(&e))?;
                    match resp.status() {
                        StatusCode::NO_CONTENT => Ok(asked.elapsed()),
                        s => Err(ErrorKind::Http(s.as_u16())),
                    }
                };
                let (answered, done) = tokio::join!(cancel, inv.finish());
                let (answered, done) = (answered?, done?);
                Ok(Sample {
                    latency: done.exit_at.saturating_duration_since(asked),
                    ttfb: Some(answered),
                })
            }
        };
        let row = ctx
            .measure("cancel", &format!("c={c}"), c, ctx.budget(100), one)
            .await;
        report
            .rows
            .push(row.with("cancel_after_ms", after.as_secs_f64() * 1000.0));
    }
    Ok(())
}
