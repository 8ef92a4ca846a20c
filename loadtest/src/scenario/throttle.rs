//! `throttle`: a sandbox of the capped template is filled to its cap with
//! long runs, then a burst of `--burst` invokes at each concurrency must
//! every one be refused 429 `concurrency_exceeded` with `Retry-After`; the
//! latency of those refusals is what is measured. The holders are then
//! canceled and must end `canceled`. Beside each burst, the same burst to
//! a trivial axum handler (`floor:http`).
//!
//! The API cannot create templates, so the server must be started with a
//! manifest holding the capped template (`scripts/bench.sh` writes one).

use std::time::Instant;

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::json;

use super::{Budget, Ctx};
use crate::check::Expect;
use crate::floor;
use crate::report::Report;
use crate::stats::{ErrorKind, Sample};
use crate::{Error, Result, run as call};

pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let template = &ctx.args.capped_template;
    let Some(t) = ctx.api.template(template).await? else {
        return Err(Error::Setup(format!(
            "template {template:?} not found. The API cannot create templates: start the server \
             with --manifests holding a ClusterSandboxTemplate with a small \
             agent.maxConcurrentInvokes (scripts/bench.sh writes one), or name one with \
             --capped-template"
        )));
    };
    let limit = t["spec"]["agent"]["maxConcurrentInvokes"]
        .as_u64()
        .unwrap_or(4);
    let body = json!({ "entrypoint": ["sleep", "300"] });
    let names = ctx.sandboxes("cap", 1, template, Some(&body)).await?;
    let name = names[0].clone();

    let mut holders = Vec::new();
    for _ in 0..limit {
        let mut inv = match call::send(&ctx.api, &name, Bytes::new(), Expect::Canceled).await {
            Ok(Ok(inv)) => inv,
            Ok(Err(r)) => return Err(Error::Setup(format!("filling the cap: {}", r.status))),
            Err(e) => return Err(Error::Setup(format!("filling the cap: {}", e.key()))),
        };
        let id = inv
            .until_start()
            .await
            .map_err(|e| Error::Setup(format!("filling the cap: {}", e.key())))?;
        holders.push((id, tokio::spawn(inv.finish())));
    }

    let refused = {
        let (api, name) = (ctx.api.clone(), name.clone());
        move |_w: usize, _i: u64| {
            let (api, name) = (api.clone(), name.clone());
            async move {
                let started = Instant::now();
                match call::send(&api, &name, Bytes::new(), Expect::Canceled).await? {
                    Err(r) if r.status == StatusCode::TOO_MANY_REQUESTS => {
                        let latency = started.elapsed();
                        if r.body["error"] != "concurrency_exceeded" || !r.retry_after {
                            return Err(ErrorKind::WrongOutput);
                        }
                        Ok(Sample::new(latency))
                    }
                    Err(r) => Err(ErrorKind::Http(r.status.as_u16())),
                    // Admitted over the cap: the worst answer there is.
                    Ok(_) => Err(ErrorKind::Http(200)),
                }
            }
        }
    };
    let burst = ctx.args.burst.max(1);
    let (http_url, _server) = floor::http_server().await?;
    for c in ctx.args.levels(&[50, 1000]) {
        let c = c.min(burst as usize);
        ctx.warm_up(c, refused.clone()).await;
        let row = ctx
            .measure(
                "throttle",
                &format!("burst c={c}"),
                c,
                Budget::Requests(burst),
                refused.clone(),
            )
            .await;
        report.rows.push(row.with("cap", limit as f64));
        if !ctx.args.no_floors {
            // The same burst to a trivial handler: what answering that many
            // requests at once costs on this machine before any work of ours.
            let get = floor::http_round_trip(ctx.api.http.clone(), http_url.clone());
            ctx.warm_up(c, get.clone()).await;
            let case = format!("burst c={c}");
            let row = ctx.measure("floor:http", &case, c, Budget::Requests(burst), get);
            report.rows.push(row.await.with("burst", burst as f64));
        }
    }

    for (id, _) in &holders {
        let rb = ctx
            .api
            .req(
                reqwest::Method::POST,
                &format!("/sandboxes/{name}/invoke/cancel"),
            )
            .json(&json!({ "invokeId": id }));
        ctx.api
            .expect(rb, StatusCode::NO_CONTENT, "cancel a holder")
            .await?;
    }
    for (id, h) in holders {
        match h.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => report.notes.push(format!(
                "throttle: holder {id} did not end as a canceled run should: {}",
                e.key()
            )),
            Err(e) => report.notes.push(format!("throttle: holder {id}: {e}")),
        }
    }
    Ok(())
}
