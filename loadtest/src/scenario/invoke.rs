//! `invoke`: the entrypoint through the routers at each concurrency (closed
//! loop; each worker keeps to a sandbox with a free slot, so nothing is
//! refused), then open loop at `--rate`; beside each level, the floors at
//! the same concurrency: the entrypoint spawned directly, spawned under
//! bubblewrap, a NATS round trip and an HTTP round trip.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use super::{Ctx, drive_rate};
use crate::check::Expect;
use crate::floor;
use crate::report::{Report, Row};
use crate::stats::ErrorKind;
use crate::{Error, Result, run as call};

/// What each request sends and must get back: a `cat` entrypoint echoes a
/// body unique to the request; `true` writes nothing; others must exit 0.
fn request(argv: &[String], i: u64) -> (Bytes, Expect) {
    match argv[0].rsplit('/').next() {
        Some("cat") if argv.len() == 1 => {
            let body = format!("request {i}\n").into_bytes();
            (Bytes::from(body.clone()), Expect::Stdout(body))
        }
        Some("true") => (Bytes::new(), Expect::Stdout(Vec::new())),
        _ => (Bytes::new(), Expect::Exit0),
    }
}

pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let argv = Arc::new(ctx.args.entrypoint_argv());
    if argv.is_empty() {
        return Err(Error::Setup("--entrypoint is empty".into()));
    }
    let levels = ctx.args.levels(&[1, 8, 64, 256]);
    let per = ctx.args.per_sandbox.max(1);
    let most = levels.iter().copied().max().unwrap_or(1);
    let body = json!({ "entrypoint": *argv });
    let names = Arc::new(
        ctx.sandboxes("inv", most.div_ceil(per), &ctx.args.template, Some(&body))
            .await?,
    );
    let workspace = std::env::temp_dir().join(format!("agenttier-loadtest-{}", ctx.run_id));
    std::fs::create_dir_all(&workspace)?;
    let isolated = match ctx.args.no_floors {
        true => None,
        false => floor::Spawner::isolated(&workspace).await.map(Arc::new),
    };
    if isolated.is_none() && !ctx.args.no_floors {
        report
            .notes
            .push("floor:spawn-bwrap not measured: bubblewrap is not usable here".into());
    }
    let nats = match (&ctx.args.nats, ctx.args.no_floors) {
        (Some(url), false) => Some(Arc::new(floor::NatsPair::connect(url, &ctx.run_id).await?)),
        (None, false) => {
            report
                .notes
                .push("floor:nats not measured: no --nats given".into());
            None
        }
        _ => None,
    };
    let (http_url, _server) = floor::http_server().await?;

    let invoke = {
        let (api, names, argv) = (ctx.api.clone(), names.clone(), argv.clone());
        move |w: usize, i: u64| {
            let (api, name) = (api.clone(), names[w / per].clone());
            let (stdin, expect) = request(&argv, i);
            async move { call::invoke(&api, &name, stdin, expect).await }
        }
    };
    for &c in &levels {
        let budget = ctx.budget((8 * c as u64).max(1000));
        // Warm-up: connections, sandboxes' first runs, the page cache.
        ctx.warm_up(c, invoke.clone()).await;
        let row = ctx
            .measure("invoke", &format!("c={c}"), c, budget, invoke.clone())
            .await;
        report.rows.push(row);
        if ctx.args.no_floors {
            continue;
        }
        let spawner = |how: Arc<floor::Spawner>, argv: Arc<Vec<String>>| {
            move |_w: usize, i: u64| {
                let (how, argv, (stdin, expect)) = (how.clone(), argv.clone(), request(&argv, i));
                async move {
                    let (sample, out) = floor::spawn(&how, &argv, stdin.clone()).await?;
                    match expect {
                        Expect::Stdout(want) if want.len() as u64 != out.bytes => {
                            Err(ErrorKind::WrongOutput)
                        }
                        _ => Ok(sample),
                    }
                }
            }
        };
        let case = format!("c={c}");
        let row = ctx
            .measure(
                "floor:spawn",
                &case,
                c,
                budget,
                spawner(Arc::new(floor::Spawner::Plain), argv.clone()),
            )
            .await;
        report.rows.push(row);
        if let Some(iso) = &isolated {
            let row = ctx
                .measure(
                    "floor:spawn-bwrap",
                    &case,
                    c,
                    budget,
                    spawner(iso.clone(), argv.clone()),
                )
                .await;
            report.rows.push(row);
        }
        if let Some(pair) = &nats {
            let rt = floor::nats_round_trip(pair.clone());
            ctx.warm_up(c, rt.clone()).await;
            let row = ctx
                .measure("floor:nats", &case, c, ctx.budget(10_000), rt)
                .await;
            report.rows.push(row);
        }
        let get = floor::http_round_trip(ctx.api.http.clone(), http_url.clone());
        ctx.warm_up(c, get.clone()).await;
        let row = ctx
            .measure("floor:http", &case, c, ctx.budget(10_000), get)
            .await;
        report.rows.push(row);
    }
    if let Some(rate) = ctx.args.rate.filter(|r| *r > 0.0) {
        let slots = names.len() * per;
        let budget = ctx.budget((rate * 10.0) as u64);
        let progress = ctx.progress(&format!("invoke rate={rate}/s"), budget);
        let before = ctx.snapshot();
        let (rec, wall) = drive_rate(rate, slots, budget, &progress, invoke).await;
        let mut row = Row::new("invoke", &format!("rate={rate}/s"), slots, rec, wall);
        row.procs = crate::procstat::since(&before);
        report.rows.push(row.with("offered_per_s", rate));
    }
    let _ = std::fs::remove_dir_all(&workspace);
    Ok(())
}
