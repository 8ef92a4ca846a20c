//! A configured sandbox survives a restart of what hosts it (`agenttier up`
//! as a whole, or the executor of the distributed shape): still listed,
//! Running again, the entrypoint kept, the workspace's files there.

use std::time::Duration;

use agenttier_tests::client::{Client, Finished, Streamed, admin_clients, finish, wait_ready};
use agenttier_tests::process::System;
use serde_json::json;

agenttier_tests::e2e_scenarios!(configured_sandbox_survives_a_restart_of_its_host);

/// How long a restarted executor may take to answer for its sandboxes.
const BACK_WITHIN: Duration = Duration::from_secs(30);

/// Invokes, retrying while the answer is 503 (the executor is not back yet:
/// the SPEC's "retry" answer); panics on any other refusal.
async fn invoke_when_back(c: &Client, name: &str) -> Finished {
    let deadline = tokio::time::Instant::now() + BACK_WITHIN;
    loop {
        match c.invoke_stream(name, "", &[]).await {
            Streamed::Stream(s) => return finish(s).await,
            Streamed::Refused(r) if r.status == 503 && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Streamed::Refused(r) => panic!("invoke after the restart refused: {r:?}"),
        }
    }
}

async fn configured_sandbox_survives_a_restart_of_its_host(sys: &mut dyn System) {
    let name = "keep-agent";
    let entrypoint = json!([
        "sh",
        "-c",
        "cat /workspace/notes/kept.txt; ls /workspace/notes"
    ]);
    {
        let c = &admin_clients(sys)[0];
        c.create_running(name, "langgraph-agent").await;
        c.configure(
            name,
            &json!({
                "files": [{"path": "/workspace/notes/kept.txt", "content": "kept across restarts\n"}],
                "entrypoint": entrypoint,
            }),
        )
        .await;
        let inv = c.invoke(name, "", &[]).await;
        assert_eq!(inv.lines("stdout"), ["kept across restarts", "kept.txt"]);
    }

    sys.restart_host();
    wait_ready(sys).await;

    for c in admin_clients(sys) {
        let list = c.list_sandboxes().await.expect(200);
        let listed = list.body["sandboxes"]
            .as_array()
            .is_some_and(|all| all.iter().any(|s| s["sandboxId"] == name));
        assert!(
            listed,
            "{name} is listed after the restart: {:?}",
            list.body
        );
        let sbx = c.wait_running(name).await;
        assert_eq!(sbx["agentConfigure"]["entrypoint"], entrypoint, "{sbx}");
        let inv = invoke_when_back(&c, name).await;
        assert_eq!(
            inv.lines("stdout"),
            ["kept across restarts", "kept.txt"],
            "{:?}",
            inv.events
        );
        assert_eq!(inv.event("exit").data["exitCode"], 0);
    }
}
