//! Agent mode end to end, as a client sees it: the quickstart, and
//! configure's idempotency and failure handling (SPEC §2.3). Each scenario
//! runs against `agenttier up` and against the distributed shape.

use agenttier_tests::client::{Finished, router_pair};
use agenttier_tests::process::System;
use serde_json::{Value, json};

agenttier_tests::e2e_scenarios!(
    quickstart_configure_then_invoke_streams_hello_world,
    configure_is_idempotent_and_a_failed_install_keeps_the_entrypoint
);

fn is_invoke_id(v: &Value) -> bool {
    v.as_str()
        .and_then(|s| s.strip_prefix("inv-"))
        .is_some_and(|h| {
            h.len() == 24
                && h.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        })
}

/// The `result` of a configure stream, which must be its last event.
#[track_caller]
fn result(f: &Finished) -> &Value {
    assert_eq!(f.status, 200);
    let last = f
        .events
        .last()
        .unwrap_or_else(|| panic!("empty configure stream"));
    assert_eq!(
        last.event, "result",
        "configure stream must end with result: {:?}",
        f.events
    );
    &last.data
}

fn log_data(f: &Finished) -> Vec<String> {
    let mut all = f.lines("stdout");
    all.extend(f.lines("stderr"));
    all
}

async fn quickstart_configure_then_invoke_streams_hello_world(sys: &mut dyn System) {
    let (c, _) = router_pair(sys);
    let created = c
        .create_sandbox("demo-agent", "langgraph-agent")
        .await
        .expect(201);
    assert_eq!(
        created.body["sandboxId"], "demo-agent",
        "{:?}",
        created.body
    );
    assert_eq!(
        created.body["templateRef"], "langgraph-agent",
        "templateRef is the name as a string"
    );
    assert_eq!(created.body["status"], "Creating");
    assert_eq!(created.body["mode"], "agent");
    c.wait_running("demo-agent").await;

    let entrypoint = json!(["python", "/workspace/agent.py"]);
    let cfg = c
        .configure(
            "demo-agent",
            &json!({
                "files": [{"path": "/workspace/agent.py",
                           "content": "import sys\nprint('hello ' + sys.stdin.read().strip())\n"}],
                "entrypoint": entrypoint,
            }),
        )
        .await;
    assert_eq!(
        cfg.headers["content-type"], "text/event-stream",
        "{:?}",
        cfg.headers
    );
    let res = result(&cfg);
    assert_eq!(res["entrypoint"], entrypoint, "{res}");
    assert_eq!(res["skipped"], false, "{res}");
    assert!(
        log_data(&cfg)
            .iter()
            .any(|l| l.contains("[configure] uploading /workspace/agent.py")),
        "configure logs each upload: {:?}",
        cfg.events
    );

    let inv = c.invoke("demo-agent", "world", &[]).await;
    assert_eq!(inv.names(), ["start", "log", "exit"], "{:?}", inv.events);
    let ids: Vec<Option<&str>> = inv.events.iter().map(|e| e.id.as_deref()).collect();
    assert_eq!(ids, [Some("1"), Some("2"), Some("3")], "ids are 1, 2, 3");
    let start = &inv.events[0].data;
    assert!(is_invoke_id(&start["invokeId"]), "{start}");
    assert!(
        start["startedAt"]
            .as_u64()
            .is_some_and(|ms| ms > 1_600_000_000_000),
        "unix ms: {start}"
    );
    assert_eq!(
        inv.events[1].data,
        json!({"stream": "stdout", "data": "hello world"})
    );
    let exit = &inv.events[2].data;
    assert_eq!(exit["exitCode"], 0, "{exit}");
    assert_eq!(exit["reason"], "completed", "{exit}");
    assert_eq!(exit["invokeId"], start["invokeId"], "{exit}");
    assert!(exit["durationMs"].is_u64(), "{exit}");
    assert_eq!(inv.headers["cache-control"], "no-cache");
    assert_eq!(inv.headers["x-accel-buffering"], "no");
    assert!(
        inv.headers["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream"),
        "{:?}",
        inv.headers
    );

    let got = c.get_sandbox("demo-agent").await.expect(200);
    assert_eq!(got.body["templateRef"], "langgraph-agent");
    assert_eq!(
        got.body["agentConfigure"]["entrypoint"], entrypoint,
        "{:?}",
        got.body
    );
}

