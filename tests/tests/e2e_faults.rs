//! Faults injected into real processes: clients that leave, routers and
//! executors SIGKILLed mid-run. Every run ends with exactly one terminal
//! event the client can see, nothing is lost silently, no process is left.

use std::time::{Duration, Instant};

use agenttier_tests::client::{Client, finish, wait_ready};
use agenttier_tests::process::{Distributed, System, left_after};
use agenttier_tests::wait_for;
use serde_json::{Value, json};

agenttier_tests::e2e_scenarios!(
    abandoned_runs_are_canceled_after_the_grace_unless_detached,
    a_retry_with_the_same_idempotency_key_attaches_to_the_same_run,
    a_run_resumes_while_retained_even_past_the_listed_ones
);

fn marker(tag: &str) -> String {
    format!("{tag}-{:016x}", rand::random::<u64>())
}

/// The state of `invoke_id` in `GET /sandboxes/{name}/invokes`.
async fn invoke_state(c: &Client, name: &str, invoke_id: &str) -> String {
    let r = c
        .get_json(&format!("/sandboxes/{name}/invokes"))
        .await
        .expect(200);
    r.body["invokes"]
        .as_array()
        .and_then(|l| l.iter().find(|i| i["invokeId"] == invoke_id))
        .map(|i| i["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

fn invoke_id(start: &agenttier_tests::client::SseEvent) -> String {
    start.data["invokeId"]
        .as_str()
        .expect("invokeId")
        .to_string()
}

/// `GET /invokes` lists the last 256 finished runs; resume reaches every run
/// whose events are still retained, however many came after it.
async fn a_run_resumes_while_retained_even_past_the_listed_ones(sys: &mut dyn System) {
    let c = Client::new(&sys.urls()[0], Some(sys.admin_key()));
    let other = Client::new(sys.urls().last().expect("a router"), Some(sys.admin_key()));
    c.create_running("old-a", "langgraph-agent").await;
    c.configure("old-a", &json!({"entrypoint": ["cat"]})).await;
    let first = c.invoke("old-a", "the very first", &[]).await;
    let first_id = invoke_id(first.event("start"));
    for i in 0..260 {
        let f = c.invoke("old-a", format!("filler {i}"), &[]).await;
        assert_eq!(f.event("exit").data["reason"], "completed");
    }
    let listed = c
        .get_json("/sandboxes/old-a/invokes")
        .await
        .expect(200)
        .body["invokes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(listed.len(), 256, "the list is bounded");
    assert!(listed.iter().all(|i| i["invokeId"] != first_id.as_str()));

    let resumed = finish(other.events_stream("old-a", &first_id, 0).await.stream()).await;
    assert_eq!(resumed.status, 200, "{:?}", resumed.events);
    assert_eq!(resumed.names(), ["start", "log", "exit"]);
    assert_eq!(resumed.lines("stdout"), ["the very first"]);
    // An id the sandbox never ran stays unknown.
    let unknown = other
        .events_stream("old-a", "inv-0123456789abcdef01234567", 0)
        .await;
    assert_eq!(unknown.status(), 404);
}

async fn abandoned_runs_are_canceled_after_the_grace_unless_detached(sys: &mut dyn System) {
    let c = Client::new(&sys.urls()[0], Some(sys.admin_key()));
    c.create_running("gone-a", "langgraph-agent").await;
    let mark = marker("gone");
    let script = format!("echo started; sleep 300; : {mark}");
    c.configure("gone-a", &json!({"entrypoint": ["sh", "-c", script]}))
        .await;

    // Attached, then gone: canceled once nobody has been attached for the
    // grace (8 s in the harness).
    let mut s = c.invoke_stream("gone-a", "", &[]).await.stream();
    let id = invoke_id(&s.until("start").await);
    s.until("log").await;
    drop(s);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        invoke_state(&c, "gone-a", &id).await,
        "running",
        "the grace holds"
    );
    let canceled = wait_for(Duration::from_secs(15), || async {
        invoke_state(&c, "gone-a", &id).await == "canceled"
    })
    .await;
    assert!(
        canceled,
        "abandoned run still {}",
        invoke_state(&c, "gone-a", &id).await
    );
    let resumed = finish(c.events_stream("gone-a", &id, 0).await.stream()).await;
    let exit = resumed.event("exit");
    assert_eq!(
        (exit.data["reason"].as_str(), exit.data["cause"].as_str()),
        (Some("canceled"), Some("client_gone"))
    );
    let left = left_after(&mark, Duration::from_secs(3)).await;
    assert!(left.is_empty(), "left behind: {left:?}");

    // Detached: it outlives its client.
    let mut s = c
        .invoke_stream("gone-a", "", &[("detach", "true")])
        .await
        .stream();
    let id = invoke_id(&s.until("start").await);
    drop(s);
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(invoke_state(&c, "gone-a", &id).await, "running");
    c.cancel("gone-a", Some(&id)).await.expect(204);
}

async fn a_retry_with_the_same_idempotency_key_attaches_to_the_same_run(sys: &mut dyn System) {
    let urls = sys.urls();
    let a = Client::new(&urls[0], Some(sys.admin_key()));
    let b = Client::new(urls.last().expect("a router"), Some(sys.admin_key()));
    a.create_running("idem-a", "langgraph-agent").await;
    a.configure(
        "idem-a",
        &json!({"entrypoint": ["sh", "-c", "echo one; sleep 1; echo two"]}),
    )
    .await;
    let post = |c: &Client, key: &str| {
        c.request(reqwest::Method::POST, "/sandboxes/idem-a/invoke")
            .header("Idempotency-Key", key.to_string())
            .body("")
    };
    // The first request, then its retry on the other router while it runs.
    let first = a.send_stream(post(&a, "key-1")).await.stream();
    let retry = b.send_stream(post(&b, "key-1")).await.stream();
    let (first, retry) = (finish(first).await, finish(retry).await);
    let id = invoke_id(first.event("start"));
    assert_eq!(
        invoke_id(retry.event("start")),
        id,
        "the retry follows the same invoke"
    );
    assert_eq!(first.lines("stdout"), ["one", "two"]);
    assert_eq!(retry.lines("stdout"), ["one", "two"]);
    // After it finished, a retry still replays it rather than running again.
    let late = finish(a.send_stream(post(&a, "key-1")).await.stream()).await;
    assert_eq!(invoke_id(late.event("start")), id);
    assert_eq!(late.event("exit").data["exitCode"], 0);
    let other = finish(a.send_stream(post(&a, "key-2")).await.stream()).await;
    assert_ne!(
        invoke_id(other.event("start")),
        id,
        "another key, another run"
    );
    let r = a.get_json("/sandboxes/idem-a/invokes").await.expect(200);
    assert_eq!(r.body["invokes"].as_array().map(Vec::len), Some(2), "{r:?}");
    // A key that is not a header-safe token is refused.
    let r = a.send_stream(post(&a, "bad key")).await.refused();
    assert_eq!(r.status, 400, "{r:?}");
}

/// Where the router dies: three fixed points, or with
/// `AGENTTIER_FAULT_SCALE=full` twenty random ones.
fn cut_points(lines: u64) -> Vec<u64> {
    if agenttier_tests::process::full_scale() {
        (0..20)
            .map(|_| 1 + rand::random::<u64>() % (lines - 1))
            .collect()
    } else {
        vec![150, lines * 2 / 5, lines * 19 / 20]
    }
}

async fn distributed() -> Distributed {
    let sys = Distributed::start();
    wait_ready(&sys).await;
    sys
}

/// A finished run is still there to replay after its executor was killed and
/// came back: the same events, the same ids, and the actor still knows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_run_replays_after_its_executor_restarts() {
    let mut sys = distributed().await;
    let urls = sys.urls();
    let c = Client::new(&urls[0], Some(sys.admin_key()));
    let other = Client::new(&urls[1], Some(sys.admin_key()));
    c.create_running("kept-a", "langgraph-agent").await;
    c.configure(
        "kept-a",
        &json!({"entrypoint": ["sh", "-c", "for i in 1 2 3; do echo line $i; done; echo oops >&2; exit 3"]}),
    )
    .await;
    let before = c.invoke("kept-a", "", &[]).await;
    let id = invoke_id(before.event("start"));
    assert_eq!(before.event("exit").data["exitCode"], 3);

    sys.executor().kill();
    sys.executor().restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        match other.events_stream("kept-a", &id, 0).await {
            s @ agenttier_tests::client::Streamed::Stream(_) => break finish(s.stream()).await,
            agenttier_tests::client::Streamed::Refused(r) => {
                assert!(
                    Instant::now() < deadline,
                    "not replayable after the restart: {r:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(after.events, before.events, "the same events, ids and data");
    assert_eq!(invoke_state(&other, "kept-a", &id).await, "completed");
    // Resuming from the middle gives the rest.
    let tail = finish(other.events_stream("kept-a", &id, 3).await.stream()).await;
    assert_eq!(tail.events, before.events[3..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_killed_mid_run_ends_the_stream_with_executor_lost() {
    let mut sys = distributed().await;
    let urls = sys.urls();
    let c = Client::new(&urls[0], Some(sys.admin_key()));
    c.create_running("lost-a", "langgraph-agent").await;
    // One trial by default; the 20 at full scale.
    let trials = if agenttier_tests::process::full_scale() {
        20
    } else {
        1
    };
    let mut lost_after = Vec::new();
    for _ in 0..trials {
        let mark = marker("lost");
        let script = format!("echo started; sleep 300; : {mark}");
        c.configure("lost-a", &json!({"entrypoint": ["sh", "-c", script]}))
            .await;

        let mut s = c.invoke_stream("lost-a", "", &[]).await.stream();
        s.until("log").await;
        let killed = Instant::now();
        sys.executor().kill();
        let exit = s.until("exit").await;
        let took = killed.elapsed();
        lost_after.push(took);
        assert_eq!(exit.data["reason"], "error", "{exit:?}");
        assert_eq!(exit.data["cause"], "executor_lost", "{exit:?}");
        assert!(
            took < Duration::from_secs(5),
            "executor_lost after {took:?}"
        );
        assert!(s.next().await.is_none(), "the stream ends after exit");
        let left = left_after(&mark, Duration::from_secs(2)).await;
        assert!(
            left.is_empty(),
            "sandbox processes outlived their executor: {left:?}"
        );

        // Back on its data directory: admitted again (the old run is not rerun).
        sys.executor().restart();
        let back = Instant::now();
        let done = loop {
            let reconfigured = match c
                .configure_stream("lost-a", &json!({"entrypoint": ["echo", "again"]}))
                .await
            {
                s @ agenttier_tests::client::Streamed::Stream(_) => {
                    finish(s.stream()).await;
                    true
                }
                agenttier_tests::client::Streamed::Refused(_) => false,
            };
            let attempt = if reconfigured {
                c.invoke_stream("lost-a", "", &[]).await
            } else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert!(
                    back.elapsed() < Duration::from_secs(10),
                    "executor not back within 10 s"
                );
                continue;
            };
            match attempt {
                s @ agenttier_tests::client::Streamed::Stream(_) => break finish(s.stream()).await,
                agenttier_tests::client::Streamed::Refused(r) => {
                    assert!(r.status == 503 || r.status == 409, "{r:?}");
                    assert!(
                        back.elapsed() < Duration::from_secs(10),
                        "not admitted: {r:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        assert_eq!(done.lines("stdout"), ["again"]);
        let r = c.get_json("/sandboxes/lost-a/invokes").await.expect(200);
        let running: Vec<&Value> = r.body["invokes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["state"] == "running")
            .collect();
        assert!(running.is_empty(), "nothing runs twice: {running:?}");
    }
    lost_after.sort();
    eprintln!(
        "executor_lost after {} kills: median {:?}, max {:?}",
        lost_after.len(),
        lost_after[lost_after.len() / 2],
        lost_after[lost_after.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_killed_mid_stream_the_other_router_resumes_without_loss() {
    const LINES: u64 = 10_000;
    let mut sys = distributed().await;
    let urls = sys.urls();
    let a = Client::new(&urls[0], Some(sys.admin_key()));
    let b = Client::new(&urls[1], Some(sys.admin_key()));
    a.create_running("cut-a", "langgraph-agent").await;
    let script = format!(
        "import time\nfor i in range({LINES}):\n    print(i, flush=True)\n    if i % 200 == 0:\n        time.sleep(0.02)\n"
    );
    a.configure(
        "cut-a",
        &json!({"files": [{"path": "/workspace/count.py", "content": script}],
                "entrypoint": ["python", "/workspace/count.py"]}),
    )
    .await;

    for cut in cut_points(LINES) {
        // Router A restarts on a new port each round.
        let a = Client::new(&sys.urls()[0], Some(sys.admin_key()));
        let mut s = a.invoke_stream("cut-a", "", &[]).await.stream();
        let id = invoke_id(&s.until("start").await);
        let mut got: Vec<u64> = Vec::new();
        let mut last_id = 1u64;
        while (got.len() as u64) < cut {
            let e = s.next().await.expect("stream ended before the cut");
            last_id = e.id.as_deref().and_then(|i| i.parse().ok()).expect("id");
            if e.event == "log" {
                got.push(
                    e.data["data"]
                        .as_str()
                        .and_then(|d| d.parse().ok())
                        .expect("a number"),
                );
            }
        }
        sys.router(0).kill();
        drop(s);

        let resumed = finish(b.events_stream("cut-a", &id, last_id).await.stream()).await;
        let ids: Vec<u64> = resumed
            .events
            .iter()
            .map(|e| e.id.as_deref().and_then(|i| i.parse().ok()).expect("id"))
            .collect();
        let want: Vec<u64> = (last_id + 1..=last_id + ids.len() as u64).collect();
        assert_eq!(
            ids, want,
            "resumed right after {last_id}, in order, no duplicates"
        );
        got.extend(
            resumed
                .lines("stdout")
                .iter()
                .map(|l| l.parse::<u64>().expect("a number")),
        );
        assert_eq!(
            got,
            (0..LINES).collect::<Vec<_>>(),
            "cut at {cut}: every line exactly once"
        );
        assert_eq!(
            resumed.events.iter().filter(|e| e.event == "exit").count(),
            1
        );
        assert_eq!(resumed.event("exit").data["exitCode"], 0);
        sys.router(0).restart();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_and_restarted_every_stream_still_ends_once_without_silent_gaps() {
    const RUNS: usize = 8;
    const LINES: u64 = 60;
    let mut sys = distributed().await;
    let urls = sys.urls();
    let c = Client::new(&urls[0], Some(sys.admin_key()));
    let script = format!(
        "import time\nfor i in range({LINES}):\n    print(i, flush=True)\n    time.sleep(0.1)\n"
    );
    for n in 0..RUNS {
        let name = format!("bus-{n}");
        c.create_running(&name, "langgraph-agent").await;
        c.configure(
            &name,
            &json!({"files": [{"path": "/workspace/tick.py", "content": script}],
                    "entrypoint": ["python", "/workspace/tick.py"]}),
        )
        .await;
    }
    let mut streams = Vec::new();
    for n in 0..RUNS {
        let c = Client::new(&urls[n % urls.len()], Some(sys.admin_key()));
        let mut s = c.invoke_stream(&format!("bus-{n}"), "", &[]).await.stream();
        s.until("start").await;
        streams.push(tokio::spawn(async move {
            let mut events = Vec::new();
            while let Some(e) = s.next().await {
                events.push(e);
            }
            events
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    sys.nats_mut().kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    sys.nats_mut().restart();

    for (n, s) in streams.into_iter().enumerate() {
        let events = tokio::time::timeout(Duration::from_secs(60), s)
            .await
            .unwrap_or_else(|_| panic!("stream {n} hung"))
            .expect("reader");
        // Ids run on without holes: every seq is an event or inside a gap.
        let mut next = 2u64; // after `start`
        let mut lines = Vec::new();
        for e in &events {
            let id: u64 = e.id.as_deref().and_then(|i| i.parse().ok()).expect("id");
            match e.event.as_str() {
                "gap" => {
                    assert_eq!(e.data["from"].as_u64(), Some(next), "run {n}: {e:?}");
                    next = e.data["to"].as_u64().expect("to") + 1;
                }
                _ => {
                    assert_eq!(id, next, "run {n}: no silent hole, no duplicate");
                    next += 1;
                    if e.event == "log" {
                        lines.push(e.data["data"].as_str().unwrap_or_default().to_string());
                    }
                }
            }
        }
        let exits: Vec<_> = events.iter().filter(|e| e.event == "exit").collect();
        assert_eq!(exits.len(), 1, "run {n}: exactly one terminal event");
        assert_eq!(events.last().map(|e| e.event.as_str()), Some("exit"));
        // The runs outlived the outage: they completed, every line delivered.
        assert_eq!(
            exits[0].data["reason"], "completed",
            "run {n}: {:?}",
            exits[0]
        );
        let want: Vec<String> = (0..LINES).map(|i| i.to_string()).collect();
        assert_eq!(lines, want, "run {n}");
    }
    // And the system still serves.
    let again = c.invoke("bus-0", "", &[]).await;
    assert_eq!(
        again.event("exit").data["exitCode"],
        0,
        "{:?}",
        again.events
    );
}
