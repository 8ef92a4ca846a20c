//! A client that stops reading while its run writes far more than any buffer
//! holds: the router's memory stays bounded, and when the client reads again
//! it gets every line in order or an explicit `gap` for what is no longer
//! retained; never a silent hole, never a duplicate, exactly one `exit`.

use std::time::Duration;

use agenttier_tests::client::router_pair;
use agenttier_tests::process::System;
use serde_json::json;

agenttier_tests::e2e_scenarios!(stalled_client_costs_bounded_memory_and_loses_nothing_silently);

const LINES: u64 = 48_000;
const LINE_BYTES: usize = 1000;

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn stalled_client_costs_bounded_memory_and_loses_nothing_silently(sys: &mut dyn System) {
    let (c, _) = router_pair(sys);
    let router = sys.router_pids()[0];
    c.create_running("bp-a", "langgraph-agent").await;
    let script = format!(
        "import sys\nw = sys.stdout.write\nfor i in range({LINES}):\n    w('%08d %s\\n' % (i, 'x' * {LINE_BYTES}))\n"
    );
    c.configure(
        "bp-a",
        &json!({"files": [{"path": "/workspace/flood.py", "content": script}],
                "entrypoint": ["python", "/workspace/flood.py"]}),
    )
    .await;
    let baseline = rss_kib(router);

    let mut s = c.invoke_stream("bp-a", "", &[]).await.stream();
    assert_eq!(s.next().await.expect("start").event, "start");
    // Stop reading while ~48 MB are written (more than the executor retains).
    let mut peak = baseline;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak = peak.max(rss_kib(router));
    }

    let mut expected_seq = 2u64;
    let (mut lines, mut gaps, mut exits) = (0u64, 0u64, 0);
    while let Some(e) = s.next().await {
        let seq: u64 =
            e.id.as_deref()
                .and_then(|i| i.parse().ok())
                .expect("every event has an id");
        match e.event.as_str() {
            "log" => {
                assert_eq!(seq, expected_seq, "in order, no duplicates");
                let n: u64 = e.data["data"].as_str().unwrap_or_default()[..8]
                    .parse()
                    .expect("numbered line");
                assert_eq!(n, seq - 2, "line {n} arrived as event {seq}");
                lines += 1;
                expected_seq += 1;
            }
            "gap" => {
                let (from, to) = (
                    e.data["from"].as_u64().expect("from"),
                    e.data["to"].as_u64().expect("to"),
                );
                assert_eq!(
                    from, expected_seq,
                    "a gap starts where delivery stopped: {e:?}"
                );
                assert!(to >= from, "{e:?}");
                gaps += to - from + 1;
                expected_seq = to + 1;
            }
            "exit" => {
                assert_eq!(seq, expected_seq, "exit follows the last line");
                assert_eq!(e.data["exitCode"], 0, "{e:?}");
                exits += 1;
            }
            other => panic!("unexpected event {other}: {e:?}"),
        }
        peak = peak.max(rss_kib(router));
    }
    assert_eq!(exits, 1, "exactly one exit");
    assert_eq!(
        lines + gaps,
        LINES,
        "every line delivered or accounted for by a gap"
    );
    assert!(lines > 0);
    if sys.shape() == "distributed" {
        // The router alone: its per-stream buffers are bounded (4 MiB of live
        // events, 64 events for the client, one replay reply), far below the
        // ~50 MB the run wrote; a relay that queued everything grows ~60 MB.
        let grew_mib = peak.saturating_sub(baseline) / 1024;
        assert!(
            grew_mib <= 24,
            "router grew by {grew_mib} MiB for one stalled client"
        );
    }
}
