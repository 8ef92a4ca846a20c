//! The harness's own smoke test: tiny `invoke`, `stream` and `throttle`
//! runs against `agenttier up` whose checks must all pass, and a JSON report
//! that reads back. No timing is asserted: benchmarks never run as timed
//! assertions in the suite (`scripts/bench.sh` runs the real thing).

use std::path::{Path, PathBuf};

use agenttier_loadtest::{Args, Report};
use agenttier_tests::process::{Embedded, System};
use clap::Parser as _;

fn args(sys: &Embedded, json: &Path, extra: &[&str]) -> Args {
    let mut argv = vec![
        "agenttier-loadtest".to_string(),
        "--url".into(),
        sys.url(),
        "--api-key".into(),
        sys.admin_key().into(),
        "--pid".into(),
        format!("up={}", sys.router_pids()[0]),
        "--json".into(),
        json.display().to_string(),
        "--label".into(),
        "smoke".into(),
        "--quiet".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    Args::try_parse_from(argv).expect("valid arguments")
}

/// The JSON report at `path`, parsed, must say what `report` says (floats
/// aside: serde_json's parsing is not bit-exact).
fn assert_reads_back(path: &Path, report: &Report) {
    let bytes = std::fs::read(path).expect("the JSON report was written");
    let _ = std::fs::remove_file(path);
    let parsed: Report = serde_json::from_slice(&bytes).expect("the JSON report parses");
    let outline = |r: &Report| {
        let rows: Vec<_> = r
            .rows
            .iter()
            .map(|x| (x.scenario.clone(), x.case.clone(), x.ok, x.errors.clone()))
            .collect();
        (r.label.clone(), rows, r.notes.clone(), r.targets.len())
    };
    assert_eq!(outline(&parsed), outline(report));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_invoke_stream_and_throttle_runs_pass_their_own_checks() {
    let sys = Embedded::start();
    agenttier_tests::client::wait_ready(&sys).await;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let json = dir.join(format!("loadtest-smoke-{}.json", std::process::id()));

    let invoke = args(
        &sys,
        &json,
        &["--concurrency", "2", "--requests", "20", "invoke"],
    );
    let report = agenttier_tests::bounded(agenttier_loadtest::run(invoke))
        .await
        .expect("the invoke scenario runs");
    assert!(
        report.notes.iter().all(|n| !n.contains("not run")),
        "{:?}",
        report.notes
    );
    let row = report.row("invoke", "c=2").expect("an invoke row at c=2");
    assert_eq!((row.ok, row.error_count()), (20, 0), "{row:?}");
    let floor = report
        .row("floor:spawn", "c=2")
        .expect("the spawn floor was measured");
    assert_eq!(floor.error_count(), 0, "{floor:?}");
    // The suite's machines have bubblewrap (the system needs it): the
    // isolated floor, through the executor's runtime, must run clean too.
    let isolated = report
        .row("floor:spawn-bwrap", "c=2")
        .expect("the isolated spawn floor was measured");
    assert_eq!(
        (isolated.ok, isolated.error_count()),
        (20, 0),
        "{isolated:?}"
    );
    assert!(
        row.procs.iter().any(|p| p.label == "up"),
        "the server's CPU was read"
    );
    assert_reads_back(&json, &report);

    let stream = args(
        &sys,
        &json,
        &["--stream-mib", "1", "--requests", "1", "stream"],
    );
    let report = agenttier_tests::bounded(agenttier_loadtest::run(stream))
        .await
        .expect("the stream scenario runs");
    let lines = report.row("stream", "lines 1 MiB").expect("a lines row");
    assert_eq!((lines.ok, lines.error_count()), (1, 0), "{lines:?}");
    assert_eq!(
        lines.extra.get("lines"),
        Some(&16384.0),
        "1 MiB of 64-byte lines"
    );
    let raw = report.row("stream", "raw 1 MiB").expect("a raw row");
    assert_eq!((raw.ok, raw.error_count()), (1, 0), "{raw:?}");
    assert_eq!(raw.extra.get("bytes"), Some(&1048576.0));
    assert_reads_back(&json, &report);

    // A burst against the harness's capped template (two at a time): every
    // request refused 429 with its body and Retry-After checked, the same
    // burst to the trivial handler beside it, and the two as a ratio.
    let throttle = args(
        &sys,
        &json,
        &["--concurrency", "4", "--burst", "40", "throttle"],
    );
    let report = agenttier_tests::bounded(agenttier_loadtest::run(throttle))
        .await
        .expect("the throttle scenario runs");
    for scenario in ["throttle", "floor:http"] {
        let row = report
            .row(scenario, "burst c=4")
            .unwrap_or_else(|| panic!("a {scenario} row: {:?}", report.rows));
        assert_eq!((row.ok, row.error_count()), (40, 0), "{row:?}");
    }
    assert!(
        report
            .ratios
            .iter()
            .any(|r| r.ours == "throttle burst c=4" && r.floor == "floor:http burst c=4"),
        "{:?}",
        report.ratios
    );
    assert!(
        report.notes.iter().all(|n| !n.contains("holder")),
        "the holders ended canceled: {:?}",
        report.notes
    );
    assert_reads_back(&json, &report);
}