async fn configure_is_idempotent_and_a_failed_install_keeps_the_entrypoint(sys: &mut dyn System) {
    let (c, _) = router_pair(sys);
    let name = "idem-agent";
    c.create_running(name, "langgraph-agent").await;
    let entrypoint = json!(["sh", "-c", "cat /workspace/a.txt /workspace/installed.txt"]);
    let first = json!({
        "files": [{"path": "/workspace/a.txt", "content": "alpha\n"}],
        "installCommand": ["sh", "-c", "echo installing-deps; echo installed > /workspace/installed.txt"],
        "entrypoint": entrypoint,
    });

    let cfg = c.configure(name, &first).await;
    let res = result(&cfg).clone();
    assert_eq!(res["skipped"], false, "{res}");
    assert_eq!(res["installExitCode"], 0, "{res}");
    let hash = res["installCommandHash"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{res}"
    );
    assert!(
        log_data(&cfg).iter().any(|l| l.contains("installing-deps")),
        "the install's output is streamed: {:?}",
        cfg.events
    );
    assert_eq!(
        c.invoke(name, "", &[]).await.lines("stdout"),
        ["alpha", "installed"]
    );

    // The same configure again is skipped, and the install log is kept.
    let again = c.configure(name, &first).await;
    let res = result(&again);
    assert_eq!(res["skipped"], true, "{res}");
    assert_eq!(res["installCommandHash"], hash.as_str(), "{res}");
    let log = c.install_log(name).await.expect(200);
    assert!(
        log.body["log"]
            .as_str()
            .is_some_and(|l| l.contains("installing-deps")),
        "install log after a skip: {:?}",
        log.body
    );

    // Files only: the entrypoint stays.
    let files_only = c
        .configure(
            name,
            &json!({"files": [{"path": "/workspace/a.txt", "content": "beta\n"}]}),
        )
        .await;
    let res = result(&files_only);
    assert_eq!(res["skipped"], false, "{res}");
    assert_eq!(
        res["entrypoint"], entrypoint,
        "a files-only configure keeps the entrypoint: {res}"
    );
    assert_eq!(
        c.invoke(name, "", &[]).await.lines("stdout"),
        ["beta", "installed"]
    );

    // A failed install is reported, and the previous entrypoint stays active.
    let failed = c
        .configure(
            name,
            &json!({
                "installCommand": ["sh", "-c", "echo broken-install; exit 3"],
                "entrypoint": ["sh", "-c", "echo new-entrypoint"],
            }),
        )
        .await;
    let res = result(&failed);
    assert_eq!(res["installExitCode"], 3, "{res}");
    assert_eq!(
        res["entrypoint"], entrypoint,
        "the active entrypoint is the previous one: {res}"
    );
    assert_eq!(
        c.invoke(name, "", &[]).await.lines("stdout"),
        ["beta", "installed"]
    );
    let got = c.get_sandbox(name).await.expect(200);
    let ac = &got.body["agentConfigure"];
    assert_eq!(
        ac["installExitCode"], 3,
        "a failed install is recorded in status: {ac}"
    );
    assert_eq!(ac["entrypoint"], entrypoint, "{ac}");
    let log = c.install_log(name).await.expect(200);
    assert!(
        log.body["log"]
            .as_str()
            .is_some_and(|l| l.contains("broken-install")),
        "install log holds the last install's output: {:?}",
        log.body
    );
    // An install that ran and failed is reported by `installExitCode` alone:
    // the v0.8 SDK raises on an `error` event without reading `result`, so
    // its CLI could not exit 1 with the install's exit code (SPEC §2.3,
    // "compatible"). `error` is for an install that could not run at all.
    assert!(
        failed.events.iter().all(|e| e.event != "error"),
        "a failed install ends with result, not error: {:?}",
        failed.events
    );
}
