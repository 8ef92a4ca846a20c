//! `api`: `GET /sandboxes/{id}` (the answer must name the sandbox) and
//! `GET /sandboxes` (the list must hold it), closed loop at each
//! concurrency; beside them, the HTTP round trip to a trivial axum handler
//! and the NATS round trip at the same concurrency.

use std::sync::Arc;
use std::time::Instant;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{Budget, Ctx};
use crate::Result;
use crate::client::Api;
use crate::floor;
use crate::report::Report;
use crate::stats::{ErrorKind, Sample};

/// One GET that must answer 200 with a body `ok` accepts.
async fn get(api: &Api, path: &str, ok: impl Fn(&Value) -> bool) -> Result<Sample, ErrorKind> {
    let started = Instant::now();
    let resp = api
        .req(Method::GET, path)
        .send()
        .await
        .map_err(|e| ErrorKind::from_reqwest(&e))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| ErrorKind::from_reqwest(&e))?;
    let latency = started.elapsed();
    if status != StatusCode::OK {
        return Err(ErrorKind::Http(status.as_u16()));
    }
    let body: Value = serde_json::from_slice(&bytes).map_err(|_| ErrorKind::BadEvent)?;
    if !ok(&body) {
        return Err(ErrorKind::WrongOutput);
    }
    Ok(Sample::new(latency))
}

pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let names = ctx.sandboxes("api", 1, &ctx.args.template, None).await?;
    let name: Arc<str> = names[0].as_str().into();
    let (http_url, _server) = floor::http_server().await?;
    let nats = match (&ctx.args.nats, ctx.args.no_floors) {
        (Some(url), false) => Some(Arc::new(
            floor::NatsPair::connect(url, &format!("{}api", ctx.run_id)).await?,
        )),
        _ => None,
    };
    for c in ctx.args.levels(&[50]) {
        let budget = ctx.budget(20_000);
        let case = format!("c={c}");
        let one = {
            let (api, name) = (ctx.api.clone(), name.clone());
            move |_w: usize, _i: u64| {
                let (api, name) = (api.clone(), name.clone());
                async move { get(&api, &format!("/sandboxes/{name}"), |b| b["name"] == *name).await }
            }
        };
        ctx.warm_up(c, one.clone()).await;
        report
            .rows
            .push(ctx.measure("api:get", &case, c, budget, one).await);

        let list_budget = match budget {
            Budget::Requests(n) => Budget::Requests((n / 10).max(1)),
            d => d,
        };
        let list = {
            let (api, name) = (ctx.api.clone(), name.clone());
            move |_w: usize, _i: u64| {
                let (api, name) = (api.clone(), name.clone());
                async move {
                    let has = |b: &Value| {
                        b["sandboxes"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|s| s["name"] == *name))
                    };
                    get(&api, "/sandboxes", has).await
                }
            }
        };
        report
            .rows
            .push(ctx.measure("api:list", &case, c, list_budget, list).await);

        if ctx.args.no_floors {
            continue;
        }
        let get = floor::http_round_trip(ctx.api.http.clone(), http_url.clone());
        ctx.warm_up(c, get.clone()).await;
        report
            .rows
            .push(ctx.measure("floor:http", &case, c, budget, get).await);
        if let Some(pair) = &nats {
            let rt = floor::nats_round_trip(pair.clone());
            ctx.warm_up(c, rt.clone()).await;
            report
                .rows
                .push(ctx.measure("floor:nats", &case, c, budget, rt).await);
        }
    }
    Ok(())
}
