//! `stream`: one run writing `--stream-mib` MiB (each size given) to one
//! SSE client, as numbered lines (`seq`) and as raw bytes without newlines
//! (`head -c`, which the server sends as 64 KiB `partial` pieces); each
//! checked for the exact line count, byte count and digest. The floor is the same
//! script spawned directly, its stdout read through a pipe.

use std::fmt::Write as _;

use bytes::Bytes;
use serde_json::json;

use super::{Budget, Ctx};
use crate::check::{Digest, Expect, Output};
use crate::floor;
use crate::report::Report;
use crate::stats::ErrorKind;
use crate::{Result, run as call};

/// Reads `<mode> <n>` from stdin: `lines` writes lines 1..=n of 64 bytes
/// each, `raw` writes n bytes of a 16-byte pattern and no newline.
const SCRIPT: &str = r#"read mode n
case "$mode" in
  lines) exec seq -f 'line %058.0f' 1 "$n" ;;
  raw) yes 0123456789abcdef | tr -d '\n' | head -c "$n" ;;
esac"#;

const LINE_BYTES: u64 = 64;

/// The stdin selecting the mode, and what the script writes for it.
fn expected(lines: bool, mib: u64) -> (Bytes, Output) {
    let bytes = mib * 1024 * 1024;
    let mut d = Digest::default();
    if lines {
        let n = bytes / LINE_BYTES;
        let mut line = String::with_capacity(LINE_BYTES as usize);
        for i in 1..=n {
            line.clear();
            let _ = writeln!(line, "line {i:058}");
            d.update(line.as_bytes());
        }
        let out = Output {
            lines: n,
            bytes: n * LINE_BYTES,
            digest: d.value(),
        };
        (Bytes::from(format!("lines {n}\n")), out)
    } else {
        let pattern = b"0123456789abcdef";
        for _ in 0..bytes / pattern.len() as u64 {
            d.update(pattern);
        }
        let out = Output {
            lines: 0,
            bytes,
            digest: d.value(),
        };
        (Bytes::from(format!("raw {bytes}\n")), out)
    }
}

pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let argv = vec!["sh".to_string(), "-c".into(), SCRIPT.into()];
    let body = json!({ "entrypoint": argv });
    let names = ctx
        .sandboxes("stream", 1, &ctx.args.template, Some(&body))
        .await?;
    let runs = match ctx.budget(3) {
        Budget::Requests(n) => n.max(1),
        Budget::For(_) => 3,
    };
    let cases = ctx
        .args
        .stream_mib
        .iter()
        .flat_map(|m| [(true, *m), (false, *m)]);
    for (lines, mib) in cases {
        let mib = mib.max(1);
        let (stdin, want) = expected(lines, mib);
        let case = format!("{} {mib} MiB", if lines { "lines" } else { "raw" });
        let expect = Expect::Output {
            lines: want.lines,
            bytes: want.bytes,
            digest: want.digest,
        };
        let (api, name, s, e) = (ctx.api.clone(), names[0].clone(), stdin.clone(), expect);
        let row = ctx
            .measure("stream", &case, 1, Budget::Requests(runs), move |_, _| {
                let (api, name, stdin, expect) = (api.clone(), name.clone(), s.clone(), e.clone());
                async move { call::invoke(&api, &name, stdin, expect).await }
            })
            .await;
        report.rows.push(with_rates(row, want));
        if ctx.args.no_floors {
            continue;
        }
        let argv = argv.clone();
        let row = ctx
            .measure(
                "floor:stream",
                &case,
                1,
                Budget::Requests(runs),
                move |_, _| {
                    let (argv, stdin) = (argv.clone(), stdin.clone());
                    async move {
                        let (sample, out) =
                            floor::spawn(&floor::Spawner::Plain, &argv, stdin).await?;
                        if out != want {
                            return Err(ErrorKind::WrongOutput);
                        }
                        Ok(sample)
                    }
                },
            )
            .await;
        report.rows.push(with_rates(row, want));
    }
    Ok(())
}

/// MB/s (10^6 bytes) and lines/s of the median run, and the bytes and
/// lines every passing run delivered (checked exactly).
fn with_rates(row: crate::report::Row, want: Output) -> crate::report::Row {
    let secs = row.latency.p50_ms / 1000.0;
    if row.ok == 0 || secs <= 0.0 {
        return row;
    }
    let row = row
        .with("mb_per_s", want.bytes as f64 / 1e6 / secs)
        .with("bytes", want.bytes as f64);
    if want.lines > 0 {
        row.with("lines_per_s", want.lines as f64 / secs)
            .with("lines", want.lines as f64)
    } else {
        row
    }
}
