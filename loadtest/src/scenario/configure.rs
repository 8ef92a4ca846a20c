//! `configure`: a sandbox per worker is configured once (a file and an
//! entrypoint), then configured again with the same body, which must be
//! answered with a single `result` event saying `skipped: true`.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::Ctx;
use crate::Result;
use crate::client::Api;
use crate::report::Report;
use crate::sse::Parser;
use crate::stats::{ErrorKind, Sample};

/// One no-op configure: 200, exactly one event, `result` with `skipped`.
async fn reconfigure(api: &Api, name: &str, body: &Value) -> Result<Sample, ErrorKind> {
    let started = Instant::now();
    let resp = api
        .req(Method::POST, &format!("/sandboxes/{name}/configure"))
        .header("Accept", "text/event-stream")
        .json(body)
        .send()
        .await
        .map_err(|e| ErrorKind::from_reqwest(&e))?;
    if resp.status() != StatusCode::OK {
        return Err(ErrorKind::Http(resp.status().as_u16()));
    }
    let mut parser = Parser::default();
    let (mut events, mut skipped, mut first) = (0u32, false, None);
    let mut result_at = None;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ErrorKind::from_reqwest(&e))?;
        let now = Instant::now();
        first.get_or_insert(now);
        parser.feed(&chunk, |e| {
            events += 1;
            if e.name == b"result" {
                result_at = Some(now);
                skipped =
                    serde_json::from_slice::<Value>(e.data).is_ok_and(|v| v["skipped"] == true);
            }
        });
    }
    let Some(done) = result_at else {
        return Err(ErrorKind::MissingExit);
    };
    if events != 1 || !skipped {
        return Err(ErrorKind::WrongOutput);
    }
    Ok(Sample {
        latency: done - started,
        ttfb: first.map(|f| f - started),
    })
}

pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let body = Arc::new(json!({
        "files": [{"path": "/workspace/agent.txt", "content": "loadtest\n"}],
        "entrypoint": ["/bin/true"],
    }));
    for c in ctx.args.levels(&[1]) {
        let names = Arc::new(
            ctx.sandboxes(&format!("cfg{c}"), c, &ctx.args.template, Some(&body))
                .await?,
        );
        let (api, body) = (ctx.api.clone(), body.clone());
        let one = move |w: usize, _i: u64| {
            let (api, name, body) = (api.clone(), names[w].clone(), body.clone());
            async move { reconfigure(&api, &name, &body).await }
        };
        let row = ctx
            .measure("configure", &format!("c={c}"), c, ctx.budget(500), one)
            .await;
        report.rows.push(row);
    }
    Ok(())
}
