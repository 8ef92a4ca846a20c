//! The concurrency cap, measured where it matters: at the workload. Many
//! concurrent invokes spread over every router against a cap of 5: the
//! entrypoint itself records how many copies of it ran at once.
//!
//! `AGENTTIER_FAULT_SCALE=full` runs the issue's full size (1,000 invokes);
//! the default is a smoke run of 150.

use agenttier_tests::client::{Client, finish};
use agenttier_tests::process::System;
use serde_json::json;

agenttier_tests::e2e_scenarios!(the_cap_holds_at_the_workload_under_a_burst);

/// Counts the copies running at once in a file, under a lock, keeping the max.
const WORKLOAD: &str = r#"
import fcntl, time
def bump(delta):
    with open("/workspace/conc", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        cur, top = (list(map(int, f.read().split())) or [0, 0])
        cur += delta
        f.seek(0); f.truncate(); f.write(f"{cur} {max(top, cur)}")
bump(1)
time.sleep(0.3)
bump(-1)
"#;

fn burst_size() -> usize {
    if agenttier_tests::process::full_scale() {
        1000
    } else {
        150
    }
}

async fn the_cap_holds_at_the_workload_under_a_burst(sys: &mut dyn System) {
    let urls = sys.urls();
    let c = Client::new(&urls[0], Some(sys.admin_key()));
    c.create_running("cap-a", "cap5").await;
    c.configure(
        "cap-a",
        &json!({"files": [{"path": "/workspace/work.py", "content": WORKLOAD},
                          {"path": "/workspace/conc", "content": "0 0"}],
                "entrypoint": ["python", "/workspace/work.py"]}),
    )
    .await;

    let n = burst_size();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let c = Client::new(&urls[i % urls.len()], Some(sys.admin_key()));
        tasks.push(tokio::spawn(async move {
            match c.invoke_stream("cap-a", "", &[]).await {
                agenttier_tests::client::Streamed::Stream(s) => {
                    let done = finish(s).await;
                    (200u16, None, done.event("exit").data["exitCode"].as_i64())
                }
                agenttier_tests::client::Streamed::Refused(r) => (
                    r.status.as_u16(),
                    r.header("retry-after").map(str::to_string),
                    None,
                ),
            }
        }));
    }
    let mut ok = 0;
    let mut throttled = 0;
    for t in tasks {
        let (status, retry_after, exit) = t.await.expect("task");
        match status {
            200 => {
                assert_eq!(exit, Some(0), "an admitted run completes");
                ok += 1;
            }
            429 => {
                let secs: u64 = retry_after
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| {
                        panic!("429 without an integer Retry-After: {retry_after:?}")
                    });
                assert!(secs >= 1);
                throttled += 1;
            }
            other => panic!("a burst answer was {other}: only 200 and 429 are allowed"),
        }
    }
    assert_eq!(ok + throttled, n);
    assert!(ok >= 5, "at least the cap's worth ran: {ok}");

    // What the workload saw: never more than 5 at once.
    c.configure("cap-a", &json!({"entrypoint": ["cat", "/workspace/conc"]}))
        .await;
    let seen = c.invoke("cap-a", "", &[]).await.lines("stdout").join("");
    let top: u64 = seen
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("max");
    let now: u64 = seen
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("current");
    assert!(top <= 5, "{top} copies ran at once against a cap of 5");
    assert!(top >= 1);
    assert_eq!(now, 0, "every admitted run ended");
}
