//! What every router shows of a sandbox. Routers answer reads from a copy
//! of the records kept by a store watch: a record written through one router
//! must read at once on another (its copy may not have it yet), a router
//! must read its own delete, and a change must reach every copy.

use std::time::Duration;

use agenttier_tests::client::{Client, router_pair, wait_ready};
use agenttier_tests::process::{Distributed, System};
use agenttier_tests::wait_for;
use serde_json::json;

agenttier_tests::e2e_scenarios!(every_router_reads_what_another_wrote);

const CONVERGE: Duration = Duration::from_secs(10);

async fn listed(c: &Client) -> Vec<String> {
    let r = c.list_sandboxes().await.expect(200);
    let mut names: Vec<String> = r.body["sandboxes"]
        .as_array()
        .expect("sandboxes")
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s["namespace"].as_str().unwrap_or(""),
                s["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    names.sort();
    names
}

/// Waits until `c` answers 404 for `name`; panics with its last answer.
async fn until_gone(c: &Client, name: &str) {
    assert!(
        wait_for(CONVERGE, || async {
            c.get_sandbox(name).await.status == 404
        })
        .await,
        "{} still shows {:?}",
        c.base(),
        c.get_sandbox(name).await
    );
}

async fn every_router_reads_what_another_wrote(sys: &mut dyn System) {
    let (a, b) = router_pair(sys);

    // Created through A, read through B straight away: by name, and by name
    // alone for one outside `default`.
    a.create_sandbox("rec-a", "langgraph-agent")
        .await
        .expect(201);
    let r = b.get_sandbox("rec-a").await.expect(200);
    assert_eq!(r.body["name"], "rec-a");
    a.post_json(
        "/sandboxes",
        &json!({"name": "rec-b", "namespace": "team-r", "templateRef": {"name": "langgraph-agent"}}),
    )
    .await
    .expect(201);
    let r = b.get_sandbox("rec-b").await.expect(200);
    assert_eq!(r.body["namespace"], "team-r");
    let want = ["default/rec-a", "team-r/rec-b"];
    assert!(
        wait_for(CONVERGE, || async { listed(&b).await == want }).await,
        "B lists {:?}",
        listed(&b).await
    );

    // The phase the executor writes reaches both; B configures, A invokes
    // what B configured.
    a.wait_running("rec-a").await;
    b.wait_running("rec-a").await;
    b.configure("rec-a", &json!({"entrypoint": ["sh", "-c", "echo from-b"]}))
        .await;
    let run = a.invoke("rec-a", "", &[]).await;
    assert_eq!(run.lines("stdout"), ["from-b"]);
    assert_eq!(run.event("exit").data["exitCode"], 0);

    // A reads its own delete at once: never `Running` again.
    a.delete("rec-a").await.expect(204);
    let r = a.get_sandbox("rec-a").await;
    assert!(
        r.status == 404 || r.body["status"] == "Deleting",
        "right after the delete, A shows {r:?}"
    );
    // B follows: gone from GET, list and invoke.
    until_gone(&b, "rec-a").await;
    assert!(
        wait_for(CONVERGE, || async { listed(&b).await == ["team-r/rec-b"] }).await,
        "B lists {:?}",
        listed(&b).await
    );
    let refused = b.invoke_stream("rec-a", "", &[]).await.refused();
    assert_eq!(refused.status, 404, "{refused:?}");
}

/// After NATS restarts, each router's copy follows the records again (the
/// watch resumes where it stopped): a copy that silently stopped would keep
/// answering with what it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_router_follows_the_records_after_nats_restarts() {
    let mut sys = Distributed::start();
    wait_ready(&sys).await;
    let (a, b) = router_pair(&sys);
    a.create_running("rn-a", "langgraph-agent").await;
    b.wait_running("rn-a").await;

    sys.nats_mut().kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    sys.nats_mut().restart();
    // A's own copy may answer reads while NATS is down: a create says when
    // the store is back (409: an earlier try got through).
    assert!(
        wait_for(Duration::from_secs(30), || async {
            let status = a.create_sandbox("rn-b", "langgraph-agent").await.status;
            status == 201 || status == 409
        })
        .await,
        "A cannot create after the restart"
    );

    // A change the executor makes, a create and a delete through A: B sees
    // each of them. The executor reconnects on its own schedule (the store
    // may be back before it is): until then a stop is 503 with
    // Retry-After, and a client tries again.
    assert!(
        wait_for(Duration::from_secs(30), || async {
            let stop = a.stop("rn-a").await;
            if stop.status == 503 {
                assert!(stop.headers.contains_key("retry-after"), "{stop:?}");
                return false;
            }
            stop.expect(200);
            true
        })
        .await,
        "the executor did not come back after the restart"
    );
    b.wait_status("rn-a", "Stopped").await;
    assert!(
        wait_for(CONVERGE, || async {
            listed(&b).await == ["default/rn-a", "default/rn-b"]
        })
        .await,
        "B lists {:?}",
        listed(&b).await
    );
    a.delete("rn-a").await.expect(204);
    until_gone(&b, "rn-a").await;
}
