//! A client that stops reading while its run writes far more than any buffer
//! holds: the router's memory stays bounded, the client stays attached for
//! longer than the client grace, another stream goes on meanwhile, and when
//! the client reads again it gets every line, in order, exactly once, then
//! one `exit` (the executor held the run's output back while the client was
//! too far behind: nothing had to be dropped).
//!
//! Smoke size: a 10 s stall while 48 MB are written. At full scale
//! (`AGENTTIER_FAULT_SCALE=full`): a 60 s stall while 256 MiB are written
//! (a template allowing 2 GiB of output, as the default cap is 256 MiB).

use std::time::{Duration, Instant};

use agenttier_tests::client::router_pair;
use agenttier_tests::process::{System, full_scale};
use serde_json::json;

agenttier_tests::e2e_scenarios!(stalled_client_costs_bounded_memory_and_loses_nothing);

const LINE_BYTES: usize = 1000;

/// (lines written, seconds the client stops reading).
fn size() -> (u64, u64) {
    if full_scale() {
        // 265,778 lines of 1,010 bytes: 256 MiB (on a template allowing more).
        (265_778, 60)
    } else {
        (48_000, 10)
    }
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn stalled_client_costs_bounded_memory_and_loses_nothing(sys: &mut dyn System) {
    let (lines_total, stall_s) = size();
    let (c, _) = router_pair(sys);
    let router = sys.router_pids()[0];
    c.create_running("bp-a", "bigout").await;
    c.create_running("bp-b", "langgraph-agent").await;
    let script = format!(
        "import sys\nw = sys.stdout.write\nfor i in range({lines_total}):\n    w('%08d %s\\n' % (i, 'x' * {LINE_BYTES}))\n"
    );
    c.configure(
        "bp-a",
        &json!({"files": [{"path": "/workspace/flood.py", "content": script}],
                "entrypoint": ["python", "/workspace/flood.py"]}),
    )
    .await;
    c.configure("bp-b", &json!({"entrypoint": ["cat"]})).await;
    let baseline = rss_kib(router);
    // The other sandbox's invoke latency with nothing else going on.
    let mut alone = Vec::new();
    for i in 0..10 {
        let t = Instant::now();
        let other = c.invoke("bp-b", format!("alone {i}"), &[]).await;
        assert_eq!(other.event("exit").data["reason"], "completed");
        alone.push(t.elapsed());
    }
    alone.sort();

    let mut s = c.invoke_stream("bp-a", "", &[]).await.stream();
    assert_eq!(s.next().await.expect("start").event, "start");
    // Stop reading, for longer than the client grace (8 s in the harness),
    // while the run has far more to write than anything retains. Meanwhile
    // another sandbox's invokes go on.
    let stalled_until = Instant::now() + Duration::from_secs(stall_s);
    let mut peak = baseline;
    let mut others = Vec::new();
    while Instant::now() < stalled_until {
        let t = Instant::now();
        let body = format!("other {}", others.len());
        let other = c.invoke("bp-b", body.clone(), &[]).await;
        assert_eq!(other.lines("stdout"), vec![body], "{:?}", other.events);
        assert_eq!(other.event("exit").data["reason"], "completed");
        others.push(t.elapsed());
        peak = peak.max(rss_kib(router));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    others.sort();
    eprintln!(
        "other invokes during the stall: {} runs, median {:?}, max {:?} (alone: median {:?}, max {:?})",
        others.len(),
        others[others.len() / 2],
        others[others.len() - 1],
        alone[alone.len() / 2],
        alone[alone.len() - 1],
    );

    let mut expected_seq = 2u64;
    let (mut lines, mut exits) = (0u64, 0);
    while let Some(e) = s.next().await {
        let seq: u64 =
            e.id.as_deref()
                .and_then(|i| i.parse().ok())
                .expect("every event has an id");
        match e.event.as_str() {
            "log" => {
                assert_eq!(seq, expected_seq, "in order, no duplicates");
                let data = e.data["data"].as_str().unwrap_or_default();
                let n: u64 = data
                    .get(..8)
                    .and_then(|d| d.parse().ok())
                    .unwrap_or_else(|| panic!("not a numbered line: {e:?}"));
                assert_eq!(n, seq - 2, "line {n} arrived as event {seq}");
                assert_eq!(data.len(), 9 + LINE_BYTES, "line {n} whole");
                lines += 1;
                expected_seq += 1;
            }
            "exit" => {
                assert_eq!(seq, expected_seq, "exit follows the last line");
                assert_eq!(e.data["exitCode"], 0, "{e:?}");
                assert_eq!(e.data["reason"], "completed", "{e:?}");
                exits += 1;
            }
            other => panic!("unexpected event {other} (nothing may be lost): {e:?}"),
        }
        peak = peak.max(rss_kib(router));
    }
    assert_eq!(exits, 1, "exactly one exit");
    assert_eq!(lines, lines_total, "every line delivered");
    let grew_mib = peak.saturating_sub(baseline) / 1024;
    eprintln!("router grew by {grew_mib} MiB (peak RSS {peak} KiB)");
    if sys.shape() == "distributed" {
        // The router alone: its per-stream buffers are bounded (4 MiB of live
        // events, 64 events for the client, one replay reply), far below
        // what the run wrote; a relay that queued everything grows with it.
        assert!(
            grew_mib <= 24,
            "router grew by {grew_mib} MiB for one stalled client"
        );
    }
}
