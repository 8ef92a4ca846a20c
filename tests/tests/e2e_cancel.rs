//! Cancel (SPEC §2.3) from another router than the one streaming the run:
//! the stream ends `canceled`, and the whole process tree is gone from the
//! host, even processes that ignore SIGTERM and were orphaned.

use std::time::Duration;

use agenttier_tests::client::router_pair;
use agenttier_tests::process::{System, left_after, processes_with};
use serde_json::json;

agenttier_tests::e2e_scenarios!(
    cancel_from_other_router_ends_stream_with_canceled_and_kills_the_tree
);

/// Ignores SIGTERM, leaves an orphaned grandchild (which ignores it too),
/// says `ready`, and sleeps. Forks keep the argv, so every process of the
/// tree carries the marker given as its argument.
const STUBBORN: &str = "\
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.fork() == 0:
    if os.fork() == 0:
        time.sleep(300)
    os._exit(0)
os.wait()
print('ready', flush=True)
time.sleep(300)
";

/// SIGTERM, 10 s, SIGKILL, with room for a slow machine.
const CANCEL_BOUND: Duration = Duration::from_secs(15);

async fn cancel_from_other_router_ends_stream_with_canceled_and_kills_the_tree(
    sys: &mut dyn System,
) {
    let (a, b) = router_pair(sys);
    let name = "cancel-agent";
    let marker = format!("cancel-marker-{:016x}", rand::random::<u64>());
    a.create_running(name, "langgraph-agent").await;
    a.configure(
        name,
        &json!({
            "files": [{"path": "/workspace/stubborn.py", "content": STUBBORN}],
            "entrypoint": ["python", "/workspace/stubborn.py", marker],
        }),
    )
    .await;

    // One run by default; twenty with AGENTTIER_FAULT_SCALE=full.
    let runs = if agenttier_tests::process::full_scale() {
        20
    } else {
        1
    };
    let mut invoke_id = String::new();
    for _ in 0..runs {
        let mut stream = a.invoke_stream(name, "", &[]).await.stream();
        let start = stream.until("start").await;
        invoke_id = start.data["invokeId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ready = stream.until("log").await;
        assert_eq!(ready.data["data"], "ready", "{:?}", stream.seen);
        let before = processes_with(&marker);
        assert!(
            before.len() >= 2,
            "the run and its orphaned grandchild are on the host: {before:?}"
        );

        b.cancel(name, Some(&invoke_id)).await.expect(204);
        let exit = tokio::time::timeout(CANCEL_BOUND, stream.until("exit"))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no exit within {CANCEL_BOUND:?} of cancel; saw {:?}",
                    stream.seen
                )
            });
        assert_eq!(exit.data["reason"], "canceled", "{:?}", exit.data);
        assert_eq!(exit.data["exitCode"], -1, "{:?}", exit.data);
        assert_eq!(exit.data["invokeId"], invoke_id.as_str());
        assert!(
            stream.next().await.is_none(),
            "the stream ends after exit: {:?}",
            stream.seen
        );

        let left = left_after(&marker, Duration::from_secs(3)).await;
        assert!(
            left.is_empty(),
            "processes of the canceled run still alive: {left:?}"
        );
    }

    // Cancel again (either router): still 204. Unknown: 404. No id: 400.
    a.cancel(name, Some(&invoke_id)).await.expect(204);
    b.cancel(name, Some(&invoke_id)).await.expect(204);
    let r = b.cancel(name, Some("inv-000000000000000000000000")).await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = b.cancel(name, None).await;
    assert_eq!(r.status, 400, "{r:?}");
}
